package wire

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
)

// Version is the store format version kept under MetaVersion. Format 3
// is format 2 without the certs_by_ski and certs_by_requester indexes
// (DroppedBuckets), which cost a random-key insert each per certificate
// and served no query but their own.
const Version = 3

// Bucket names.
var (
	BucketMeta        = []byte("meta")
	BucketCerts       = []byte("certs")
	BucketSerials     = []byte("serials")
	BucketRequests    = []byte("requests")
	BucketRevocations = []byte("revocations")
	BucketAudit       = []byte("audit")
	BucketHeads       = []byte("heads")

	// BucketByIdentity indexes certificates by the policy identity they
	// were issued to: IdentityKey → the issue time (int64).
	BucketByIdentity = []byte("certs_by_identity")
	// BucketPending indexes the requests waiting for an operator:
	// PendingKey → empty.
	BucketPending = []byte("requests_pending")

	// Buckets lists every bucket a format 3 store must have.
	Buckets = [][]byte{BucketMeta, BucketCerts, BucketSerials, BucketRequests, BucketRevocations,
		BucketAudit, BucketHeads}
	// DroppedBuckets are the format 2 indexes format 3 does not have
	// (certificates by SKI and by requester: IndexKey → empty); Migrate
	// leaves them out.
	DroppedBuckets = [][]byte{[]byte("certs_by_ski"), []byte("certs_by_requester")}
	// AddedBuckets are index buckets added within format 2: Create makes
	// them, a writable Open adds them to an older store, and a store
	// without them reads as if they were empty.
	AddedBuckets = [][]byte{BucketByIdentity, BucketPending}
)

// Keys of the meta bucket.
var (
	// MetaVersion holds the format version, 8 bytes big-endian.
	MetaVersion = []byte("version")
	// MetaStoreID holds the 16 random bytes that name this store; every
	// signed head commits to it.
	MetaStoreID = []byte("store_id")
	// MetaChain holds the newest audit record: seq (8) || hash (32).
	MetaChain = []byte("chain")
	// MetaHead holds the newest signed head: counter (8) || seq of the
	// record that holds it (8) || head digest (32).
	MetaHead = []byte("head")
	// MetaRevocations holds the revocation accumulator after the newest
	// record: count (8) || accumulator (32).
	MetaRevocations = []byte("revocations")
	// MetaAck holds the seq (8) of the newest record that acknowledges a
	// superseded checkpoint (restore, checkpoint reset, migration).
	MetaAck = []byte("ack")
)

// HashSize is the size of every digest here (SHA-256).
const HashSize = 32

// ErrMalformed is returned (wrapped) by every decoder.
var ErrMalformed = errors.New("malformed")

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// U64 encodes v as 8 bytes big-endian (sequence keys).
func U64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// ParseU64 decodes an 8-byte big-endian value.
func ParseU64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, malformed("%d-byte integer", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// Writer appends primitive encodings.
type Writer struct{ B []byte }

// Uvarint appends v.
func (w *Writer) Uvarint(v uint64) { w.B = binary.AppendUvarint(w.B, v) }

// Bytes appends a length-prefixed byte string.
func (w *Writer) Bytes(v []byte) {
	w.Uvarint(uint64(len(v)))
	w.B = append(w.B, v...)
}

// String appends a length-prefixed text.
func (w *Writer) String(s string) {
	w.Uvarint(uint64(len(s)))
	w.B = append(w.B, s...)
}

// KString appends a compact string (see the package documentation).
func (w *Writer) KString(s string) { w.Bytes(CompactString(s)) }

// Int64 appends v as 8 bytes big-endian.
func (w *Writer) Int64(v int64) { w.B = binary.BigEndian.AppendUint64(w.B, uint64(v)) }

// Byte appends one byte.
func (w *Writer) Byte(v byte) { w.B = append(w.B, v) }

// Reader consumes primitive encodings; the first error sticks.
type Reader struct {
	B   []byte
	Err error
}

func (r *Reader) fail(format string, a ...any) {
	if r.Err == nil {
		r.Err = malformed(format, a...)
	}
}

// Uvarint reads a canonical unsigned varint.
func (r *Reader) Uvarint() uint64 {
	if r.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.B)
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		r.fail("varint")
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Bytes reads a length-prefixed byte string (a copy; nil when empty).
func (r *Reader) Bytes() []byte {
	n := r.Uvarint()
	if r.Err != nil {
		return nil
	}
	if n > uint64(len(r.B)) {
		r.fail("length %d beyond the end", n)
		return nil
	}
	if n == 0 {
		return nil
	}
	v := append([]byte(nil), r.B[:n]...)
	r.B = r.B[n:]
	return v
}

// String reads a length-prefixed text.
func (r *Reader) String() string { return string(r.Bytes()) }

// KString reads a compact string.
func (r *Reader) KString() string {
	b := r.Bytes()
	if r.Err != nil {
		return ""
	}
	s, err := ParseCompactString(b)
	if err != nil {
		r.Err = err
	}
	return s
}

// Int64 reads 8 bytes big-endian.
func (r *Reader) Int64() int64 {
	if r.Err != nil {
		return 0
	}
	if len(r.B) < 8 {
		r.fail("short integer")
		return 0
	}
	v := int64(binary.BigEndian.Uint64(r.B))
	r.B = r.B[8:]
	return v
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if r.Err != nil {
		return 0
	}
	if len(r.B) < 1 {
		r.fail("short")
		return 0
	}
	v := r.B[0]
	r.B = r.B[1:]
	return v
}

// Done returns the first error, or an error if bytes are left over.
func (r *Reader) Done() error {
	if r.Err == nil && len(r.B) > 0 {
		r.fail("%d trailing bytes", len(r.B))
	}
	return r.Err
}

// Compact string tags.
const (
	tagText = 0
	tagHex  = 1
)

// isHex reports whether s is non-empty, of even length and lowercase hex.
func isHex(s string) bool { return s != "" && len(s)%2 == 0 && lowerHex(s) }

// lowerHex reports whether s holds only lowercase hex digits.
func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// CompactString returns the payload of a kstr: nil for "", else a tag byte
// and the hex-decoded bytes or the text.
func CompactString(s string) []byte {
	if s == "" {
		return nil
	}
	if isHex(s) {
		b, _ := hex.DecodeString(s)
		return append([]byte{tagHex}, b...)
	}
	return append([]byte{tagText}, s...)
}

// ParseCompactString is the strict inverse of CompactString.
func ParseCompactString(b []byte) (string, error) {
	if len(b) == 0 {
		return "", nil
	}
	var s string
	switch b[0] {
	case tagHex:
		if len(b) == 1 {
			return "", malformed("empty hex string")
		}
		s = hex.EncodeToString(b[1:])
	case tagText:
		s = string(b[1:])
		if s == "" || isHex(s) {
			return "", malformed("non-canonical string")
		}
	default:
		return "", malformed("string tag %d", b[0])
	}
	return s, nil
}

// MaxSerialHex is the longest serial: 20 octets (RFC 5280 §4.1.2.2).
const MaxSerialHex = 40

// ValidSerial reports whether s is lowercase hex of a positive integer with
// no leading zeros, at most 20 octets.
func ValidSerial(s string) bool {
	return s != "" && len(s) <= MaxSerialHex && s[0] != '0' && lowerHex(s)
}

// SerialKey returns the serial's big-endian integer bytes; nil unless
// ValidSerial(s). Keys of the serials and revocations buckets.
func SerialKey(s string) []byte {
	if !ValidSerial(s) {
		return nil
	}
	if len(s)%2 == 1 {
		s = "0" + s
	}
	b, _ := hex.DecodeString(s)
	return b
}

// ParseSerialKey is the strict inverse of SerialKey.
func ParseSerialKey(b []byte) (string, error) {
	if len(b) == 0 || len(b) > MaxSerialHex/2 || b[0] == 0 {
		return "", malformed("serial key %x", b)
	}
	s := hex.EncodeToString(b)
	if s[0] == '0' {
		s = s[1:]
	}
	return s, nil
}

// IndexKey is a composite key: 2-byte length, part, then the 8-byte
// certificate sequence number. A prefix scan on IndexPrefix(part) cannot
// confuse a short part with a longer one.
func IndexKey(part []byte, certSeq uint64) []byte {
	return binary.BigEndian.AppendUint64(IndexPrefix(part), certSeq)
}

// IndexPrefix is the prefix of every IndexKey with that part.
func IndexPrefix(part []byte) []byte {
	k := make([]byte, 0, 2+len(part)+8)
	k = binary.BigEndian.AppendUint16(k, uint16(min(len(part), math.MaxUint16)))
	return append(k, part...)
}

// IdentityPart is the index part of a policy identity (its text).
func IdentityPart(identity string) []byte { return []byte(identity) }

// PendingKey is the key of the pending index: IndexPrefix of the identity,
// then the RequestKey of the request.
func PendingKey(identity, requester, csrDigest string) []byte {
	return append(IndexPrefix(IdentityPart(identity)), RequestKey(requester, csrDigest)...)
}

// ParsePendingKey is the inverse of PendingKey.
func ParsePendingKey(k []byte) (identity, requester, csrDigest string, err error) {
	if len(k) < 2 {
		return "", "", "", malformed("pending key")
	}
	n := int(binary.BigEndian.Uint16(k))
	if len(k) < 2+n {
		return "", "", "", malformed("pending key")
	}
	requester, csrDigest, err = ParseRequestKey(k[2+n:])
	return string(k[2 : 2+n]), requester, csrDigest, err
}

// RequestKey is the key of the requests bucket: IndexPrefix of the
// requester's compact fingerprint, then the compact CSR digest.
func RequestKey(requester, csrDigest string) []byte {
	return append(IndexPrefix(CompactString(requester)), CompactString(csrDigest)...)
}

// ParseRequestKey is the inverse of RequestKey.
func ParseRequestKey(k []byte) (requester, csrDigest string, err error) {
	if len(k) < 2 {
		return "", "", malformed("request key")
	}
	n := int(binary.BigEndian.Uint16(k))
	if len(k) < 2+n {
		return "", "", malformed("request key")
	}
	if requester, err = ParseCompactString(k[2 : 2+n]); err != nil {
		return "", "", err
	}
	if csrDigest, err = ParseCompactString(k[2+n:]); err != nil {
		return "", "", err
	}
	return requester, csrDigest, nil
}
