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

// build makes a closed store file: for each step, that many audit records
// (alternately Append and Issue), then a signed head when sign is set.
func build(t *testing.T, key *ecdsa.PrivateKey, steps []step) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "estca.db")
	db, err := store.Open(path, store.Options{Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	i := 0
	for _, st := range steps {
		for range st.records {
			i++
			if i%2 == 0 {
				c := store.Certificate{
					Serial:    fmt.Sprintf("%x", 0x1000+i),
					DER:       []byte{0x30, 0x03, 0x02, 0x01, byte(i)}, // not parsed by the store
					Requester: "fp-dev",
					Profile:   "default",
					NotBefore: fixedNow,
					NotAfter:  fixedNow.Add(time.Hour),
				}
				if _, err := db.Issue(c, store.AuditRecord{}); err != nil {
					t.Fatal(err)
				}
			} else if _, err := db.Append(store.AuditRecord{Event: store.EventDenied, Reason: fmt.Sprint("r", i)}); err != nil {
				t.Fatal(err)
			}
		}
		if st.sign {
			if _, err := db.SignHead(key); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

type step struct {
	records int
	sign    bool
}

// verify opens path read-only and verifies it with pub.
func verify(t *testing.T, path string, pub *ecdsa.PublicKey) (store.VerifyReport, error) {
	t.Helper()
	db, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return db.Verify(pub)
}

// reasons are the VerifyError reasons each kind causes, as documented.
func reasons(k storetest.Tamper) string {
	return map[storetest.Tamper]string{
		storetest.EditRecord:         "hash mismatch",
		storetest.EditRechain:        "broken link",
		storetest.DeleteMiddle:       "sequence gap",
		storetest.DeleteTail:         "missing records after signed head",
		storetest.Reorder:            "out of order",
		storetest.Insert:             "signed head mismatch",
		storetest.ForgeHeadSignature: "bad head signature",
	}[k]
}

func TestApply(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	shapes := []struct {
		name  string
		steps []step
		want  map[storetest.Tamper]uint64 // the seq each kind must report
		// reasons overrides the VerifyError.Reason expected for some kinds.
		reasons map[storetest.Tamper]string
	}{
		{
			// 8 records, heads at 4 and 8: c = 8.
			name:  "two heads, last at the end",
			steps: []step{{4, true}, {4, true}},
			want: map[storetest.Tamper]uint64{
				storetest.EditRecord: 3, storetest.EditRechain: 4, storetest.DeleteMiddle: 4,
				storetest.DeleteTail: 7, storetest.Reorder: 2, storetest.Insert: 4,
				storetest.ForgeHeadSignature: 8,
			},
		},
		{
			// 9 records, heads at 3 and 7, records 8 and 9 unsigned: c = 7.
			name:  "unsigned records after the newest head",
			steps: []step{{3, true}, {4, true}, {2, false}},
			want: map[storetest.Tamper]uint64{
				storetest.EditRecord: 2, storetest.EditRechain: 3, storetest.DeleteMiddle: 3,
				storetest.DeleteTail: 6, storetest.Reorder: 1, storetest.Insert: 3,
				storetest.ForgeHeadSignature: 7,
			},
		},
		{
			// 6 records, heads at 2 and 6: c = 6, a head on the edited record.
			name:  "minimal, head on the edited record",
			steps: []step{{2, true}, {4, true}},
			want: map[storetest.Tamper]uint64{
				storetest.EditRecord: 2, storetest.EditRechain: 2, storetest.DeleteMiddle: 3,
				storetest.DeleteTail: 5, storetest.Reorder: 1, storetest.Insert: 6,
				storetest.ForgeHeadSignature: 6,
			},
			reasons: map[storetest.Tamper]string{storetest.EditRechain: "signed head mismatch"},
		},
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			t.Parallel()
			orig := build(t, key, sh.steps)
			before, err := os.ReadFile(orig)
			if err != nil {
				t.Fatal(err)
			}
			clean, err := verify(t, storetest.Copy(t, orig), &key.PublicKey)
			if err != nil {
				t.Fatalf("untouched copy: %v", err)
			}
			for _, k := range storetest.Tampers() {
				t.Run(k.String(), func(t *testing.T) {
					path := storetest.Copy(t, orig)
					seq := storetest.Apply(t, path, k)
					if want := sh.want[k]; seq != want {
						t.Errorf("Apply returned seq %d, want %d", seq, want)
					}
					rep, err := verify(t, path, &key.PublicKey)
					var ve *store.VerifyError
					if !errors.As(err, &ve) {
						t.Fatalf("Verify = %+v, %v; want *store.VerifyError", rep, err)
					}
					if ve.Seq != seq {
						t.Errorf("Verify names seq %d (%s), Apply returned %d", ve.Seq, ve.Reason, seq)
					}
					want, ok := sh.reasons[k]
					if !ok {
						want = reasons(k)
					}
					if ve.Reason != want {
						t.Errorf("Verify reason %q, want %q", ve.Reason, want)
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
			if rep, err := verify(t, orig, &key.PublicKey); err != nil || rep != clean {
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
	if len(seen) != 7 || storetest.Tamper(0).String() != "Tamper(0)" {
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
	short := build(t, key, []step{{5, true}, {3, false}})
	unsigned := build(t, key, []step{{8, false}})
	good := build(t, key, []step{{6, true}})
	broken := storetest.Copy(t, good)
	storetest.Apply(t, broken, storetest.EditRecord)
	missing := filepath.Join(t.TempDir(), "absent.db")
	cases := []struct {
		name string
		path string
		k    storetest.Tamper
		want string
	}{
		{"newest head covers 5", short, storetest.DeleteMiddle, "at least 6"},
		{"no signed head", unsigned, storetest.Insert, "at least 6"},
		{"already damaged", broken, storetest.Reorder, "hash does not recompute"},
		{"missing file", missing, storetest.EditRecord, "no such file"},
		{"unknown kind", good, storetest.Tamper(0), "unknown tamper"},
		{"unknown kind past the end", good, storetest.ForgeHeadSignature + 1, "unknown tamper"},
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
