package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/store"
)

// keyOps are the `estca keys` operations on a stopped appliance (token and
// store opened here) or on a running server (its admin socket). Every
// change is audited by whoever holds the store.
type keyOps interface {
	List() (keysView, error)
	DestroyEscrowed(serial string) error
	ImportKEK(id, key []byte) error
	DeleteKEK(id []byte) error
	AddRecipient(identity string, certDER []byte) (bool, error)
	RemoveRecipient(identity string, keyID []byte) (int, error)
	Close() error
}

// keyManager carries out the operations with the token and the store.
type keyManager struct {
	tok    *hsm.Token
	db     *store.DB
	recips recipientDir
	who    string // who the audit records name: operator:cli, operator:admin-socket
	closer func() error
}

func (m *keyManager) audit(ev store.Event, verdict, serial, reason string) error {
	_, err := m.db.Append(store.AuditRecord{Time: time.Now(), Event: ev, Serial: serial,
		Requester: store.Identity{Subject: m.who}, Verdict: verdict, Reason: reason, Flags: []string{"keys"}})
	if err != nil {
		return fmt.Errorf("done, but the audit record could not be written: %w", err)
	}
	return nil
}

func (m *keyManager) List() (keysView, error) {
	var l keysView
	es, err := m.tok.EscrowedKeys()
	if err != nil {
		return l, err
	}
	for _, e := range es {
		l.Escrowed = append(l.Escrowed, escrowView{Serial: e.Serial, KeyType: string(e.Type), Label: e.Label})
	}
	ks, err := m.tok.KEKs()
	if err != nil {
		return l, err
	}
	for _, k := range ks {
		l.KEKs = append(l.KEKs, kekView{ID: hex.EncodeToString(k.ID), Bits: k.Bits})
	}
	rs, err := m.recips.All()
	if err != nil {
		return l, err
	}
	for _, r := range rs {
		id, _ := client.KeyIdentifier(r.Cert)
		l.Recipients = append(l.Recipients, recipientView{Identity: r.Identity, Subject: r.Cert.Subject.String(),
			KeyID: hex.EncodeToString(id), NotAfter: r.Cert.NotAfter.UTC()})
	}
	return l, nil
}

func (m *keyManager) DestroyEscrowed(serial string) error {
	if err := m.tok.DestroyEscrowed(serial); err != nil {
		return err
	}
	return m.audit(store.EventKeygen, ca.VerdictDestroyed, serial, "escrowed key destroyed by the operator")
}

func (m *keyManager) ImportKEK(id, key []byte) error {
	defer clear(key)
	if err := m.tok.ImportKEK(id, key); err != nil {
		return err
	}
	return m.audit(store.EventConfig, "kek-imported", "", fmt.Sprintf("key-encryption key %x (AES-%d) imported into the token", id, 8*len(key)))
}

func (m *keyManager) DeleteKEK(id []byte) error {
	if err := m.tok.DeleteKEK(id); err != nil {
		return err
	}
	return m.audit(store.EventConfig, "kek-deleted", "", fmt.Sprintf("key-encryption key %x deleted from the token", id))
}

func (m *keyManager) AddRecipient(identity string, der []byte) (bool, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return false, err
	}
	added, err := m.recips.Add(identity, c)
	if err != nil || !added {
		return added, err
	}
	id, _ := client.KeyIdentifier(c)
	return true, m.audit(store.EventConfig, "recipient-added", "",
		fmt.Sprintf("recipient certificate %s (key id %x) registered for %s", clipText(c.Subject.String()), id, identity))
}

func (m *keyManager) RemoveRecipient(identity string, keyID []byte) (int, error) {
	n, err := m.recips.Remove(identity, keyID)
	if err != nil || n == 0 {
		return n, err
	}
	return n, m.audit(store.EventConfig, "recipient-removed", "", fmt.Sprintf("%d recipient certificate(s) unregistered for %s", n, identity))
}

func (m *keyManager) Close() error {
	if m.closer != nil {
		return m.closer()
	}
	return nil
}

func clipText(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// openKeyOps reaches the key operations: through the admin socket of a
// running server, or with the token and the store of a stopped appliance.
func openKeyOps(cfg *Config) (keyOps, error) {
	if serverRunning(cfg) {
		return &keysAdminClient{c: newAdminClient(cfg.path(cfg.EST.AdminSocket))}, nil
	}
	return openDirectKeys(cfg)
}

// openDirectKeys opens the token and the store of a stopped appliance for
// the key operations.
func openDirectKeys(cfg *Config) (*keyManager, error) {
	tok, db, _, err := openSignedStore(cfg)
	if err != nil {
		return nil, err
	}
	return &keyManager{tok: tok, db: db, recips: recipientDir{cfg.path(cfg.Keys.RecipientsDir)}, who: "operator:cli",
		closer: func() error { return errors.Join(db.Close(), tok.Close()) }}, nil
}

// keysAdminHandler serves the key operations of a running server on its
// admin socket (0600), answering with adminReply and adminFail (a refusal
// is a row of adminErrors). A KEK to import travels in the request body over
// that local socket and is zeroed once imported.
func keysAdminHandler(m *keyManager) http.Handler {
	mux := http.NewServeMux()
	type body struct {
		Serial   string `json:"serial,omitempty"`
		ID       string `json:"id,omitempty"`
		Key      []byte `json:"key,omitempty"`
		Identity string `json:"identity,omitempty"`
		Cert     []byte `json:"cert,omitempty"`
	}
	hexID := func(what, s string) ([]byte, error) {
		id, err := hex.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %q is not hex", store.ErrInvalid, what, s)
		}
		return id, nil
	}
	handle := func(pattern string, f func(b *body) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			var b body
			err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&b)
			defer clear(b.Key)
			if err != nil && !errors.Is(err, io.EOF) {
				adminFail(w, fmt.Errorf("%w: %v", store.ErrInvalid, err))
				return
			}
			out, err := f(&b)
			if err != nil {
				adminFail(w, err)
				return
			}
			adminReply(w, out)
		})
	}
	handle("POST /v1/keys/list", func(*body) (any, error) { return m.List() })
	handle("POST /v1/keys/destroy", func(b *body) (any, error) {
		serial, err := parseSerial(b.Serial)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", store.ErrInvalid, err)
		}
		return true, m.DestroyEscrowed(serial)
	})
	handle("POST /v1/keys/import-kek", func(b *body) (any, error) {
		id, err := hexID("KEK id", b.ID)
		if err != nil {
			return nil, err
		}
		return true, m.ImportKEK(id, bytes.Clone(b.Key))
	})
	handle("POST /v1/keys/delete-kek", func(b *body) (any, error) {
		id, err := hexID("KEK id", b.ID)
		if err != nil {
			return nil, err
		}
		return true, m.DeleteKEK(id)
	})
	handle("POST /v1/keys/add-recipient", func(b *body) (any, error) { return m.AddRecipient(b.Identity, b.Cert) })
	handle("POST /v1/keys/remove-recipient", func(b *body) (any, error) {
		id, err := hexID("key id", b.ID)
		if err != nil {
			return nil, err
		}
		return m.RemoveRecipient(b.Identity, id)
	})
	return mux
}

// keysAdminClient is keyOps through a running server's admin socket.
type keysAdminClient struct{ c *adminClient }

func (k *keysAdminClient) call(op string, in, out any) error {
	return k.c.doBody("POST", "/v1/keys/"+op, in, out)
}

func (k *keysAdminClient) List() (keysView, error) {
	var l keysView
	return l, k.call("list", struct{}{}, &l)
}

func (k *keysAdminClient) DestroyEscrowed(serial string) error {
	var ok bool
	return k.call("destroy", map[string]string{"serial": serial}, &ok)
}

func (k *keysAdminClient) ImportKEK(id, key []byte) error {
	defer clear(key)
	var ok bool
	return k.call("import-kek", map[string]any{"id": hex.EncodeToString(id), "key": key}, &ok)
}

func (k *keysAdminClient) DeleteKEK(id []byte) error {
	var ok bool
	return k.call("delete-kek", map[string]string{"id": hex.EncodeToString(id)}, &ok)
}

func (k *keysAdminClient) AddRecipient(identity string, der []byte) (bool, error) {
	var added bool
	return added, k.call("add-recipient", map[string]any{"identity": identity, "cert": der}, &added)
}

func (k *keysAdminClient) RemoveRecipient(identity string, keyID []byte) (int, error) {
	var n int
	return n, k.call("remove-recipient", map[string]string{"identity": identity, "id": hex.EncodeToString(keyID)}, &n)
}

func (k *keysAdminClient) Close() error { return nil }

// decodeKEK checks a KEK identifier and key given in hex.
func decodeKEK(idHex, keyHex string) ([]byte, []byte, error) {
	id, err := hex.DecodeString(strings.TrimSpace(idHex))
	if err != nil || len(id) == 0 || len(id) > hsm.MaxKEKIDLen {
		return nil, nil, fmt.Errorf("KEK id must be 1 to %d bytes in hex", hsm.MaxKEKIDLen)
	}
	key, err := hex.DecodeString(strings.Join(strings.Fields(keyHex), ""))
	if err != nil || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
		clear(key)
		return nil, nil, errors.New("KEK must be 16, 24 or 32 bytes in hex (as openssl cms -secretkey takes it)")
	}
	return id, key, nil
}

// readKEKFile reads a KEK written in hex (white space ignored); the buffer
// read is zeroed.
func readKEKFile(idHex, path string) ([]byte, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	defer clear(b)
	return decodeKEK(idHex, string(b))
}

func keysCommands() []*command {
	withKeys := func(a *app, f func(k keyOps) error) error {
		cfg, err := a.config()
		if err != nil {
			return err
		}
		k, err := openKeyOps(cfg)
		if err != nil {
			return err
		}
		defer k.Close()
		return f(k)
	}
	var asJSON bool
	var kekID, kekFile, identity, forCert, anchor, certFile, keyID string
	return []*command{
		{
			name: "keys list", args: "[--json]",
			noArgs: true,
			summary: "List the escrowed keys, key-encryption keys and recipient certificates of /skg and /skc.\n\n" +
				"Escrowed keys in the token by certificate serial, the pre-shared key-encryption keys by id,\n" +
				"the registered recipient certificates by device identity. Through the running server's admin\n" +
				"socket, or with the token of a stopped appliance.",
			flags: func(fs *flag.FlagSet) {
				fs.BoolVar(&asJSON, "json", false, "print a JSON object of escrowed, keks and recipients (fields: see README, JSON output)")
			},
			run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
				return withKeys(a, func(k keyOps) error {
					l, err := k.List()
					if err != nil {
						return err
					}
					if asJSON {
						return printJSON(a, l)
					}
					tw := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
					fmt.Fprintf(tw, "escrowed keys: %d\n", len(l.Escrowed))
					for _, e := range l.Escrowed {
						fmt.Fprintf(tw, "  serial %s\t%s\t%s\n", e.Serial, e.KeyType, e.Label)
					}
					fmt.Fprintf(tw, "key-encryption keys: %d\n", len(l.KEKs))
					for _, e := range l.KEKs {
						fmt.Fprintf(tw, "  id %s\tAES-%d\n", e.ID, e.Bits)
					}
					fmt.Fprintf(tw, "recipient certificates: %d\n", len(l.Recipients))
					for _, r := range l.Recipients {
						fmt.Fprintf(tw, "  %s\tkey id %s\t%s\tuntil %s\n", r.Identity, r.KeyID, r.Subject, r.NotAfter.UTC().Format(time.DateOnly))
					}
					return tw.Flush()
				})
			},
		},
		{
			name: "keys destroy", args: "SERIAL",
			summary: "Destroy the escrowed key of the certificate SERIAL in the token (audited).\n\n" +
				"SERIAL in any form the commands read (see Serials). Exit 1 with a plain message when the\n" +
				"token has no escrowed key for it.",
			run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
				serial, err := serialArg(args)
				if err != nil {
					return err
				}
				return withKeys(a, func(k keyOps) error {
					if err := k.DestroyEscrowed(serial); err != nil {
						if errors.Is(err, hsm.ErrKeyNotFound) || errors.Is(err, store.ErrNotFound) {
							return fmt.Errorf("no escrowed key for serial %s", serial)
						}
						return err
					}
					fmt.Fprintf(a.stdout, "destroyed the escrowed key of %s\n", serial)
					return nil
				})
			},
		},
		{
			name: "keys import-kek", args: "--id HEX --file F",
			summary: "Import a pre-shared AES key-encryption key into the token (audited).\n\n" +
				"The key (16, 24 or 32 bytes, in hex in F) becomes non-extractable in the token, under the\n" +
				"identifier devices name in their DecryptKeyIdentifier. Through the running server's admin\n" +
				"socket (mode 0600) the key travels to the server and is zeroed after the import.",
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&kekID, "id", "", "key identifier in `HEX` (the DecryptKeyIdentifier)")
				fs.StringVar(&kekFile, "file", "", "`FILE` holding the key in hex")
			},
			run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
				if kekID == "" || kekFile == "" || len(args) > 0 {
					return usageErrorf("--id and --file are required, and no arguments")
				}
				id, key, err := readKEKFile(kekID, kekFile)
				if err != nil {
					return asUsage(err)
				}
				defer clear(key)
				return withKeys(a, func(k keyOps) error {
					if err := k.ImportKEK(id, key); err != nil {
						if errors.Is(err, hsm.ErrKeyExists) {
							return fmt.Errorf("the token holds a key-encryption key %x already (`estca keys delete-kek --id %x` first to replace it)", id, id)
						}
						return err
					}
					fmt.Fprintf(a.stdout, "imported key-encryption key %x (AES-%d)\n", id, 8*len(key))
					return nil
				})
			},
		},
		{
			name: "keys delete-kek", args: "--id HEX",
			summary: "Delete a key-encryption key from the token (audited).\n\n" +
				"Devices naming it get 4.00 \"unknown key-encryption key\" from then on.",
			flags: func(fs *flag.FlagSet) { fs.StringVar(&kekID, "id", "", "key identifier in `HEX`") },
			run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
				id, err := hex.DecodeString(kekID)
				if err != nil || len(id) == 0 || len(args) > 0 {
					return usageErrorf("--id HEX is required, and no arguments")
				}
				return withKeys(a, func(k keyOps) error {
					if err := k.DeleteKEK(id); err != nil {
						if errors.Is(err, hsm.ErrKeyNotFound) {
							return fmt.Errorf("no key-encryption key %x in the token (see `estca keys list`)", id)
						}
						return err
					}
					fmt.Fprintf(a.stdout, "deleted key-encryption key %x\n", id)
					return nil
				})
			},
		},
		{
			name: "keys add-recipient", args: "--cert R.pem (--identity ID | --for-cert DEVICE.pem [--anchor NAME])",
			summary: "Register a recipient certificate for a device identity (audited).\n\n" +
				"A device naming its key (AsymmetricDecryptKeyIdentifier) gets its server-generated key\n" +
				"encrypted to it. The identity is idevid/ANCHOR/sn:SERIAL for an IDevID with a serialNumber attribute,\n" +
				"operational/subject:HASH for an operational certificate; --for-cert computes it from the\n" +
				"device's certificate (an IDevID of manufacturer --anchor, or one this CA issued).",
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&certFile, "cert", "", "recipient certificate `PEM` (RSA >= 2048, P-256 or P-384)")
				fs.StringVar(&identity, "identity", "", "device identity `ID`")
				fs.StringVar(&forCert, "for-cert", "", "device certificate `PEM` to compute the identity from")
				fs.StringVar(&anchor, "anchor", "", "manufacturer `NAME` of an IDevID given with --for-cert")
			},
			run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
				if certFile == "" || (identity == "") == (forCert == "") || len(args) > 0 {
					return usageErrorf("--cert and one of --identity or --for-cert are required, and no arguments")
				}
				rc, err := readCert(certFile)
				if err != nil {
					return err
				}
				id := identity
				if forCert != "" {
					if id, err = identityOf(forCert, anchor); err != nil {
						return err
					}
				}
				if err := checkIdentity(id); err != nil {
					return asUsage(err)
				}
				return withKeys(a, func(k keyOps) error {
					added, err := k.AddRecipient(id, rc.Raw)
					if err != nil {
						return err
					}
					kid, _ := client.KeyIdentifier(rc)
					if !added {
						fmt.Fprintf(a.stdout, "already registered for %s (key id %x)\n", id, kid)
						return nil
					}
					fmt.Fprintf(a.stdout, "registered %s for %s (key id %x)\n", rc.Subject, id, kid)
					return nil
				})
			},
		},
		{
			name: "keys remove-recipient", args: "--identity ID [--key-id HEX]",
			summary: "Unregister the recipient certificates of a device identity (audited).\n\n" +
				"All of them, or the one whose key identifier is --key-id.",
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&identity, "identity", "", "device identity `ID`")
				fs.StringVar(&keyID, "key-id", "", "key identifier in `HEX` (default: all)")
			},
			run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
				kid, err := hex.DecodeString(keyID)
				if identity == "" || err != nil || len(args) > 0 {
					return usageErrorf("--identity is required, --key-id is hex, and no arguments")
				}
				return withKeys(a, func(k keyOps) error {
					n, err := k.RemoveRecipient(identity, kid)
					if err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "unregistered %d recipient certificate(s) of %s\n", n, identity)
					return nil
				})
			},
		},
		{
			name: "keys init-signer", args: "",
			noArgs: true,
			summary: "Issue the key-package signer certificate (server stopped).\n\n" +
				"Creates the key-package signing key (keys.signer_key) if missing and issues its certificate\n" +
				"(keys.signer_cert) under the issuing CA, e.g. for an appliance initialised before server-side\n" +
				"key generation existed, or to renew it (`estca serve` also does when it is missing or expires\n" +
				"within 30 days).",
			run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
				cfg, err := a.config()
				if err != nil {
					return err
				}
				m, err := openDirectKeys(cfg)
				if err != nil {
					return err
				}
				defer m.Close()
				c, err := issueKeySigner(cfg, m.tok, m.db, "operator:cli")
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "key-package signer certificate serial %x, valid until %s, written to %s\n",
					c.SerialNumber, c.NotAfter.UTC().Format(time.RFC3339), cfg.path(cfg.Keys.SignerCert))
				return nil
			},
		},
	}
}

// identityOf computes the identity of a device certificate: an IDevID of
// manufacturer anchor, or, without anchor, an operational certificate.
func identityOf(path, anchor string) (string, error) {
	c, err := readCert(path)
	if err != nil {
		return "", err
	}
	r := ca.Requester{Kind: ca.KindOperational, Chain: []*x509.Certificate{c}}
	if anchor != "" {
		r.Kind, r.Anchor = ca.KindIDevID, anchor
	}
	return ca.RequesterIdentity(r), nil
}

// issueKeySigner issues the key-package signer certificate (creating the
// key if missing) with the issuing key of the token, writes it to
// keys.signer_cert and audits it.
func issueKeySigner(cfg *Config, tok *hsm.Token, db *store.DB, who string) (*x509.Certificate, error) {
	issuing, err := readCert(cfg.path(cfg.CA.Issuing))
	if err != nil {
		return nil, fmt.Errorf("issuing CA certificate: %w", err)
	}
	key, err := tok.FindKey(cfg.CA.IssuingKey)
	if err != nil {
		return nil, fmt.Errorf("issuing key %q: %w", cfg.CA.IssuingKey, err)
	}
	c, err := ca.IssueKeyPackageSigner(tok, cfg.Keys.SignerKey, ca.VerifySigner(key, issuing.PublicKey, nil), issuing, ca.InitOptions{})
	if err != nil {
		return nil, err
	}
	if err := writeCerts(cfg.path(cfg.Keys.SignerCert), c); err != nil {
		return nil, err
	}
	if db != nil {
		if _, err := db.Append(store.AuditRecord{Time: time.Now(), Event: store.EventConfig, Verdict: "keypkg-signer",
			Requester: store.Identity{Subject: who},
			Reason: fmt.Sprintf("key-package signer certificate serial %x issued for token key %q, valid until %s",
				c.SerialNumber, cfg.Keys.SignerKey, c.NotAfter.UTC().Format(time.RFC3339))}); err != nil {
			return nil, err
		}
	}
	return c, nil
}
