package store

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestRevokeUnknown: a serial the store does not hold (a certificate issued
// after the backup a loss-accepting restore put back) can be revoked for
// the CRL only by RevokeUnknown, flagged, signed and verified; a known
// certificate cannot be revoked that way, and a flagged revocation of a
// known certificate fails Verify even when signed with the audit key.
func TestRevokeUnknown(t *testing.T) {
	t.Parallel()
	db, _, key := openKeyed(t, Options{Now: func() time.Time { return fixedNow }})
	m := newCertMaker(t)
	if _, err := db.Issue(m.cert(t, "10", fp("a"), "10"), AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		serial  string
		unknown bool
		want    error
	}{
		{"known as unknown", "10", true, ErrCertificateKnown},
		{"unknown without the flag", "99", false, ErrNotFound},
		{"unknown", "99", true, nil},
		{"unknown again", "99", true, ErrAlreadyRevoked},
		{"unknown then normal", "99", false, ErrNotFound},
	} {
		revoke := db.Revoke
		if tc.unknown {
			revoke = db.RevokeUnknown
		}
		if err := revoke(tc.serial, 1, time.Time{}, AuditRecord{Reason: "lost with the restored disk"}); !errors.Is(err, tc.want) {
			t.Fatalf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if r, err := db.Revocation("99"); err != nil || r.Reason != 1 {
		t.Fatalf("Revocation(99) = %+v, %v", r, err)
	}
	if all, _ := db.Revocations(); len(all) != 1 || all[0].Serial != "99" {
		t.Fatalf("Revocations = %+v", all)
	}
	recs, err := db.AuditRecords(AuditFilter{Serial: "99"})
	if err != nil || len(recs) != 1 || recs[0].Event != EventRevoked || !slices.Contains(recs[0].Flags, FlagUnknownCertificate) {
		t.Fatalf("audit of 99 = %+v, %v", recs, err)
	}
	rep, err := db.Verify(&key.PublicKey)
	if err != nil || rep.Revocations != 1 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}

	// A flagged revocation of a certificate the store holds, written past
	// RevokeUnknown's check and signed: Verify refuses it.
	p, err := prepareRevoke("10", 1, time.Time{}, AuditRecord{Flags: []string{FlagUnknownCertificate}}, fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.batch(p.write); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SignHead(); err != nil {
		t.Fatal(err)
	}
	var ve *VerifyError
	if _, err := db.Verify(&key.PublicKey); !errors.As(err, &ve) || ve.Reason != "known certificate revoked as unknown" {
		t.Fatalf("Verify of a known certificate revoked as unknown: %v", err)
	}
}
