package softhsmtest_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/estca/estca/hsm"
	"github.com/estca/estca/softhsm"
	"github.com/estca/estca/softhsm/softhsmtest"
)

func TestNew(t *testing.T) {
	var tok *hsm.Token
	t.Run("new", func(t *testing.T) {
		st, ht := softhsmtest.New(t)
		if want := filepath.Join(st.Dir, softhsm.EffectiveConfFile); os.Getenv(softhsm.ConfEnv) != want {
			t.Errorf("%s not set to %s", softhsm.ConfEnv, want)
		}
		if ht.Label() != softhsmtest.Label {
			t.Errorf("label %q", ht.Label())
		}
		if _, err := ht.GenerateKey("k", hsm.ECDSAP256); err != nil {
			t.Fatal(err)
		}
		tok = ht
	})
	if tok == nil {
		t.Skip("softhsm unavailable")
	}
	// The cleanup closed the token.
	if _, err := tok.FindKey("k"); !errors.Is(err, hsm.ErrClosed) {
		t.Error("token still open after the subtest's cleanup")
	}
}
