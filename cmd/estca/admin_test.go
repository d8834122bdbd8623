package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/store"
)

// TestAdminErrors: every kind of refusal the admin socket reports travels
// as its code and comes back as an error that matches the same sentinel,
// with the server's message and never an HTTP status; an error of no kind
// is a plain message too, and an answer without a body names the admin
// socket instead of showing a bare status. Over a real unix socket.
func TestAdminErrors(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(t.TempDir(), "a.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	internal := errors.New("ca: no CRL published yet")
	mux := http.NewServeMux()
	for _, k := range adminErrors {
		mux.HandleFunc("GET /kind/"+k.code, func(w http.ResponseWriter, _ *http.Request) {
			adminFail(w, fmt.Errorf("%w: what went wrong with %s", k.err, k.code))
		})
	}
	mux.HandleFunc("GET /internal", func(w http.ResponseWriter, _ *http.Request) { adminFail(w, internal) })
	mux.HandleFunc("GET /bare", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	defer srv.Close()
	c := newAdminClient(sock)

	statusWords := []string{"500", "Internal Server Error", "404", "409", "422", "Unprocessable", "202 Accepted"}
	plain := func(t *testing.T, err error) {
		t.Helper()
		for _, w := range statusWords {
			if strings.Contains(err.Error(), w) {
				t.Errorf("%q shows the HTTP status (%s)", err, w)
			}
		}
	}
	for _, k := range adminErrors {
		t.Run(k.code, func(t *testing.T) {
			var out struct{}
			err := c.do("GET", "/kind/"+k.code, nil, &out)
			if err == nil || !errors.Is(err, k.err) {
				t.Fatalf("%s: %v, want an error matching %v", k.code, err, k.err)
			}
			if want := fmt.Sprintf("%v: what went wrong with %s", k.err, k.code); err.Error() != want {
				t.Fatalf("message %q, want %q", err, want)
			}
			for _, other := range adminErrors {
				if other.code != k.code && errors.Is(err, other.err) {
					t.Errorf("%s also matches %s", k.code, other.code)
				}
			}
			plain(t, err)
		})
	}
	var out struct{}
	err = c.do("GET", "/internal", nil, &out)
	if err == nil || err.Error() != internal.Error() {
		t.Fatalf("internal: %v", err)
	}
	plain(t, err)
	for _, k := range adminErrors {
		if errors.Is(err, k.err) {
			t.Errorf("an internal error matches %s", k.code)
		}
	}
	err = c.do("GET", "/bare", nil, &out)
	if err == nil || !strings.Contains(err.Error(), "admin socket: the server answered") {
		t.Fatalf("bare status: %v", err)
	}
	// The codes are unique, and every sentinel the commands branch on has one.
	seen := map[string]bool{}
	for _, k := range adminErrors {
		if seen[k.code] {
			t.Errorf("code %s twice", k.code)
		}
		seen[k.code] = true
	}
	for _, e := range []error{store.ErrNotFound, store.ErrAlreadyRevoked, store.ErrHeadNotSigned, store.ErrInvalid,
		store.ErrUnavailable, store.ErrAmbiguous, errConfigRefused} {
		found := false
		for _, k := range adminErrors {
			found = found || k.err == e
		}
		if !found {
			t.Errorf("no adminErrors row for %v", e)
		}
	}
}
