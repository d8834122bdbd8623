package store

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// fixedNow is the test clock.
var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// auditKey returns a fresh software audit key (the HSM's stand-in here:
// the store only sees a crypto.Signer).
func auditKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// withKey sets the audit signer, public key and a checkpoint file next to path.
func withKey(opts Options, key *ecdsa.PrivateKey, path string) Options {
	opts.Signer, opts.AuditKey = key, &key.PublicKey
	opts.Checkpoint = path + ".checkpoint"
	return opts
}

// openTest creates a store in a fresh temp dir, with a software audit key
// that signed head 1 (records 1 "created" and 2, the head); the cleanup
// checks the bbolt file (tx.Check) and closes it.
func openTest(t testing.TB, opts Options) (*DB, string) {
	t.Helper()
	db, path, _ := openKeyed(t, opts)
	return db, path
}

// createdRecords is how many records a fresh test store holds.
const createdRecords = 2

func openKeyed(t testing.TB, opts Options) (*DB, string, *ecdsa.PrivateKey) {
	t.Helper()
	key := auditKey(t)
	path := filepath.Join(t.TempDir(), "estca.db")
	db, err := Create(path, withKey(opts, key, path))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if !db.closed.Load() {
			checkDB(t, db)
		}
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db, path, key
}

// checkDB runs bbolt's consistency check over the whole file.
func checkDB(t testing.TB, db *DB) {
	t.Helper()
	err := db.bolt.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
	if err != nil {
		t.Errorf("bbolt check: %v", err)
	}
}

// certMaker makes real DER certificates with a chosen serial.
type certMaker struct {
	key *ecdsa.PrivateKey
}

func newCertMaker(t testing.TB) *certMaker {
	t.Helper()
	return &certMaker{key: auditKey(t)}
}

// der returns a self-signed certificate with the given hex serial.
func (m *certMaker) der(t testing.TB, serial string) []byte {
	t.Helper()
	n, ok := new(big.Int).SetString(serial, 16)
	if !ok {
		t.Fatalf("bad serial %q", serial)
	}
	tmpl := &x509.Certificate{
		SerialNumber: n,
		Subject:      pkix.Name{CommonName: "device-" + serial},
		NotBefore:    fixedNow,
		NotAfter:     fixedNow.Add(365 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &m.key.PublicKey, m.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// cert builds a Certificate for serial issued to requester for a CSR named csr.
func (m *certMaker) cert(t testing.TB, serial, requester, csr string) Certificate {
	t.Helper()
	ski := sha256.Sum256([]byte("key-" + serial))
	return Certificate{
		Serial:    serial,
		DER:       m.der(t, serial),
		Subject:   "CN=device-" + serial,
		SKI:       ski[:20],
		Requester: requester,
		Profile:   "default",
		CSRDigest: digest(csr),
		NotBefore: fixedNow,
		NotAfter:  fixedNow.Add(365 * 24 * time.Hour),
	}
}

// digest is the hex SHA-256 of s, standing in for a CSR digest.
func digest(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

// fp is a requester fingerprint for a name.
func fp(name string) string { return digest("client-cert-" + name) }

// ident is an Identity for name.
func ident(name string) Identity {
	return Identity{Fingerprint: fp(name), Subject: "CN=" + name + ",O=Acme", IDevIDSerial: "SN-" + name, Anchor: "acme", Kind: "idevid"}
}

// serialOf returns the serial for the i-th test certificate (no leading zeros).
func serialOf(i int) string { return fmt.Sprintf("%x", 0x1000+i) }
