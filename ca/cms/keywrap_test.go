package cms

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 3394 §4.1–§4.6.
func TestWrapRFC3394Vectors(t *testing.T) {
	t.Parallel()
	const (
		kek128 = "000102030405060708090A0B0C0D0E0F"
		kek192 = "000102030405060708090A0B0C0D0E0F1011121314151617"
		kek256 = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"
		key128 = "00112233445566778899AABBCCDDEEFF"
		key192 = "00112233445566778899AABBCCDDEEFF0001020304050607"
		key256 = "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F"
	)
	for _, tc := range []struct{ name, kek, key, wrapped string }{
		{"4.1", kek128, key128, "1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5"},
		{"4.2", kek192, key128, "96778B25AE6CA435 F92B5B97C050AED2 468AB8A17AD84E5D"},
		{"4.3", kek256, key128, "64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7"},
		{"4.4", kek192, key192, "031D33264E15D332 68F24EC260743EDC E1C6C7DDEE725A93 6BA814915C6762D2"},
		{"4.5", kek256, key192, "A8F9BC1612C68B3F F6E6F4FBE30E71E4 769C8B80A32CB895 8CD5D17D6B254DA1"},
		{"4.6", kek256, key256, "28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kek, key, want := unhex(t, tc.kek), unhex(t, tc.key), unhex(t, tc.wrapped)
			got, err := Wrap(kek, key)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Wrap = %x, %v; want %x", got, err, want)
			}
			back, err := Unwrap(kek, want)
			if err != nil || !bytes.Equal(back, key) {
				t.Fatalf("Unwrap = %x, %v; want %x", back, err, key)
			}
		})
	}
}

// RFC 5649 §6.
func TestWrapPadRFC5649Vectors(t *testing.T) {
	t.Parallel()
	kek := unhex(t, "5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8")
	for _, tc := range []struct{ name, key, wrapped string }{
		{"20 octets", "c37b7e6492584340 bed1220780894115 5068f738",
			"138bdeaa9b8fa7fc 61f97742e72248ee 5ae6ae5360d1ae6a 5f54f373fa543b6a"},
		{"7 octets", "466f7250617369", "afbeb0f07dfbf541 9200f2ccb50bb24f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, want := unhex(t, tc.key), unhex(t, tc.wrapped)
			got, err := WrapPad(kek, key)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("WrapPad = %x, %v; want %x", got, err, want)
			}
			back, err := UnwrapPad(kek, want)
			if err != nil || !bytes.Equal(back, key) {
				t.Fatalf("UnwrapPad = %x, %v; want %x", back, err, key)
			}
		})
	}
}

func TestUnwrapRejects(t *testing.T) {
	t.Parallel()
	kek := unhex(t, "000102030405060708090A0B0C0D0E0F")
	good := unhex(t, "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5")
	padKEK := unhex(t, "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
	padGood := unhex(t, "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a")
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	otherKEK := unhex(t, "000102030405060708090A0B0C0D0E0E")
	for _, tc := range []struct {
		name string
		fn   func() ([]byte, error)
	}{
		{"wrong kek", func() ([]byte, error) { return Unwrap(otherKEK, good) }},
		{"tampered first block", func() ([]byte, error) { return Unwrap(kek, flip(good, 0)) }},
		{"tampered last block", func() ([]byte, error) { return Unwrap(kek, flip(good, len(good)-1)) }},
		{"truncated", func() ([]byte, error) { return Unwrap(kek, good[:16]) }},
		{"not multiple of 8", func() ([]byte, error) { return Unwrap(kek, good[:23]) }},
		{"pad: wrong kek", func() ([]byte, error) { return UnwrapPad(kek[:16], padGood) }},
		{"pad: tampered", func() ([]byte, error) { return UnwrapPad(padKEK, flip(padGood, 9)) }},
		{"pad: short", func() ([]byte, error) { return UnwrapPad(padKEK, padGood[:8]) }},
		// An RFC 3394 wrapping is not an RFC 5649 one (wrong AIV).
		{"pad: 3394 input", func() ([]byte, error) { return UnwrapPad(kek, good) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.fn()
			if !errors.Is(err, ErrUnwrap) || got != nil {
				t.Fatalf("got %x, %v; want ErrUnwrap", got, err)
			}
		})
	}
	if _, err := Wrap(kek, make([]byte, 12)); err == nil {
		t.Error("Wrap accepted 12 bytes")
	}
	if _, err := Wrap(kek[:15], make([]byte, 16)); err == nil {
		t.Error("Wrap accepted a 15-byte KEK")
	}
	if _, err := WrapPad(kek, nil); err == nil {
		t.Error("WrapPad accepted empty input")
	}
}

// TestWrapPadMLIChecks builds RFC 5649 wrappings with a bad message length
// indicator or non-zero padding (by wrapping the raw AIV||P with the RFC
// 3394 process) and checks they are refused.
func TestWrapPadMLIChecks(t *testing.T) {
	t.Parallel()
	kek := make([]byte, 16)
	for _, tc := range []struct {
		name string
		mli  uint32
		p    []byte
	}{
		{"mli too small", 8, make([]byte, 24)},
		{"mli too large", 25, make([]byte, 24)},
		{"mli zero", 0, make([]byte, 16)},
		{"non-zero pad", 20, append(make([]byte, 20), 0, 0, 1, 0)},
		{"huge mli", 0xFFFFFFFF, make([]byte, 16)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			block, _ := newKEKCipher(kek)
			var aiv [8]byte
			copy(aiv[:], aivPrefix[:])
			aiv[4], aiv[5], aiv[6], aiv[7] = byte(tc.mli>>24), byte(tc.mli>>16), byte(tc.mli>>8), byte(tc.mli)
			buf := append(make([]byte, 8), tc.p...)
			wrapBlocks(block, aiv, buf)
			if _, err := UnwrapPad(kek, buf); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("UnwrapPad = %v, want ErrUnwrap", err)
			}
		})
	}
}

// TestWrapAgainstOpenSSL cross-checks both wrap modes with `openssl enc`
// (id-aesNNN-wrap and id-aesNNN-wrap-pad) on random keys and lengths.
func TestWrapAgainstOpenSSL(t *testing.T) {
	t.Parallel()
	for _, kekLen := range []int{16, 24, 32} {
		for _, n := range []int{1, 7, 8, 9, 16, 24, 121, 138, 1217} {
			kek, data := make([]byte, kekLen), make([]byte, n)
			rand.Read(kek)
			rand.Read(data)
			bits := map[int]string{16: "128", 24: "192", 32: "256"}[kekLen]
			got, err := WrapPad(kek, data)
			if err != nil {
				t.Fatal(err)
			}
			want := openssl(t, "enc", "-id-aes"+bits+"-wrap-pad", "-K", hex.EncodeToString(kek), "-iv", "A65959A6", "-in", writeFile(t, t.TempDir(), "in", data))
			if !bytes.Equal(got, want) {
				t.Fatalf("WrapPad(kek %d, %d bytes) = %x, openssl %x", kekLen, n, got, want)
			}
			if n%8 != 0 || n < 16 {
				continue
			}
			got, err = Wrap(kek, data)
			if err != nil {
				t.Fatal(err)
			}
			want = openssl(t, "enc", "-id-aes"+bits+"-wrap", "-K", hex.EncodeToString(kek), "-iv", "A6A6A6A6A6A6A6A6", "-in", writeFile(t, t.TempDir(), "in", data))
			if !bytes.Equal(got, want) {
				t.Fatalf("Wrap(kek %d, %d bytes) = %x, openssl %x", kekLen, n, got, want)
			}
		}
	}
}

// TestTrimDERPadding: what SoftHSM 2.6.1 returns from CKM_AES_KEY_WRAP_PAD
// unwrapping is the PKCS#8 DER zero-padded to a multiple of 8.
func TestTrimDERPadding(t *testing.T) {
	t.Parallel()
	p := pki(t)
	d := newDevice(t, p, "p256")
	kek := make([]byte, 32)
	rand.Read(kek)
	padded := append(bytes.Clone(d.pkcs8), make([]byte, (8-len(d.pkcs8)%8)%8)...)
	wrapped, err := WrapPad(kek, padded)
	if err != nil {
		t.Fatal(err)
	}
	un, err := UnwrapPad(kek, wrapped)
	if err != nil {
		t.Fatal(err)
	}
	got, err := TrimDERPadding(un)
	if err != nil || !bytes.Equal(got, d.pkcs8) {
		t.Fatalf("TrimDERPadding = %d bytes, %v; want the %d-byte PKCS#8", len(got), err, len(d.pkcs8))
	}
	for _, bad := range [][]byte{
		append(bytes.Clone(d.pkcs8), 0, 0, 1),
		append(bytes.Clone(d.pkcs8), make([]byte, 8)...),
		d.pkcs8[:len(d.pkcs8)-1],
		{},
	} {
		if _, err := TrimDERPadding(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("TrimDERPadding(%d bytes) = %v, want ErrMalformed", len(bad), err)
		}
	}
}

func TestAESKEK(t *testing.T) {
	t.Parallel()
	for _, n := range []int{16, 24, 32} {
		k, err := NewAESKEK(make([]byte, n))
		if err != nil {
			t.Fatal(err)
		}
		if wrapKeyLen(k.Algorithm()) != n {
			t.Errorf("%d-byte KEK: algorithm %v", n, k.Algorithm())
		}
		cek := make([]byte, 16)
		w, err := k.WrapKey(cek)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := k.UnwrapKey(w); err != nil || !bytes.Equal(back, cek) {
			t.Fatalf("round trip: %x, %v", back, err)
		}
		k.Destroy()
		if _, err := k.WrapKey(cek); err == nil {
			t.Error("WrapKey after Destroy succeeded")
		}
	}
	if _, err := NewAESKEK(make([]byte, 20)); err == nil {
		t.Error("NewAESKEK accepted 20 bytes")
	}
}
