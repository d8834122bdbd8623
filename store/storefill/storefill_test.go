package storefill

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/estca/estca/store"
)

// newStore creates a store with a software audit key (the HSM's stand-in:
// the store only sees a crypto.Signer), counting its group commits.
func newStore(tb testing.TB, dir, name string, commits *atomic.Int64) (*store.DB, *ecdsa.PrivateKey) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	o := store.Options{Signer: key, AuditKey: &key.PublicKey}
	if commits != nil {
		o.OnCommit = func(store.CommitStat) { commits.Add(1) }
	}
	db, err := store.Create(filepath.Join(dir, name), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	return db, key
}

// issueReal issues one real certificate into db the way the ca package
// does (a P-256 device certificate with the issuing CA's signature, the
// requester's IDevID identity in the record) and returns its sample.
func issueReal(tb testing.TB, db *store.DB, i int) Sample {
	tb.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial := new(big.Int).SetBytes(sha256.New().Sum([]byte{byte(i), 1})[:16])
	serial.SetBit(serial, 126, 1)
	now := time.Now().UTC().Truncate(time.Second)
	idevid := fmt.Sprintf("DEMO-%06d", i)
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "device " + idevid, SerialNumber: idevid,
		Organization: []string{"Acme Devices"}}, NotBefore: now, NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		SubjectKeyId: []byte("0123456789abcdefghij"), AuthorityKeyId: []byte("abcdefghij0123456789")}
	issuer := &x509.Certificate{Subject: pkix.Name{CommonName: "estca issuing CA", Organization: []string{"estca"}},
		SubjectKeyId: tmpl.AuthorityKeyId}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &devKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	fp := sha256.Sum256([]byte(idevid))
	csr := sha256.Sum256([]byte("csr " + idevid))
	c := store.Certificate{Serial: serial.Text(16), DER: der, Subject: tmpl.Subject.String(), SKI: tmpl.SubjectKeyId,
		Requester: hex.EncodeToString(fp[:]), Identity: "demo/" + idevid, Profile: "device", CSRDigest: hex.EncodeToString(csr[:]),
		NotBefore: now, NotAfter: tmpl.NotAfter}
	rec := store.AuditRecord{Requester: store.Identity{Fingerprint: c.Requester, Subject: "CN=IDevID " + idevid + ",O=Demo Manufacturer",
		IDevIDSerial: idevid, Anchor: "demo", Kind: "idevid"}, CSRDigest: c.CSRDigest, Profile: "device", Verdict: "accepted", Reason: "sen"}
	if _, err := db.Issue(c, rec); err != nil {
		tb.Fatal(err)
	}
	s, err := SampleOf(db, c.Serial)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestFill(t *testing.T) {
	t.Parallel()
	var commits atomic.Int64
	db, key := newStore(t, t.TempDir(), "estca.db", &commits)
	s := issueReal(t, db, 1)
	var progress []int
	rep, err := Fill(context.Background(), db, s, Options{N: 2500, Workers: 16, HeadEvery: 1000, ProgressEvery: 1000,
		Progress: func(n int, _ time.Duration) { progress = append(progress, n) }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Certificates != 2500 || rep.Heads != 2 || fmt.Sprint(progress) != "[1000 2000 2500]" {
		t.Fatalf("report %+v, progress %v", rep, progress)
	}
	if n, _ := db.CountCertificates(); n != 2501 {
		t.Fatalf("%d certificates, want 2501", n)
	}
	if c := commits.Load(); c >= 2500 {
		t.Errorf("%d commits for 2,500 certificates from 16 writers: not group-committed", c)
	}
	// Every copy is the sample's size, with its own serial in its DER.
	all, err := db.Certificates(store.CertFilter{})
	if err != nil {
		t.Fatal(err)
	}
	serials := map[string]bool{}
	at := newVariantAt(s)
	for _, c := range all {
		if len(c.DER) != len(s.Cert.DER) {
			t.Fatalf("certificate %s: %d bytes, the sample %d", c.Serial, len(c.DER), len(s.Cert.DER))
		}
		if v, err := newVariant(Sample{Cert: c, Record: s.Record}, nil); err != nil || v.serialAt != at {
			t.Fatalf("certificate %s: serial not where the sample has it (%v)", c.Serial, err)
		}
		serials[c.Serial] = true
	}
	if len(serials) != 2501 {
		t.Fatalf("%d distinct serials", len(serials))
	}
	if _, err := db.SignHead(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Verify(&key.PublicKey); err != nil {
		t.Fatal(err)
	}
	// The same seed again collides.
	if _, err := Fill(context.Background(), db, s, Options{N: 10, HeadEvery: -1}); !errors.Is(err, store.ErrDuplicateSerial) {
		t.Fatalf("refill with the same seed: %v", err)
	}
}

func newVariantAt(s Sample) int {
	v, _ := newVariant(s, nil)
	return v.serialAt
}

func TestSampleOf(t *testing.T) {
	t.Parallel()
	db, _ := newStore(t, t.TempDir(), "estca.db", nil)
	s := issueReal(t, db, 1)
	if _, err := SampleOf(db, "7777"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown serial: %v", err)
	}
	bad := s
	bad.Cert.DER = []byte("not a certificate")
	if _, err := newVariant(bad, nil); !errors.Is(err, ErrSample) {
		t.Errorf("serial not in DER: %v", err)
	}
	bad = s
	bad.Cert.CSRDigest = ""
	if _, err := newVariant(bad, nil); !errors.Is(err, ErrSample) {
		t.Errorf("no CSR digest: %v", err)
	}
	if got := tail("abc", 0x1234); got != "234" {
		t.Errorf("tail: %q", got)
	}
}

var (
	issueN      = flag.Int("fill.n", 100000, "BenchmarkIssueAtScale: certificates in the full store")
	issueRounds = flag.Int("fill.rounds", 5, "BenchmarkIssueAtScale: rounds per store")
	issueD      = flag.Duration("fill.d", 2*time.Second, "BenchmarkIssueAtScale: duration of a round")
	issueDir    = flag.String("fill.dir", "", "BenchmarkIssueAtScale: directory of the stores")
)

// BenchmarkIssueAtScale is the store's part of `make bench-scale`, without
// the CA and the network: durable Issue from 8 goroutines into a store
// filled to -fill.n certificates and into an empty one, interleaved
// rounds, reporting the same-run ratios full/empty of the process CPU per
// issue (this process runs nothing else) and of the rate, and the group
// commits per issue of each.
func BenchmarkIssueAtScale(b *testing.B) {
	dir := b.TempDir()
	if *issueDir != "" {
		d, err := os.MkdirTemp(*issueDir, "fill-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	var commits [2]atomic.Int64
	full, _ := newStore(b, dir, "full.db", &commits[0])
	empty, _ := newStore(b, dir, "empty.db", &commits[1])
	s := issueReal(b, full, 1)
	rep, err := Fill(context.Background(), full, s, Options{N: *issueN - 1, Seed: []byte("full")})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("fill: %d in %s (%.0f/s)", rep.Certificates, rep.Elapsed.Round(time.Millisecond), float64(rep.Certificates)/rep.Elapsed.Seconds())
	sp, _ := full.Space()
	b.Logf("full store: %.0f bytes per certificate (file), %.0f in use", float64(sp.FileSize)/float64(*issueN), float64(sp.InUse)/float64(*issueN))
	vs := [2]*variant{}
	for i, seed := range []string{"full-round", "empty-round"} {
		if vs[i], err = newVariant(s, []byte(seed)); err != nil {
			b.Fatal(err)
		}
	}
	var next [2]atomic.Uint64
	round := func(t int, db *store.DB) (rate, cpu, perCommit float64) {
		c0 := commits[t].Load()
		n0 := next[t].Load()
		u0 := cpuTime()
		start := time.Now()
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < *issueD {
					c, r := vs[t].make(next[t].Add(1))
					if _, err := db.Issue(c, r); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		n := float64(next[t].Load() - n0)
		return n / el.Seconds(), float64(cpuTime()-u0) / n, float64(commits[t].Load()-c0) / n
	}
	var rates, cpus [2][]float64
	var cpr [2]float64
	for b.Loop() {
		for r := range *issueRounds {
			order := []int{0, 1}
			if r%2 == 1 {
				order = []int{1, 0}
			}
			for _, t := range order {
				rate, cpu, pc := round(t, []*store.DB{full, empty}[t])
				rates[t] = append(rates[t], rate)
				cpus[t] = append(cpus[t], cpu)
				cpr[t] = pc
				b.Logf("round %d %-5s %7.0f issues/s, %6.1f µs CPU per issue, %.3f commits per issue", r+1, []string{"full", "empty"}[t], rate, cpu/1e3, pc)
			}
		}
	}
	b.ReportMetric(median(rates[0])/median(rates[1]), "rate-ratio")
	b.ReportMetric(median(cpus[0])/median(cpus[1]), "cpu-ratio")
	b.ReportMetric(median(cpus[0])/1e3, "full-cpu-µs/issue")
	b.ReportMetric(median(cpus[1])/1e3, "empty-cpu-µs/issue")
	b.ReportMetric(median(rates[0]), "full-issues/s")
	b.ReportMetric(median(rates[1]), "empty-issues/s")
	b.ReportMetric(float64(sp.FileSize)/float64(*issueN), "bytes/cert")
}

// cpuTime is this process's user + system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
