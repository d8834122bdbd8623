//go:build cgo && !(linux || darwin || freebsd)

package hsm

import "github.com/miekg/pkcs11"

// oneCall is not available on this platform: miekg/pkcs11 signs.
type oneCall struct{}

func openOneCall(string) *oneCall { return nil }

func (o *oneCall) close() {}

func (o *oneCall) sign(pkcs11.SessionHandle, uint, pkcs11.ObjectHandle, []byte, []byte) ([]byte, error) {
	panic("hsm: oneCall without a module")
}

func (o *oneCall) canWrap() bool { return false }

func (o *oneCall) wrap(pkcs11.SessionHandle, uint, pkcs11.ObjectHandle, pkcs11.ObjectHandle, int) ([]byte, int, error) {
	panic("hsm: oneCall without a module")
}

func (o *oneCall) wrapCalls() uint64 { return 0 }
