package storetest_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/estca/estca/store"
	"github.com/estca/estca/store/storetest"
)

var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// build makes a closed store: rounds of (denied record, issued certificate,
// signed head), the certificate of round 2 revoked, then unsigned more
// records that no head covers. The checkpoint is path + ".checkpoint".
func build(t *testing.T, key *ecdsa.PrivateKey, rounds, unsigned int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "estca.db")
	db, err := store.Create(path, store.Options{Signer: key, AuditKey: &key.PublicKey, Checkpoint: path + ".checkpoint",
		Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 1; i <= rounds; i++ {
		if _, err := db.Append(store.AuditRecord{Event: store.EventDenied, Reason: fmt.Sprint("r", i)}); err != nil {
			t.Fatal(err)
		}
		serial := fmt.Sprintf("%x", 0x1000+i)
		c := store.Certificate{Serial: serial, DER: []byte{0x30, 0x03, 0x02, 0x01, byte(i)}, SKI: []byte(serial),
			Requester: "fp-dev", CSRDigest: fmt.Sprintf("%064x", i), Profile: "default", NotBefore: fixedNow, NotAfter: fixedNow.Add(time.Hour)}
		if _, err := db.Issue(c, store.AuditRecord{}); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			if err := db.Revoke(serial, 4, fixedNow, store.AuditRecord{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.SignHead(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range unsigned {
		if _, err := db.Append(store.AuditRecord{Event: store.EventDenied, Reason: fmt.Sprint("u", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// verify opens path read-only and verifies it with pub against the checkpoint at cp.
func verify(t *testing.T, path, cp string, pub *ecdsa.PublicKey) (store.VerifyReport, error) {
	t.Helper()
	db, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	k, err := store.ReadCheckpoint(cp)
	if err != nil {
		t.Fatal(err)
	}
	return db.Verify(pub, k)
}

func TestApply(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	shapes := []struct {
		name             string
		rounds, unsigned int
	}{
		{"heads at the end", 24, 0},
		{"unsigned records after the newest head", 24, 3},
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			t.Parallel()
			orig := build(t, key, sh.rounds, sh.unsigned)
			cp := orig + ".checkpoint"
			before, err := os.ReadFile(orig)
			if err != nil {
				t.Fatal(err)
			}
			clean, err := verify(t, storetest.Copy(t, orig), cp, &key.PublicKey)
			if err != nil {
				t.Fatalf("untouched copy: %v", err)
			}
			for _, k := range storetest.Tampers() {
				t.Run(k.String(), func(t *testing.T) {
					path := storetest.Copy(t, orig)
					want := storetest.Apply(t, path, k)
					rep, err := verify(t, path, cp, &key.PublicKey)
					var ve *store.VerifyError
					var ce *store.CheckpointError
					switch {
					case want == storetest.Expect{}:
						if err != nil {
							t.Fatalf("Apply expects invisible damage, Verify = %v", err)
						}
					case want.Checkpoint:
						if !errors.As(err, &ce) || ce.Reason != want.Reason {
							t.Fatalf("Verify = %+v, %v; want checkpoint %q", rep, err, want.Reason)
						}
					case !errors.As(err, &ve):
						t.Fatalf("Verify = %+v, %v; want *store.VerifyError", rep, err)
					case ve.Seq != want.Seq || ve.Reason != want.Reason:
						t.Errorf("Verify names record %d %q (%s), Apply expects %d %q", ve.Seq, ve.Reason, ve.Detail, want.Seq, want.Reason)
					}
				})
			}
			after, err := os.ReadFile(orig)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Error("the original store file changed")
			}
			if rep, err := verify(t, orig, cp, &key.PublicKey); err != nil || rep.LastSeq != clean.LastSeq || rep.Heads != clean.Heads {
				t.Errorf("original: %+v, %v; want %+v", rep, err, clean)
			}
		})
	}
}

func TestTamperString(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, k := range storetest.Tampers() {
		s := k.String()
		if seen[s] || strings.HasPrefix(s, "Tamper(") {
			t.Errorf("%d: name %q missing or repeated", int(k), s)
		}
		seen[s] = true
	}
	if len(seen) != len(storetest.Tampers()) || storetest.Tamper(0).String() != "Tamper(0)" {
		t.Errorf("names %v, zero %q", seen, storetest.Tamper(0).String())
	}
}

// fatalTB records the first Fatalf and stops the goroutine, as testing does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

// fatalOf runs fn with a TB that records a fatal failure and returns its
// message ("" when fn did not fail).
func fatalOf(t *testing.T, fn func(tb testing.TB)) string {
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msg
}

func TestApplyPreconditions(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	short := build(t, key, 1, 0)
	good := build(t, key, 4, 0)
	broken := storetest.Copy(t, good)
	storetest.Apply(t, broken, storetest.EditRecord)
	missing := filepath.Join(t.TempDir(), "absent.db")
	cases := []struct {
		name string
		path string
		k    storetest.Tamper
		want string
	}{
		{"newest head covers too little", short, storetest.DeleteMiddle, "at least 6"},
		{"too few records to cut 60", good, storetest.TruncateTail60, "cannot delete the last 60"},
		{"already damaged", broken, storetest.Reorder, "does not verify"},
		{"missing file", missing, storetest.EditRecord, "no such file"},
		{"unknown kind", good, storetest.Tamper(0), "unknown tamper"},
		{"unknown kind past the end", good, storetest.ChangeRevocation + 1, "unknown tamper"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := os.ReadFile(tc.path)
			msg := fatalOf(t, func(tb testing.TB) { storetest.Apply(tb, tc.path, tc.k) })
			if !strings.Contains(msg, tc.want) {
				t.Errorf("fatal message %q, want it to contain %q", msg, tc.want)
			}
			after, _ := os.ReadFile(tc.path)
			if !bytes.Equal(before, after) {
				t.Error("Apply changed the file although it failed")
			}
		})
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Apply created %s: %v", missing, err)
	}
	if msg := fatalOf(t, func(tb testing.TB) { storetest.Copy(tb, missing) }); !strings.Contains(msg, "no such file") {
		t.Errorf("Copy of a missing file: %q", msg)
	}
	if msg := fatalOf(t, func(tb testing.TB) { storetest.Apply(tb, storetest.Copy(tb, good), storetest.Insert) }); msg != "" {
		t.Errorf("Apply on a valid store failed: %s", msg)
	}
}
