package block

import (
	"errors"
	"fmt"
)

// CoAP response codes used by this package, as the 8-bit class.detail value
// of RFC 7252 §3 (class<<5 | detail).
const (
	CodeChanged                 uint8 = 2<<5 | 4  // 2.04
	CodeContent                 uint8 = 2<<5 | 5  // 2.05
	CodeContinue                uint8 = 2<<5 | 31 // 2.31, RFC 7959 §2.9.1
	CodeBadRequest              uint8 = 4 << 5    // 4.00
	CodeBadOption               uint8 = 4<<5 | 2  // 4.02
	CodeRequestEntityIncomplete uint8 = 4<<5 | 8  // 4.08, RFC 7959 §2.9.2
	CodeRequestEntityTooLarge   uint8 = 4<<5 | 13 // 4.13, RFC 7959 §2.9.3
	CodeInternalServerError     uint8 = 5 << 5    // 5.00
	CodeServiceUnavailable      uint8 = 5<<5 | 3  // 5.03
	codeNone                    uint8 = 0
)

// CoAP request method codes (RFC 7252 §12.1.1, RFC 8132), as used in
// Key.Method.
const (
	MethodGET    uint8 = 1
	MethodPOST   uint8 = 2
	MethodPUT    uint8 = 3
	MethodDELETE uint8 = 4
	MethodFETCH  uint8 = 5
)

// Sentinel errors. Every error this package returns or puts in a Decision
// wraps exactly one of them; Code maps them to CoAP response codes.
var (
	// ErrBadOption: a Block1/Block2 option that cannot be parsed (longer
	// than 3 bytes, reserved SZX 7, repeated) or a Block2 request for a
	// block beyond the end of the stored response (RFC 7959 §2.2).
	ErrBadOption = errors.New("block: bad block option")
	// ErrBadBlock: a Block1 payload whose size does not match its SZX
	// (non-final blocks must be exactly Size bytes, the final one at most
	// Size bytes; RFC 7959 §2.3).
	ErrBadBlock = errors.New("block: block payload size does not match SZX")
	// ErrIncomplete: a Block1 block that does not continue the transfer in
	// progress (out of order, or no transfer: RFC 7959 §2.9.2), or a Block2
	// continuation of a non-GET request whose stored response is gone.
	ErrIncomplete = errors.New("block: request entity incomplete")
	// ErrTooLarge: the request body (announced by Size1 or accumulated)
	// exceeds Options.MaxBody (RFC 7959 §2.9.3, §4).
	ErrTooLarge = errors.New("block: request entity too large")
	// ErrBusy: the per-peer or global transfer limit is reached, or the
	// handler for this transfer has not answered yet; retry after Max-Age.
	ErrBusy = errors.New("block: too many block-wise transfers")

	// ErrPeerLimit, ErrOwnerLimit and ErrTotalLimit wrap ErrBusy and tell
	// which transfer limit refused a new Block1 transfer.
	ErrPeerLimit  = fmt.Errorf("%w: limit per peer", ErrBusy)
	ErrOwnerLimit = fmt.Errorf("%w: limit per owner", ErrBusy)
	ErrTotalLimit = fmt.Errorf("%w: limit in all", ErrBusy)
)

// Code maps an error of this package to its CoAP response code: the one
// table the est package re-uses. nil maps to 0 (no error); an unknown error
// maps to 5.00.
//
//	ErrBadOption   4.02 Bad Option
//	ErrBadBlock    4.00 Bad Request
//	ErrIncomplete  4.08 Request Entity Incomplete
//	ErrTooLarge    4.13 Request Entity Too Large (with Size1 = MaxBody)
//	ErrBusy        5.03 Service Unavailable (with Max-Age)
func Code(err error) uint8 {
	switch {
	case err == nil:
		return codeNone
	case errors.Is(err, ErrBadOption):
		return CodeBadOption
	case errors.Is(err, ErrBadBlock):
		return CodeBadRequest
	case errors.Is(err, ErrIncomplete):
		return CodeRequestEntityIncomplete
	case errors.Is(err, ErrTooLarge):
		return CodeRequestEntityTooLarge
	case errors.Is(err, ErrBusy):
		return CodeServiceUnavailable
	default:
		return CodeInternalServerError
	}
}
