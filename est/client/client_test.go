package client

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
)

func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	busy := func(maxAge time.Duration) *response {
		return &response{code: codes.ServiceUnavailable, maxAge: maxAge, payload: []byte("pending approval")}
	}
	ok := &response{code: codes.Changed, payload: []byte("cert")}
	forbidden := &response{code: codes.Forbidden, maxAge: DefaultMaxAge}
	for _, tc := range []struct {
		name       string
		maxRetries int
		maxWait    time.Duration
		answers    []*response
		wantSleeps []time.Duration
		wantCode   codes.Code
		wantErr    error
	}{
		{
			name: "pending then issued", maxRetries: 3, maxWait: time.Minute,
			answers:    []*response{busy(5 * time.Second), busy(DefaultMaxAge), ok},
			wantSleeps: []time.Duration{5 * time.Second, time.Minute}, wantCode: codes.Changed,
		},
		{
			name: "max-age capped by MaxWait", maxRetries: 3, maxWait: 10 * time.Second,
			answers:    []*response{busy(time.Hour), ok},
			wantSleeps: []time.Duration{10 * time.Second}, wantCode: codes.Changed,
		},
		{
			name: "max-age zero resends at once", maxRetries: 1, maxWait: time.Minute,
			answers:    []*response{busy(0), ok},
			wantSleeps: []time.Duration{0}, wantCode: codes.Changed,
		},
		{
			name: "exhausted", maxRetries: 3, maxWait: time.Minute,
			answers:    []*response{busy(time.Second), busy(time.Second), busy(time.Second), busy(time.Second), ok},
			wantSleeps: []time.Duration{time.Second, time.Second, time.Second}, wantErr: ErrRetriesExhausted,
		},
		{
			name: "no retries", maxRetries: 0, maxWait: time.Minute,
			answers: []*response{busy(time.Second), ok}, wantErr: ErrRetriesExhausted,
		},
		{
			name: "other errors are not retried", maxRetries: 3, maxWait: time.Minute,
			answers: []*response{forbidden, ok}, wantCode: codes.Forbidden,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sleeps []time.Duration
			p := retryPolicy{maxRetries: tc.maxRetries, maxWait: tc.maxWait,
				sleep: func(_ context.Context, d time.Duration) error { sleeps = append(sleeps, d); return nil }}
			n := 0
			resp, err := p.run(context.Background(), slog.New(slog.DiscardHandler), "sen", func() (*response, error) {
				n++
				return tc.answers[n-1], nil
			})
			if !slices.Equal(sleeps, tc.wantSleeps) {
				t.Errorf("sleeps = %v, want %v", sleeps, tc.wantSleeps)
			}
			if n != len(tc.wantSleeps)+1 {
				t.Errorf("%d attempts, want %d", n, len(tc.wantSleeps)+1)
			}
			if tc.wantErr != nil {
				var re *ResponseError
				if !errors.Is(err, tc.wantErr) || !errors.As(err, &re) || re.Code != codes.ServiceUnavailable {
					t.Fatalf("err = %v, want %v wrapping a 5.03 ResponseError", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), "pending approval") {
					t.Errorf("error %q lacks the server diagnostic", err)
				}
				return
			}
			if err != nil || resp.code != tc.wantCode {
				t.Fatalf("resp %v, err %v; want code %v", resp, err, tc.wantCode)
			}
		})
	}
}

func TestRetryPolicyContextDone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	p := retryPolicy{maxRetries: 3, maxWait: time.Hour, sleep: sleepCtx}
	n := 0
	_, err := p.run(ctx, slog.New(slog.DiscardHandler), "sen", func() (*response, error) {
		n++
		cancel()
		return &response{code: codes.ServiceUnavailable, maxAge: time.Hour}, nil
	})
	if !errors.Is(err, context.Canceled) || n != 1 {
		t.Fatalf("err = %v after %d attempts, want context.Canceled after 1", err, n)
	}
	var re *ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("err %v does not carry the 5.03", err)
	}
}

func TestResponseErrorMessage(t *testing.T) {
	t.Parallel()
	e := &ResponseError{Resource: "sen", Code: codes.ServiceUnavailable, Diagnostic: "wait\x00", MaxAge: 30 * time.Second}
	if got := e.Error(); got != `client: sen: server answered 5.03 ServiceUnavailable: "wait\x00" (retry after 30s)` {
		t.Errorf("Error() = %q", got)
	}
	if got := diagnostic([]byte("bad\x01csr\xff")); got != "bad?csr?" {
		t.Errorf("diagnostic = %q", got)
	}
	if got := diagnostic([]byte(strings.Repeat("x", 1000))); len(got) != 256 {
		t.Errorf("diagnostic not bounded: %d", len(got))
	}
}

func TestSplitServer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, host, hostport string
		ok                 bool
	}{
		{"coaps://est.example:9085", "est.example", "est.example:9085", true},
		{"coaps://est.example", "est.example", "est.example:5684", true},
		{"coaps://est.example/", "est.example", "est.example:5684", true},
		{"127.0.0.1:1234", "127.0.0.1", "127.0.0.1:1234", true},
		{"[::1]:1234", "::1", "[::1]:1234", true},
		{"coaps://[::1]", "::1", "[::1]:5684", true},
		{"est.example", "est.example", "est.example:5684", true},
		{"coaps://est.example/est/x", "", "", false},
		{"coaps://est.example:99999", "", "", false},
		{"", "", "", false},
	} {
		host, hp, err := splitServer(tc.in)
		if (err == nil) != tc.ok || host != tc.host || hp != tc.hostport {
			t.Errorf("splitServer(%q) = %q, %q, %v", tc.in, host, hp, err)
		}
	}
}

func TestClientOptionsValidation(t *testing.T) {
	t.Parallel()
	_, err := Options{BlockSize: 100, Label: "a/b"}.withDefaults()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"Server is required", "Certificate", "Roots", "label", "block size 100"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not report %q", err, want)
		}
	}
	for size, szx := range map[int]uint8{16: 0, 64: 2, 1024: 6} {
		if got, err := blockSZX(size); err != nil || got != szx {
			t.Errorf("blockSZX(%d) = %d, %v", size, got, err)
		}
	}
	if _, err := blockSZX(2048); err == nil {
		t.Error("blockSZX(2048) accepted")
	}
}

func TestBlockOption(t *testing.T) {
	t.Parallel()
	for _, b := range []blockOpt{{0, false, 0}, {1, true, 6}, {1<<20 - 1, true, 2}} {
		got, err := decodeBlockOpt(b.value())
		if err != nil || got != b {
			t.Errorf("round trip %+v = %+v, %v", b, got, err)
		}
	}
	if _, err := decodeBlockOpt(0x17); !errors.Is(err, ErrBadResponse) {
		t.Errorf("SZX 7 accepted: %v", err)
	}
}
