package main

// The admin protocol: HTTP/1.1 with JSON over the unix socket (mode 0600)
// that `estca serve` listens on, through which the query commands reach
// the store while the server holds it. It is internal to estca (the CLI
// and the server come from one binary), not an API.
//
// Errors travel as {"error": message, "code": code} with the HTTP status
// of their kind (adminErrors); the client turns them back into errors that
// match the same store sentinels as the direct path (errors.Is), so a
// command handles both paths alike and never shows an HTTP status. A new
// endpoint answers with adminReply and adminFail; a new kind of refusal is
// one more row in adminErrors.

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/store"
)

// adminErrors maps the error kinds a command must tell apart to their code
// and HTTP status on the admin socket, both ways. The first match wins.
var adminErrors = []struct {
	code   string
	status int
	err    error
}{
	// A revocation in force whose head is not signed yet (first: its cause
	// may match another row).
	{"head_not_signed", http.StatusAccepted, store.ErrHeadNotSigned},
	{"not_found", http.StatusNotFound, store.ErrNotFound},
	{"already_revoked", http.StatusConflict, store.ErrAlreadyRevoked},
	// revoke --unknown-certificate of a serial the store holds.
	{"certificate_known", http.StatusConflict, store.ErrCertificateKnown},
	{"invalid", http.StatusBadRequest, store.ErrInvalid},
	{"unavailable", http.StatusServiceUnavailable, store.ErrUnavailable},
	// An approval ID that names several pending requests.
	{"ambiguous", http.StatusConflict, store.ErrAmbiguous},
	// A reload of a configuration that does not validate.
	{"config_refused", http.StatusUnprocessableEntity, errConfigRefused},
	// keys destroy, delete-kek: no such key in the token; import-kek: a
	// key-encryption key of that id is there already; the token is down.
	{"key_not_found", http.StatusNotFound, hsm.ErrKeyNotFound},
	{"key_exists", http.StatusConflict, hsm.ErrKeyExists},
	{"hsm_unavailable", http.StatusServiceUnavailable, hsm.ErrUnavailable},
}

// adminError is an error reported by the admin socket. It matches the
// sentinel of its code with errors.Is; Error is the server's message.
type adminError struct {
	Message string `json:"error"`
	Code    string `json:"code"`
}

func (e *adminError) Error() string { return e.Message }

// Is matches the store sentinel of the error's code.
func (e *adminError) Is(target error) bool {
	for _, k := range adminErrors {
		if k.code == e.Code {
			return k.err == target
		}
	}
	return false
}

// adminFail answers err with the status and code of its kind ("internal",
// 500, for the others; the client shows the message, never the status).
func adminFail(w http.ResponseWriter, err error) {
	e := adminError{Message: err.Error(), Code: "internal"}
	status := http.StatusInternalServerError
	for _, k := range adminErrors {
		if errors.Is(err, k.err) {
			e.Code, status = k.code, k.status
			break
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(e)
}

// adminReply answers v as JSON, 200.
func adminReply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
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

type verifyRequest struct {
	Checkpoints []string `json:"checkpoints"`
}

type verifyResponse struct {
	Report store.VerifyReport `json:"report"`
	// Failure is the message of an audit verification failure.
	Failure string `json:"failure,omitempty"`
	Error   string `json:"error,omitempty"`
}

type noteRequest struct {
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
}

// adminHandler serves the admin protocol from a running server's store.
func adminHandler(db *store.DB, pub crypto.PublicKey) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/certs", func(w http.ResponseWriter, r *http.Request) {
		q, err := parseCertQuery(r.URL.Query())
		if err != nil {
			adminFail(w, err)
			return
		}
		cs, err := listCerts(db, q, time.Now())
		if err != nil {
			adminFail(w, err)
			return
		}
		adminReply(w, cs)
	})
	mux.HandleFunc("GET /v1/certs/{serial}", func(w http.ResponseWriter, r *http.Request) {
		c, err := showCert(db, r.PathValue("serial"), time.Now())
		if err != nil {
			adminFail(w, err)
			return
		}
		adminReply(w, c)
	})
	mux.HandleFunc("GET /v1/audit", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := store.AuditFilter{Serial: q.Get("serial"), Requester: q.Get("requester")}
		f.Limit, _ = strconv.Atoi(q.Get("limit"))
		if s := q.Get("since"); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				adminFail(w, fmt.Errorf("%w: since %q", store.ErrInvalid, s))
				return
			}
			f.Since = t
		}
		recs, err := db.AuditRecords(f)
		if err != nil {
			adminFail(w, err)
			return
		}
		adminReply(w, newAuditViews(recs))
	})
	mux.HandleFunc("POST /v1/audit/verify", func(w http.ResponseWriter, r *http.Request) {
		var req verifyRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			adminFail(w, fmt.Errorf("%w: %v", store.ErrInvalid, err))
			return
		}
		var cps []store.Checkpoint
		for _, text := range req.Checkpoints {
			cp, err := store.ParseCheckpoint([]byte(text))
			if err != nil {
				adminFail(w, err)
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
		adminReply(w, resp)
	})
	mux.HandleFunc("GET /v1/audit/head", func(w http.ResponseWriter, r *http.Request) {
		h, err := db.NewestHead()
		if err != nil {
			adminFail(w, err)
			return
		}
		adminReply(w, h)
	})
	mux.HandleFunc("POST /v1/audit/note", func(w http.ResponseWriter, r *http.Request) {
		var req noteRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			adminFail(w, fmt.Errorf("%w: %v", store.ErrInvalid, err))
			return
		}
		if err := noteIn(db, req.Verdict, req.Reason, "operator:admin-socket"); err != nil {
			adminFail(w, err)
			return
		}
		adminReply(w, struct{}{})
	})
	mux.HandleFunc("POST /v1/store/check", func(w http.ResponseWriter, r *http.Request) {
		rep, err := db.Check()
		if err != nil {
			adminFail(w, err)
			return
		}
		adminReply(w, rep)
	})
	mux.HandleFunc("GET /v1/backup", func(w http.ResponseWriter, r *http.Request) {
		// Sign what is not signed yet, so the copy ends with a signed head.
		if _, err := db.SignHead(); err != nil && !errors.Is(err, store.ErrNoSigner) {
			adminFail(w, err)
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

// request makes one call; an answer other than 200 becomes the *adminError
// it carries (matching its store sentinel), or, when it carries none, an
// error naming the admin socket, never just an HTTP status.
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
		var e adminError
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e) != nil || e.Message == "" {
			return fmt.Errorf("admin socket: the server answered %s without saying why (an older or newer estca serve?)", resp.Status)
		}
		return &e
	}
	if w, ok := out.(io.Writer); ok {
		_, err = io.Copy(w, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *adminClient) Certificates(q certQuery) ([]certView, error) {
	var out []certView
	return out, c.do("GET", "/v1/certs", q.values(), &out)
}

func (c *adminClient) Certificate(serial string) (certView, error) {
	var out certView
	return out, c.do("GET", "/v1/certs/"+url.PathEscape(serial), nil, &out)
}

func (c *adminClient) AuditRecords(f store.AuditFilter) ([]auditView, error) {
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
	var out []auditView
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

func (c *adminClient) Note(verdict, reason string) error {
	var out struct{}
	return c.doBody("POST", "/v1/audit/note", noteRequest{Verdict: verdict, Reason: reason}, &out)
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

func (c *adminClient) Close() error { return nil }
