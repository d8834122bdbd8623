package store_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/store"
	"github.com/estca/estca/store/storetest"
)

var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fixture is a closed store with a history worth damaging.
type fixture struct {
	path, checkpoint string
	key              *ecdsa.PrivateKey
	revoked          string // serial of a revoked certificate
}

func (f fixture) opts() store.Options {
	return store.Options{AuditKey: &f.key.PublicKey, Signer: f.key, Checkpoint: f.checkpoint}
}

// build makes a store of rounds rounds of (denied record, issued
// certificate, signed head), revoking the certificate of round 3, and closes it.
func build(t testing.TB, rounds int) fixture {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dir := t.TempDir()
	f := fixture{path: filepath.Join(dir, "estca.db"), checkpoint: filepath.Join(dir, "estca.checkpoint"), key: key}
	db, err := store.Create(f.path, f.opts())
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= rounds; i++ {
		if _, err := db.Append(store.AuditRecord{Event: store.EventDenied, Reason: fmt.Sprint("round ", i)}); err != nil {
			t.Fatal(err)
		}
		serial := fmt.Sprintf("%x", 0x51000+i)
		c := store.Certificate{Serial: serial, DER: []byte{0x30, 0x03, 0x02, 0x01, byte(i)}, Subject: "CN=d" + serial,
			SKI: []byte(serial), Requester: fmt.Sprintf("%064x", i), Profile: "default",
			CSRDigest: fmt.Sprintf("%064x", 1000+i), NotBefore: fixedNow, NotAfter: fixedNow.Add(time.Hour)}
		if _, err := db.Issue(c, store.AuditRecord{}); err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			if err := db.Revoke(serial, 1, fixedNow, store.AuditRecord{}); err != nil {
				t.Fatal(err)
			}
			f.revoked = serial
		}
		if _, err := db.SignHead(); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

// copyOf copies the fixture's store file and checkpoint into a new directory.
func (f fixture) copyOf(t *testing.T) fixture {
	t.Helper()
	g := f
	dir := t.TempDir()
	g.path, g.checkpoint = filepath.Join(dir, "estca.db"), filepath.Join(dir, "estca.checkpoint")
	for src, dst := range map[string]string{f.path: g.path, f.checkpoint: g.checkpoint} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

// verify opens f read-only and verifies it against its checkpoint file.
func (f fixture) verify(t *testing.T) (store.VerifyReport, error) {
	t.Helper()
	db, err := store.Open(f.path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open for verify: %v", err)
	}
	defer db.Close()
	cp, err := store.ReadCheckpoint(f.checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	return db.Verify(&f.key.PublicKey, cp)
}

// openFailsAtOpen lists the damage that Open's audit check (from the
// checkpoint on, plus the revocation set) catches; the rest lies before the
// checkpoint and is for Verify.
var openFailsAtOpen = map[storetest.Tamper]bool{
	storetest.EditRechainDropHeads: true, storetest.TruncateTail1: true, storetest.TruncateTail10: true,
	storetest.TruncateTail60: true, storetest.Insert: true, storetest.ForgeHeadSignature: true,
	storetest.BreakHeadChain: true, storetest.RemoveRevocation: true, storetest.ChangeRevocation: true,
}

// TestTamperDetected does every kind of damage storetest knows to a copy of
// a store and checks that Verify (with the checkpoint) names it exactly,
// and that Open with the audit key refuses the damage it is meant to catch
// (and for the rest, keeps the revocation in force).
func TestTamperDetected(t *testing.T) {
	t.Parallel()
	f := build(t, 25)
	if rep, err := f.verify(t); err != nil || rep.Heads < 25 || rep.Revocations != 1 || rep.Checkpoints != 1 {
		t.Fatalf("untouched: %+v, %v", rep, err)
	}
	for _, k := range storetest.Tampers() {
		t.Run(k.String(), func(t *testing.T) {
			t.Parallel()
			g := f.copyOf(t)
			want := storetest.Apply(t, g.path, k)
			_, err := g.verify(t)
			var ve *store.VerifyError
			var ce *store.CheckpointError
			switch {
			case want.Checkpoint:
				if !errors.As(err, &ce) || ce.Reason != want.Reason {
					t.Fatalf("Verify err = %v, want checkpoint %q", err, want.Reason)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("head %d", ce.Checkpoint.Counter)) ||
					!strings.Contains(err.Error(), fmt.Sprintf("head is %d", ce.Newest.Counter)) {
					t.Errorf("the error does not name both heads: %v", err)
				}
				// Without the checkpoint the cut is invisible: that is what
				// the checkpoint is for.
				db, _ := store.Open(g.path, store.Options{ReadOnly: true})
				if _, err := db.Verify(&g.key.PublicKey); err != nil {
					t.Errorf("without the checkpoint: %v", err)
				}
				db.Close()
			case !errors.As(err, &ve):
				t.Fatalf("Verify err = %v, want *VerifyError", err)
			case ve.Seq != want.Seq || ve.Reason != want.Reason:
				t.Fatalf("Verify = record %d %q (%s), want record %d %q", ve.Seq, ve.Reason, ve.Detail, want.Seq, want.Reason)
			}
			db, err := store.Open(g.path, g.opts())
			if openFailsAtOpen[k] {
				if err == nil {
					db.Close()
					t.Fatalf("Open with the audit key accepted %v", k)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer db.Close()
			if _, err := db.Revocation(f.revoked); err != nil {
				t.Errorf("revocation of %s not in force: %v", f.revoked, err)
			}
		})
	}
}

// TestRevocationTamperNamedAtOpen: removing or changing a revocation in the
// file makes Open refuse the store, so the revoked certificate cannot be
// accepted again.
func TestRevocationTamperNamedAtOpen(t *testing.T) {
	t.Parallel()
	f := build(t, 4)
	for _, k := range []storetest.Tamper{storetest.RemoveRevocation, storetest.ChangeRevocation} {
		g := f.copyOf(t)
		storetest.Apply(t, g.path, k)
		_, err := store.Open(g.path, g.opts())
		var ve *store.VerifyError
		if !errors.As(err, &ve) || ve.Reason != "revocation set differs from the audit chain" {
			t.Errorf("%v: Open err = %v", k, err)
		}
		// Without the audit check the store opens (read-only queries), but
		// Verify names the serial.
		db, err := store.Open(g.path, store.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = db.Verify(&g.key.PublicKey)
		db.Close()
		if err == nil || !strings.Contains(err.Error(), f.revoked) {
			t.Errorf("%v: Verify does not name serial %s: %v", k, f.revoked, err)
		}
	}
}

// TestRevocationsInMemory overwrites the live store file in place (same
// inode, as an attacker with write access could while the server runs)
// with a copy whose revocation is gone: the open store keeps refusing.
func TestRevocationsInMemory(t *testing.T) {
	t.Parallel()
	f := build(t, 4)
	db, err := store.Open(f.path, f.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	forged := f.copyOf(t)
	storetest.Apply(t, forged.path, storetest.RemoveRevocation)
	b, err := os.ReadFile(forged.path)
	if err != nil {
		t.Fatal(err)
	}
	live, err := os.OpenFile(f.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	live.Close()
	if _, err := db.Revocation(f.revoked); err != nil {
		t.Errorf("revocation lost after the file was overwritten: %v", err)
	}
	if revs, _ := db.Revocations(); len(revs) != 1 {
		t.Errorf("Revocations = %+v", revs)
	}
}

func TestSignHeadSigners(t *testing.T) {
	t.Parallel()
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signers := []struct {
		name  string
		s     crypto.Signer
		wrong crypto.PublicKey
	}{
		{"ecdsa-p256", ecKey, &otherEC.PublicKey},
		{"rsa-pkcs1v15", rsaKey, &otherEC.PublicKey},
		{"ed25519", edKey, &ecKey.PublicKey},
	}
	for _, tc := range signers {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "estca.db")
			db, err := store.Create(path, store.Options{Signer: tc.s, AuditKey: tc.s.Public(), Now: func() time.Time { return fixedNow }})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for i := range 3 {
				if _, err := db.Append(store.AuditRecord{Event: store.EventStart, Reason: fmt.Sprint(i)}); err != nil {
					t.Fatal(err)
				}
			}
			h, err := db.SignHead()
			if err != nil {
				t.Fatal(err)
			}
			if h.Counter != 2 || h.Seq != 5 || len(h.Hash) != 32 || !h.Time.Equal(fixedNow) {
				t.Errorf("head = %+v", h)
			}
			again, err := db.SignHead()
			if err != nil || again.Counter != 2 {
				t.Errorf("SignHead with nothing new signed head %d, %v", again.Counter, err)
			}
			if _, err := db.Append(store.AuditRecord{Event: store.EventStop}); err != nil {
				t.Fatal(err)
			}
			h3, err := db.SignHead()
			if err != nil || string(h3.Prev) != string(h.Digest()) {
				t.Fatalf("head 3 does not chain to head 2: %+v, %v", h3, err)
			}
			rep, err := db.Verify(tc.s.Public())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if rep.Records != 8 || rep.Heads != 3 || rep.Newest.Counter != 3 || rep.Unsigned != 1 {
				t.Errorf("report = %+v", rep)
			}
			heads, err := db.Heads()
			if err != nil || len(heads) != 3 || heads[1].Seq != 5 || heads[2].Seq != 7 {
				t.Errorf("Heads = %+v, %v", heads, err)
			}
			var ve *store.VerifyError
			if _, err := db.Verify(tc.wrong); !errors.As(err, &ve) || ve.Seq != 2 || ve.Reason != "bad head signature" {
				t.Errorf("Verify with wrong key err = %v", err)
			}
			if _, err := db.Verify(nil); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("Verify(nil) with heads err = %v", err)
			}
		})
	}
}

// TestCheckpoint covers the checkpoint file: written on every head, parsed
// in both forms, and checked by Open: missing, behind, forked, of another
// store, and acknowledged as superseded.
func TestCheckpoint(t *testing.T) {
	t.Parallel()
	f := build(t, 3)
	cp, err := store.ReadCheckpoint(f.checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Head == nil || cp.Head.Verify(&f.key.PublicKey) != nil {
		t.Fatalf("checkpoint file does not carry a verifying head: %+v", cp)
	}
	for _, text := range []string{cp.Line(), `time=2026-03-01T12:00:00Z level=INFO msg="audit checkpoint" checkpoint="` + cp.Line() + `"`} {
		line, err := store.ParseCheckpoint([]byte(text))
		if err != nil || line.Counter != cp.Counter || string(line.Digest) != string(cp.Digest) {
			t.Fatalf("one-line form %q: %+v, %v", text, line, err)
		}
	}
	for _, bad := range []string{"", "estca audit checkpoint\nformat 2\n", cp.Line() + " extra",
		strings.Replace(string(store.FormatCheckpoint(*cp.Head)), "head ", "head 9", 1)} {
		if _, err := store.ParseCheckpoint([]byte(bad)); !errors.Is(err, store.ErrCheckpointFormat) {
			t.Errorf("ParseCheckpoint(%q) err = %v", bad, err)
		}
	}

	t.Run("missing", func(t *testing.T) {
		g := f.copyOf(t)
		os.Remove(g.checkpoint)
		var ce *store.CheckpointError
		if _, err := store.Open(g.path, g.opts()); !errors.As(err, &ce) || ce.Reason != "missing" {
			t.Fatalf("Open without checkpoint: %v", err)
		}
	})
	t.Run("store ahead is brought up to date", func(t *testing.T) {
		g := f.copyOf(t)
		db, err := store.Open(g.path, g.opts())
		if err != nil {
			t.Fatal(err)
		}
		heads, _ := db.Heads()
		db.Close()
		if err := store.WriteCheckpoint(g.checkpoint, heads[1]); err != nil {
			t.Fatal(err)
		}
		db, err = store.Open(g.path, g.opts())
		if err != nil {
			t.Fatalf("Open with an older checkpoint of the same chain: %v", err)
		}
		db.Close()
		now, _ := store.ReadCheckpoint(g.checkpoint)
		if now.Counter != heads[len(heads)-1].Counter {
			t.Errorf("checkpoint not brought up to date: head %d", now.Counter)
		}
	})
	t.Run("other store", func(t *testing.T) {
		g := f.copyOf(t)
		other := build(t, 1)
		b, _ := os.ReadFile(other.checkpoint)
		os.WriteFile(g.checkpoint, b, 0o600)
		var ce *store.CheckpointError
		if _, err := store.Open(g.path, g.opts()); !errors.As(err, &ce) || ce.Reason != "other store" {
			t.Fatalf("Open with another store's checkpoint: %v", err)
		}
	})
	t.Run("behind, then acknowledged", func(t *testing.T) {
		g := f.copyOf(t)
		storetest.Apply(t, g.path, storetest.TruncateTail1)
		var ce *store.CheckpointError
		_, err := store.Open(g.path, g.opts())
		if !errors.As(err, &ce) || ce.Reason != "behind" || ce.Newest.Counter != ce.Checkpoint.Counter-1 {
			t.Fatalf("Open of a cut store: %v", err)
		}
		kept := ce.Checkpoint
		o := g.opts()
		o.SkipCheckpoint = true
		db, err := store.Open(g.path, o)
		if err != nil {
			t.Fatal(err)
		}
		h, err := db.AcknowledgeCheckpoint(&kept, "test: accept the cut")
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		if now, _ := store.ReadCheckpoint(g.checkpoint); now.Counter != h.Counter {
			t.Fatalf("checkpoint file is head %d, want %d", now.Counter, h.Counter)
		}
		// The old checkpoint, kept elsewhere, is reported as superseded.
		db, err = store.Open(g.path, store.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := db.Verify(&g.key.PublicKey, kept)
		db.Close()
		if err != nil || len(rep.Superseded) != 1 || rep.Superseded[0].Event != store.EventCheckpoint {
			t.Fatalf("Verify against the superseded checkpoint: %+v, %v", rep, err)
		}
		// Open also accepts the old checkpoint file now (a crash before the
		// new one was written).
		if err := os.WriteFile(g.checkpoint, store.FormatCheckpoint(*kept.Head), 0o600); err != nil {
			t.Fatal(err)
		}
		db, err = store.Open(g.path, g.opts())
		if err != nil {
			t.Fatalf("Open with the acknowledged checkpoint: %v", err)
		}
		// History goes on after the acknowledgement, numbered past the
		// superseded head; a checkpoint kept from it is not excused by the
		// acknowledgement when the store is cut back behind it later.
		if h.Counter != kept.Counter+1 {
			t.Errorf("head after the acknowledgement is %d, want %d", h.Counter, kept.Counter+1)
		}
		for i := range 2 {
			if _, err := db.Append(store.AuditRecord{Event: store.EventStart, Reason: fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.SignHead(); err != nil {
				t.Fatal(err)
			}
		}
		db.Close()
		later, err := store.ReadCheckpoint(g.checkpoint)
		if err != nil {
			t.Fatal(err)
		}
		storetest.Apply(t, g.path, storetest.TruncateTail1)
		db, err = store.Open(g.path, store.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var ce2 *store.CheckpointError
		_, err = db.Verify(&g.key.PublicKey, later)
		db.Close()
		if !errors.As(err, &ce2) || ce2.Reason != "behind" {
			t.Fatalf("cut after an acknowledgement, Verify against a later checkpoint: %v", err)
		}
	})
}
