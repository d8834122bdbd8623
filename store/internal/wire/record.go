package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
)

// recordVersion is the first byte of every record encoding.
const recordVersion = 2

// Record is one audit record as encoded. The audit bucket maps the 8-byte
// sequence number to hash (32) || EncodeRecord(r), where hash =
// SHA-256(previous record's hash || encoding), the previous hash being
// empty for seq 1.
//
// Encoding, in this order: version byte 2; Seq uvarint; Time int64; Event
// str; Fingerprint kstr; Subject, IDevIDSerial, Anchor, Kind str;
// CSRDigest kstr; Serial as serial bytes (empty for none); Profile,
// Verdict, Reason str; uvarint count of Flags then each str; CertSeq
// uvarint; CertDigest bytes; uvarint 0 when Rev is nil, else its Reason
// plus one followed by its At int64; a presence byte
// and Head (see encodeHead); a presence byte and Ack (Counter uvarint, Seq
// uvarint, Digest bytes).
type Record struct {
	Seq                                 uint64
	Time                                int64
	Event                               string
	Fingerprint                         string
	Subject, IDevIDSerial, Anchor, Kind string
	CSRDigest                           string
	Serial                              string
	Profile, Verdict, Reason            string
	Flags                               []string
	CertSeq                             uint64
	CertDigest                          []byte
	Rev                                 *Rev
	Head                                *Head
	Ack                                 *Ref
}

// Head is a signed statement about the audit chain: record Seq has Hash,
// Prev is the digest of head Counter-1 (32 zero bytes for head 1), and
// RevCount revocations with accumulator RevAcc precede Seq.
type Head struct {
	Store     []byte
	Counter   uint64
	Seq       uint64
	Hash      []byte
	Prev      []byte
	RevCount  uint64
	RevAcc    []byte
	Time      int64
	Signature []byte
}

// Rev is the revocation a revoked record states: CRLReason code and time.
type Rev struct {
	Reason int
	At     int64
}

// Ref names a signed head: its counter, covered seq and digest.
type Ref struct {
	Counter, Seq uint64
	Digest       []byte
}

// EncodeRecord returns the canonical encoding of r. Serial must be valid or
// empty (callers check); an invalid one is encoded as empty.
func EncodeRecord(r *Record) []byte {
	w := Writer{B: make([]byte, 0, 256)}
	w.Byte(recordVersion)
	w.Uvarint(r.Seq)
	w.Int64(r.Time)
	w.String(r.Event)
	w.KString(r.Fingerprint)
	w.String(r.Subject)
	w.String(r.IDevIDSerial)
	w.String(r.Anchor)
	w.String(r.Kind)
	w.KString(r.CSRDigest)
	w.Bytes(SerialKey(r.Serial))
	w.String(r.Profile)
	w.String(r.Verdict)
	w.String(r.Reason)
	w.Uvarint(uint64(len(r.Flags)))
	for _, f := range r.Flags {
		w.String(f)
	}
	w.Uvarint(r.CertSeq)
	w.Bytes(r.CertDigest)
	if r.Rev != nil {
		w.Uvarint(uint64(r.Rev.Reason) + 1)
		w.Int64(r.Rev.At)
	} else {
		w.Uvarint(0)
	}
	if r.Head != nil {
		w.Byte(1)
		encodeHead(&w, r.Head)
	} else {
		w.Byte(0)
	}
	if r.Ack != nil {
		w.Byte(1)
		w.Uvarint(r.Ack.Counter)
		w.Uvarint(r.Ack.Seq)
		w.Bytes(r.Ack.Digest)
	} else {
		w.Byte(0)
	}
	return w.B
}

func encodeHead(w *Writer, h *Head) {
	w.Bytes(h.Store)
	w.Uvarint(h.Counter)
	w.Uvarint(h.Seq)
	w.Bytes(h.Hash)
	w.Bytes(h.Prev)
	w.Uvarint(h.RevCount)
	w.Bytes(h.RevAcc)
	w.Int64(h.Time)
	w.Bytes(h.Signature)
}

// DecodeRecord parses a record encoding; it fails unless enc is canonical.
func DecodeRecord(enc []byte) (Record, error) {
	r := Reader{B: enc}
	if v := r.Byte(); r.Err == nil && v != recordVersion {
		return Record{}, malformed("record version %d", v)
	}
	var rec Record
	rec.Seq = r.Uvarint()
	rec.Time = r.Int64()
	rec.Event = r.String()
	rec.Fingerprint = r.KString()
	rec.Subject = r.String()
	rec.IDevIDSerial = r.String()
	rec.Anchor = r.String()
	rec.Kind = r.String()
	rec.CSRDigest = r.KString()
	if sk := r.Bytes(); sk != nil {
		s, err := ParseSerialKey(sk)
		if err != nil && r.Err == nil {
			r.Err = err
		}
		rec.Serial = s
	}
	rec.Profile = r.String()
	rec.Verdict = r.String()
	rec.Reason = r.String()
	n := r.Uvarint()
	if n > uint64(len(r.B)) {
		r.fail("flag count %d", n)
	}
	for i := uint64(0); i < n && r.Err == nil; i++ {
		rec.Flags = append(rec.Flags, r.String())
	}
	rec.CertSeq = r.Uvarint()
	rec.CertDigest = r.Bytes()
	if rr := r.Uvarint(); rr > 0 {
		if rr > 256 {
			r.fail("revocation reason %d", rr-1)
		}
		rec.Rev = &Rev{Reason: int(rr - 1), At: r.Int64()}
	}
	switch r.Byte() {
	case 0:
	case 1:
		rec.Head = decodeHead(&r)
	default:
		r.fail("head presence")
	}
	switch r.Byte() {
	case 0:
	case 1:
		rec.Ack = &Ref{Counter: r.Uvarint(), Seq: r.Uvarint(), Digest: r.Bytes()}
	default:
		r.fail("ack presence")
	}
	if err := r.Done(); err != nil {
		return Record{}, err
	}
	if !bytes.Equal(EncodeRecord(&rec), enc) {
		return Record{}, malformed("non-canonical record")
	}
	return rec, nil
}

func decodeHead(r *Reader) *Head {
	return &Head{
		Store: r.Bytes(), Counter: r.Uvarint(), Seq: r.Uvarint(), Hash: r.Bytes(), Prev: r.Bytes(),
		RevCount: r.Uvarint(), RevAcc: r.Bytes(), Time: r.Int64(), Signature: r.Bytes(),
	}
}

// RecordHash is SHA-256(prev || enc).
func RecordHash(prev, enc []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(enc)
	return h.Sum(nil)
}

// StoredRecord is the audit bucket value: hash || enc.
func StoredRecord(hash, enc []byte) []byte {
	v := make([]byte, 0, len(hash)+len(enc))
	return append(append(v, hash...), enc...)
}

// SplitStored splits an audit bucket value into hash and encoding.
func SplitStored(v []byte) (hash, enc []byte, err error) {
	if len(v) <= HashSize {
		return nil, nil, malformed("short audit value")
	}
	return v[:HashSize], v[HashSize:], nil
}

// headDomain separates head signatures from any other use of the audit key.
const headDomain = "estca audit head v2\x00"

// HeadMessage returns the bytes a head signature covers: the domain
// string, then Store (16), Counter (8), Seq (8), Hash (32), Prev (32),
// RevCount (8), RevAcc (32) and Time (8), integers big-endian. Short or
// missing digests are zero-padded, long ones cut, so the layout is fixed;
// verifiers check the lengths separately.
func HeadMessage(h *Head) []byte {
	m := make([]byte, 0, len(headDomain)+16+8+8+32+32+8+32+8)
	m = append(m, headDomain...)
	m = appendFixed(m, h.Store, 16)
	m = binary.BigEndian.AppendUint64(m, h.Counter)
	m = binary.BigEndian.AppendUint64(m, h.Seq)
	m = appendFixed(m, h.Hash, HashSize)
	m = appendFixed(m, h.Prev, HashSize)
	m = binary.BigEndian.AppendUint64(m, h.RevCount)
	m = appendFixed(m, h.RevAcc, HashSize)
	return binary.BigEndian.AppendUint64(m, uint64(h.Time))
}

func appendFixed(m, b []byte, n int) []byte {
	var pad [HashSize]byte
	if len(b) >= n {
		return append(m, b[:n]...)
	}
	return append(append(m, b...), pad[:n-len(b)]...)
}

// HeadDigest is SHA-256(HeadMessage(h)): the identity of a head, the Prev
// of the next one and what a checkpoint is compared by.
func HeadDigest(h *Head) []byte {
	d := sha256.Sum256(HeadMessage(h))
	return d[:]
}

// revDomain separates revocation accumulator hashes.
const revDomain = "estca revocation v2\x00"

// RevAccNext folds one revocation into the accumulator: SHA-256(domain ||
// acc || record seq (8) || serial key length (1) || serial key || reason
// (1) || time (8)). The accumulator of no revocations is 32 zero bytes.
func RevAccNext(acc []byte, recordSeq uint64, serial string, reason int, at int64) []byte {
	h := sha256.New()
	h.Write([]byte(revDomain))
	h.Write(appendFixed(nil, acc, HashSize))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], recordSeq)
	h.Write(b[:])
	sk := SerialKey(serial)
	h.Write([]byte{byte(len(sk))})
	h.Write(sk)
	h.Write([]byte{byte(reason)})
	binary.BigEndian.PutUint64(b[:], uint64(at))
	h.Write(b[:])
	return h.Sum(nil)
}

// ZeroAcc returns the accumulator of the empty revocation set.
func ZeroAcc() []byte { return make([]byte, HashSize) }

// Revocation is the value of the revocations bucket (key: serial key):
// RecordSeq (8), Reason (1), Time int64 (8).
type Revocation struct {
	RecordSeq uint64
	Reason    int
	Time      int64
}

// EncodeRevocation returns the 17-byte value.
func EncodeRevocation(v Revocation) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 17), v.RecordSeq)
	b = append(b, byte(v.Reason))
	return binary.BigEndian.AppendUint64(b, uint64(v.Time))
}

// DecodeRevocation parses a revocations bucket value.
func DecodeRevocation(b []byte) (Revocation, error) {
	if len(b) != 17 {
		return Revocation{}, malformed("revocation value of %d bytes", len(b))
	}
	return Revocation{RecordSeq: binary.BigEndian.Uint64(b), Reason: int(b[8]),
		Time: int64(binary.BigEndian.Uint64(b[9:]))}, nil
}

// certVersion is the first byte of a certificate value without an
// identity; certVersionIdentity of one with an identity.
const (
	certVersion         = 2
	certVersionIdentity = 3
)

// Cert is the value of the certs bucket (key: 8-byte issuance sequence,
// from 1, in issuance order): version byte 2, Serial as serial bytes, DER
// bytes, Subject str, SKI bytes, Requester kstr, Profile str, CSRDigest
// kstr, NotBefore, NotAfter, IssuedAt int64, AuditSeq uvarint (the seq of
// its issued record). Version byte 3 has the same fields followed by
// Identity str (the policy identity the certificate was counted for); a
// certificate with an empty Identity is always encoded as version 2.
type Cert struct {
	Serial                        string
	DER                           []byte
	Subject                       string
	SKI                           []byte
	Requester                     string
	Profile                       string
	CSRDigest                     string
	NotBefore, NotAfter, IssuedAt int64
	AuditSeq                      uint64
	Identity                      string
}

// EncodeCert returns the canonical value.
func EncodeCert(c *Cert) []byte {
	w := Writer{B: make([]byte, 0, len(c.DER)+160+len(c.Identity))}
	if c.Identity != "" {
		w.Byte(certVersionIdentity)
	} else {
		w.Byte(certVersion)
	}
	w.Bytes(SerialKey(c.Serial))
	w.Bytes(c.DER)
	w.String(c.Subject)
	w.Bytes(c.SKI)
	w.KString(c.Requester)
	w.String(c.Profile)
	w.KString(c.CSRDigest)
	w.Int64(c.NotBefore)
	w.Int64(c.NotAfter)
	w.Int64(c.IssuedAt)
	w.Uvarint(c.AuditSeq)
	if c.Identity != "" {
		w.String(c.Identity)
	}
	return w.B
}

// DecodeCert parses a certs bucket value strictly.
func DecodeCert(v []byte) (Cert, error) {
	r := Reader{B: v}
	version := r.Byte()
	if r.Err == nil && version != certVersion && version != certVersionIdentity {
		return Cert{}, malformed("certificate version %d", version)
	}
	var c Cert
	var err error
	if c.Serial, err = ParseSerialKey(r.Bytes()); err != nil && r.Err == nil {
		r.Err = err
	}
	c.DER = r.Bytes()
	c.Subject = r.String()
	c.SKI = r.Bytes()
	c.Requester = r.KString()
	c.Profile = r.String()
	c.CSRDigest = r.KString()
	c.NotBefore = r.Int64()
	c.NotAfter = r.Int64()
	c.IssuedAt = r.Int64()
	c.AuditSeq = r.Uvarint()
	if version == certVersionIdentity {
		c.Identity = r.String()
	}
	if err := r.Done(); err != nil {
		return Cert{}, err
	}
	if !bytes.Equal(EncodeCert(&c), v) {
		return Cert{}, malformed("non-canonical certificate value")
	}
	return c, nil
}

// CertDigest is SHA-256 of a certificate's DER, as committed by its issued record.
func CertDigest(der []byte) []byte {
	d := sha256.Sum256(der)
	return d[:]
}

// requestVersion is the first byte of a request value without an
// identity; requestVersionIdentity of one with an identity.
const (
	requestVersion         = 2
	requestVersionIdentity = 3
)

// Request is the value of the requests bucket (key: RequestKey): version
// byte 2, State byte, CertSeq uvarint (0: none), Subject, IDevIDSerial,
// Anchor, Kind str (the requester, kept for pending requests), CSR bytes,
// Profile, Reason str, Created, Decided int64. Version byte 3 has the same
// fields followed by Identity str (the policy identity of the requester, the
// key of the pending index); a request with an empty Identity is always
// encoded as version 2.
type Request struct {
	State                               byte
	CertSeq                             uint64
	Subject, IDevIDSerial, Anchor, Kind string
	CSR                                 []byte
	Profile, Reason                     string
	Created, Decided                    int64
	Identity                            string
}

// EncodeRequest returns the canonical value.
func EncodeRequest(q *Request) []byte {
	w := Writer{B: make([]byte, 0, 48+len(q.CSR)+len(q.Identity))}
	if q.Identity != "" {
		w.Byte(requestVersionIdentity)
	} else {
		w.Byte(requestVersion)
	}
	w.Byte(q.State)
	w.Uvarint(q.CertSeq)
	w.String(q.Subject)
	w.String(q.IDevIDSerial)
	w.String(q.Anchor)
	w.String(q.Kind)
	w.Bytes(q.CSR)
	w.String(q.Profile)
	w.String(q.Reason)
	w.Int64(q.Created)
	w.Int64(q.Decided)
	if q.Identity != "" {
		w.String(q.Identity)
	}
	return w.B
}

// DecodeRequest parses a requests bucket value strictly.
func DecodeRequest(v []byte) (Request, error) {
	r := Reader{B: v}
	version := r.Byte()
	if r.Err == nil && version != requestVersion && version != requestVersionIdentity {
		return Request{}, malformed("request version %d", version)
	}
	q := Request{State: r.Byte(), CertSeq: r.Uvarint(), Subject: r.String(), IDevIDSerial: r.String(),
		Anchor: r.String(), Kind: r.String(), CSR: r.Bytes(), Profile: r.String(), Reason: r.String(),
		Created: r.Int64(), Decided: r.Int64()}
	if version == requestVersionIdentity {
		q.Identity = r.String()
	}
	if err := r.Done(); err != nil {
		return Request{}, err
	}
	if !bytes.Equal(EncodeRequest(&q), v) {
		return Request{}, malformed("non-canonical request value")
	}
	return q, nil
}
