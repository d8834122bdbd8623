package block

import (
	"bytes"
	"fmt"
	"sync"
	"time"
)

// Defaults for the zero fields of Options.
const (
	DefaultMaxBody              = 64 << 10
	DefaultMaxTransfersPerPeer  = 4
	DefaultMaxTransfersPerOwner = 8
	DefaultMaxTransfers         = 1024
	DefaultLifetime             = 30 * time.Second
	DefaultRetryAfter           = 2 * time.Second
)

// Options configures a Manager. The zero value of every field selects its
// default.
type Options struct {
	// MaxBody is the largest request body reassembled, in bytes; larger
	// bodies get 4.13 with Size1 = MaxBody (RFC 7959 §2.9.3, §4).
	// Default 64 KiB.
	MaxBody int
	// MaxTransfersPerPeer bounds the concurrent Block1 transfers of one
	// Key.Peer, and separately the stored Block2 responses of one peer.
	// Default 4.
	MaxTransfersPerPeer int
	// MaxTransfersPerOwner bounds the concurrent Block1 transfers of one
	// Incoming.Owner (all its peers together), and separately its stored
	// Block2 responses. Default 8.
	MaxTransfersPerOwner int
	// MaxTransfers bounds the concurrent Block1 transfers of all peers, and
	// separately all stored Block2 responses. Default 1024.
	MaxTransfers int
	// Lifetime is how long a transfer or stored response survives without
	// activity (about EXCHANGE_LIFETIME-scale, RFC 7252 §4.8.2). Default 30 s.
	Lifetime time.Duration
	// RetryAfter is the Max-Age sent with 5.03 when a limit is reached.
	// Default 2 s.
	RetryAfter time.Duration
	// SZX is the server's preferred (largest) block size exponent, used for
	// Block2 when the client does not ask for a size and to reduce the
	// client's Block1 size at block 0 (RFC 7959 §2.3, §2.4). Valid values
	// are 0..6; 0 selects the default, 6 (1024 bytes). Block size 16 can
	// not be selected as a preference; clients may still use it.
	SZX uint8
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Key identifies one block-wise exchange (RFC 7959 §2.4, RFC 9175 §3). It
// never contains the CoAP token: libcoap uses a fresh token for every block.
type Key struct {
	Peer   string // DTLS session or remote address, chosen by the caller
	Method uint8  // request code, e.g. MethodPOST
	Path   string // Uri-Path (and, if it matters, Uri-Query), caller's canonical form
	// RequestTag is the hex of the Request-Tag option value (several joined
	// with ","), "" if absent and "-" for one zero-length value.
	RequestTag string
}

// Incoming is one CoAP request as far as block-wise transfer is concerned.
type Incoming struct {
	Key Key
	// Owner is who the peer acts for (the server uses the client
	// identity); its transfers and stored responses are bounded by
	// Options.MaxTransfersPerOwner. "" is an owner like any other.
	Owner  string
	Block1 *Option // Block1 option, nil if absent
	Block2 *Option // Block2 option, nil if absent
	Size1  *uint32 // Size1 option, nil if absent (RFC 7959 §4)
	Size2  bool    // the request carried Size2: report the size (RFC 7959 §4)
	// Payload is the message payload. A Handle decision for a single-message
	// request returns it as Body without copying.
	Payload []byte
}

// Response is what the handler produced for a complete request.
type Response struct {
	Code          uint8
	ContentFormat *uint16 // nil: no Content-Format option
	MaxAge        *uint32 // nil: no Max-Age option
	// Body is the full response body. The Manager keeps it (without copying)
	// when the response is sent block-wise: do not modify it afterwards.
	Body []byte
	// Sensitive marks a Body that holds secret material (a server-generated
	// private key in the clear, RFC 9148 §4.8). Respond then owns Body and
	// clears it (overwrites it with zeros) once the response is done with:
	// at once when it is not stored, else after its last block was served,
	// or when the stored response is evicted, expires or is superseded. Each
	// Outgoing built from it carries a copy of its block, marked Sensitive.
	Sensitive bool
}

// Outgoing is one CoAP response message to send.
type Outgoing struct {
	Code          uint8
	ContentFormat *uint16
	MaxAge        *uint32
	Block1        *Option
	Block2        *Option
	Size1         *uint32
	Size2         *uint32
	// Payload may alias a stored response body: do not modify it.
	Payload []byte
	// Sensitive: Payload is a copy of a block of a Sensitive response, the
	// caller's to clear once the message is sent.
	Sensitive bool
}

// Decision is the Manager's verdict on an Incoming request: either answer
// with Reply at once (Handle false), or run the handler exactly once with
// Body and pass its Response to Manager.Respond (Handle true).
type Decision struct {
	Handle bool
	// Body is the complete request body when Handle is true.
	Body []byte
	// Reply is the response to send when Handle is false: 2.31 Continue, a
	// stored Block2 block, or an error.
	Reply Outgoing
	// Err is the reason of an error Reply (nil for 2.31 and stored blocks);
	// Code(Err) == Reply.Code.
	Err error

	xfer uint64 // transfer id of a completed Block1 transfer, for tests
}

type kind uint8

const (
	kindTransfer kind = iota + 1 // Block1 reassembly in progress
	kindPending                  // Block1 complete, body handed out, awaiting Respond
	kindResponse                 // stored response, served by Block2 requests
)

type entry struct {
	kind    kind
	id      uint64
	body    []byte  // kindTransfer: bytes received so far
	last    Option  // kindTransfer: last accepted Block1
	lastLen int     // kindTransfer: payload length of last
	final   *Option // kindPending/kindResponse: final Block1 of the transfer, nil if none
	owner   string
	// b2szx is the Block2 size the client asked for in any request of the
	// transfer (-1: none; RFC 9148 Appendix B.2: libcoap puts it in the
	// first Block1 request), b1szx the smallest Block1 size it used.
	b2szx    int8
	b1szx    uint8
	resp     Response
	deadline time.Time
}

type peerCount struct{ transfers, responses int }

// Manager reassembles Block1 request bodies and serves Block2 response
// bodies for a server (RFC 7959). It is safe for concurrent use.
type Manager struct {
	opts Options

	mu        sync.Mutex
	entries   map[Key]*entry
	peers     map[string]*peerCount
	owners    map[string]*peerCount
	transfers int
	responses int
	nextID    uint64
}

// NewManager returns a Manager. It reports an error if opts is invalid.
func NewManager(opts Options) (*Manager, error) {
	if opts.MaxBody < 0 || opts.MaxTransfersPerPeer < 0 || opts.MaxTransfers < 0 || opts.MaxTransfersPerOwner < 0 ||
		opts.Lifetime < 0 || opts.RetryAfter < 0 {
		return nil, fmt.Errorf("block: negative option value")
	}
	if opts.SZX > MaxSZX {
		return nil, fmt.Errorf("%w: server SZX %d", ErrBadOption, opts.SZX)
	}
	if opts.MaxBody == 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.MaxTransfersPerPeer == 0 {
		opts.MaxTransfersPerPeer = DefaultMaxTransfersPerPeer
	}
	if opts.MaxTransfersPerOwner == 0 {
		opts.MaxTransfersPerOwner = DefaultMaxTransfersPerOwner
	}
	if opts.MaxTransfers == 0 {
		opts.MaxTransfers = DefaultMaxTransfers
	}
	if opts.Lifetime == 0 {
		opts.Lifetime = DefaultLifetime
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = DefaultRetryAfter
	}
	if opts.SZX == 0 {
		opts.SZX = MaxSZX
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Manager{
		opts:    opts,
		entries: make(map[Key]*entry),
		peers:   make(map[string]*peerCount),
		owners:  make(map[string]*peerCount),
	}, nil
}

// Stats counts the state a Manager holds.
type Stats struct {
	Transfers int // Block1 transfers in progress or awaiting Respond
	Responses int // stored Block2 responses
	Buffered  int // request body bytes held by transfers in progress
	Stored    int // response body bytes held by stored responses
}

// Stats returns the current counts (expired entries included until swept).
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Stats{Transfers: m.transfers, Responses: m.responses}
	for _, e := range m.entries {
		s.Buffered += len(e.body)
		s.Stored += len(e.resp.Body)
	}
	return s
}

// Sweep removes every transfer and stored response idle for Lifetime at
// now, and returns how many it removed. The server calls it periodically;
// expired state is also dropped lazily when its Key is used.
func (m *Manager) Sweep(now time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sweepLocked(now)
}

func (m *Manager) sweepLocked(now time.Time) int {
	n := 0
	for k, e := range m.entries {
		if !now.Before(e.deadline) {
			m.removeLocked(k, e)
			n++
		}
	}
	return n
}

// Request decides what to do with one incoming request (RFC 7959 §2.3,
// §2.4, §3.3). See the package documentation for the rules.
func (m *Manager) Request(in Incoming) Decision {
	now := m.opts.Now()
	m.mu.Lock()
	defer m.mu.Unlock()

	for _, o := range []*Option{in.Block1, in.Block2} {
		if o != nil {
			if err := o.Validate(); err != nil {
				return m.fail(err)
			}
		}
	}
	e := m.entries[in.Key]
	if e != nil && !now.Before(e.deadline) {
		m.removeLocked(in.Key, e)
		e = nil
	}
	if in.Block2 != nil && in.Block2.Num > 0 {
		return m.continueBlock2Locked(in, e, now)
	}
	if in.Block1 != nil {
		return m.block1Locked(in, e, now)
	}
	if err := m.checkSize(in); err != nil {
		return m.fail(err)
	}
	if e != nil && e.kind == kindResponse {
		// A new request supersedes the stored response of the previous one.
		m.removeLocked(in.Key, e)
	}
	return Decision{Handle: true, Body: in.Payload}
}

func (m *Manager) checkSize(in Incoming) error {
	if in.Size1 != nil && uint64(*in.Size1) > uint64(m.opts.MaxBody) {
		return fmt.Errorf("%w: Size1 %d above %d", ErrTooLarge, *in.Size1, m.opts.MaxBody)
	}
	if len(in.Payload) > m.opts.MaxBody {
		return fmt.Errorf("%w: body above %d", ErrTooLarge, m.opts.MaxBody)
	}
	return nil
}

// block1Locked handles a request carrying Block1 (RFC 7959 §2.3).
func (m *Manager) block1Locked(in Incoming, e *entry, now time.Time) Decision {
	b := *in.Block1
	size := b.Size()
	if (b.More && len(in.Payload) != size) || len(in.Payload) > size {
		if e != nil && e.kind == kindTransfer {
			m.removeLocked(in.Key, e)
		}
		return m.fail(fmt.Errorf("%w: %d bytes in block %s", ErrBadBlock, len(in.Payload), b))
	}

	if b.Num == 0 {
		// Block 0 always starts a new request body, superseding any state.
		if e != nil {
			m.removeLocked(in.Key, e)
		}
		if err := m.checkSize(in); err != nil {
			return m.fail(err)
		}
		if !b.More {
			return Decision{Handle: true, Body: in.Payload}
		}
		if err := m.reserveTransferLocked(in.Key.Peer, in.Owner, now); err != nil {
			return m.fail(err)
		}
		m.nextID++
		body := make([]byte, 0, min(2*size, m.opts.MaxBody))
		ne := &entry{
			kind:     kindTransfer,
			id:       m.nextID,
			body:     append(body, in.Payload...),
			last:     b,
			lastLen:  len(in.Payload),
			owner:    in.Owner,
			b2szx:    -1,
			b1szx:    b.SZX,
			deadline: now.Add(m.opts.Lifetime),
		}
		if in.Block2 != nil {
			ne.b2szx = int8(in.Block2.SZX)
		}
		m.entries[in.Key] = ne
		echo := Option{Num: 0, More: true, SZX: min(b.SZX, m.opts.SZX)}
		return Decision{Reply: Outgoing{Code: CodeContinue, Block1: &echo}}
	}

	if e == nil || e.kind != kindTransfer {
		if e != nil && e.final != nil && e.final.Num == b.Num && !b.More {
			// A repeated final block: the handler already ran.
			if e.kind == kindPending {
				return m.fail(fmt.Errorf("%w: handler for this request still running", ErrBusy))
			}
			e.deadline = now.Add(m.opts.Lifetime)
			out, err := m.sliceLocked(e.resp, 0, m.entrySZX(in, e), in.Block2 != nil, in.Size2)
			if err != nil {
				return m.fail(err)
			}
			out.Block1 = e.final
			return Decision{Reply: out}
		}
		return m.fail(fmt.Errorf("%w: block %s without a transfer", ErrIncomplete, b))
	}

	if b.More && b.Num == e.last.Num && b.SZX == e.last.SZX && len(in.Payload) == e.lastLen {
		// Retransmission of the last accepted block: answer again.
		e.deadline = now.Add(m.opts.Lifetime)
		echo := b
		return Decision{Reply: Outgoing{Code: CodeContinue, Block1: &echo}}
	}
	if uint64(b.Num)*uint64(size) != uint64(len(e.body)) {
		m.removeLocked(in.Key, e)
		return m.fail(fmt.Errorf("%w: block %s at offset %d", ErrIncomplete, b, len(e.body)))
	}
	if len(e.body)+len(in.Payload) > m.opts.MaxBody {
		m.removeLocked(in.Key, e)
		return m.fail(fmt.Errorf("%w: body above %d", ErrTooLarge, m.opts.MaxBody))
	}
	e.body = append(e.body, in.Payload...)
	e.last, e.lastLen = b, len(in.Payload)
	e.b1szx = min(e.b1szx, b.SZX)
	if in.Block2 != nil {
		e.b2szx = int8(in.Block2.SZX)
	}
	e.deadline = now.Add(m.opts.Lifetime)
	if b.More {
		echo := b
		return Decision{Reply: Outgoing{Code: CodeContinue, Block1: &echo}}
	}
	body := e.body
	e.body = nil
	e.kind = kindPending
	final := b
	e.final = &final
	return Decision{Handle: true, Body: body, xfer: e.id}
}

// continueBlock2Locked serves a Block2 request with Num > 0 (RFC 7959 §2.4,
// §3.3).
func (m *Manager) continueBlock2Locked(in Incoming, e *entry, now time.Time) Decision {
	if e == nil || e.kind != kindResponse {
		if in.Key.Method == MethodGET {
			// Safe method: recompute, Respond slices out the block.
			if err := m.checkSize(in); err != nil {
				return m.fail(err)
			}
			return Decision{Handle: true, Body: in.Payload}
		}
		return m.fail(fmt.Errorf("%w: no stored response for block %s", ErrIncomplete, *in.Block2))
	}
	e.deadline = now.Add(m.opts.Lifetime)
	out, err := m.sliceLocked(e.resp, in.Block2.Offset(), m.respSZX(in.Block2), true, in.Size2)
	if err != nil {
		return m.fail(err)
	}
	if e.resp.Sensitive && !out.Block2.More {
		// The last block is out (a copy): the transfer is complete.
		defer m.removeLocked(in.Key, e)
	}
	if in.Block1 != nil && e.final != nil {
		// libcoap may repeat the final Block1 option; echo the real one.
		out.Block1 = e.final
	}
	return Decision{Reply: out}
}

// Respond turns the handler's response to in (for which Request returned a
// Handle decision) into the message to send: the whole response, or its
// first requested block, keeping the full response for later Block2
// requests (RFC 7959 §2.4, §3.3). The final Block1 option is echoed.
func (m *Manager) Respond(in Incoming, resp Response) Outgoing {
	now := m.opts.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	stored := false
	if resp.Sensitive {
		defer func() {
			if !stored {
				clear(resp.Body)
			}
		}()
	}

	offset := 0
	if in.Block2 != nil && in.Block2.Validate() == nil {
		offset = in.Block2.Offset()
	}
	e := m.entries[in.Key]
	pending := e != nil && e.kind == kindPending && e.final != nil && in.Block1 != nil &&
		*e.final == *in.Block1
	szx := m.respSZX(in.Block2)
	switch {
	case pending:
		szx = m.entrySZX(in, e)
	case in.Block2 == nil && in.Block1 != nil:
		// A single-block Block1 request: never answer in blocks larger
		// than the client sends.
		szx = min(szx, in.Block1.SZX)
	}
	out, err := m.sliceLocked(resp, offset, szx, in.Block2 != nil, in.Size2)
	if err != nil {
		return m.fail(err).Reply
	}
	var final *Option
	if in.Block1 != nil {
		b, echo := *in.Block1, *in.Block1
		final, out.Block1 = &b, &echo
	}

	blockwise := out.Block2 != nil && (out.Block2.More || out.Block2.Num > 0)
	if !pending && !blockwise {
		return out
	}
	switch {
	case pending:
		m.removeLocked(in.Key, e)
	case e == nil:
		final = nil
	case e.kind == kindResponse:
		m.removeLocked(in.Key, e)
		final = nil
	default:
		// Another Block1 transfer on this Key is under way: keep it and
		// send this response unstored.
		return out
	}
	ne := &entry{
		kind:     kindResponse,
		final:    final,
		owner:    in.Owner,
		b2szx:    int8(szx),
		b1szx:    szx,
		resp:     resp,
		deadline: now.Add(m.opts.Lifetime),
	}
	m.storeLocked(in.Key, ne, now)
	stored = true
	return out
}

// entrySZX is the response block size for a request on e's exchange: the
// request's own Block2 size, else the Block2 size asked for in any request
// of the transfer, else no larger than the smallest Block1 size the client
// used (RFC 7959 §2.4, RFC 9148 Appendix B.2), never above the server's.
func (m *Manager) entrySZX(in Incoming, e *entry) uint8 {
	switch {
	case in.Block2 != nil:
		return m.respSZX(in.Block2)
	case e.b2szx >= 0:
		return min(uint8(e.b2szx), m.opts.SZX)
	default:
		return min(e.b1szx, m.opts.SZX)
	}
}

// respSZX returns the block size exponent for a response: the client's
// Block2 SZX if given, never above the server's preference (RFC 7959 §2.4).
func (m *Manager) respSZX(b2 *Option) uint8 {
	if b2 == nil {
		return m.opts.SZX
	}
	return min(b2.SZX, m.opts.SZX)
}

// sliceLocked cuts the block at offset with size 16<<szx out of resp.
func (m *Manager) sliceLocked(resp Response, offset int, szx uint8, withBlock2, withSize2 bool) (Outgoing, error) {
	size := 16 << szx
	n := len(resp.Body)
	if offset > 0 && offset >= n {
		return Outgoing{}, fmt.Errorf("%w: block at offset %d beyond body of %d bytes", ErrBadOption, offset, n)
	}
	end := min(offset+size, n)
	out := Outgoing{
		Code:          resp.Code,
		ContentFormat: resp.ContentFormat,
		MaxAge:        resp.MaxAge,
		Payload:       resp.Body[offset:end],
	}
	if resp.Sensitive {
		out.Payload, out.Sensitive = bytes.Clone(out.Payload), true
	}
	more := end < n
	if withBlock2 || more || offset > 0 {
		out.Block2 = &Option{Num: uint32(offset / size), More: more, SZX: szx}
		if withSize2 || (offset == 0 && more) {
			s := uint32(n)
			out.Size2 = &s
		}
	}
	return out, nil
}

// fail builds the error reply for err (one place: Code plus the options
// RFC 7959 asks for).
func (m *Manager) fail(err error) Decision {
	out := Outgoing{Code: Code(err)}
	switch out.Code {
	case CodeRequestEntityTooLarge:
		s := uint32(min(m.opts.MaxBody, 1<<32-1))
		out.Size1 = &s
	case CodeServiceUnavailable:
		a := uint32((m.opts.RetryAfter + time.Second - 1) / time.Second)
		out.MaxAge = &a
	}
	return Decision{Reply: out, Err: err}
}

func (m *Manager) owner(o string) *peerCount {
	oc := m.owners[o]
	if oc == nil {
		oc = &peerCount{}
		m.owners[o] = oc
	}
	return oc
}

func (m *Manager) peer(p string) *peerCount {
	pc := m.peers[p]
	if pc == nil {
		pc = &peerCount{}
		m.peers[p] = pc
	}
	return pc
}

// reserveTransferLocked checks the transfer limits, sweeping expired state
// once when a limit is hit.
func (m *Manager) reserveTransferLocked(peer, owner string, now time.Time) error {
	full := func() error {
		pc, oc := m.peers[peer], m.owners[owner]
		switch {
		case pc != nil && pc.transfers >= m.opts.MaxTransfersPerPeer:
			return ErrPeerLimit
		case oc != nil && oc.transfers >= m.opts.MaxTransfersPerOwner:
			return ErrOwnerLimit
		case m.transfers >= m.opts.MaxTransfers:
			return ErrTotalLimit
		}
		return nil
	}
	if full() != nil {
		m.sweepLocked(now)
		if err := full(); err != nil {
			return err
		}
	}
	m.transfers++
	m.peer(peer).transfers++
	m.owner(owner).transfers++
	return nil
}

// storeLocked adds a stored response. When a limit is reached it evicts
// the least recently used stored response of the same peer, else of the
// same owner, else (server full) of the owner holding the most: the
// handler already ran, so the response is never refused, and an owner that
// fills the server evicts its own responses first.
func (m *Manager) storeLocked(k Key, e *entry, now time.Time) {
	over := func() (peer, owner, total bool) {
		pc, oc := m.peers[k.Peer], m.owners[e.owner]
		return pc != nil && pc.responses >= m.opts.MaxTransfersPerPeer,
			oc != nil && oc.responses >= m.opts.MaxTransfersPerOwner,
			m.responses >= m.opts.MaxTransfers
	}
	if p, o, t := over(); p || o || t {
		m.sweepLocked(now)
	}
	for {
		p, o, t := over()
		if !p && !o && !t {
			break
		}
		var match func(ok Key, oe *entry) bool
		switch {
		case p:
			match = func(ok Key, oe *entry) bool { return ok.Peer == k.Peer }
		case o:
			match = func(ok Key, oe *entry) bool { return oe.owner == e.owner }
		default:
			top, most := "", -1
			for name, oc := range m.owners {
				if oc.responses > most {
					top, most = name, oc.responses
				}
			}
			match = func(ok Key, oe *entry) bool { return oe.owner == top }
		}
		var oldK Key
		var old *entry
		for ok, oe := range m.entries {
			if oe.kind != kindResponse || !match(ok, oe) {
				continue
			}
			if old == nil || oe.deadline.Before(old.deadline) {
				oldK, old = ok, oe
			}
		}
		if old == nil {
			break
		}
		m.removeLocked(oldK, old)
	}
	m.entries[k] = e
	m.responses++
	m.peer(k.Peer).responses++
	m.owner(e.owner).responses++
}

// removeLocked deletes the entry at k and its counts.
func (m *Manager) removeLocked(k Key, e *entry) {
	if m.entries[k] != e {
		return
	}
	delete(m.entries, k)
	if e.kind == kindResponse && e.resp.Sensitive {
		clear(e.resp.Body)
	}
	pc, oc := m.peers[k.Peer], m.owners[e.owner]
	for _, c := range []*peerCount{pc, oc} {
		if c == nil {
			continue
		}
		switch e.kind {
		case kindTransfer, kindPending:
			c.transfers--
		case kindResponse:
			c.responses--
		}
	}
	switch e.kind {
	case kindTransfer, kindPending:
		m.transfers--
	case kindResponse:
		m.responses--
	}
	if pc != nil && pc.transfers == 0 && pc.responses == 0 {
		delete(m.peers, k.Peer)
	}
	if oc != nil && oc.transfers == 0 && oc.responses == 0 {
		delete(m.owners, e.owner)
	}
}
