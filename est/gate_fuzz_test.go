package est

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

// FuzzGateDatagram: whatever an unknown peer sends, the gate's parsing of
// it (record framing, ClientHello, cookie check) never panics, and a
// ClientHello it accepts round-trips through withoutCookie.
func FuzzGateDatagram(f *testing.F) {
	seq := [6]byte{0, 0, 0, 0, 0, 1}
	f.Add(helloVerifyRequest(seq, make([]byte, cookieLength)))
	f.Add(fatalAlert(seq, alertNoCertificate))
	f.Add([]byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	hello := stClientHello(f)
	f.Add(hello)
	f.Add(hello[:len(hello)-1])
	jar := newCookieJar(time.Minute, time.Now)
	peer := netip.MustParseAddrPort("192.0.2.1:5684")
	f.Fuzz(func(t *testing.T, d []byte) {
		in := bytes.Clone(d)
		out, _ := rewriteNoCertificate(d)
		if !bytes.Equal(d, in) || len(out) != len(d) {
			t.Fatal("rewrite changed its input or the length")
		}
		_, _ = serverHelloCID(d)
		h, err := parseHello(d)
		if err != nil {
			return
		}
		if jar.valid(peer, h.params, h.msg.Cookie) && len(h.msg.Cookie) != cookieLength {
			t.Fatal("cookie of the wrong length accepted")
		}
		ch0, err := h.withoutCookie()
		if err != nil {
			return
		}
		h0, err := parseHello(ch0)
		if err != nil || len(h0.msg.Cookie) != 0 || !bytes.Equal(h0.params, h.params) || h0.msgSeq != 0 {
			t.Fatalf("withoutCookie: %v", err)
		}
		_ = h.forPion(d)
	})
}

// FuzzParseHeader: the datagram screen's header parsing never panics and
// never reads a token past the datagram.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0x41, 0x00, 0x12, 0x34, 0xaa})
	f.Add([]byte{0x49, 0x01, 0x12, 0x3b})
	f.Fuzz(func(t *testing.T, d []byte) {
		h, ok := parseHeader(d)
		if ok && (len(h.token) > 8 || len(h.token) > len(d)-4) {
			t.Fatalf("token %d bytes from %d", len(h.token), len(d))
		}
	})
}
