package storefill

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/estca/estca/store"
)

// ErrSample means the sample cannot be varied (its serial or SKI is not in
// its DER, or it has no requester or CSR digest).
var ErrSample = errors.New("storefill: unusable sample")

// Sample is one real issued certificate and its audit record, as the CA
// stored them: the shape of every certificate Fill writes.
type Sample struct {
	Cert   store.Certificate
	Record store.AuditRecord
}

// SampleOf reads the certificate with the given serial and its issued
// record from db.
func SampleOf(db *store.DB, serial string) (Sample, error) {
	c, err := db.Certificate(serial)
	if err != nil {
		return Sample{}, fmt.Errorf("storefill: sample: %w", err)
	}
	recs, err := db.AuditRecords(store.AuditFilter{Serial: serial})
	if err != nil {
		return Sample{}, fmt.Errorf("storefill: sample: %w", err)
	}
	for _, r := range recs {
		if r.Event == store.EventIssued && r.CertSeq == c.Seq {
			s := Sample{Cert: c, Record: r}
			if _, err := newVariant(s, nil); err != nil {
				return Sample{}, err
			}
			return s, nil
		}
	}
	return Sample{}, fmt.Errorf("%w: no issued record for %s", ErrSample, serial)
}

// Options configures Fill.
type Options struct {
	// N is the number of certificates to add.
	N int
	// Workers is the number of goroutines calling Issue; 0 means 256
	// (store.DefaultMaxBatchSize: a fill is bound by the fsync per group
	// commit, so the bigger the batches the faster).
	Workers int
	// HeadEvery signs a head (store.DB.SignHead) after every HeadEvery
	// certificates; 0 means 10,000; negative means never.
	HeadEvery int
	// Seed makes the certificates of this fill differ from another's.
	Seed []byte
	// Progress, if not nil, is called from one goroutine at a time with
	// the number of certificates stored so far, every ProgressEvery
	// certificates (0: 100,000) and at the end.
	Progress      func(done int, elapsed time.Duration)
	ProgressEvery int
}

// Report is what Fill did.
type Report struct {
	// Certificates and Heads written.
	Certificates, Heads int
	// Elapsed is the wall time of the fill.
	Elapsed time.Duration
}

// Fill adds o.N certificates shaped like s to db (see the package
// documentation). It stops at the first error, or when ctx is done, and
// reports what it wrote until then.
func Fill(ctx context.Context, db *store.DB, s Sample, o Options) (Report, error) {
	if o.Workers <= 0 {
		o.Workers = store.DefaultMaxBatchSize
	}
	if o.HeadEvery == 0 {
		o.HeadEvery = 10000
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 100000
	}
	v, err := newVariant(s, o.Seed)
	if err != nil {
		return Report{}, err
	}
	start := time.Now()
	var (
		next, done, heads atomic.Int64
		progMu            sync.Mutex
		errOnce           sync.Once
		first             error
		wg                sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fail := func(err error) {
		errOnce.Do(func() { first = err; cancel() })
	}
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > int64(o.N) {
					return
				}
				c, r := v.make(uint64(i))
				if _, err := db.Issue(c, r); err != nil {
					fail(fmt.Errorf("storefill: certificate %d: %w", i, err))
					return
				}
				n := done.Add(1)
				if o.HeadEvery > 0 && n%int64(o.HeadEvery) == 0 {
					if _, err := db.SignHead(); err != nil {
						fail(fmt.Errorf("storefill: head after %d: %w", n, err))
						return
					}
					heads.Add(1)
				}
				if o.Progress != nil && n%int64(o.ProgressEvery) == 0 {
					progMu.Lock()
					o.Progress(int(n), time.Since(start))
					progMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	rep := Report{Certificates: int(done.Load()), Heads: int(heads.Load()), Elapsed: time.Since(start)}
	if first == nil && ctx.Err() != nil {
		first = fmt.Errorf("storefill: %w", context.Cause(ctx))
	}
	if first == nil && o.Progress != nil && rep.Certificates%o.ProgressEvery != 0 {
		o.Progress(rep.Certificates, rep.Elapsed)
	}
	return rep, first
}

// variant makes the i-th certificate and record from a sample.
type variant struct {
	s        Sample
	seed     []byte
	serial   []byte // the sample's serial, as in the DER
	serialAt int    // its offset in the DER
	skiAt    int    // the SKI's offset in the DER, -1 for none
}

func newVariant(s Sample, seed []byte) (*variant, error) {
	serial, err := hex.DecodeString(evenHex(s.Cert.Serial))
	if err != nil || len(serial) < 8 {
		return nil, fmt.Errorf("%w: serial %q", ErrSample, s.Cert.Serial)
	}
	v := &variant{s: s, seed: seed, serial: serial, serialAt: bytes.Index(s.Cert.DER, serial), skiAt: -1}
	if v.serialAt < 0 {
		return nil, fmt.Errorf("%w: serial %s not found in the DER", ErrSample, s.Cert.Serial)
	}
	if len(s.Cert.SKI) > 0 {
		if v.skiAt = bytes.Index(s.Cert.DER, s.Cert.SKI); v.skiAt < 0 {
			return nil, fmt.Errorf("%w: SKI not found in the DER", ErrSample)
		}
	}
	if s.Cert.Requester == "" || s.Cert.CSRDigest == "" {
		return nil, fmt.Errorf("%w: no requester or CSR digest", ErrSample)
	}
	return v, nil
}

func evenHex(s string) string {
	if len(s)%2 == 1 {
		return "0" + s
	}
	return s
}

// make returns certificate i (from 1) and its record, unique per seed and i.
func (v *variant) make(i uint64) (store.Certificate, store.AuditRecord) {
	h := sha256.New()
	h.Write(v.seed)
	h.Write(binary.BigEndian.AppendUint64(nil, i))
	sum := h.Sum(nil)
	derive := func(label string) []byte {
		d := sha256.Sum256(append([]byte(label), sum...))
		return d[:]
	}

	c := v.s.Cert
	der := bytes.Clone(c.DER)
	serial := derive("serial")[:len(v.serial)]
	serial[0] = 0x40 | serial[0]&0x3f // positive, no leading zero: same DER length
	copy(der[v.serialAt:], serial)
	if v.skiAt >= 0 {
		ski := derive("ski")[:len(c.SKI)]
		copy(der[v.skiAt:], ski)
		c.SKI = ski
	}
	c.Seq = 0
	c.DER = der
	c.Serial = hex.EncodeToString(serial)
	c.Requester = hex.EncodeToString(derive("requester"))
	c.CSRDigest = hex.EncodeToString(derive("csr"))
	// Devices arrive in no order: the tails are hashed, not counted.
	id := binary.BigEndian.Uint64(sum)
	c.Subject = tail(c.Subject, id)
	c.Identity = tail(c.Identity, id)
	c.IssuedAt = time.Time{} // the store's clock

	r := v.s.Record
	r.Seq, r.Prev, r.Hash, r.CertSeq, r.CertDigest, r.Time = 0, nil, nil, 0, nil, time.Time{}
	r.Serial = c.Serial
	r.CSRDigest = c.CSRDigest
	r.Requester.Fingerprint = c.Requester
	r.Requester.Subject = tail(r.Requester.Subject, id)
	r.Requester.IDevIDSerial = tail(r.Requester.IDevIDSerial, id)
	return c, r
}

// tail replaces the last characters of s (up to 8) by hexadecimal digits
// of i, keeping its length; "" stays "".
func tail(s string, i uint64) string {
	if s == "" {
		return s
	}
	n := min(len(s), 8)
	x := fmt.Sprintf("%016x", i)
	return s[:len(s)-n] + x[16-n:]
}
