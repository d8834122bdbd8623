package main

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreForgetsLaterCertificates: after `restore --accept-loss` of an
// older backup, an operational certificate issued after the backup is
// unknown to the store. It used to authenticate and could renew into any
// profile (its issuing profile unknown, the renewal-profile rule skipped);
// now it is refused at the handshake (`sren` impossible) and audited as
// such, while a certificate the backup holds still renews. The operator can
// put the lost serial on the CRL only with --unknown-certificate, and audit
// verify stays green.
func TestRestoreForgetsLaterCertificates(t *testing.T) {
	dir, cfg := demoAppliance(t, false)
	root := filepath.Join(dir, "ca", "root.pem")
	dev := demoDevice(dir, "valid")
	tmp := t.TempDir()
	srv := startServer(t, cfg)
	enroll := func(srv *server, cert, key, prefix, op string) (int, string) {
		code, out, errs := estca(t, "enroll", "--server", "coaps://"+srv.addr, "--cert", cert, "--key", key,
			"--trust", root, "--server-name", "127.0.0.1", "--out", prefix, op)
		return code, out + errs
	}
	before, after := filepath.Join(tmp, "before"), filepath.Join(tmp, "after")
	if code, out := enroll(srv, dev.cert, dev.key, before, "sen"); code != 0 {
		t.Fatalf("sen before the backup: exit %d\n%s", code, out)
	}
	backup := filepath.Join(tmp, "backup.db")
	mustEstca(t, "--config", cfg, "backup", backup)
	if code, out := enroll(srv, dev.cert, dev.key, after, "sen"); code != 0 {
		t.Fatalf("sen after the backup: exit %d\n%s", code, out)
	}
	lost, err := readCert(after + ".pem")
	if err != nil {
		t.Fatal(err)
	}
	lostSerial := lost.SerialNumber.Text(16)
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	mustEstca(t, "--config", cfg, "restore", "--accept-loss", "--reason", "test: disk replaced", backup)

	srv = startServer(t, cfg)
	if code, out := enroll(srv, after+".pem", after+".key", filepath.Join(tmp, "renewed-lost"), "sren"); code == 0 {
		t.Fatalf("sren with a certificate the restored store does not hold succeeded:\n%s", out)
	}
	if code, out := enroll(srv, before+".pem", before+".key", filepath.Join(tmp, "renewed"), "sren"); code != 0 {
		t.Fatalf("sren with a certificate the backup holds: exit %d\n%s", code, out)
	}

	// The CRL: only as an explicit, flagged revocation of a serial the
	// store does not hold.
	if code, _, errs := estca(t, "--config", cfg, "revoke", lostSerial); code != 1 || !strings.Contains(errs, "--unknown-certificate") {
		t.Fatalf("revoke of the lost serial: exit %d\n%s", code, errs)
	}
	kept, err := readCert(before + ".pem")
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errs := estca(t, "--config", cfg, "revoke", "--unknown-certificate", kept.SerialNumber.Text(16)); code != 1 || !strings.Contains(errs, "is in the store") {
		t.Fatalf("revoke --unknown-certificate of a stored certificate: exit %d\n%s", code, errs)
	}
	mustEstca(t, "--config", cfg, "revoke", "--unknown-certificate", "--reason", "keyCompromise", lostSerial)
	crlFile := filepath.Join(tmp, "estca.crl")
	mustEstca(t, "--config", cfg, "crl", "--out", crlFile)
	der, err := os.ReadFile(crlFile)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, e := range crl.RevokedCertificateEntries {
		listed = listed || e.SerialNumber.Cmp(lost.SerialNumber) == 0
	}
	if !listed {
		t.Fatalf("the CRL does not list %s", lostSerial)
	}
	if err := srv.stop(t); err != nil {
		t.Fatal(err)
	}
	logs := srv.logs()
	if !strings.Contains(logs, "unknown-certificate") {
		t.Errorf("the refused handshake is not logged with its reason:\n%s", logs)
	}
	audit := mustEstca(t, "--config", cfg, "audit", "list")
	if !strings.Contains(audit, "unknown-certificate: certificate unknown to this CA") {
		t.Errorf("the refused handshake is not audited with its reason:\n%s", audit)
	}
	mustEstca(t, "--config", cfg, "audit", "verify")
}
