package block

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestOptionEncodeDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opt  Option
		wire []byte
	}{
		{"zero is empty", Option{}, []byte{}},
		{"more only", Option{More: true}, []byte{0x08}},
		{"szx 6", Option{SZX: 6}, []byte{0x06}},
		{"num 1 szx 2", Option{Num: 1, SZX: 2}, []byte{0x12}},
		{"largest one byte", Option{Num: 15, More: true, SZX: 6}, []byte{0xFE}},
		{"smallest two bytes", Option{Num: 16}, []byte{0x01, 0x00}},
		{"largest two bytes", Option{Num: 4095, More: true, SZX: 6}, []byte{0xFF, 0xFE}},
		{"smallest three bytes", Option{Num: 4096}, []byte{0x01, 0x00, 0x00}},
		{"max num", Option{Num: MaxNum, More: true, SZX: 6}, []byte{0xFF, 0xFF, 0xFE}},
		{"rfc 7959 figure 2 block 2 of 128", Option{Num: 2, More: true, SZX: 3}, []byte{0x2B}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.opt.Validate(); err != nil {
				t.Fatalf("Valid: %v", err)
			}
			if got := tc.opt.Encode(); !bytes.Equal(got, tc.wire) {
				t.Fatalf("Encode(%+v) = %x, want %x", tc.opt, got, tc.wire)
			}
			got, err := Decode(tc.wire)
			if err != nil {
				t.Fatalf("Decode(%x): %v", tc.wire, err)
			}
			if got != tc.opt {
				t.Fatalf("Decode(%x) = %+v, want %+v", tc.wire, got, tc.opt)
			}
		})
	}
}

func TestOptionDecodeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		wire []byte
		want Option // when ok
		ok   bool
	}{
		{"four bytes", []byte{0, 0, 0, 0x10}, Option{}, false},
		{"four zero bytes", []byte{0, 0, 0, 0}, Option{}, false},
		{"szx 7 one byte", []byte{0x07}, Option{}, false},
		{"szx 7 with more", []byte{0x0F}, Option{}, false},
		{"szx 7 two bytes", []byte{0x12, 0x37}, Option{}, false},
		{"szx 7 three bytes", []byte{0xFF, 0xFF, 0xFF}, Option{}, false},
		{"nil is zero", nil, Option{}, true},
		{"leading zero tolerated", []byte{0x00, 0x08}, Option{More: true}, true},
		{"two leading zeros", []byte{0x00, 0x00, 0x16}, Option{Num: 1, SZX: 6}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.wire)
			if tc.ok {
				if err != nil || got != tc.want {
					t.Fatalf("Decode(%x) = %+v, %v; want %+v", tc.wire, got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrBadOption) {
				t.Fatalf("Decode(%x) = %+v, %v; want ErrBadOption", tc.wire, got, err)
			}
			if Code(err) != CodeBadOption {
				t.Fatalf("Code = %#x", Code(err))
			}
		})
	}
}

func TestOptionValidAndSize(t *testing.T) {
	t.Parallel()
	for szx := uint8(0); szx <= MaxSZX; szx++ {
		o := Option{Num: 3, SZX: szx}
		if o.Size() != 16<<szx || o.Offset() != 3*(16<<szx) {
			t.Fatalf("SZX %d: Size %d Offset %d", szx, o.Size(), o.Offset())
		}
		got, err := SZXFor(16 << szx)
		if err != nil || got != szx {
			t.Fatalf("SZXFor(%d) = %d, %v", 16<<szx, got, err)
		}
	}
	for _, size := range []int{0, 8, 17, 2048, -16} {
		if _, err := SZXFor(size); !errors.Is(err, ErrBadOption) {
			t.Fatalf("SZXFor(%d) err = %v", size, err)
		}
	}
	for _, o := range []Option{{SZX: 7}, {Num: MaxNum + 1}, {Num: 1 << 31, SZX: 2}} {
		if err := o.Validate(); !errors.Is(err, ErrBadOption) {
			t.Fatalf("Valid(%+v) = %v, want ErrBadOption", o, err)
		}
	}
	if _, err := FromValue(1 << 24); !errors.Is(err, ErrBadOption) {
		t.Fatalf("FromValue(1<<24) = %v", err)
	}
	if got := (Option{Num: 2, More: true, SZX: 3}).String(); got != "2/1/128" {
		t.Fatalf("String = %q", got)
	}
}

func TestCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want uint8
	}{
		{nil, 0},
		{ErrBadOption, CodeBadOption},
		{ErrBadBlock, CodeBadRequest},
		{ErrIncomplete, CodeRequestEntityIncomplete},
		{ErrTooLarge, CodeRequestEntityTooLarge},
		{ErrBusy, CodeServiceUnavailable},
		{fmt.Errorf("est: wrapped: %w", ErrTooLarge), CodeRequestEntityTooLarge},
		{errors.New("something else"), CodeInternalServerError},
	}
	for _, tc := range tests {
		if got := Code(tc.err); got != tc.want {
			t.Errorf("Code(%v) = %#x, want %#x", tc.err, got, tc.want)
		}
	}
	// The class.detail values of RFC 7252 §12.1.2 and RFC 7959 §2.9.
	for code, want := range map[uint8]string{
		CodeContinue: "2.31", CodeBadOption: "4.02", CodeRequestEntityIncomplete: "4.08",
		CodeRequestEntityTooLarge: "4.13", CodeServiceUnavailable: "5.03", CodeChanged: "2.04",
	} {
		if got := fmt.Sprintf("%d.%02d", code>>5, code&31); got != want {
			t.Errorf("code %#x is %s, want %s", code, got, want)
		}
	}
}

func FuzzOptionDecode(f *testing.F) {
	for _, s := range [][]byte{nil, {0x08}, {0x07}, {0xFF, 0xFE}, {0x01, 0, 0}, {0, 0, 0, 0}, {0x00, 0x16}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrBadOption) {
				t.Fatalf("error %v does not wrap ErrBadOption", err)
			}
			return
		}
		if len(b) > 3 || o.SZX > MaxSZX || o.Num > MaxNum {
			t.Fatalf("Decode(%x) accepted %+v", b, o)
		}
		if err := o.Validate(); err != nil {
			t.Fatalf("decoded option invalid: %v", err)
		}
		enc := o.Encode()
		back, err := Decode(enc)
		if err != nil || back != o {
			t.Fatalf("round trip %+v -> %x -> %+v, %v", o, enc, back, err)
		}
		trimmed := bytes.TrimLeft(b, "\x00")
		if !bytes.Equal(enc, trimmed) {
			t.Fatalf("Encode = %x, want minimal %x", enc, trimmed)
		}
	})
}
