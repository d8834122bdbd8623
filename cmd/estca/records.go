package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/estca/estca/store"
)

// records is what the query commands need from the store. It is served either
// by the store file itself (server stopped) or by a running server's admin
// socket (the store is locked by `estca serve`).
type records interface {
	Certificates(f store.CertFilter) ([]store.Certificate, error)
	Certificate(serial string) (store.Certificate, error)
	AuditRecords(f store.AuditFilter) ([]store.AuditRecord, error)
	Verify() (store.VerifyReport, error)
	Backup(w io.Writer) (int64, error)
	Revoke(serial string, reason int) error
	Close() error
}

// openRecords reaches the store: through the admin socket when a server is
// running, otherwise directly. Neither path hangs: the socket has a dial
// timeout and the store a lock timeout.
func openRecords(c *Config, write bool) (records, error) {
	sock := c.path(c.EST.AdminSocket)
	if _, err := os.Stat(sock); err == nil {
		conn, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			conn.Close()
			return newAdminClient(sock), nil
		}
	}
	// Queries never create a store: a mistyped path must not "verify".
	if _, err := os.Stat(c.path(c.Store.Path)); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := openStore(c, !write)
	if err != nil {
		return nil, err
	}
	pub, err := readAuditPublic(c)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &directRecords{db: db, pub: pub}, nil
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
}

func (d *directRecords) Certificates(f store.CertFilter) ([]store.Certificate, error) {
	return d.db.Certificates(f)
}
func (d *directRecords) Certificate(s string) (store.Certificate, error) { return d.db.Certificate(s) }
func (d *directRecords) AuditRecords(f store.AuditFilter) ([]store.AuditRecord, error) {
	return d.db.AuditRecords(f)
}
func (d *directRecords) Verify() (store.VerifyReport, error) { return d.db.Verify(d.pub) }
func (d *directRecords) Backup(w io.Writer) (int64, error)   { return d.db.Backup(w) }
func (d *directRecords) Revoke(serial string, reason int) error {
	return revokeIn(d.db, serial, reason, "operator:cli")
}
func (d *directRecords) Close() error { return d.db.Close() }

// revokeIn revokes serial in db with its audit record.
func revokeIn(db *store.DB, serial string, reason int, who string) error {
	c, err := db.Certificate(serial)
	if err != nil {
		return err
	}
	now := time.Now()
	return db.Revoke(c.Serial, reason, now, store.AuditRecord{
		Time: now, Event: store.EventRevoked, Serial: c.Serial, Profile: c.Profile,
		Requester: store.Identity{Subject: who}, Verdict: "revoked",
		Reason: fmt.Sprintf("reason code %d", reason),
	})
}

// The admin protocol: HTTP/1.1 with JSON over the 0600 unix socket.

type verifyResponse struct {
	Report store.VerifyReport `json:"report"`
	Seq    uint64             `json:"bad_seq,omitempty"`
	Reason string             `json:"reason,omitempty"`
	Error  string             `json:"error,omitempty"`
}

type errorResponse struct {
	Error    string `json:"error"`
	NotFound bool   `json:"not_found,omitempty"`
}

// adminHandler serves the admin protocol from a running server's store.
func adminHandler(db *store.DB, pub crypto.PublicKey) http.Handler {
	mux := http.NewServeMux()
	fail := func(w http.ResponseWriter, err error) {
		w.Header().Set("Content-Type", "application/json")
		code := http.StatusInternalServerError
		if errors.Is(err, store.ErrNotFound) {
			code = http.StatusNotFound
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(errorResponse{Error: err.Error(), NotFound: code == http.StatusNotFound})
	}
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/certs", func(w http.ResponseWriter, r *http.Request) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		cs, err := db.Certificates(store.CertFilter{Limit: limit, After: r.URL.Query().Get("after")})
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, cs)
	})
	mux.HandleFunc("GET /v1/certs/{serial}", func(w http.ResponseWriter, r *http.Request) {
		c, err := db.Certificate(r.PathValue("serial"))
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, c)
	})
	mux.HandleFunc("GET /v1/audit", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := store.AuditFilter{Serial: q.Get("serial"), Requester: q.Get("requester")}
		f.Limit, _ = strconv.Atoi(q.Get("limit"))
		if s := q.Get("since"); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				fail(w, fmt.Errorf("bad since: %w", err))
				return
			}
			f.Since = t
		}
		recs, err := db.AuditRecords(f)
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, recs)
	})
	mux.HandleFunc("POST /v1/audit/verify", func(w http.ResponseWriter, r *http.Request) {
		rep, err := db.Verify(pub)
		resp := verifyResponse{Report: rep}
		var ve *store.VerifyError
		switch {
		case errors.As(err, &ve):
			resp.Seq, resp.Reason = ve.Seq, ve.Reason
		case err != nil:
			resp.Error = err.Error()
		}
		reply(w, resp)
	})
	mux.HandleFunc("GET /v1/backup", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		if _, err := db.Backup(w); err != nil {
			// The status is sent already: cut the stream so that the client
			// sees a failure, not a short file.
			panic(http.ErrAbortHandler)
		}
	})
	mux.HandleFunc("POST /v1/revoke", func(w http.ResponseWriter, r *http.Request) {
		reason, err := strconv.Atoi(r.URL.Query().Get("reason"))
		if err != nil {
			fail(w, fmt.Errorf("bad reason code %q", r.URL.Query().Get("reason")))
			return
		}
		if err := revokeIn(db, r.URL.Query().Get("serial"), reason, "operator:admin-socket"); err != nil {
			fail(w, err)
			return
		}
		reply(w, map[string]bool{"ok": true})
	})
	return mux
}

// adminClient speaks the admin protocol.
type adminClient struct {
	hc *http.Client
}

func newAdminClient(sock string) *adminClient {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	return &adminClient{hc: &http.Client{Transport: tr, Timeout: 5 * time.Minute}}
}

func (c *adminClient) do(method, path string, q url.Values, out any) error {
	u := "http://estca" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e errorResponse
		json.NewDecoder(resp.Body).Decode(&e)
		if e.NotFound {
			return fmt.Errorf("%w (%s)", store.ErrNotFound, e.Error)
		}
		return fmt.Errorf("admin socket: %s: %s", resp.Status, e.Error)
	}
	if w, ok := out.(io.Writer); ok {
		_, err = io.Copy(w, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *adminClient) Certificates(f store.CertFilter) ([]store.Certificate, error) {
	var out []store.Certificate
	q := url.Values{}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.After != "" {
		q.Set("after", f.After)
	}
	return out, c.do("GET", "/v1/certs", q, &out)
}

func (c *adminClient) Certificate(serial string) (store.Certificate, error) {
	var out store.Certificate
	return out, c.do("GET", "/v1/certs/"+url.PathEscape(serial), nil, &out)
}

func (c *adminClient) AuditRecords(f store.AuditFilter) ([]store.AuditRecord, error) {
	q := url.Values{}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.Format(time.RFC3339Nano))
	}
	if f.Serial != "" {
		q.Set("serial", f.Serial)
	}
	if f.Requester != "" {
		q.Set("requester", f.Requester)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out []store.AuditRecord
	return out, c.do("GET", "/v1/audit", q, &out)
}

func (c *adminClient) Verify() (store.VerifyReport, error) {
	var out verifyResponse
	if err := c.do("POST", "/v1/audit/verify", nil, &out); err != nil {
		return store.VerifyReport{}, err
	}
	switch {
	case out.Reason != "":
		return out.Report, &store.VerifyError{Seq: out.Seq, Reason: out.Reason}
	case out.Error != "":
		return out.Report, errors.New(out.Error)
	}
	return out.Report, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (cw *countWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}

func (c *adminClient) Backup(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	err := c.do("GET", "/v1/backup", nil, io.Writer(cw))
	return cw.n, err
}

func (c *adminClient) Revoke(serial string, reason int) error {
	var out map[string]bool
	return c.do("POST", "/v1/revoke", url.Values{"serial": {serial}, "reason": {strconv.Itoa(reason)}}, &out)
}

func (c *adminClient) Close() error { return nil }
