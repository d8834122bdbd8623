package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/softhsm"
	"github.com/estca/estca/store"
)

func initCommand() *command {
	var o initOptions
	return &command{
		name:     "init",
		noArgs:   true,
		args:     "--dir DIR [--pkcs11-module PATH --token LABEL [--pin-file FILE]] [--server-name NAME]... [--server-ip IP]... [--demo]",
		noConfig: true,
		summary: "Create a new appliance: token, CA hierarchy, server certificate, store, config.\n\n" +
			"In DIR: the HSM token (embedded SoftHSM unless --pkcs11-module), root and issuing CA keys in\n" +
			"the token, the DTLS server certificate, the audit key, the store and DIR/estca.yaml.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&o.dir, "dir", "", "appliance `DIR` to create (required)")
			fs.StringVar(&o.module, "pkcs11-module", "", "PKCS#11 library `PATH` of an existing HSM (default: embedded SoftHSM token under DIR)")
			fs.StringVar(&o.token, "token", "", "token `LABEL` of the existing HSM (with --pkcs11-module)")
			fs.StringVar(&o.pinFile, "pin-file", "", "`FILE` holding the HSM user PIN (with --pkcs11-module; or set $ESTCA_HSM_PIN)")
			fs.StringVar(&o.keyType, "key-type", "ecdsa-p256", "CA key `TYPE`: ecdsa-p256, ecdsa-p384, rsa-3072")
			fs.StringVar(&o.name, "name", "estca", "`NAME` used in the CA subjects (NAME root CA, NAME issuing CA)")
			serverNameFlags(fs, &o.server)
			fs.BoolVar(&o.externalRoot, "external-root", false, "keep only the issuing key here and write DIR/ca/issuing.csr for an external root (then: estca ca import)")
			fs.BoolVar(&o.keepSOPIN, "keep-so-pin", false, "keep the embedded SoftHSM token's security officer PIN in DIR/hsm/so.pin (default: forgotten after init)")
			fs.BoolVar(&o.demo, "demo", false, "also create a demo manufacturer CA (trusted as IDevID anchor) and demo device IDevIDs under DIR/demo")
		},
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			if o.dir == "" {
				return usageErrorf("--dir is required")
			}
			if _, err := o.server.options(); err != nil {
				return asUsage(err)
			}
			if _, err := hsm.ParseKeyType(o.keyType); err != nil {
				return asUsage(fmt.Errorf("--key-type: %w", err))
			}
			return runInit(a, o)
		},
	}
}

type initOptions struct {
	dir, module, token, pinFile, keyType, name string
	server                                     serverNames
	externalRoot, demo, keepSOPIN              bool
}

func runInit(a *app, o initOptions) error {
	kt, err := hsm.ParseKeyType(o.keyType)
	if err != nil {
		return err
	}
	if (o.module == "") != (o.token == "") {
		return errors.New("--pkcs11-module and --token go together")
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "estca.yaml")
	if _, err := os.Stat(cfgPath); err == nil {
		return fmt.Errorf("%s exists: this appliance is already initialised", cfgPath)
	}
	for _, d := range []string{dir, filepath.Join(dir, "ca"), filepath.Join(dir, "store"), filepath.Join(dir, "run")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	names, err := o.server.options()
	if err != nil {
		return err
	}

	v := configValues{KeyType: string(kt), ExternalRoot: o.externalRoot}
	if o.module == "" {
		st, err := softhsm.Provision(filepath.Join(dir, "hsm"), "estca", softhsm.ProvisionOptions{KeepSOPIN: o.keepSOPIN})
		if err != nil {
			return err
		}
		v.Module, v.Token = st.Module, st.Label
		v.PINFile, v.SoftHSMConf = rel(dir, st.PINFile), rel(dir, st.Conf)
		fmt.Fprintf(a.stdout, "provisioned SoftHSM token %q in %s\n", st.Label, st.Dir)
		if st.SOPINFile != "" {
			fmt.Fprintf(a.stdout, "  SO PIN kept in %s (mode 0600): move it off the box\n", st.SOPINFile)
		} else {
			fmt.Fprintf(a.stdout, "  SO PIN not kept (nothing needs it; --keep-so-pin keeps it)\n")
		}
	} else {
		v.Module, v.Token = o.module, o.token
		if o.pinFile != "" {
			p, err := filepath.Abs(o.pinFile)
			if err != nil {
				return err
			}
			v.PINFile = p
		}
	}
	cfg, err := parseConfig([]byte(renderConfig(v)), dir)
	if err != nil {
		return fmt.Errorf("internal: generated config invalid: %w", err)
	}
	tok, err := openToken(cfg, nil)
	if err != nil {
		return err
	}
	defer tok.Close()

	h, err := ca.Init(tok, ca.InitOptions{
		KeyType:        kt,
		RootName:       o.name + " root CA",
		IssuingName:    o.name + " issuing CA",
		ExternalRoot:   o.externalRoot,
		ServerDNSNames: names.ServerDNSNames,
		ServerIPs:      names.ServerIPs,
	})
	if err != nil {
		return err
	}
	if o.externalRoot {
		if err := writePEM(filepath.Join(dir, "ca", "issuing.csr"), "CERTIFICATE REQUEST", h.IssuingCSR); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "wrote %s: have it signed by your root, then run `estca --config %s ca import --cert ISSUING.pem --root ROOT.pem`\n",
			filepath.Join(dir, "ca", "issuing.csr"), cfgPath)
	} else {
		if err := writeCerts(cfg.path(cfg.CA.Root), h.Root); err != nil {
			return err
		}
		if err := writeCerts(cfg.path(cfg.CA.Issuing), h.Issuing); err != nil {
			return err
		}
		if err := writeCerts(cfg.path(cfg.CA.ServerCert), h.Server, h.Issuing); err != nil {
			return err
		}
		// The key-package signer of server-side key generation (audited
		// in the init record below).
		if _, err := issueKeySigner(cfg, tok, nil, "init"); err != nil {
			return err
		}
	}
	audit, err := tok.FindKey(cfg.CA.AuditKey)
	if err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(audit.Public())
	if err != nil {
		return err
	}
	if err := writePEM(cfg.path(cfg.CA.AuditPublic), "PUBLIC KEY", pub); err != nil {
		return err
	}

	if o.demo {
		if err := writeDemo(dir, &v); err != nil {
			return err
		}
	}
	if err := os.WriteFile(cfgPath, []byte(renderConfig(v)), 0o600); err != nil {
		return err
	}

	// The only place a store is created.
	db, err := store.Create(cfg.path(cfg.Store.Path), storeOptions(cfg, audit, audit.Public()))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Append(store.AuditRecord{
		Time: time.Now(), Event: store.EventConfig, Verdict: "init",
		Reason: fmt.Sprintf("appliance initialised (key type %s, external root %t, demo %t, key-package signer %t)", kt, o.externalRoot, o.demo, !o.externalRoot),
	}); err != nil {
		return err
	}
	if _, err := db.SignHead(); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "initialised %s\n  config   %s\n", dir, cfgPath)
	fmt.Fprintf(a.stdout, "  checkpoint %s (keep copies off the box: `estca audit checkpoint`)\n", cfg.path(cfg.Store.Checkpoint))
	if !o.externalRoot {
		fmt.Fprintf(a.stdout, "  root     %s\n  issuing  %s\n", cfg.path(cfg.CA.Root), cfg.path(cfg.CA.Issuing))
	}
	if o.demo {
		fmt.Fprintf(a.stdout, "  demo     %s (manufacturer CA and device IDevIDs)\n", filepath.Join(dir, "demo"))
	}
	return nil
}

// writeDemo writes the demo manufacturer CA and device IDevIDs and registers
// the manufacturer as a trusted IDevID anchor.
func writeDemo(dir string, v *configValues) error {
	d, err := ca.Demo(time.Now(), rand.Reader)
	if err != nil {
		return err
	}
	demoDir := filepath.Join(dir, "demo")
	if err := os.MkdirAll(demoDir, 0o700); err != nil {
		return err
	}
	files := map[string][]byte{
		"manufacturer-ca.pem": d.ManufacturerCA.Cert,
		"manufacturer-ca.key": d.ManufacturerCA.Key,
		"device-valid.pem":    d.Valid.Cert,
		"device-valid.key":    d.Valid.Key,
		"device-expired.pem":  d.Expired.Cert,
		"device-expired.key":  d.Expired.Key,
		"device-unknown.pem":  d.Unknown.Cert,
		"device-unknown.key":  d.Unknown.Key,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(demoDir, name), b, 0o600); err != nil {
			return err
		}
	}
	v.Demo = true
	return nil
}

func rel(dir, p string) string {
	if r, err := filepath.Rel(dir, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644)
}

func writeCerts(path string, certs ...*x509.Certificate) error {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return os.WriteFile(path, b, 0o644)
}

type configValues struct {
	Module, Token, PINFile, SoftHSMConf, KeyType string
	ExternalRoot, Demo                           bool
}

var configTemplate = template.Must(template.New("cfg").Parse(`# estca configuration, written by ` + "`estca init`" + `.
# Relative paths are relative to this file's directory. Decoding is strict:
# unknown keys are errors. Secrets are never stored here: the HSM PIN comes
# from hsm.pin_file or the ESTCA_HSM_PIN environment variable.

hsm:
  module: {{.Module}}
  token: {{.Token}}
{{- if .PINFile}}
  pin_file: {{.PINFile}}
{{- end}}
{{- if .SoftHSMConf}}
  softhsm_conf: {{.SoftHSMConf}}   # embedded SoftHSM token of this appliance
{{- end}}
  max_sessions: 0            # 0: sized for the number of CPUs
  sign_with_token_objects: false   # true: sign with the token objects, not session copies of the keys (slower)

ca:
  key_type: {{.KeyType}}
  root: ca/root.pem
  issuing: ca/issuing.pem
  server_cert: ca/server.pem     # DTLS server certificate (key in the token)
  audit_public: ca/audit-public.pem
  issuing_key: estca-issuing     # token labels
  server_key: estca-server
  audit_key: estca-audit
  external_root: {{.ExternalRoot}}

store:
  path: store/estca.db
  checkpoint: store/estca.db.checkpoint   # newest signed audit head, outside the store: keep a copy off the box
  log_checkpoints: true      # also log each new checkpoint as one line, for a journal kept elsewhere
  lock_timeout: 2s
  max_batch_size: 256        # writes group-committed in one transaction (0: 256)
  audit_sign_interval: 1m    # how often the audit chain head is signed in the HSM
  retry_after: 30s           # Max-Age of the 5.03 answered while the store cannot write (disk full)

est:
  listen: ":5684"
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8]
  extended_master_secret: request   # request | require | disable
  max_sessions: 10000
  idle_timeout: 5m
  handshake_rate: 50         # handshakes per second per source address (0: unlimited)
  max_body: 65536            # bytes; larger block-wise bodies get 4.13
  metrics_listen: 127.0.0.1:9684
  admin_socket: run/estca.sock

# Names no device may claim, besides this CA's and its server certificate's
# (always reserved): DNS names, IP addresses, common names.
policy:
  reserved_names: []

# Certificate profiles, selected by the path label (/est/<name>/sen). Every
# profile binds the certificates it issues to the requester's identity (the
# IDevID, or the operational certificate being renewed): see README.md,
# "Policy reference".
default_profile: default
profiles:
  - name: default
    validity: 8760h
    key_types: [ecdsa-p256, ecdsa-p384]
    key_usage:
      ecdsa: [digitalSignature, keyAgreement]
    ext_key_usage: [clientAuth]
    renewal_grace: 720h      # an expired certificate of this profile may still renew for 30 days
    approval: auto           # manual: devices get 5.03 + Max-Age until ` + "`estca requests approve ID`" + `
    operations: [sen, sren, skg, skc]   # skg, skc: server-side key generation in the token
    server_key_type: ecdsa-p256         # ecdsa-p256 | ecdsa-p384 | rsa-2048 | rsa-3072
    require_encrypted_keys: false       # true: refuse skg/skc that do not ask for an encrypted key (4.00)
    escrow_keys: false                  # true: keep generated keys in the token, labelled by serial
{{- if .Demo}}
    # The demo devices (demo/device-*.pem) have IDevIDs with the subject
    # "O=Demo Devices, CN=demo device DEMO-0001, serialNumber=DEMO-0001" and a
    # hardwareModuleName with serial DEMO-0001: their certificates repeat
    # exactly these values. A CSR may repeat them or leave them out; CN=admin,
    # another device's serialNumber or hardware serial, or any DNS/IP name is
    # refused (4.03, 4.00).
    subject:
      - {type: O, from: identity}
      - {type: CN, from: identity}
      - {type: serialNumber, from: identity}   # required: no certificate without the device serial
    san:
      hardware_module_name: identity
{{- end}}

# IDevID trust anchors of device manufacturers.
manufacturers:
{{- if .Demo}}
  - name: demo
    roots: [demo/manufacturer-ca.pem]
    allow_expired: false     # true accepts expired IDevIDs (chain verified at their notAfter)
    crls: []                 # the manufacturer's CRLs, re-read at every reload
    deny_serials: []
    profiles: [default]
{{- else}} []
{{- end}}

# Certificate revocation lists, signed by the issuing key, published at
# start, every refresh and on every revocation; served over HTTP at /crl on
# the metrics listener and on crl.listen, and to devices over CoAP at /est/crl.
crl:
  path: ca/crl.der
  validity: 168h             # nextUpdate - thisUpdate
  refresh: 24h
  listen: ""                 # e.g. ":8080": http://HOST:8080/crl for relying parties
  distribution_point: ""     # e.g. http://ca.example.net:8080/crl: put into every certificate issued

# Server-side key generation (/skg, /skc).
keys:
  signer_key: estca-keypkg          # token label of the key that signs key packages
  signer_cert: ca/keypkg.pem        # its certificate, issued by the issuing CA
  recipients_dir: keys/recipients   # recipient certificates (estca keys add-recipient)
  gcm_auth_attrs: true              # RFC 5083 authAttrs in AES-GCM answers; false for OpenSSL <= 3.6 devices
  package_chain: true               # false: the signer's certificate only (~400 bytes less), for devices that fetch /crts as 281
`))

func renderConfig(v configValues) string {
	var b strings.Builder
	if err := configTemplate.Execute(&b, v); err != nil {
		panic(err) // the template is static
	}
	return b.String()
}
