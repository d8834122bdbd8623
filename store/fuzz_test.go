package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/estca/estca/store/internal/wire"
)

// FuzzDecodeRecord: a stored record is untrusted (anyone who can write the
// file); decoding never panics, and what decodes re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	r := &wire.Record{Seq: 7, Time: 1, Event: "issued", Fingerprint: fp("a"), Subject: "CN=a", CSRDigest: digest("c"),
		Serial: "1a2b", Profile: "default", Verdict: "accepted", Flags: []string{"renew"}, CertSeq: 3,
		CertDigest: make([]byte, 32), Rev: &wire.Rev{Reason: 1, At: 2},
		Head: &wire.Head{Store: make([]byte, 16), Counter: 1, Seq: 6, Hash: make([]byte, 32), Signature: []byte{1}},
		Ack:  &wire.Ref{Counter: 1, Seq: 2, Digest: make([]byte, 32)}}
	f.Add(wire.EncodeRecord(r))
	f.Add(wire.EncodeRecord(&wire.Record{Event: "start"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := wire.DecodeRecord(b)
		if err != nil {
			return
		}
		if again := wire.EncodeRecord(&rec); !bytes.Equal(again, b) {
			t.Fatalf("decoded record re-encodes differently")
		}
		_ = fromWire(&rec, nil, nil)
	})
}

// FuzzDecodeCert covers the certificate, request and revocation values.
func FuzzDecodeCert(f *testing.F) {
	f.Add(wire.EncodeCert(&wire.Cert{Serial: "ff", DER: []byte{0x30}, Requester: "operator:root", CSRDigest: digest("x"), AuditSeq: 9}))
	f.Add(wire.EncodeRequest(&wire.Request{State: 1, CSR: []byte{1, 2}, Subject: "CN=x"}))
	f.Add(wire.EncodeRevocation(wire.Revocation{RecordSeq: 3, Reason: 1, Time: 5}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := wire.DecodeCert(b); err == nil && !bytes.Equal(wire.EncodeCert(&c), b) {
			t.Fatal("certificate re-encodes differently")
		}
		if q, err := wire.DecodeRequest(b); err == nil && !bytes.Equal(wire.EncodeRequest(&q), b) {
			t.Fatal("request re-encodes differently")
		}
		if v, err := wire.DecodeRevocation(b); err == nil && !bytes.Equal(wire.EncodeRevocation(v), b) {
			t.Fatal("revocation re-encodes differently")
		}
	})
}

// FuzzParseCheckpoint: a checkpoint comes from a file or a log line.
func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte("estca-checkpoint store=00112233445566778899aabbccddeeff head=3 seq=9 digest=" + digest("d")))
	f.Add(FormatCheckpoint(Head{Counter: 2, Seq: 5, Hash: make([]byte, 32), Prev: make([]byte, 32),
		RevocationDigest: make([]byte, 32), Store: make([]byte, 16), Signature: []byte{1, 2}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCheckpoint(b)
		if err != nil || c.Head == nil {
			return
		}
		again, err := ParseCheckpoint(FormatCheckpoint(*c.Head))
		if err != nil || !bytes.Equal(again.Digest, c.Digest) {
			t.Fatalf("checkpoint does not round-trip: %v", err)
		}
	})
}

// FuzzOpen damages a small real store file byte by byte: Open (read-only,
// so every page is checked first) and the reads after it return errors,
// never panic or fault.
func FuzzOpen(f *testing.F) {
	db, path := openTest(f, Options{})
	m := newCertMaker(f)
	for i := range 4 {
		if _, err := db.Issue(m.cert(f, serialOf(i), fp("f"), serialOf(i)), AuditRecord{}); err != nil {
			f.Fatal(err)
		}
	}
	if err := db.Revoke(serialOf(1), 1, fixedNow, AuditRecord{}); err != nil {
		f.Fatal(err)
	}
	if err := db.Close(); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint32(0), []byte{})
	f.Add(uint32(4096*3+20), []byte{0xff, 0xff})
	f.Add(uint32(4096*4+16), []byte{0x01})
	f.Fuzz(func(t *testing.T, off uint32, patch []byte) {
		b := bytes.Clone(good)
		if int(off) < len(b) {
			copy(b[off:], patch)
		}
		p := filepath.Join(t.TempDir(), "estca.db")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := Open(p, Options{ReadOnly: true})
		if err != nil {
			return
		}
		defer db.Close()
		_, _ = db.Certificates(CertFilter{})
		_, _ = db.AuditRecords(AuditFilter{})
		_, _ = db.Requests("")
		_, _ = db.Verify(nil)
		_, _ = db.Check()
	})
}
