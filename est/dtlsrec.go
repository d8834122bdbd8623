package est

import (
	"bytes"
	"encoding/binary"
	"errors"

	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
)

// The plaintext DTLS 1.2 record and handshake framing the gate (gate.go)
// reads and writes itself, before any pion connection exists (RFC 6347
// §4.1, §4.2.2). Only epoch 0 is ever parsed or built here: everything
// later is encrypted and left to pion.

const (
	recordHeaderLen    = 13 // type(1) version(2) epoch(2) sequence(6) length(2)
	handshakeHeaderLen = 12 // type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3)

	contentAlert     = 21
	contentHandshake = 22
	contentCID       = 25 // tls12_cid, RFC 9146

	handshakeClientHello        = 1
	handshakeServerHello        = 2
	handshakeHelloVerifyRequest = 3

	alertFatal           = 2
	alertHandshakeFail   = 40
	alertNoCertificate   = 41 // SSLv3 only; TLS 1.2 says MUST NOT be sent
	alertInternalError   = 80
	alertRecordLen       = recordHeaderLen + 2
	helloVerifyServerVer = 0xfeff // DTLS 1.0, RFC 6347 §4.2.1
)

var errNotClientHello = errors.New("est: not a plain ClientHello")

// record is one parsed plaintext record header.
type record struct {
	typ   byte
	epoch uint16
	seq   [6]byte
	body  []byte
}

// nextRecord splits the first record (no connection ID) off b.
func nextRecord(b []byte) (record, []byte, bool) {
	if len(b) < recordHeaderLen {
		return record{}, nil, false
	}
	n := int(binary.BigEndian.Uint16(b[11:13]))
	if len(b) < recordHeaderLen+n {
		return record{}, nil, false
	}
	r := record{typ: b[0], epoch: binary.BigEndian.Uint16(b[3:5]), body: b[recordHeaderLen : recordHeaderLen+n]}
	copy(r.seq[:], b[5:11])
	return r, b[recordHeaderLen+n:], true
}

// hello is a ClientHello that arrived whole in the first record of a
// datagram, as the gate needs it.
type hello struct {
	rec     record
	msgSeq  uint16
	msg     handshake.MessageClientHello
	params  []byte // negotiation parameters: the message without cookie and extensions
	version uint16 // record layer version
}

// parseHello parses the first record of a datagram as an unfragmented
// ClientHello in epoch 0. A fragmented ClientHello cannot be checked without
// state and is refused (errNotClientHello), as is anything else.
func parseHello(datagram []byte) (*hello, error) {
	r, _, ok := nextRecord(datagram)
	if !ok || r.typ != contentHandshake || r.epoch != 0 || len(r.body) < handshakeHeaderLen {
		return nil, errNotClientHello
	}
	b := r.body
	length := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	off := int(b[6])<<16 | int(b[7])<<8 | int(b[8])
	flen := int(b[9])<<16 | int(b[10])<<8 | int(b[11])
	if b[0] != handshakeClientHello || off != 0 || flen != length || len(b) != handshakeHeaderLen+length {
		return nil, errNotClientHello
	}
	h := &hello{rec: r, msgSeq: binary.BigEndian.Uint16(b[4:6]), version: binary.BigEndian.Uint16(datagram[1:3])}
	if err := h.msg.Unmarshal(b[handshakeHeaderLen:]); err != nil {
		return nil, errNotClientHello
	}
	norm := h.msg
	norm.Cookie, norm.Extensions = nil, nil
	p, err := norm.Marshal()
	if err != nil {
		return nil, errNotClientHello
	}
	h.params = p
	return h, nil
}

// withoutCookie returns the datagram pion is given as the first ClientHello
// of an admitted peer: this ClientHello with message_seq 0 and no cookie,
// in a record with sequence number 0. The peer's own ClientHello must then
// reach pion with a record sequence number above 0 (see forPion): pion's
// replay window (epoch 0 included) drops a second record with the same one.
func (h *hello) withoutCookie() ([]byte, error) {
	m := h.msg
	m.Cookie = nil
	body, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	out := make([]byte, recordHeaderLen+handshakeHeaderLen+len(body))
	out[0] = contentHandshake
	binary.BigEndian.PutUint16(out[1:3], h.version)
	binary.BigEndian.PutUint16(out[11:13], uint16(handshakeHeaderLen+len(body)))
	hs := out[recordHeaderLen:]
	hs[0] = handshakeClientHello
	putUint24(hs[1:4], len(body))
	putUint24(hs[9:12], len(body))
	copy(hs[handshakeHeaderLen:], body)
	return out, nil
}

// forPion returns a copy of the datagram d (this ClientHello) for pion, its
// first record's sequence number raised to 1 if it was 0 (after the one
// withoutCookie uses). Record headers are not part of the handshake
// transcript, and epoch-0 records carry no MAC, so this changes nothing the
// peer could notice.
func (h *hello) forPion(d []byte) []byte {
	out := bytes.Clone(d)
	if h.rec.seq == [6]byte{} {
		out[10] = 1
	}
	return out
}

func putUint24(b []byte, v int) { b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v) }

// helloVerifyRequest builds the HelloVerifyRequest answering a ClientHello
// whose record had sequence number seq (RFC 6347 §4.2.1: the same record
// sequence number, message_seq 0, server_version DTLS 1.0).
func helloVerifyRequest(seq [6]byte, cookie []byte) []byte {
	bodyLen := 3 + len(cookie)
	out := make([]byte, recordHeaderLen+handshakeHeaderLen+bodyLen)
	out[0] = contentHandshake
	binary.BigEndian.PutUint16(out[1:3], helloVerifyServerVer)
	copy(out[5:11], seq[:])
	binary.BigEndian.PutUint16(out[11:13], uint16(handshakeHeaderLen+bodyLen))
	hs := out[recordHeaderLen:]
	hs[0] = handshakeHelloVerifyRequest
	putUint24(hs[1:4], bodyLen)
	putUint24(hs[9:12], bodyLen)
	body := hs[handshakeHeaderLen:]
	binary.BigEndian.PutUint16(body[0:2], helloVerifyServerVer)
	body[2] = byte(len(cookie))
	copy(body[3:], cookie)
	return out
}

// fatalAlert builds a plaintext fatal alert record in epoch 0 with the given
// record sequence number.
func fatalAlert(seq [6]byte, desc byte) []byte {
	out := make([]byte, alertRecordLen)
	out[0] = contentAlert
	out[1], out[2] = 0xfe, 0xfd
	copy(out[5:11], seq[:])
	out[12] = 2
	out[13], out[14] = alertFatal, desc
	return out
}

// isHelloVerifyRequest reports whether the first record of an outgoing
// datagram is a plaintext HelloVerifyRequest.
func isHelloVerifyRequest(datagram []byte) bool {
	r, _, ok := nextRecord(datagram)
	return ok && r.typ == contentHandshake && r.epoch == 0 && len(r.body) > 0 && r.body[0] == handshakeHelloVerifyRequest
}

// rewriteNoCertificate replaces, in the plaintext epoch-0 records of an
// outgoing datagram, the fatal alert no_certificate (41) by
// handshake_failure (40). TLS 1.2 (RFC 5246 §7.2.2) says no_certificate
// MUST NOT be sent; pion sends it when a client offers no certificate. It
// returns the datagram (a copy when changed) and whether it changed it.
//
// Why this is safe: an epoch-0 record is not protected (no MAC, no
// encryption), alerts are not part of the handshake transcript (RFC 5246
// §7.4.9 hashes handshake messages only), and a fatal alert ends the
// connection, so nothing afterwards depends on its description. Records of
// any other type or epoch are left untouched byte for byte.
func rewriteNoCertificate(datagram []byte) ([]byte, bool) {
	var out []byte
	rest, off := datagram, 0
	for len(rest) > 0 {
		r, next, ok := nextRecord(rest)
		if !ok {
			break
		}
		if r.typ == contentAlert && r.epoch == 0 && len(r.body) == 2 && r.body[0] == alertFatal && r.body[1] == alertNoCertificate {
			if out == nil {
				out = append([]byte(nil), datagram...)
			}
			out[off+recordHeaderLen+1] = alertHandshakeFail
		}
		off += len(rest) - len(next)
		rest = next
	}
	if out == nil {
		return datagram, false
	}
	return out, true
}

// serverHelloCID returns the connection ID the server asked the client to
// use (RFC 9146 connection_id extension of the ServerHello), when the first
// record of an outgoing datagram is the ServerHello.
func serverHelloCID(datagram []byte) ([]byte, bool) {
	r, _, ok := nextRecord(datagram)
	if !ok || r.typ != contentHandshake || r.epoch != 0 || len(r.body) < handshakeHeaderLen || r.body[0] != handshakeServerHello {
		return nil, false
	}
	var sh handshake.MessageServerHello
	if err := sh.Unmarshal(r.body[handshakeHeaderLen:]); err != nil {
		return nil, false
	}
	for _, e := range sh.Extensions {
		if c, ok := e.(*extension.ConnectionID); ok && len(c.CID) > 0 {
			return c.CID, true
		}
	}
	return nil, false
}
