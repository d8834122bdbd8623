package est

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/policy/pkitest"
)

// waitRejections polls until the authority holds n rejections.
func waitRejections(t *testing.T, a *stAuthority, n int) []ca.Rejection {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := a.rejected()
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				t.Fatalf("%d rejections, want %d: %+v", len(got), n, got)
			}
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRefusalsAudited: each request the server refuses itself is reported
// through RecordRejection with its code and fixed diagnostic: the first of
// an identity, reason and code at once, the further ones of the interval in
// one aggregate record with their count; errors the authority audited are
// not reported again; successes are not reported.
func TestRefusalsAudited(t *testing.T) {
	t.Parallel()
	e := stStart(t, func(o *Options) { o.HandshakeAuditInterval = time.Hour })
	c := e.dial(t)
	crts := "/.well-known/est/crts"
	if r := c.do(stMsg{code: codes.GET, path: crts}); r.Code != codes.Content {
		t.Fatalf("crts: %v", r.Code)
	}
	if got := e.auth.rejected(); len(got) != 0 {
		t.Fatalf("successful request reported: %+v", got)
	}
	csr := func(cn string) []byte { b, _ := stCSR(t, cn, 0); return b }
	cf := stUint(message.ContentFormat, 286)
	tests := []struct {
		name string
		msg  stMsg
		want ca.Rejection // Method, Resource, Profile, Code, Reason (also the diagnostic)
	}{
		{"unknown critical option", stMsg{code: codes.GET, path: crts, opts: message.Options{stOpt(2049, 1)}},
			ca.Rejection{Method: "GET", Resource: "crts", Code: "4.02", Reason: "bad option"}},
		{"unknown critical option, label", stMsg{code: codes.GET, path: "/est/iot/att", opts: message.Options{stOpt(65001, 'x')}},
			ca.Rejection{Method: "GET", Resource: "iot/att", Profile: "iot", Code: "4.02", Reason: "bad option"}},
		{"critical option of bad length", stMsg{code: codes.GET, path: crts, opts: message.Options{stOpt(message.Accept, 0, 1, 0x19)}},
			ca.Rejection{Method: "GET", Resource: "crts", Code: "4.02", Reason: "bad option"}},
		{"If-Match", stMsg{code: codes.GET, path: crts, opts: message.Options{stOpt(message.IfMatch, 1)}},
			ca.Rejection{Method: "GET", Resource: "-", Code: "4.02", Reason: "bad option"}},
		{"wrong Content-Format", stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{stUint(message.ContentFormat, 0)}, payload: csr("x")},
			ca.Rejection{Method: "POST", Resource: "sen", Code: "4.15", Reason: "unsupported content-format"}},
		{"not acceptable", stMsg{code: codes.GET, path: crts, opts: message.Options{stUint(message.Accept, 62)}},
			ca.Rejection{Method: "GET", Resource: "crts", Code: "4.06", Reason: "not acceptable"}},
		{"unknown label", stMsg{code: codes.GET, path: "/est/nolabel/crts"},
			ca.Rejection{Method: "GET", Resource: "/est/nolabel/crts", Profile: "nolabel", Code: "4.04", Reason: "unknown label"}},
		{"method", stMsg{code: codes.POST, path: crts},
			ca.Rejection{Method: "POST", Resource: "crts", Code: "4.05", Reason: "method not allowed"}},
		{"too large", stMsg{code: codes.POST, path: "/est/iot/sen", opts: message.Options{cf, stBlock(message.Block1, 0, true, 2), stUint(message.Size1, 70<<10)},
			payload: make([]byte, 64)},
			ca.Rejection{Method: "POST", Resource: "iot/sen", Profile: "iot", Code: "4.13", Reason: "request entity too large"}},
		{"incomplete", stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{cf, stBlock(message.Block1, 3, true, 2)}, payload: make([]byte, 64)},
			ca.Rejection{Method: "POST", Resource: "sen", Code: "4.08", Reason: "request entity incomplete"}},
		{"malformed CSR", stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{cf}, payload: []byte("not a CSR")},
			ca.Rejection{Method: "POST", Resource: "sen", Code: "4.00", Reason: "malformed CSR"}},
		{"forbidden", stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{cf}, payload: csr(stCNDenied)},
			ca.Rejection{Method: "POST", Resource: "sen", Code: "4.03", Reason: "not allowed"}},
		{"internal", stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{cf}, payload: csr(stCNBoom)},
			ca.Rejection{Method: "POST", Resource: "sen", Code: "5.00", Reason: "internal error"}},
	}
	seen := map[string]bool{}
	aggregated := map[string]int{} // code+reason+flags → refusals not written at once
	note := func(key string) int {
		if seen[key] {
			aggregated[key]++
			return 0
		}
		seen[key] = true
		return 1
	}
	for _, tc := range tests {
		before := len(e.auth.rejected())
		want := note(tc.want.Code + " " + tc.want.Reason)
		r := c.do(tc.msg)
		if codeString(r.Code) != tc.want.Code || string(r.Payload) != tc.want.Reason {
			t.Errorf("%s: answered %v %q, want %s %q", tc.name, r.Code, r.Payload, tc.want.Code, tc.want.Reason)
		}
		if _, ok := r.uintOpt(message.ContentFormat); ok {
			t.Errorf("%s: diagnostic with a Content-Format", tc.name)
		}
		got := e.auth.rejected()
		if len(got) != before+want {
			t.Fatalf("%s: %d rejections reported, want %d", tc.name, len(got)-before, want)
		}
		if want == 0 {
			continue
		}
		g := got[len(got)-1]
		if g.Requester == nil || !g.Requester.Leaf.Equal(e.client.Leaf) || !strings.HasPrefix(g.Peer, "127.0.0.1:") ||
			g.Method != tc.want.Method || g.Resource != tc.want.Resource || g.Profile != tc.want.Profile ||
			g.Code != tc.want.Code || g.Reason != tc.want.Reason || g.Handshake || len(g.Flags) != 0 {
			t.Errorf("%s: reported %+v", tc.name, g)
		}
	}

	// A denial the authority audited itself is not reported again.
	before := len(e.auth.rejected())
	if r := c.do(stMsg{code: codes.POST, path: "/est/sen", opts: message.Options{cf}, payload: csr(stCNAudited)}); r.Code != codes.BadRequest ||
		string(r.Payload) != "policy says no" {
		t.Fatalf("audited denial: %v %q", r.Code, r.Payload)
	}
	if n := len(e.auth.rejected()); n != before {
		t.Fatalf("authority-audited denial reported again (%d)", n-before)
	}

	// A retransmitted CON (same message ID) with an unknown critical option
	// gets the same answer and no second report.
	raw := stMsg{code: codes.GET, path: crts, opts: message.Options{stOpt(2049, 1)}}.encode(4242, []byte{0xab, 0xcd})
	var answers [][]byte
	for range 2 {
		if _, err := c.c.Write(raw); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 512)
		_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.c.Read(buf)
		if err != nil {
			t.Fatalf("retransmission: %v", err)
		}
		answers = append(answers, buf[:n])
	}
	var ack message.Message
	ack.Options = make(message.Options, 0, 4)
	if _, err := coder.DefaultCoder.Decode(answers[0], &ack); err != nil || ack.Type != message.Acknowledgement || ack.MessageID != 4242 ||
		!bytes.Equal(ack.Token, []byte{0xab, 0xcd}) || ack.Code != codes.BadOption || string(ack.Payload) != "bad option" {
		t.Fatalf("refusal %+v (%v)", ack, err)
	}
	if !bytes.Equal(answers[0], answers[1]) {
		t.Fatalf("retransmission answered differently:\n% x\n% x", answers[0], answers[1])
	}
	before += note("4.02 bad option") // counted once, into the aggregate
	waitRejections(t, e.auth, before)

	// Non-confirmable requests with a bad critical option: no answer, one
	// report flagged unanswered, with the code they would have had.
	for _, opts := range []message.Options{{stOpt(2049, 1)}, {stOpt(message.IfMatch, 1)}, {stUint(message.Block2, 7)}} {
		if r, got := c.roundTrip(stMsg{typ: message.NonConfirmable, code: codes.GET, path: crts, opts: opts}, 200*time.Millisecond); got {
			t.Errorf("NON with %v answered %v", opts[0].ID, r.Code)
		}
		reason := "bad option 4.02"
		if opts[0].ID == message.Block2 {
			reason = "reserved block size 4.00"
		}
		n := note(reason + " " + flagUnanswered)
		before += n
		got := waitRejections(t, e.auth, before)
		if g := got[len(got)-1]; n == 1 && (!slices.Equal(g.Flags, []string{flagUnanswered}) || !strings.HasPrefix(g.Code, "4.0")) {
			t.Errorf("NON with %v reported %+v", opts[0].ID, g)
		}
	}
	// The aggregate records of the interval: one per identity, reason and
	// code, with the count of the refusals not written at once.
	e.srv.flushAudits()
	got := e.auth.rejected()[before:]
	if len(got) != len(aggregated) {
		t.Fatalf("%d aggregate records, want %d: %+v", len(got), len(aggregated), got)
	}
	for _, g := range got {
		key := g.Code + " " + g.Reason
		if slices.Contains(g.Flags, flagUnanswered) {
			key = g.Reason + " " + g.Code + " " + flagUnanswered
		}
		if g.Count != aggregated[key] || !slices.Contains(g.Flags, flagAggregated) || g.Requester == nil {
			t.Errorf("aggregate %+v, want count %d (%q)", g, aggregated[key], key)
		}
	}
	if r := c.do(stMsg{code: codes.GET, path: crts}); r.Code != codes.Content {
		t.Fatalf("server stopped serving: %v", r.Code)
	}

	// Counted and logged under the fixed diagnostic; the library's text never appears.
	stScrapeUntil(t, e.srv.Metrics(), `code="4.02",resource="crts"`, `code="4.02",resource="iot/att"`, `code="4.15",resource="sen"`, `code="4.04",resource="-"`)
	logs := e.logs.String()
	if !strings.Contains(logs, `resource=crts code=4.02`) || !strings.Contains(logs, `reason="bad option"`) ||
		strings.Contains(logs, "unknown critical") {
		t.Errorf("refusals not logged as expected:\n%s", logs)
	}
}

// TestHandshakeRejectionsAggregated: refused handshakes are written as one
// record per reason with a count, not one per handshake: at Shutdown, and
// every HandshakeAuditInterval.
func TestHandshakeRejectionsAggregated(t *testing.T) {
	t.Parallel()
	rogue := pkitest.NewCA(t, "rogue CA").Issue(t, pkitest.ClientAuth("rogue device")).TLS()
	t.Run("shutdown", func(t *testing.T) {
		t.Parallel()
		e := stStart(t, func(o *Options) { o.HandshakeAuditInterval = time.Hour })
		for range 3 {
			if c, err := stDialTimeout(t, e.addr, &rogue, e.roots, 3*time.Second); err == nil {
				if _, ok := c.roundTrip(stMsg{code: codes.GET, path: "/est/crts"}, 300*time.Millisecond); ok {
					t.Fatal("rogue client served")
				}
			}
		}
		if _, err := stDialTimeout(t, e.addr, nil, e.roots, 3*time.Second); err == nil {
			t.Fatal("client without certificate admitted")
		}
		e.dial(t) // an accepted handshake is not reported
		time.Sleep(50 * time.Millisecond)
		if got := e.auth.rejected(); len(got) != 0 {
			t.Fatalf("handshake rejections written before the interval: %+v", got)
		}
		if err := e.srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := e.auth.rejected()
		if len(got) != 2 {
			t.Fatalf("want 2 aggregated records, got %+v", got)
		}
		nc, un := got[0], got[1]
		if !nc.Handshake || nc.Reason != ReasonNoCertificate || nc.Count != 1 || nc.Subject != "" || nc.Requester != nil ||
			!strings.HasPrefix(nc.Peer, "127.0.0.1:") {
			t.Errorf("no-certificate record %+v", nc)
		}
		if !un.Handshake || un.Reason != "unauthenticated: unknown client" || un.Count != 3 ||
			un.Subject != "CN=rogue device" || un.Requester != nil || !strings.HasPrefix(un.Peer, "127.0.0.1:") {
			t.Errorf("unauthenticated record %+v", un)
		}
		// The log says the same, once per reason, at warning level: the
		// default level shows it (each refusal alone is a debug line).
		logs := e.logs.String()
		for _, want := range []string{`level=WARN msg="dtls handshakes refused" reason="unauthenticated: unknown client" count=3`,
			`level=WARN msg="dtls handshakes refused" reason=` + ReasonNoCertificate + ` count=1`} {
			if strings.Count(logs, want) != 1 {
				t.Errorf("log lacks one %q:\n%s", want, logs)
			}
		}
	})
	t.Run("interval", func(t *testing.T) {
		t.Parallel()
		e := stStart(t, func(o *Options) { o.HandshakeAuditInterval = 20 * time.Millisecond })
		if c, err := stDialTimeout(t, e.addr, &rogue, e.roots, 3*time.Second); err == nil {
			if _, ok := c.roundTrip(stMsg{code: codes.GET, path: "/est/crts"}, 300*time.Millisecond); ok {
				t.Fatal("rogue client served")
			}
		}
		got := waitRejections(t, e.auth, 1)
		if g := got[0]; !g.Handshake || g.Count != 1 || g.Reason != "unauthenticated: unknown client" {
			t.Fatalf("record %+v", g)
		}
	})
}
