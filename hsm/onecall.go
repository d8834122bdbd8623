//go:build cgo && (linux || darwin || freebsd)

package hsm

/*
#cgo linux LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

// The PKCS#11 types of the two calls, as pkcs11t.h lays them out on Unix
// (CK_ULONG is unsigned long; CK_MECHANISM is { type, pParameter, ulParameterLen }).
typedef unsigned long estca_ul;
typedef struct { estca_ul mechanism; void *parameter; estca_ul parameterLen; } estca_mech;
typedef estca_ul (*estca_signinit)(estca_ul, estca_mech *, estca_ul);
typedef estca_ul (*estca_sign)(estca_ul, unsigned char *, estca_ul, unsigned char *, estca_ul *);
typedef estca_ul (*estca_wrapkey)(estca_ul, estca_mech *, estca_ul, estca_ul, unsigned char *, estca_ul *);

typedef struct { void *lib; estca_signinit init; estca_sign sign; estca_wrapkey wrap; } estca_onecall;

// estca_onecall_open finds C_SignInit and C_Sign in the module, which must
// already be loaded (by miekg/pkcs11): RTLD_NOLOAD only takes a reference.
static int estca_onecall_open(const char *path, estca_onecall *o) {
	o->lib = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
	if (o->lib == NULL) return 0;
	o->init = (estca_signinit)dlsym(o->lib, "C_SignInit");
	o->sign = (estca_sign)dlsym(o->lib, "C_Sign");
	o->wrap = (estca_wrapkey)dlsym(o->lib, "C_WrapKey"); // optional
	if (o->init == NULL || o->sign == NULL) {
		dlclose(o->lib);
		o->lib = NULL;
		return 0;
	}
	return 1;
}

static void estca_onecall_close(estca_onecall *o) {
	if (o->lib != NULL) dlclose(o->lib);
	o->lib = NULL;
}

// estca_onecall_sign is C_SignInit then C_Sign (a single-part signature,
// PKCS#11 v2.40 section 5.12), in one call from Go.
static estca_ul estca_onecall_sign(estca_onecall *o, estca_ul session, estca_ul mech, estca_ul key,
		unsigned char *data, estca_ul dataLen, unsigned char *sig, estca_ul *sigLen) {
	estca_mech m = { mech, NULL, 0 };
	estca_ul rv = o->init(session, &m, key);
	if (rv != 0) return rv;
	return o->sign(session, data, dataLen, sig, sigLen);
}

static int estca_onecall_has_wrap(estca_onecall *o) { return o->wrap != NULL; }

// estca_onecall_wrap is one C_WrapKey into the caller's buffer, for
// mechanisms without parameters: no length query first, which some tokens
// (SoftHSM) answer by wrapping the key a first time.
static estca_ul estca_onecall_wrap(estca_onecall *o, estca_ul session, estca_ul mech, estca_ul wrapping, estca_ul key,
		unsigned char *out, estca_ul *outLen) {
	estca_mech m = { mech, NULL, 0 };
	return o->wrap(session, &m, wrapping, key, out, outLen);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// oneCall signs with C_SignInit and C_Sign in one cgo call, for mechanisms
// without parameters (ECDSA, RSA PKCS#1 v1.5). A cgo call that lasts more
// than about 20 µs has the Go scheduler hand its P to another thread and
// take it back afterwards: two context switches per call; one call per
// signature instead of two halves them.
type oneCall struct {
	c     *C.estca_onecall
	wraps atomic.Uint64 // C_WrapKey calls made, for the tests
}

// openOneCall finds the signing functions of the loaded module; nil if the
// module does not export them (the caller then uses miekg/pkcs11).
func openOneCall(module string) *oneCall {
	path := C.CString(module)
	defer C.free(unsafe.Pointer(path))
	c := (*C.estca_onecall)(C.calloc(1, C.size_t(unsafe.Sizeof(C.estca_onecall{}))))
	if C.estca_onecall_open(path, c) == 0 {
		C.free(unsafe.Pointer(c))
		return nil
	}
	return &oneCall{c: c}
}

func (o *oneCall) close() {
	if o == nil {
		return
	}
	C.estca_onecall_close(o.c)
	C.free(unsafe.Pointer(o.c))
}

// sign signs data with the key h in session s under the parameterless
// mechanism mech; sig must be large enough for the signature.
func (o *oneCall) sign(s pkcs11.SessionHandle, mech uint, h pkcs11.ObjectHandle, data, sig []byte) ([]byte, error) {
	n := C.estca_ul(len(sig))
	rv := C.estca_onecall_sign(o.c, C.estca_ul(s), C.estca_ul(mech), C.estca_ul(h),
		(*C.uchar)(unsafe.Pointer(&data[0])), C.estca_ul(len(data)), (*C.uchar)(unsafe.Pointer(&sig[0])), &n)
	if rv != 0 {
		return nil, pkcs11.Error(rv)
	}
	if uint64(n) > uint64(len(sig)) {
		return nil, fmt.Errorf("%w: C_Sign reported %d bytes written into a buffer of %d", errModuleLength, uint64(n), len(sig))
	}
	return sig[:n], nil
}

// errModuleLength is a module that reports more bytes written than the
// buffer it was given holds: never trusted (it would read past the buffer).
var errModuleLength = errors.New("hsm: pkcs11 module reported an impossible length")

// canWrap reports whether wrap is available (the module exports C_WrapKey).
func (o *oneCall) canWrap() bool { return o != nil && C.estca_onecall_has_wrap(o.c) != 0 }

// wrap wraps key under wrapping with the parameterless mechanism mech in
// one C_WrapKey call, into a buffer of size bytes; a buffer too small is
// CKR_BUFFER_TOO_SMALL with the length needed (PKCS#11 v2.40 §5.2).
func (o *oneCall) wrap(s pkcs11.SessionHandle, mech uint, wrapping, key pkcs11.ObjectHandle, size int) ([]byte, int, error) {
	out := make([]byte, size)
	n := C.estca_ul(len(out))
	o.wraps.Add(1)
	rv := C.estca_onecall_wrap(o.c, C.estca_ul(s), C.estca_ul(mech), C.estca_ul(wrapping), C.estca_ul(key),
		(*C.uchar)(unsafe.Pointer(&out[0])), &n)
	if rv != 0 {
		need := int(min(uint64(n), 1<<30)) // only a hint, for CKR_BUFFER_TOO_SMALL
		return nil, need, pkcs11.Error(rv)
	}
	if uint64(n) > uint64(len(out)) {
		return nil, 0, fmt.Errorf("%w: C_WrapKey reported %d bytes written into a buffer of %d", errModuleLength, uint64(n), len(out))
	}
	return out[:n], int(n), nil
}

// wrapCalls counts the one-call C_WrapKey calls made (0 for nil).
func (o *oneCall) wrapCalls() uint64 {
	if o == nil {
		return 0
	}
	return o.wraps.Load()
}
