package block

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
)

// wireLog records, per request, what libcoap put on the wire.
type wireLog struct {
	mu    sync.Mutex
	lines []string
	runs  int
}

func (l *wireLog) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

func describe(r *mux.Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v tok=%x", r.Code(), []byte(r.Token()))
	for _, o := range r.Options() {
		switch o.ID {
		case message.Block1, message.Block2:
			v, err := Decode(o.Value)
			name := "Block1"
			if o.ID == message.Block2 {
				name = "Block2"
			}
			fmt.Fprintf(&b, " %s=%v(err=%v)", name, v, err)
		case message.URIPath:
			fmt.Fprintf(&b, " path=%s", o.Value)
		case OptionRequestTag:
			fmt.Fprintf(&b, " Request-Tag=%x", o.Value)
		default:
			fmt.Fprintf(&b, " opt%d=%x", o.ID, o.Value)
		}
	}
	n, _ := r.BodySize()
	fmt.Fprintf(&b, " payload=%d", n)
	return b.String()
}

// transform is the resource's response: a body derived from the whole
// request, larger than it, so the response needs Block2 too.
func transform(body []byte) []byte {
	sum := sha256.Sum256(body)
	out := []byte(hex.EncodeToString(sum[:]) + "\n")
	out = append(out, bytes.ToUpper(body)...)
	return append(out, body...)
}

// TestInteropLibcoap runs a plain-UDP go-coap server (its own block-wise
// disabled) whose /x resource uses a Manager, and drives it with libcoap's
// coap-client: a >1 KiB POST body in 64-byte Block1 blocks and a >1 KiB
// response fetched with Block2.
func TestInteropLibcoap(t *testing.T) {
	client := pkitest.RequireTool(t, "coap-client-openssl")
	mgr, err := NewManager(Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wl wireLog
	r := mux.NewRouter()
	if err := r.Handle("/x", mux.HandlerFunc(func(w mux.ResponseWriter, req *mux.Message) {
		wl.add(describe(req))
		in, err := FromMessage(w.Conn().RemoteAddr().String(), req.Message)
		if err != nil {
			w.Message().SetCode(0x82)
			return
		}
		d := mgr.Request(in)
		if !d.Handle {
			d.Reply.Apply(w.Message())
			return
		}
		wl.mu.Lock()
		wl.runs++
		wl.mu.Unlock()
		cf := uint16(message.TextPlain)
		resp := Response{Code: CodeChanged, ContentFormat: &cf, Body: transform(d.Body)}
		mgr.Respond(in, resp).Apply(w.Message())
	})); err != nil {
		t.Fatal(err)
	}
	l, err := coapnet.NewListenUDP("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := udp.NewServer(options.WithMux(r), options.WithBlockwise(false, blockwise.SZX1024, time.Second))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Stop()
		<-done
		_ = l.Close()
	})

	for _, bs := range []int{64, 16, 1024} {
		t.Run(fmt.Sprintf("b%d", bs), func(t *testing.T) {
			runCoapClient(t, client, l.LocalAddr().String(), bs, mgr, &wl)
		})
	}
}

func runCoapClient(t *testing.T, client, addr string, bs int, mgr *Manager, wl *wireLog) {
	wl.mu.Lock()
	wl.lines, wl.runs = nil, 0
	wl.mu.Unlock()
	body := make([]byte, 0, 1500)
	for i := 0; len(body) < 1500; i++ {
		body = append(body, fmt.Sprintf("line %04d of the request body\n", i)...)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	out := filepath.Join(dir, "out")
	if err := os.WriteFile(in, body, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	uri := fmt.Sprintf("coap://%s/x", addr)
	cmd := exec.CommandContext(ctx, client, "-m", "post", "-b", fmt.Sprint(bs), "-B", "10", "-f", in, "-o", out, uri)
	stdout, err := cmd.CombinedOutput()
	wl.mu.Lock()
	defer wl.mu.Unlock()
	for _, s := range wl.lines {
		t.Log(s)
	}
	if err != nil {
		t.Fatalf("coap-client: %v\n%s", err, stdout)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("coap-client wrote no output: %v\n%s", err, stdout)
	}
	want := transform(body)
	if !bytes.Equal(got, want) {
		t.Fatalf("client got %d bytes, want %d\nstdout: %s", len(got), len(want), stdout)
	}
	if wl.runs != 1 {
		t.Fatalf("handler ran %d times, want 1", wl.runs)
	}
	if st := mgr.Stats(); st.Transfers != 0 || st.Buffered != 0 {
		t.Fatalf("after the exchange: %+v, want no transfer left", st)
	}
	if len(wl.lines) < 3 {
		t.Fatalf("only %d requests: block-wise transfer did not happen", len(wl.lines))
	}
}
