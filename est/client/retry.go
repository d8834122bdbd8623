package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// retryPolicy implements the delayed-response rule of RFC 9148 §4.7: after a
// 5.03 Service Unavailable, wait Max-Age (capped by maxWait) and resend the
// identical request, at most maxRetries times.
type retryPolicy struct {
	maxRetries int
	maxWait    time.Duration
	// sleep waits d or until ctx is done; injected by tests.
	sleep func(ctx context.Context, d time.Duration) error
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// delay is the wait before a resend after a 5.03 with the given Max-Age.
func (p retryPolicy) delay(maxAge time.Duration) time.Duration {
	if maxAge < 0 {
		maxAge = 0
	}
	return min(maxAge, p.maxWait)
}

// run calls attempt until it returns something other than a 5.03
// *ResponseError, or the retries are used up, or ctx is done.
func (p retryPolicy) run(ctx context.Context, log *slog.Logger, what string, attempt func() (*response, error)) (*response, error) {
	for n := 0; ; n++ {
		resp, err := attempt()
		var re *ResponseError
		if err != nil || !errors.As(responseErr(what, resp), &re) || re.Code != codes.ServiceUnavailable {
			return resp, err
		}
		if n >= p.maxRetries {
			return nil, fmt.Errorf("%w after %d retries; last answer: %w", ErrRetriesExhausted, n, re)
		}
		d := p.delay(re.MaxAge)
		log.DebugContext(ctx, "client: server busy, will resend", "request", what,
			"retry", n+1, "max_age", re.MaxAge, "wait", d, "diagnostic", re.Diagnostic)
		if err := p.sleep(ctx, d); err != nil {
			return nil, fmt.Errorf("client: %s: waiting to resend after 5.03: %w; last answer: %w", what, err, re)
		}
	}
}

// responseErr returns the *ResponseError of an error response, nil for success.
func responseErr(what string, resp *response) error {
	if resp == nil || resp.code>>5 == 2 {
		return nil
	}
	return &ResponseError{Resource: what, Code: resp.code, Diagnostic: diagnostic(resp.payload), MaxAge: resp.maxAge}
}

// diagnostic returns a printable form of a diagnostic payload (RFC 7252 §5.5.2),
// bounded in length.
func diagnostic(p []byte) string {
	const maxDiag = 256
	if len(p) > maxDiag {
		p = p[:maxDiag]
	}
	out := make([]rune, 0, len(p))
	for _, r := range string(p) {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}
