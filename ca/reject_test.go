package ca

import (
	"context"
	"crypto/x509/pkix"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/store"
)

func TestRecordRejection(t *testing.T) {
	f := newFixture(t)
	idev := f.requester(t, f.demo.Valid)
	tests := []struct {
		name    string
		r       Rejection
		reason  string
		profile string
		flags   []string
		who     string
	}{
		{"wrong format", Rejection{Requester: &idev, Peer: "127.0.0.1:5555", Method: "POST", Resource: "plain/sen", Profile: "plain",
			Code: "4.15", Reason: "unsupported content-format"},
			"POST plain/sen 4.15: unsupported content-format (peer 127.0.0.1:5555)", "plain", []string{FlagFrontEnd}, idev.Identity.Fingerprint},
		{"unknown label is not a profile", Rejection{Requester: &idev, Method: "GET", Resource: "est/nope/crts", Profile: "nope",
			Code: "4.04", Reason: "unknown label", Flags: []string{"unanswered"}},
			"GET est/nope/crts 4.04: unknown label", "", []string{FlagFrontEnd, "unanswered"}, idev.Identity.Fingerprint},
		{"hostile text", Rejection{Requester: &idev, Method: "GET", Resource: "a\nb\x00" + strings.Repeat("x", 300), Code: "4.04", Reason: "not found"},
			"GET a?b?" + strings.Repeat("x", maxRejectField-4) + "... 4.04: not found", "", []string{FlagFrontEnd}, idev.Identity.Fingerprint},
		{"handshakes", Rejection{Handshake: true, Count: 37, Peer: "127.0.0.1:5555", Subject: "CN=rogue", Reason: "unauthenticated"},
			"dtls handshake rejected: unauthenticated x37 (last 127.0.0.1:5555, CN=rogue)", "", []string{FlagHandshake}, ""},
		{"handshake without subject", Rejection{Handshake: true, Peer: "[::1]:1", Reason: "rate-limited"},
			"dtls handshake rejected: rate-limited x1 (last [::1]:1)", "", []string{FlagHandshake}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := f.db.AuditRecords(store.AuditFilter{})
			if err := f.a.RecordRejection(tc.r); err != nil {
				t.Fatal(err)
			}
			after, _ := f.db.AuditRecords(store.AuditFilter{})
			if len(after) != len(before)+1 {
				t.Fatalf("%d records written", len(after)-len(before))
			}
			rec := after[len(after)-1]
			if rec.Event != store.EventDenied || rec.Verdict != VerdictRejected || rec.Reason != tc.reason ||
				rec.Profile != tc.profile || !slices.Equal(rec.Flags, tc.flags) || rec.Requester.Fingerprint != tc.who ||
				rec.CSRDigest != "" || rec.Serial != "" {
				t.Fatalf("record %+v\nwant reason %q profile %q flags %v", rec, tc.reason, tc.profile, tc.flags)
			}
		})
	}
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
	err := f.a.RecordRejection(Rejection{Requester: &idev, Method: "GET", Resource: "crts", Code: "4.06", Reason: "not acceptable"})
	wantKind(t, err, KindInternal, "audit write failed")
}

// TestDenialsMarkedAudited: Enroll's audited denials carry Audited, its
// unaudited errors do not, so that the front end audits each refusal once.
func TestDenialsMarkedAudited(t *testing.T) {
	f := newFixture(t)
	idev := f.requester(t, f.demo.Valid)
	_, err := f.a.Enroll(context.Background(), Request{CSR: []byte("hello"), Requester: idev})
	if !Audited(err) || !Audited(errors.Join(errors.New("x"), err)) {
		t.Fatalf("malformed CSR denial not marked audited: %#v", err)
	}
	good := pkitest.CSR(t, pkitest.Key(t), pkix.Name{CommonName: "dev-1"})
	_, err = f.a.Enroll(context.Background(), Request{CSR: good, Requester: idev})
	if !Audited(err) {
		t.Fatalf("policy denial not marked audited: %v", err)
	}
	_, err = f.a.Enroll(context.Background(), Request{CSR: good})
	if err == nil || Audited(err) {
		t.Fatalf("unauthenticated request marked audited: %v", err)
	}
	if Audited(nil) || Audited(errors.New("x")) {
		t.Fatal("Audited of a foreign error")
	}
}
