package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/store"
)

// TestKeygenConfig: the profile keys of server-side key generation reach
// the policy profile, the keys section takes its defaults (the refusals are
// cases of TestPolicyConfigProblems).
func TestKeygenConfig(t *testing.T) {
	t.Parallel()
	cfg, err := parseConfig([]byte("hsm: {module: /x.so, token: t}\n"+
		"profiles: [{name: a, operations: [sen, skg], key_types: [rsa-2048], require_encrypted_keys: true, escrow_keys: true}]\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ps, errs := cfg.profileOptions()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	p := ps[0]
	if len(p.Operations) != 2 || !p.RequireEncryptedKeys || !p.EscrowKeys || p.ServerKeyType != "" || !*cfg.Keys.GCMAuthAttrs ||
		cfg.Keys.SignerKey != ca.LabelKeyPackage || cfg.Keys.RecipientsDir != "keys/recipients" {
		t.Fatalf("profile %+v keys %+v", p, cfg.Keys)
	}
}

func TestRecipientDir(t *testing.T) {
	t.Parallel()
	r := recipientDir{filepath.Join(t.TempDir(), "recipients")}
	a := pkitest.NewCA(t, "recipient a").Cert
	b := pkitest.NewCA(t, "recipient b").Cert
	const id = "idevid/demo/sn:DEMO-0001"
	if cs, err := r.RecipientCertificates(id); err != nil || len(cs) != 0 {
		t.Fatalf("empty registry: %v %v", cs, err)
	}
	for _, c := range []*x509.Certificate{a, b, a} {
		if _, err := r.Add(id, c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Add("operational/subject:00", a); err != nil {
		t.Fatal(err)
	}
	cs, err := r.RecipientCertificates(id)
	if err != nil || len(cs) != 2 || !cs[0].Equal(a) || !cs[1].Equal(b) {
		t.Fatalf("registered %d, %v", len(cs), err)
	}
	for _, bad := range []string{"", "root", "idevid/x\nIdentity: other", strings.Repeat("idevid/", 50)} {
		if _, err := r.Add(bad, a); err == nil {
			t.Errorf("identity %q accepted", bad)
		}
	}
	kid, _ := client.KeyIdentifier(a)
	if n, err := r.Remove(id, kid); err != nil || n != 1 {
		t.Fatalf("remove %d %v", n, err)
	}
	if cs, _ := r.RecipientCertificates(id); len(cs) != 1 || !cs[0].Equal(b) {
		t.Fatalf("after remove %v", cs)
	}
	all, err := r.All()
	if err != nil || len(all) != 2 {
		t.Fatalf("all %d %v", len(all), err)
	}
	if n, err := r.Remove(id, nil); err != nil || n != 1 {
		t.Fatalf("remove all %d %v", n, err)
	}
	if _, err := os.Stat(r.file(id)); !os.IsNotExist(err) {
		t.Fatalf("empty registration file left: %v", err)
	}
	// A file grown past the bound is refused, not read.
	os.WriteFile(r.file(id), make([]byte, maxRecipientFile+1), 0o600)
	if _, err := r.RecipientCertificates(id); err == nil {
		t.Fatal("oversized registration file read")
	}
}

// TestServeUpgradesAndCleans: an appliance from before server-side key
// generation (no key-package signer key or certificate) gets them when
// `estca serve` starts; a generated key left pending in the token by an
// interrupted run is destroyed at start, audited; /skg then works.
func TestServeUpgradesAndCleans(t *testing.T) {
	requireTools(t, "softhsm2-util", "openssl")
	dir, cfgPath := newAppliance(t, "--demo")
	b, _ := os.ReadFile(cfgPath)
	os.WriteFile(cfgPath, []byte(strings.Replace(string(b), "metrics_listen: 127.0.0.1:9684", "metrics_listen: 127.0.0.1:0", 1)), 0o600)
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := openToken(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.DeleteKey(ca.LabelKeyPackage); err != nil {
		t.Fatal(err)
	}
	if _, err := tok.GenerateExportable(hsm.ECDSAP256, true); err != nil {
		t.Fatal(err)
	}
	tok.Close()
	os.Remove(cfg.path(cfg.Keys.SignerCert))

	srv := startServer(t, cfgPath)
	for _, want := range []string{"destroyed generated keys left pending by an interrupted run", "issuing the key-package signer certificate"} {
		if !strings.Contains(srv.logs(), want) {
			t.Errorf("serve log lacks %q:\n%s", want, srv.logs())
		}
	}
	if _, err := readCert(cfg.path(cfg.Keys.SignerCert)); err != nil {
		t.Fatalf("no signer certificate written: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := deviceOptions(t, dir, "coaps://"+srv.addr, nil)
	c, err := client.Dial(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	leaf, _ := x509.ParseCertificate(o.Certificate.Certificate[0])
	id, _ := client.KeyIdentifier(leaf)
	csr, err := cms.CreateCertificateRequest(nil, &x509.CertificateRequest{RawSubject: leaf.RawSubject}, pkitest.Key(t),
		&cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: id})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.ServerKeygen(ctx, csr, false)
	if err != nil {
		t.Fatal(err)
	}
	issuing, _ := readCert(cfg.path(cfg.CA.Issuing))
	k, err := c.OpenServerKey(res, &cms.DecryptKey{PrivateKey: o.Certificate.PrivateKey, Certificate: leaf}, issuing)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(k.Package.Signer.Subject.CommonName, "key-package signer") {
		t.Fatalf("signed by %s", k.Package.Signer.Subject)
	}
	var recs []auditView
	if err := json.Unmarshal([]byte(mustEstca(t, "--config", cfgPath, "audit", "list", "--json")), &recs); err != nil {
		t.Fatal(err)
	}
	var cleaned, issued bool
	for _, r := range recs {
		cleaned = cleaned || (r.Event == string(store.EventKeygen) && strings.Contains(r.Reason, "1 pending generated key(s)"))
		issued = issued || (r.Event == string(store.EventConfig) && strings.Contains(r.Reason, "key-package signer certificate"))
	}
	if !cleaned || !issued {
		t.Fatalf("audit: clean-up %t, signer %t", cleaned, issued)
	}
}

// FuzzRecipientFile: a registration file is read at each request; whatever
// it holds, reading it returns only parsed certificates or an error.
func FuzzRecipientFile(f *testing.F) {
	c := pkitest.NewCA(f, "recipient").Cert
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nIdentity: idevid/demo/sn:1\n\n" + "MIIB" + "\n-----END CERTIFICATE-----\n"))
	f.Add(pkitest.PEM(c))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "r.pem")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		es, err := readRecipientFile(path)
		for _, e := range es {
			if err == nil && (e.Cert == nil || len(e.Cert.Raw) == 0) {
				t.Fatal("entry without certificate")
			}
		}
	})
}
