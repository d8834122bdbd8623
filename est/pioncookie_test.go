//lint:file-ignore U1000 the struct layouts of this test are only read through reflection

package est

import (
	"errors"
	"reflect"
	"testing"
	"unsafe"

	"github.com/pion/dtls/v3"
)

// TestCookieOffset: the layout check accepts pion's Conn (the offset is
// that of state.cookie) and refuses every other shape with errPionLayout.
func TestCookieOffset(t *testing.T) {
	t.Parallel()
	type state struct {
		a      int
		cookie []byte
	}
	type good struct {
		x     [3]uint64
		state state
	}
	type noState struct{ x int }
	type wrongState struct{ state int }
	type otherState struct{ state struct{ cookie []byte } }
	type noCookie struct{ state struct{ a int } }
	type wrongCookie struct {
		state struct{ cookie string }
	}
	var g good
	want := uintptr(unsafe.Pointer(&g.state.cookie)) - uintptr(unsafe.Pointer(&g))
	if off, err := cookieOffset(reflect.TypeOf(g), reflect.TypeOf(state{})); err != nil || off != want {
		t.Fatalf("good layout: %d, %v; want %d", off, err, want)
	}
	for _, tc := range []struct {
		name  string
		conn  any
		state any
	}{
		{"no state", noState{}, state{}},
		{"state not a struct", wrongState{}, state{}},
		{"state of another type", otherState{}, state{}},
		{"no cookie", noCookie{}, struct{ a int }{}},
		{"cookie not []byte", wrongCookie{}, struct{ cookie string }{}},
	} {
		if off, err := cookieOffset(reflect.TypeOf(tc.conn), reflect.TypeOf(tc.state)); !errors.Is(err, errPionLayout) || off != 0 {
			t.Errorf("%s: %d, %v; want errPionLayout", tc.name, off, err)
		}
	}
	// The real pion: found, and inside a Conn.
	off, err := pionCookieOffset()
	if err != nil || off == 0 || off >= reflect.TypeOf(dtls.Conn{}).Size() {
		t.Fatalf("pion: %d, %v", off, err)
	}
}
