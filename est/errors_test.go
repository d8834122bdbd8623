package est

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/est/block"
)

// TestStatusOf has one case per error kind of the table, for the server's
// own kinds, every ca.ErrorKind and every est/block sentinel.
func TestStatusOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		kind   ErrorKind
		code   codes.Code
		diag   string
		maxAge time.Duration
	}{
		{"internal", errors.New("db: /var/lib/x locked"), KindInternal, codes.InternalServerError, "internal error", 0},
		{"bad request", protoErr(KindBadRequest, "empty request"), KindBadRequest, codes.BadRequest, "empty request", 0},
		{"unauthenticated", protoErr(KindUnauthenticated, "not authenticated"), KindUnauthenticated, codes.Unauthorized, "not authenticated", 0},
		{"bad option", protoErr(KindBadOption, "bad option"), KindBadOption, codes.BadOption, "bad option", 0},
		{"forbidden", protoErr(KindForbidden, ""), KindForbidden, codes.Forbidden, "forbidden", 0},
		{"not found", protoErr(KindNotFound, "unknown label"), KindNotFound, codes.NotFound, "unknown label", 0},
		{"method not allowed", protoErr(KindMethodNotAllowed, "method not allowed"), KindMethodNotAllowed, codes.MethodNotAllowed, "method not allowed", 0},
		{"not acceptable", protoErr(KindNotAcceptable, "not acceptable"), KindNotAcceptable, codes.NotAcceptable, "not acceptable", 0},
		{"incomplete", protoErr(KindIncomplete, ""), KindIncomplete, codes.RequestEntityIncomplete, "request entity incomplete", 0},
		{"too large", protoErr(KindTooLarge, ""), KindTooLarge, codes.RequestEntityTooLarge, "request entity too large", 0},
		{"unsupported format", protoErr(KindUnsupportedFormat, ""), KindUnsupportedFormat, codes.UnsupportedMediaType, "unsupported content-format", 0},
		{"pending default Max-Age", protoErr(KindPending, ""), KindPending, codes.ServiceUnavailable, "pending approval", DefaultRetryAfter},
		{"unavailable", &Error{Kind: KindUnavailable, MaxAge: 1500 * time.Millisecond}, KindUnavailable, codes.ServiceUnavailable, "service unavailable", 2 * time.Second},
		{"unavailable sub-second", &Error{Kind: KindUnavailable, MaxAge: time.Millisecond}, KindUnavailable, codes.ServiceUnavailable, "service unavailable", time.Second},

		{"ca internal", &ca.Error{Kind: ca.KindInternal, Reason: "store failed", Err: errors.New("fsync")}, KindInternal, codes.InternalServerError, "internal error", 0},
		{"ca bad request", &ca.Error{Kind: ca.KindBadRequest, Reason: "bad CSR signature"}, KindBadRequest, codes.BadRequest, "bad CSR signature", 0},
		{"ca unauthenticated", &ca.Error{Kind: ca.KindUnauthenticated, Reason: "unknown anchor"}, KindUnauthenticated, codes.Unauthorized, "unknown anchor", 0},
		{"ca forbidden", fmt.Errorf("wrapped: %w", &ca.Error{Kind: ca.KindForbidden, Reason: "subject mismatch"}), KindForbidden, codes.Forbidden, "subject mismatch", 0},
		{"ca not found", &ca.Error{Kind: ca.KindNotFound, Reason: "no such profile"}, KindNotFound, codes.NotFound, "no such profile", 0},
		{"ca pending", &ca.Error{Kind: ca.KindPending, Reason: "pending approval", MaxAge: 30 * time.Second}, KindPending, codes.ServiceUnavailable, "pending approval", 30 * time.Second},
		{"ca unavailable", &ca.Error{Kind: ca.KindUnavailable, Reason: "hsm unreachable"}, KindUnavailable, codes.ServiceUnavailable, "hsm unreachable", DefaultRetryAfter},
		{"ca unsafe reason", &ca.Error{Kind: ca.KindBadRequest, Reason: "bad\nCSR \x00"}, KindBadRequest, codes.BadRequest, "bad request", 0},

		{"block bad option", fmt.Errorf("x: %w", block.ErrBadOption), KindBadOption, codes.BadOption, "bad option", 0},
		{"block bad block", block.ErrBadBlock, KindBadRequest, codes.BadRequest, "bad request", 0},
		{"block incomplete", block.ErrIncomplete, KindIncomplete, codes.RequestEntityIncomplete, "request entity incomplete", 0},
		{"block too large", block.ErrTooLarge, KindTooLarge, codes.RequestEntityTooLarge, "request entity too large", 0},
		{"block busy", block.ErrBusy, KindUnavailable, codes.ServiceUnavailable, "service unavailable", DefaultRetryAfter},
	}
	seen := map[ErrorKind]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := StatusOf(tt.err)
			if st.Kind != tt.kind || st.Code != tt.code || st.Diagnostic != tt.diag || st.MaxAge != tt.maxAge {
				t.Fatalf("StatusOf = %+v, want kind %v code %v diag %q max-age %v", st, tt.kind, tt.code, tt.diag, tt.maxAge)
			}
			// Block-wise codes agree with est/block's own table.
			if errors.Is(tt.err, block.ErrBadOption) || errors.Is(tt.err, block.ErrBadBlock) || errors.Is(tt.err, block.ErrIncomplete) ||
				errors.Is(tt.err, block.ErrTooLarge) || errors.Is(tt.err, block.ErrBusy) {
				if uint8(st.Code) != block.Code(tt.err) {
					t.Fatalf("code %v, block.Code %d", st.Code, block.Code(tt.err))
				}
			}
		})
		seen[tt.kind] = true
	}
	for k := KindInternal; k <= KindUnavailable; k++ {
		if !seen[k] {
			t.Errorf("kind %v has no test case", k)
		}
	}
}

func TestErrorSentinels(t *testing.T) {
	t.Parallel()
	pairs := map[ErrorKind]error{
		KindBadRequest: ErrBadRequest, KindBadOption: ErrBadOption, KindNotFound: ErrNotFound,
		KindMethodNotAllowed: ErrMethodNotAllowed, KindNotAcceptable: ErrNotAcceptable,
		KindIncomplete: ErrIncomplete, KindTooLarge: ErrTooLarge, KindUnsupportedFormat: ErrUnsupportedFormat,
		KindUnavailable: ErrUnavailable,
	}
	for k, s := range pairs {
		err := fmt.Errorf("ctx: %w", protoErr(k, "x"))
		if !errors.Is(err, s) {
			t.Errorf("%v does not match %v", k, s)
		}
		for k2, s2 := range pairs {
			if k2 != k && errors.Is(err, s2) {
				t.Errorf("%v matches %v", k, s2)
			}
		}
	}
	e := &Error{Kind: KindBadRequest, Reason: "bad", Err: errors.New("cause")}
	if e.Error() != "est: bad: cause" || !errors.Is(e, e.Err) {
		t.Fatalf("Error() = %q", e.Error())
	}
}
