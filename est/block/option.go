package block

import "fmt"

// MaxNum is the largest block number a Block1 or Block2 option can carry
// (20 bits, RFC 7959 §2.2).
const MaxNum = 1<<20 - 1

// MaxSZX is the largest valid size exponent: 6, a block size of 1024 bytes.
// SZX 7 is reserved (RFC 7959 §2.2).
const MaxSZX uint8 = 6

// Option is the value of a Block1 (27) or Block2 (23) option (RFC 7959 §2.2):
// block number, more flag and size exponent.
type Option struct {
	Num  uint32 // block number, 0..MaxNum
	More bool   // M bit: more blocks follow (descriptive use) or ignored (Block2 in a request)
	SZX  uint8  // size exponent, 0..MaxSZX; the block size is 16<<SZX
}

// Size returns the block size in bytes, 16<<SZX.
func (o Option) Size() int { return 16 << (o.SZX & 7) }

// Offset returns the byte offset of the block, Num*Size (RFC 7959 §2.2).
func (o Option) Offset() int { return int(o.Num) * o.Size() }

// Validate reports whether o can be encoded: Num fits 20 bits and SZX is not
// the reserved value 7.
func (o Option) Validate() error {
	if o.SZX > MaxSZX {
		return fmt.Errorf("%w: reserved SZX %d", ErrBadOption, o.SZX)
	}
	if o.Num > MaxNum {
		return fmt.Errorf("%w: block number %d exceeds 20 bits", ErrBadOption, o.Num)
	}
	return nil
}

// Value returns the option as the unsigned integer carried on the wire,
// NUM<<4 | M<<3 | SZX.
func (o Option) Value() uint32 {
	v := o.Num<<4 | uint32(o.SZX&7)
	if o.More {
		v |= 8
	}
	return v
}

// Encode returns the option value in the minimal uint encoding of
// RFC 7252 §3.2 (0 to 3 bytes; the value 0 is the empty string). The caller
// must ensure o is Valid; out-of-range fields are truncated.
func (o Option) Encode() []byte {
	v := o.Value() & 0xFFFFFF
	switch {
	case v == 0:
		return []byte{}
	case v <= 0xFF:
		return []byte{byte(v)}
	case v <= 0xFFFF:
		return []byte{byte(v >> 8), byte(v)}
	default:
		return []byte{byte(v >> 16), byte(v >> 8), byte(v)}
	}
}

// String formats o as "Num/M/Size", the notation of RFC 7959's figures.
func (o Option) String() string {
	m := 0
	if o.More {
		m = 1
	}
	return fmt.Sprintf("%d/%d/%d", o.Num, m, o.Size())
}

// Decode parses a Block1 or Block2 option value (RFC 7959 §2.2). Values
// longer than 3 bytes and the reserved SZX 7 are errors wrapping
// ErrBadOption. Leading zero bytes are tolerated (RFC 7252 §3.2 says a
// sender SHOULD NOT send them, not that a receiver must reject them).
func Decode(b []byte) (Option, error) {
	if len(b) > 3 {
		return Option{}, fmt.Errorf("%w: block option value of %d bytes", ErrBadOption, len(b))
	}
	var v uint32
	for _, c := range b {
		v = v<<8 | uint32(c)
	}
	return FromValue(v)
}

// FromValue interprets an already decoded uint option value as a block
// option. Values above 24 bits and the reserved SZX 7 are errors wrapping
// ErrBadOption.
func FromValue(v uint32) (Option, error) {
	if v > 0xFFFFFF {
		return Option{}, fmt.Errorf("%w: block option value %d exceeds 3 bytes", ErrBadOption, v)
	}
	o := Option{Num: v >> 4, More: v&8 != 0, SZX: uint8(v & 7)}
	if o.SZX == 7 {
		return Option{}, fmt.Errorf("%w: reserved SZX 7", ErrBadOption)
	}
	return o, nil
}

// SZXFor returns the size exponent for a block size that is a power of two
// in 16..1024.
func SZXFor(size int) (uint8, error) {
	for szx := uint8(0); szx <= MaxSZX; szx++ {
		if 16<<szx == size {
			return szx, nil
		}
	}
	return 0, fmt.Errorf("%w: block size %d is not a power of two in 16..1024", ErrBadOption, size)
}
