package main

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/estca/estca/store"
)

// records is what the query commands need from the store. It is served either
// by the store file itself (server stopped) or by a running server's admin
// socket (the store is locked by `estca serve`); both return the same views
// and errors matching the same store sentinels.
type records interface {
	Certificates(q certQuery) ([]certView, error)
	// Certificate returns the certificate with the serial (store form), or
	// an error matching store.ErrNotFound.
	Certificate(serial string) (certView, error)
	AuditRecords(f store.AuditFilter) ([]auditView, error)
	// Verify verifies the whole audit chain and the buckets, and that the
	// store extends each checkpoint.
	Verify(checkpoints []store.Checkpoint) (store.VerifyReport, error)
	// NewestHead returns the newest signed head (the current checkpoint).
	NewestHead() (store.Head, error)
	// Check reads every page of the store.
	Check() (store.CheckReport, error)
	Backup(w io.Writer) (int64, error)
	// Requests lists the enrollment requests in state ("": every one kept).
	Requests(state store.RequestState) ([]requestView, error)
	// Note appends an operator's configuration record (event "config") to
	// the audit trail and signs a head over it.
	Note(verdict, reason string) error
	Close() error
}

// serverRunning reports whether a server answers on the admin socket.
func serverRunning(c *Config) bool { return socketAnswers(c.path(c.EST.AdminSocket)) }

// socketAnswers reports whether a server answers on the admin socket sock.
func socketAnswers(sock string) bool {
	if _, err := os.Stat(sock); err != nil {
		return false
	}
	conn, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// openRecords reaches the store: through the admin socket when a server is
// running, otherwise directly (read-only, or for writing with the audit key
// from the token, since an audit note is signed at once). Neither path
// hangs: the socket has a dial timeout and the store a lock timeout; a
// missing or damaged store is an error, never a new store.
func openRecords(c *Config, write bool) (records, error) {
	if serverRunning(c) {
		return newAdminClient(c.path(c.EST.AdminSocket)), nil
	}
	if !write {
		pub, err := readAuditPublic(c)
		if err != nil {
			return nil, err
		}
		db, err := openStore(c, nil, nil)
		if err != nil {
			return nil, err
		}
		return &directRecords{db: db, pub: pub}, nil
	}
	tok, db, pub, err := openSignedStore(c)
	if err != nil {
		return nil, err
	}
	return &directRecords{db: db, pub: pub, tok: tok}, nil
}

// withRecords runs f on the store, through the running server's admin socket
// or directly (read-only unless write is set).
func withRecords(a *app, write bool, f func(records) error) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	r, err := openRecords(cfg, write)
	if err != nil {
		return err
	}
	defer r.Close()
	return f(r)
}

func readAuditPublic(c *Config) (crypto.PublicKey, error) {
	b, err := os.ReadFile(c.path(c.CA.AuditPublic))
	if err != nil {
		return nil, fmt.Errorf("audit public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("audit public key %s: no PEM block", c.path(c.CA.AuditPublic))
	}
	return x509.ParsePKIXPublicKey(blk.Bytes)
}

// directRecords reads the store file.
type directRecords struct {
	db  *store.DB
	pub crypto.PublicKey
	tok io.Closer // the token, when opened for writing
}

func (d *directRecords) Certificates(q certQuery) ([]certView, error) {
	return listCerts(d.db, q, time.Now())
}
func (d *directRecords) Certificate(s string) (certView, error) { return showCert(d.db, s, time.Now()) }
func (d *directRecords) AuditRecords(f store.AuditFilter) ([]auditView, error) {
	rs, err := d.db.AuditRecords(f)
	return newAuditViews(rs), err
}
func (d *directRecords) Verify(cps []store.Checkpoint) (store.VerifyReport, error) {
	return d.db.Verify(d.pub, cps...)
}
func (d *directRecords) NewestHead() (store.Head, error)   { return d.db.NewestHead() }
func (d *directRecords) Check() (store.CheckReport, error) { return d.db.Check() }
func (d *directRecords) Backup(w io.Writer) (int64, error) { return d.db.Backup(w) }
func (d *directRecords) Requests(state store.RequestState) ([]requestView, error) {
	rs, err := d.db.Requests(state)
	return requestViews(rs), err
}
func (d *directRecords) Note(verdict, reason string) error {
	return noteIn(d.db, verdict, reason, "operator:cli")
}
func (d *directRecords) Close() error {
	err := d.db.Close()
	if d.tok != nil {
		err = errors.Join(err, d.tok.Close())
	}
	return err
}

// noteIn appends an operator's configuration record and signs a head over it.
func noteIn(db *store.DB, verdict, reason, who string) error {
	if verdict == "" || reason == "" {
		return fmt.Errorf("%w: an audit note needs a verdict and a reason", store.ErrInvalid)
	}
	if _, err := db.Append(store.AuditRecord{Event: store.EventConfig, Verdict: verdict, Reason: reason,
		Requester: store.Identity{Subject: who}}); err != nil {
		return err
	}
	return signHead(db)
}
