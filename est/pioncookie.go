package est

import (
	"errors"
	"reflect"
	"sync"
	"unsafe"

	"github.com/pion/dtls/v3"
)

// Handing a cookie-verified ClientHello to pion (pion/dtls v3.1.15).
//
// The gate answers the first ClientHello of a peer with its own stateless
// HelloVerifyRequest (cookie C). The peer's second ClientHello carries C and
// message_seq 1, and it enters the handshake transcript as sent (RFC 6347
// §4.2.6 hashes the ClientHello with the cookie, and message_seq is part of
// every hashed handshake header). pion cannot start a server handshake at
// that point:
//
//   - with InsecureSkipVerifyHello, flight0Parse (flight0handler.go:30)
//     pulls the ClientHello with fullPullMap(0, ...), i.e. only a ClientHello
//     with message_seq 0 (handshake_cache.go:161, "a gap"), and its
//     ServerHello would then carry message_seq 0, which a client that saw a
//     HelloVerifyRequest drops as old (it expects 1);
//   - with its own cookies, flight0Generate (flight0handler.go:305) draws a
//     random cookie into State.cookie, flight2Generate (flight2handler.go:75)
//     sends it in pion's HelloVerifyRequest, and flight2Parse
//     (flight2handler.go:46) accepts only a ClientHello carrying exactly
//     State.cookie (else alert access_denied), and one whose parameters hash
//     to the first ClientHello's (flight2handler.go:53,
//     clientHelloNegotiationHash: cookie and extensions left out).
//
// So the gate replays the exchange pion expects, without the peer seeing a
// second HelloVerifyRequest: it gives the new pion connection (cookies on)
// a first ClientHello made from the peer's second one with message_seq 0 and
// no cookie; pion answers with its HelloVerifyRequest, which the gate does
// not send but uses as the signal that pion is waiting for the second
// ClientHello (flight2, handshakeSendSequence now 1: handshaker.go:261). In
// that write call, which pion's handshake goroutine makes synchronously
// (conn.go:563 → netctx WriteToContext → our WriteTo), the gate sets
// State.cookie to C and then hands over the peer's real second ClientHello.
// pion's flight2Parse finds C, the same parameters and message_seq 1, and
// answers with ServerHello message_seq 1: the peer's transcript and pion's
// are the same bytes. The replayed first ClientHello has record sequence
// number 0 and the peer's is given with at least 1: pion's replay window
// covers epoch 0 too (conn.go:1068) and would drop a second record with the
// same number (record headers are not part of the transcript).
//
// Setting State.cookie is the one write into pion's unexported state. Its
// location is found by reflection (Conn.state, State.cookie []byte) once; if
// the layout is not what this code expects, Listen fails rather than
// guessing. Tests of the handshake (every server test) fail if pion's flight
// logic changes.

// errPionLayout is returned by Listen when pion's Conn does not have the
// fields the gate relies on.
var errPionLayout = errors.New("est: pion/dtls Conn layout differs from v3.1.15 (state.cookie): cannot hand over cookie-verified handshakes")

// pionCookieOffset is the offset of Conn.state.cookie in a dtls.Conn,
// found once. sync.OnceValues, not a sync.Once filling variables: should
// the lookup panic, every later call panics again instead of returning a
// zero offset with a nil error (which would make setPionCookie write over
// the start of the Conn).
var pionCookieOffset = sync.OnceValues(func() (uintptr, error) {
	return cookieOffset(reflect.TypeOf(dtls.Conn{}), reflect.TypeOf(dtls.State{}))
})

// cookieOffset finds the field state of type stateType in conn, and the
// []byte field cookie in it; any other layout is errPionLayout.
func cookieOffset(conn, stateType reflect.Type) (uintptr, error) {
	st, ok := conn.FieldByName("state")
	if !ok || st.Type.Kind() != reflect.Struct || st.Type != stateType {
		return 0, errPionLayout
	}
	ck, ok := st.Type.FieldByName("cookie")
	if !ok || ck.Type != reflect.TypeOf([]byte(nil)) {
		return 0, errPionLayout
	}
	return st.Offset + ck.Offset, nil
}

// setPionCookie sets the server handshake cookie of c. It must be called on
// pion's handshake goroutine (from the write of pion's HelloVerifyRequest),
// which is the only goroutine that reads it.
func setPionCookie(c *dtls.Conn, cookie []byte) {
	off, err := pionCookieOffset()
	if err != nil {
		return
	}
	*(*[]byte)(unsafe.Add(unsafe.Pointer(c), off)) = append([]byte(nil), cookie...)
}
