package est

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkHandshakeRateLimited: one source doing handshakes one after
// another against HandshakeRate 50/s (burst 1) gets about 50/s: a handshake
// over the rate waits for its token instead of being dropped into the
// client's 1 s retransmission (which gave 11-13/s).
//
//	go test -run '^$' -bench HandshakeRateLimited -benchtime 5s ./est/
func BenchmarkHandshakeRateLimited(b *testing.B) {
	e := stStart(b, func(o *Options) { o.HandshakeRate = 50; o.HandshakeBurst = 1 })
	start := time.Now()
	n := 0
	for b.Loop() {
		c, err := stDialTimeout(b, e.addr, &e.client, e.roots, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		_ = c.c.Close()
		n++
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "handshakes/s")
}

// BenchmarkGateHelloVerify: the cost of answering one ClientHello without
// a cookie (parse, HMAC, HelloVerifyRequest written to the socket); it is
// all a spoofed source address costs the server.
func BenchmarkGateHelloVerify(b *testing.B) {
	e := stStart(b, nil)
	hello := stClientHello(b)
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := sink.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	from := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	b.ReportAllocs()
	for b.Loop() {
		e.srv.gate.route(hello, from)
	}
}
