package main

import (
	"bytes"
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
	// Verify verifies the whole audit chain and the buckets, and that the
	// store extends each checkpoint.
	Verify(checkpoints []store.Checkpoint) (store.VerifyReport, error)
	// NewestHead returns the newest signed head (the current checkpoint).
	NewestHead() (store.Head, error)
	// Check reads every page of the store.
	Check() (store.CheckReport, error)
	Backup(w io.Writer) (int64, error)
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
// from the token, since a revocation is signed at once). Neither path
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
	tok, signer, pub, err := openAuditToken(c)
	if err != nil {
		return nil, err
	}
	db, err := openStore(c, signer, pub)
	if err != nil {
		tok.Close()
		return nil, err
	}
	return &directRecords{db: db, pub: pub, tok: tok}, nil
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

func (d *directRecords) Certificates(f store.CertFilter) ([]store.Certificate, error) {
	return d.db.Certificates(f)
}
func (d *directRecords) Certificate(s string) (store.Certificate, error) { return d.db.Certificate(s) }
func (d *directRecords) AuditRecords(f store.AuditFilter) ([]store.AuditRecord, error) {
	return d.db.AuditRecords(f)
}
func (d *directRecords) Verify(cps []store.Checkpoint) (store.VerifyReport, error) {
	return d.db.Verify(d.pub, cps...)
}
func (d *directRecords) NewestHead() (store.Head, error)   { return d.db.NewestHead() }
func (d *directRecords) Check() (store.CheckReport, error) { return d.db.Check() }
func (d *directRecords) Backup(w io.Writer) (int64, error) { return d.db.Backup(w) }
func (d *directRecords) Close() error {
	err := d.db.Close()
	if d.tok != nil {
		err = errors.Join(err, d.tok.Close())
	}
	return err
}

// auditFailure is a verification failure reported through the admin
// socket: the store's message, exit code 1.
type auditFailure struct{ msg string }

func (e *auditFailure) Error() string { return e.msg }

// isAuditFailure reports whether err says the audit trail does not verify
// (as opposed to not being able to check it).
func isAuditFailure(err error) bool {
	var ve *store.VerifyError
	var ce *store.CheckpointError
	var af *auditFailure
	return errors.As(err, &ve) || errors.As(err, &ce) || errors.As(err, &af)
}

// The admin protocol: HTTP/1.1 with JSON over the 0600 unix socket.

type verifyRequest struct {
	Checkpoints []string `json:"checkpoints"`
}

type verifyResponse struct {
	Report store.VerifyReport `json:"report"`
	// Failure is the message of an audit verification failure.
	Failure string `json:"failure,omitempty"`
	Error   string `json:"error,omitempty"`
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
		var req verifyRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			fail(w, fmt.Errorf("bad request: %w", err))
			return
		}
		var cps []store.Checkpoint
		for _, text := range req.Checkpoints {
			cp, err := store.ParseCheckpoint([]byte(text))
			if err != nil {
				fail(w, err)
				return
			}
			cps = append(cps, cp)
		}
		rep, err := db.Verify(pub, cps...)
		resp := verifyResponse{Report: rep}
		switch {
		case isAuditFailure(err):
			resp.Failure = err.Error()
		case err != nil:
			resp.Error = err.Error()
		}
		reply(w, resp)
	})
	mux.HandleFunc("GET /v1/audit/head", func(w http.ResponseWriter, r *http.Request) {
		h, err := db.NewestHead()
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, h)
	})
	mux.HandleFunc("POST /v1/store/check", func(w http.ResponseWriter, r *http.Request) {
		rep, err := db.Check()
		if err != nil {
			fail(w, err)
			return
		}
		reply(w, rep)
	})
	mux.HandleFunc("GET /v1/backup", func(w http.ResponseWriter, r *http.Request) {
		// Sign what is not signed yet, so the copy ends with a signed head.
		if _, err := db.SignHead(); err != nil && !errors.Is(err, store.ErrNoSigner) {
			fail(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if _, err := db.Backup(w); err != nil {
			// The status is sent already: cut the stream so that the client
			// sees a failure, not a short file.
			panic(http.ErrAbortHandler)
		}
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
	return c.request(method, path, q, nil, out)
}

// doBody sends in as a JSON body.
func (c *adminClient) doBody(method, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.request(method, path, nil, bytes.NewReader(b), out)
}

func (c *adminClient) request(method, path string, q url.Values, body io.Reader, out any) error {
	u := "http://estca" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, body)
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

func (c *adminClient) Verify(cps []store.Checkpoint) (store.VerifyReport, error) {
	var req verifyRequest
	for _, cp := range cps {
		if cp.Head != nil {
			req.Checkpoints = append(req.Checkpoints, string(store.FormatCheckpoint(*cp.Head)))
		} else {
			req.Checkpoints = append(req.Checkpoints, cp.Line())
		}
	}
	var out verifyResponse
	if err := c.doBody("POST", "/v1/audit/verify", req, &out); err != nil {
		return store.VerifyReport{}, err
	}
	switch {
	case out.Failure != "":
		return out.Report, &auditFailure{out.Failure}
	case out.Error != "":
		return out.Report, errors.New(out.Error)
	}
	return out.Report, nil
}

func (c *adminClient) NewestHead() (store.Head, error) {
	var h store.Head
	return h, c.do("GET", "/v1/audit/head", nil, &h)
}

func (c *adminClient) Check() (store.CheckReport, error) {
	var rep store.CheckReport
	return rep, c.do("POST", "/v1/store/check", nil, &rep)
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

// Revoke revokes through the running server (see running.revoke).
func (c *adminClient) Revoke(serial string, reason int) error {
	var out map[string]bool
	return c.do("POST", "/v1/revoke", url.Values{"serial": {serial}, "reason": {strconv.Itoa(reason)}}, &out)
}

func (c *adminClient) Close() error { return nil }
