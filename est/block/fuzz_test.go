package block

import (
	"testing"
	"time"
)

// FuzzManager drives a Manager with random sequences of requests (5 bytes
// each) and checks it never panics, never holds more than MaxBody bytes for
// a transfer, never hands out a transfer's body twice, keeps its counts and
// limits, and answers every non-Handle request with a code.
func FuzzManager(f *testing.F) {
	// A complete 3-block transfer (SZX 2), then Block2 requests.
	f.Add([]byte{
		0x01, 0x02, 0x01, 0x00, 0x01,
		0x01, 0x0A, 0x01, 0x00, 0x00,
		0x01, 0x12, 0x00, 0x01, 0xF1,
		0x01, 0x0E, 0x02, 0x00, 0x00,
		0x01, 0x16, 0x02, 0x00, 0x00,
	})
	f.Add([]byte{0x01, 0x02, 0x01, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x00, 0x05, 0x02, 0x01, 0x00, 0xC2})
	f.Add([]byte{0x02, 0x07, 0x01, 0x04, 0xFF, 0x00, 0x00, 0x06, 0x00, 0x81})
	f.Fuzz(func(t *testing.T, data []byte) { runManagerOps(t, data) })
}

// runManagerOps is FuzzManager's body.
func runManagerOps(t testing.TB, data []byte) {
	const maxOps = 64 // keeps each execution (and minimisation) short
	if len(data) > 5*maxOps {
		data = data[:5*maxOps]
	}
	{
		const maxBody = 300
		m, c := newTestManager(t, Options{MaxBody: maxBody, MaxTransfersPerPeer: 2, MaxTransfers: 3, Lifetime: 10 * time.Second})
		handed := map[uint64]bool{}
		tags := []string{"", "01"}
		for ; len(data) >= 5; data = data[5:] {
			op := data[:5]
			in := Incoming{Key: Key{
				Peer:       string(rune('a' + op[0]&1)),
				Method:     MethodGET + (op[0]>>1)&1,
				Path:       "/x",
				RequestTag: tags[(op[0]>>2)&1],
			}}
			o := Option{SZX: op[1] & 7, Num: uint32(op[1] >> 3), More: op[2]&1 != 0}
			if op[0]&0x80 != 0 {
				o.Num = MaxNum + uint32(op[0]>>5&1) // 20-bit edge
			}
			switch (op[2] >> 1) & 3 {
			case 0:
				in.Block1 = &o
			case 1:
				in.Block2 = &o
			case 2:
				b1, b2 := o, Option{Num: uint32(op[2] >> 3), SZX: op[3] >> 5}
				in.Block1, in.Block2 = &b1, &b2
			}
			size := o.Size()
			n := []int{size, size - 1, 0, size + 1}[op[3]&3]
			in.Payload = testBody(n, op[3])
			if op[3]&4 != 0 {
				in.Size1 = u32(uint32(op[4]) * 4)
			}
			in.Size2 = op[3]&8 != 0
			if adv := op[4] >> 6; adv != 0 {
				c.Advance(time.Duration(adv) * 4 * time.Second)
			}

			d := m.Request(in)
			if d.Handle {
				if len(d.Body) > maxBody {
					t.Fatalf("handed out %d bytes, MaxBody %d", len(d.Body), maxBody)
				}
				if d.xfer != 0 {
					if handed[d.xfer] {
						t.Fatalf("transfer %d handed out twice", d.xfer)
					}
					handed[d.xfer] = true
				}
				if op[4]&1 != 0 {
					out := m.Respond(in, Response{Code: CodeChanged, Body: testBody(int(op[4])*9, 1)})
					if out.Code == 0 || len(out.Payload) > 1024 {
						t.Fatalf("Respond: code %#x, %d bytes", out.Code, len(out.Payload))
					}
				}
			} else {
				if d.Reply.Code == 0 {
					t.Fatalf("reply without code for %+v", in)
				}
				if d.Err != nil && Code(d.Err) != d.Reply.Code {
					t.Fatalf("Err %v vs code %#x", d.Err, d.Reply.Code)
				}
				if len(d.Reply.Payload) > 1024 {
					t.Fatalf("reply of %d bytes", len(d.Reply.Payload))
				}
			}
			if op[4]&2 != 0 {
				m.Sweep(c.Now())
			}
			checkInvariants(t, m)
		}
	}
}
