package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/estca/estca/est/client"
)

// recipientDir is the registry of recipient certificates for server-side
// key generation (`estca keys add-recipient`): a device asking for its key
// encrypted to a key identifier (AsymmetricDecryptKeyIdentifier) gets it for
// its own certificate's key or for one registered for its identity
// (ca.RequesterIdentity). One PEM file per identity, named by the SHA-256 of
// the identity, each CERTIFICATE block with an "Identity" header. It
// implements ca.Recipients; files are read at each lookup, so that a
// registration takes effect at once on a running server.
type recipientDir struct{ dir string }

// maxRecipientFile bounds what one registration file may hold.
const maxRecipientFile = 1 << 20

func (r recipientDir) file(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return filepath.Join(r.dir, hex.EncodeToString(sum[:])+".pem")
}

// recipientEntry is one registered certificate.
type recipientEntry struct {
	Identity string
	Cert     *x509.Certificate
}

// readFile returns the entries of one registration file; a missing file
// has none.
func readRecipientFile(path string) ([]recipientEntry, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRecipientFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxRecipientFile {
		return nil, fmt.Errorf("recipient file %s is larger than %d bytes", path, maxRecipientFile)
	}
	var out []recipientEntry
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("recipient file %s: %w", path, err)
		}
		out = append(out, recipientEntry{Identity: blk.Headers["Identity"], Cert: c})
	}
	return out, nil
}

// RecipientCertificates implements ca.Recipients.
func (r recipientDir) RecipientCertificates(identity string) ([]*x509.Certificate, error) {
	es, err := readRecipientFile(r.file(identity))
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for _, e := range es {
		if e.Identity == identity {
			out = append(out, e.Cert)
		}
	}
	return out, nil
}

// All returns every registration, by file.
func (r recipientDir) All() ([]recipientEntry, error) {
	names, err := filepath.Glob(filepath.Join(r.dir, "*.pem"))
	if err != nil {
		return nil, err
	}
	var out []recipientEntry
	for _, n := range names {
		es, err := readRecipientFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
	}
	return out, nil
}

// write replaces the registration file of identity with es (removing it
// when es is empty), through a temporary file and a rename.
func (r recipientDir) write(identity string, es []recipientEntry) error {
	path := r.file(identity)
	if len(es) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return err
	}
	var b bytes.Buffer
	for _, e := range es {
		if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Identity": e.Identity}, Bytes: e.Cert.Raw}); err != nil {
			return err
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Add registers cert for identity; registering it again changes nothing.
func (r recipientDir) Add(identity string, cert *x509.Certificate) (bool, error) {
	if err := checkIdentity(identity); err != nil {
		return false, err
	}
	es, err := readRecipientFile(r.file(identity))
	if err != nil {
		return false, err
	}
	if slices.ContainsFunc(es, func(e recipientEntry) bool { return e.Identity == identity && e.Cert.Equal(cert) }) {
		return false, nil
	}
	return true, r.write(identity, append(es, recipientEntry{Identity: identity, Cert: cert}))
}

// Remove unregisters the certificates of identity whose key identifier
// (client.KeyIdentifier) is keyID, or all of them for an empty keyID; it
// returns how many.
func (r recipientDir) Remove(identity string, keyID []byte) (int, error) {
	es, err := readRecipientFile(r.file(identity))
	if err != nil {
		return 0, err
	}
	keep := es[:0]
	n := 0
	for _, e := range es {
		id, _ := client.KeyIdentifier(e.Cert)
		if e.Identity == identity && (len(keyID) == 0 || bytes.Equal(id, keyID)) {
			n++
			continue
		}
		keep = append(keep, e)
	}
	if n == 0 {
		return 0, nil
	}
	return n, r.write(identity, keep)
}

// checkIdentity accepts the identities ca.RequesterIdentity makes.
func checkIdentity(id string) error {
	if (!strings.HasPrefix(id, "idevid/") && !strings.HasPrefix(id, "operational/subject:")) || len(id) > 256 ||
		strings.ContainsAny(id, "\r\n\x00") {
		return fmt.Errorf("identity %q: want idevid/ANCHOR/sn:SERIAL, idevid/ANCHOR/fp:SHA256 or operational/subject:HASH", id)
	}
	return nil
}
