//go:build cgo && linux

package hsm_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/softhsm/softhsmtest"
)

// lyingModule is a PKCS#11 module in front of SoftHSM: C_GetFunctionList
// is SoftHSM's (miekg/pkcs11 calls through it), while the C_SignInit,
// C_Sign and C_WrapKey it exports itself (which the Token's one-call path
// finds with dlsym) forward to SoftHSM and, while ESTCA_SHIM_INFLATE is
// set, report 8192 bytes more than they wrote: a module that lies about a
// length.
const lyingModule = `
#include <dlfcn.h>
#include <stdlib.h>
typedef unsigned long ul;
static void *target;
static void *sym(const char *name) {
	if (target == NULL) target = dlopen(getenv("ESTCA_SHIM_TARGET"), RTLD_NOW | RTLD_LOCAL);
	return target == NULL ? NULL : dlsym(target, name);
}
static void inflate(ul rv, ul *len) { if (rv == 0 && getenv("ESTCA_SHIM_INFLATE") != NULL) *len += 8192; }
ul C_GetFunctionList(void **list) {
	ul (*f)(void **) = (ul (*)(void **))sym("C_GetFunctionList");
	return f == NULL ? 5 : f(list);
}
ul C_SignInit(ul s, void *m, ul k) {
	ul (*f)(ul, void *, ul) = (ul (*)(ul, void *, ul))sym("C_SignInit");
	return f(s, m, k);
}
ul C_Sign(ul s, unsigned char *d, ul dl, unsigned char *sig, ul *sl) {
	ul (*f)(ul, unsigned char *, ul, unsigned char *, ul *) = (ul (*)(ul, unsigned char *, ul, unsigned char *, ul *))sym("C_Sign");
	ul rv = f(s, d, dl, sig, sl);
	inflate(rv, sl);
	return rv;
}
ul C_WrapKey(ul s, void *m, ul w, ul k, unsigned char *out, ul *ol) {
	ul (*f)(ul, void *, ul, ul, unsigned char *, ul *) = (ul (*)(ul, void *, ul, ul, unsigned char *, ul *))sym("C_WrapKey");
	ul rv = f(s, m, w, k, out, ol);
	inflate(rv, ol);
	return rv;
}
`

// TestModuleLengthLies: a module that reports more bytes than the buffer
// it was given from C_Sign or C_WrapKey (one-call path) gets an error, not
// a slice past the buffer (a panic that would take the server down); the
// Token keeps working once the module behaves.
func TestModuleLengthLies(t *testing.T) {
	dir := t.TempDir()
	src, so := filepath.Join(dir, "lying.c"), filepath.Join(dir, "lying.so")
	if err := os.WriteFile(src, []byte(lyingModule), 0o600); err != nil {
		t.Fatal(err)
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc" // cgo builds need a C compiler: this package does not build without one
	}
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", so, src, "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cc, err, out)
	}
	opts := softhsmtest.Options(t, softhsmtest.Provision(t))
	t.Setenv("ESTCA_SHIM_TARGET", opts.Module)
	opts.Module = so
	tok, err := hsm.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if !tok.OneCall() {
		t.Fatal("the shim exports C_SignInit and C_Sign: the Token should sign in one call")
	}
	key, err := tok.GenerateKey("lying", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	works := func(when string) {
		t.Helper()
		if err := signVerify(key, when); err != nil {
			t.Fatalf("%s: sign: %v", when, err)
		}
		k, err := tok.GenerateExportable(hsm.ECDSAP256, false)
		if err != nil {
			t.Fatalf("%s: generate: %v", when, err)
		}
		unwrapExported(t, k)
		k.Zero()
	}
	works("honest module")
	_, before := tok.OneCallWraps()

	t.Setenv("ESTCA_SHIM_INFLATE", "1")
	if err := signVerify(key, "lying"); err == nil {
		t.Error("a signature of more bytes than its buffer was accepted")
	}
	if k, err := tok.GenerateExportable(hsm.ECDSAP256, false); err == nil {
		k.Zero()
		t.Error("a wrapping of more bytes than its buffer was accepted")
	} else if _, after := tok.OneCallWraps(); after == before {
		t.Errorf("the one-call C_WrapKey was not used: %v", err)
	}
	if err := os.Unsetenv("ESTCA_SHIM_INFLATE"); err != nil {
		t.Fatal(err)
	}
	works("after the lies")
	if _, err := tok.GenerateExportable("rsa-1024", false); !errors.Is(err, hsm.ErrKeyType) {
		t.Fatalf("rsa-1024: %v", err)
	}
}
