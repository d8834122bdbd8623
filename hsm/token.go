//go:build cgo

package hsm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// Token is an open, logged-in PKCS#11 token. It owns a bounded pool of
// sessions shared by every key found or generated through it, and brings the
// token back by itself when it is lost (see the package documentation).
//
// A Token is safe for concurrent use. Close waits for operations in flight;
// operations that start after Close fail with ErrClosed.
type Token struct {
	ctx      *pkcs11.Ctx
	module   string
	label    string
	serial   string
	pin      []byte // the user PIN, for the logins of recoveries; zeroed by release
	observer func(Event)
	maxDelay time.Duration // cap of the back-off between attempts to revive

	tokenObjects bool       // Options.SignWithTokenObjects: no session copies of keys
	one          *oneCall   // C_SignInit + C_Sign in one cgo call, if the module exports them
	loginMu      sync.Mutex // serialises the uses of the login session by operations (session copies of keys) and by recovery

	sem     chan struct{} // one slot per operation session (MaxSessions-1)
	done    chan struct{} // closed by Close
	reviver sync.WaitGroup

	keyMu     sync.Mutex   // serialises GenerateKey and DeleteKey (label uniqueness)
	recoverMu sync.Mutex   // serialises recovery, probes of the token, revival and Close's teardown
	modMu     sync.RWMutex // read-held by operations while they use the module; write-held around C_Finalize + C_Initialize

	mu         sync.Mutex // guards the fields below
	owner      bool       // this Token's C_Initialize loaded the library state; it finalises on Close
	closed     bool
	gen        uint64 // bumped by each recovery; sessions and key handles of older generations are stale
	modGen     uint64 // first generation of the current module initialisation; older handles died with C_Finalize
	slot       uint
	login      pkcs11.SessionHandle // kept open so the login state persists
	idle       []session
	down       bool      // the token is unavailable: operations fail at once
	since      time.Time // when down last changed
	cause      error     // while down: why
	retrying   bool      // while down: the reviver is (or will be) trying to bring the token back
	reviving   bool      // the reviver goroutine runs
	recoveries uint64
}

// session is an operation session and the generation it was opened in.
type session struct {
	h   pkcs11.SessionHandle
	gen uint64
}

func open(opts Options) (*Token, error) {
	r, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	if r.module == "" {
		return nil, fmt.Errorf("%w: no module path configured", ErrModule)
	}
	if r.label == "" && r.serial == "" {
		return nil, fmt.Errorf("%w: no token label or serial configured", ErrTokenNotFound)
	}
	if _, err := os.Stat(r.module); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModule, err)
	}
	ctx := pkcs11.New(r.module)
	if ctx == nil {
		return nil, fmt.Errorf("%w: cannot load %s as a pkcs11 module", ErrModule, r.module)
	}
	t := &Token{
		ctx:          ctx,
		module:       r.module,
		label:        r.label,
		serial:       r.serial,
		observer:     r.observer,
		maxDelay:     r.maxRecoveryDelay,
		tokenObjects: r.tokenObjects,
		done:         make(chan struct{}),
		since:        time.Now(),
	}
	t.one = openOneCall(r.module)
	switch err := ctx.Initialize(); {
	case err == nil:
		t.owner = true
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)):
	default:
		t.one.close()
		ctx.Destroy()
		return nil, fmt.Errorf("%w: C_Initialize %s: %w", ErrModule, r.module, err)
	}
	fail := func(err error) (*Token, error) {
		t.release()
		return nil, err
	}
	slot, info, err := t.findSlot()
	if err != nil {
		return fail(err)
	}
	if len(opts.PIN) == 0 {
		return fail(fmt.Errorf("%w: Options.PIN is empty", ErrNoPIN))
	}
	t.pin = bytes.Clone(opts.PIN)
	maxSessions := r.maxSessions
	if n := info.MaxRwSessionCount; n != pkcs11.CK_EFFECTIVELY_INFINITE && n != pkcs11.CK_UNAVAILABLE_INFORMATION && n < uint(maxSessions) {
		maxSessions = max(int(n), 2)
	}
	t.sem = make(chan struct{}, maxSessions-1)
	login, err := t.logIn(slot)
	if err != nil {
		return fail(err)
	}
	t.slot, t.login = slot, login
	return t, nil
}

// findSlot returns the slot holding the configured token.
func (t *Token) findSlot() (uint, pkcs11.TokenInfo, error) {
	slots, err := t.ctx.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("hsm: list slots: %w", err)
	}
	var seen []string
	for _, s := range slots {
		info, err := t.ctx.GetTokenInfo(s)
		if err != nil {
			continue // a slot whose token vanished meanwhile
		}
		if (t.label == "" || info.Label == t.label) && (t.serial == "" || info.SerialNumber == t.serial) &&
			info.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 {
			return s, info, nil
		}
		if info.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 {
			seen = append(seen, fmt.Sprintf("%q", info.Label))
		}
	}
	return 0, pkcs11.TokenInfo{}, fmt.Errorf("%w: label %q serial %q (present: %s)",
		ErrTokenNotFound, t.label, t.serial, strings.Join(seen, ", "))
}

// logIn opens the session that holds the login and logs the user in.
func (t *Token) logIn(slot uint) (pkcs11.SessionHandle, error) {
	h, err := t.ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return 0, fmt.Errorf("hsm: open login session: %w", err)
	}
	// A string view of the PIN, not a copy that could not be zeroed (the
	// pkcs11 package copies it into C memory for the call, and frees it).
	err = t.ctx.Login(h, pkcs11.CKU_USER, unsafe.String(unsafe.SliceData(t.pin), len(t.pin)))
	switch {
	case err == nil, errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)):
		return h, nil
	case isPINError(err):
		err = fmt.Errorf("%w: %w", ErrPIN, err)
	default:
		err = fmt.Errorf("hsm: login: %w", err)
	}
	_ = t.ctx.CloseSession(h)
	return 0, err
}

func isPINError(err error) bool {
	for _, rv := range []uint{pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE,
		pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED, pkcs11.CKR_USER_PIN_NOT_INITIALIZED} {
		if errors.Is(err, pkcs11.Error(rv)) {
			return true
		}
	}
	return false
}

func (t *Token) close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.done)
	t.mu.Unlock()
	for range cap(t.sem) {
		t.sem <- struct{}{} // every operation session is back
	}
	t.reviver.Wait()   // the reviver saw done
	t.recoverMu.Lock() // no recovery is running, and none will start
	defer t.recoverMu.Unlock()
	return t.release()
}

// release closes all sessions, finalises the module if owned and unloads it.
func (t *Token) release() error {
	t.mu.Lock()
	idle, login, owner := t.idle, t.login, t.owner
	t.idle, t.login = nil, 0
	t.mu.Unlock()
	t.closeSessions(idle)
	if login != 0 {
		_ = t.ctx.CloseSession(login)
	}
	var err error
	if owner {
		if ferr := t.ctx.Finalize(); ferr != nil && !errors.Is(ferr, pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)) {
			err = fmt.Errorf("hsm: C_Finalize: %w", ferr)
		}
	}
	t.ctx.Destroy()
	clear(t.pin)
	t.one.close()
	return err
}

func (t *Token) tokenLabel() string { return t.label }

func (t *Token) status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Status{Up: !t.down, Since: t.since, Err: t.cause, Retrying: t.down && t.retrying, Recoveries: t.recoveries}
}

// emit hands e to the observer, if any.
func (t *Token) emit(e Event) {
	if t.observer == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	t.observer(e)
}

// unavailable returns the error of an operation refused because the token
// is down, or nil while it is up.
func (t *Token) unavailable() error {
	t.mu.Lock()
	down, since, cause := t.down, t.since, t.cause
	t.mu.Unlock()
	if !down {
		return nil
	}
	return fmt.Errorf("%w since %s: %w", ErrUnavailable, since.UTC().Format(time.RFC3339), cause)
}

// acquire takes an operation session from the pool, opening one if needed.
// It blocks while MaxSessions-1 operations are in flight. The caller holds
// modMu for reading.
func (t *Token) acquire() (session, error) {
	select {
	case <-t.done:
		return session{}, ErrClosed
	case t.sem <- struct{}{}:
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		<-t.sem
		return session{}, ErrClosed
	}
	gen, slot := t.gen, t.slot
	var stale []session
	for len(t.idle) > 0 {
		s := t.idle[len(t.idle)-1]
		t.idle = t.idle[:len(t.idle)-1]
		if s.gen == gen {
			t.mu.Unlock()
			t.closeSessions(stale)
			return s, nil
		}
		stale = append(stale, s)
	}
	t.mu.Unlock()
	t.closeSessions(stale)
	h, err := t.ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		<-t.sem
		return session{gen: gen}, fmt.Errorf("hsm: open session: %w", err)
	}
	return session{h: h, gen: gen}, nil
}

// put returns a session to the pool after an operation that ended with opErr.
// Sessions that saw a PKCS#11 error, or belong to an older generation, are closed.
func (t *Token) put(s session, opErr error) {
	var p11 pkcs11.Error
	t.mu.Lock()
	keep := !errors.As(opErr, &p11) && s.gen == t.gen && !t.closed
	if keep {
		t.idle = append(t.idle, s)
	}
	t.mu.Unlock()
	if !keep {
		t.closeSessions([]session{s})
	}
	<-t.sem
}

// closeSessions closes sessions of the current module initialisation. Those
// of an earlier one died with C_Finalize and are only forgotten: the module
// may have handed their handle values out again.
func (t *Token) closeSessions(ss []session) {
	t.mu.Lock()
	modGen := t.modGen
	t.mu.Unlock()
	for _, s := range ss {
		if s.gen >= modGen {
			_ = t.ctx.CloseSession(s.h)
		}
	}
}

// errClass tells withSession what a failed operation needs before its retry.
type errClass int

const (
	classFatal   errClass = iota // not retried
	classRetry                   // retry on a fresh session (the caller re-finds its key)
	classRecover                 // drop all sessions, log in again, then retry
)

func classify(err error) errClass {
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return classFatal
	}
	switch uint(rv) {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_SESSION_COUNT,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_SLOT_ID_INVALID,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return classRecover
	case pkcs11.CKR_KEY_HANDLE_INVALID, pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_OPERATION_ACTIVE:
		return classRetry
	}
	return classFatal
}

// do runs the operation op through withSession and reports its failure to
// the observer.
func (t *Token) do(op string, fn func(s session) error) error {
	err := tokenError(t.withSession(fn))
	if err != nil && !errors.Is(err, ErrClosed) {
		t.emit(Event{Kind: EventFailure, Op: op, Reason: failureReason(err), Err: err})
	}
	return err
}

// tokenError adds this package's sentinel to the PKCS#11 return values
// that name a condition of the token callers act on: CKR_DEVICE_MEMORY is
// ErrTokenFull. The pkcs11.Error stays in the chain.
func tokenError(err error) error {
	if errors.Is(err, pkcs11.Error(pkcs11.CKR_DEVICE_MEMORY)) && !errors.Is(err, ErrTokenFull) {
		return fmt.Errorf("%w: %w", ErrTokenFull, err)
	}
	return err
}

// withSession runs fn on a pooled session. While the token is down it fails
// at once with ErrUnavailable. If fn (or opening the session) fails in a way
// that a fresh session, a fresh login or a re-initialised module cures, the
// Token recovers and fn runs once more; there is no further retry. A key that
// cannot be found, or whose handle is invalid, leads to a retry only if the
// token or the login turns out to be lost (private objects are invisible
// when logged out).
func (t *Token) withSession(fn func(s session) error) error {
	var err error
	for attempt := range 2 {
		if derr := t.unavailable(); derr != nil {
			return derr
		}
		var s session
		s, err = t.run(fn)
		if err == nil || attempt == 1 || errors.Is(err, ErrClosed) {
			break
		}
		class := classify(err)
		if class == classFatal && !errors.Is(err, ErrKeyNotFound) {
			return err
		}
		changed, rerr := t.recover(s.gen, class)
		switch {
		case errors.Is(rerr, ErrUnavailable):
			return rerr // the cause of the outage is in rerr
		case rerr != nil:
			return fmt.Errorf("%w (recovery failed: %w)", err, rerr)
		case class == classFatal && !changed:
			return err // the key is really absent
		}
	}
	return err
}

// run runs fn on a session, holding modMu for reading so that the module is
// not re-initialised under it.
func (t *Token) run(fn func(s session) error) (session, error) {
	t.modMu.RLock()
	defer t.modMu.RUnlock()
	s, err := t.acquire()
	if err != nil {
		return s, err
	}
	err = fn(s)
	t.put(s, err)
	return s, err
}

// check probes the token with a session: the token must still be in its slot
// (C_GetTokenInfo) and the application logged in (C_GetSessionInfo). A
// failed probe is recovered from as a failed operation would be.
func (t *Token) check() error {
	return t.do("check", func(s session) error {
		if !t.present() {
			return pkcs11.Error(pkcs11.CKR_TOKEN_NOT_PRESENT)
		}
		info, err := t.ctx.GetSessionInfo(s.h)
		if err != nil {
			return err
		}
		if info.State != pkcs11.CKS_RW_USER_FUNCTIONS && info.State != pkcs11.CKS_RO_USER_FUNCTIONS {
			return pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)
		}
		return nil
	})
}

// present reports whether the configured token is still in its slot. A
// SoftHSM token whose directory vanished fails C_GetTokenInfo, and keeps
// failing after the directory is back until the module is initialised again.
func (t *Token) present() bool {
	t.mu.Lock()
	slot := t.slot
	t.mu.Unlock()
	info, err := t.ctx.GetTokenInfo(slot)
	return err == nil && info.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 &&
		(t.label == "" || info.Label == t.label) && (t.serial == "" || info.SerialNumber == t.serial)
}

// loggedIn reports whether the login session is alive and logged in as the
// user. It is called with recoverMu held, which serialises use of t.login.
func (t *Token) loggedIn() bool {
	t.loginMu.Lock()
	defer t.loginMu.Unlock()
	t.mu.Lock()
	login := t.login
	t.mu.Unlock()
	info, err := t.ctx.GetSessionInfo(login)
	return err == nil && (info.State == pkcs11.CKS_RW_USER_FUNCTIONS || info.State == pkcs11.CKS_RO_USER_FUNCTIONS)
}

// recover brings the Token back after a failure of class seen in generation
// gen; it reports whether the Token state changed since gen. If another
// goroutine already recovered past gen, it returns at once; if the token is
// down, it returns the ErrUnavailable error at once. Otherwise it escalates
// only as far as needed:
//
//  1. token present and logged in, and the failure only concerned a handle
//     or a key: nothing to do (the key may really be absent);
//  2. token present: a new login session replaces every session;
//  3. otherwise, or if that fails: C_Finalize + C_Initialize, find the slot,
//     log in (only if this Token owns the module's initialisation);
//  4. if that fails too, the token is down: operations fail at once with
//     ErrUnavailable and a background goroutine retries step 3 with
//     back-off until it succeeds or Close.
//
// The old login session is closed only after the new one is logged in, so a
// healthy login is never dropped.
func (t *Token) recover(gen uint64, class errClass) (bool, error) {
	t.recoverMu.Lock()
	defer t.recoverMu.Unlock()
	t.mu.Lock()
	closed, cur, down, owner := t.closed, t.gen, t.down, t.owner
	t.mu.Unlock()
	switch {
	case closed:
		return false, ErrClosed
	case down:
		return false, t.unavailable()
	case cur != gen:
		return true, nil
	}
	if t.present() && class != classRecover && t.loggedIn() {
		return false, nil
	}
	err := t.reconnect(false)
	if err == nil {
		t.emit(Event{Kind: EventRecovered, Reason: RecoveryLogin})
		return true, nil
	}
	if owner && !errors.Is(err, ErrPIN) {
		if err = t.reconnect(true); err == nil {
			t.emit(Event{Kind: EventRecovered, Reason: RecoveryReinit})
			return true, nil
		}
	}
	t.goDown(err, !errors.Is(err, ErrPIN)) // retrying a rejected PIN could lock it
	return false, t.unavailable()
}

// reconnect finds the slot, logs in on a new login session and starts a new
// generation; with reinit it first finalises and initialises the module
// again. It is called with recoverMu held.
func (t *Token) reconnect(reinit bool) error {
	if reinit {
		if err := t.reinitModule(); err != nil {
			return err
		}
	}
	slot, _, err := t.findSlot()
	if !reinit && errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)) {
		// The module was finalised under us (e.g. by its owner): initialise it again.
		return t.reconnect(true)
	}
	if err != nil {
		return err
	}
	login, err := t.logIn(slot)
	if err != nil {
		return err
	}
	t.mu.Lock()
	oldLogin, idle := t.login, t.idle
	t.slot, t.login, t.idle = slot, login, nil
	t.gen++
	t.recoveries++
	t.mu.Unlock()
	t.closeSessions(idle)
	if oldLogin != 0 { // zero after a re-initialisation: that session died with C_Finalize
		t.loginMu.Lock() // the session copies of keys made in it die with it
		_ = t.ctx.CloseSession(oldLogin)
		t.loginMu.Unlock()
	}
	return nil
}

// reinitModule finalises and initialises the module again, once no
// operation uses it. Every session and object handle of the Token dies with
// C_Finalize: a new generation starts, whose handles are the only ones ever
// closed from now on.
func (t *Token) reinitModule() error {
	t.modMu.Lock()
	defer t.modMu.Unlock()
	t.mu.Lock()
	t.gen++
	t.modGen = t.gen
	t.idle, t.login = nil, 0
	t.mu.Unlock()
	// C_Finalize of a module that is not initialised (a failed attempt
	// before) reports CKR_CRYPTOKI_NOT_INITIALIZED; any other error leaves
	// the module to C_Initialize to judge.
	_ = t.ctx.Finalize()
	if err := t.ctx.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		return fmt.Errorf("%w: C_Initialize: %w", ErrModule, err)
	}
	t.mu.Lock()
	t.owner = true
	t.mu.Unlock()
	return nil
}

// goDown marks the token down because of err, reports EventDown once per
// outage and, with retry, starts the reviver. It is called with recoverMu held.
func (t *Token) goDown(err error, retry bool) {
	now := time.Now()
	t.mu.Lock()
	first := !t.down
	if first {
		t.down, t.since = true, now
	}
	t.cause, t.retrying = err, retry
	start := retry && !t.reviving && !t.closed
	if start {
		t.reviving = true
		t.reviver.Add(1)
	}
	t.mu.Unlock()
	if first {
		t.emit(Event{Kind: EventDown, Time: now, Err: err})
	}
	if start {
		go t.revive()
	}
}

// revive tries to bring the token back, first after FirstRecoveryDelay and
// then with the wait doubling up to maxDelay, until it succeeds, gives up
// (the PIN is rejected) or the Token is closed.
func (t *Token) revive() {
	defer t.reviver.Done()
	delay := FirstRecoveryDelay
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-timer.C:
		}
		if t.reviveOnce() {
			return
		}
		delay = min(2*delay, t.maxDelay)
		timer.Reset(delay)
	}
}

// reviveOnce makes one attempt to bring the token back; it reports whether
// the reviver is done.
func (t *Token) reviveOnce() bool {
	t.recoverMu.Lock()
	defer t.recoverMu.Unlock()
	t.mu.Lock()
	closed, owner := t.closed, t.owner
	t.mu.Unlock()
	if closed {
		return true
	}
	// A Token that does not own the module's initialisation only logs in
	// again; it re-initialises the module only if it finds it finalised.
	err := t.reconnect(owner)
	now := time.Now()
	t.mu.Lock()
	if err == nil {
		outage := now.Sub(t.since)
		t.down, t.since, t.cause, t.reviving = false, now, nil, false
		t.mu.Unlock()
		reason := RecoveryLogin
		if owner {
			reason = RecoveryReinit
		}
		t.emit(Event{Kind: EventRecovered, Time: now, Reason: reason})
		t.emit(Event{Kind: EventUp, Time: now, Outage: outage})
		return true
	}
	stop := errors.Is(err, ErrPIN) // retrying could lock the PIN
	t.cause = err
	if stop {
		t.retrying, t.reviving = false, false
	}
	t.mu.Unlock()
	return stop
}
