package hsm

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// Token is an open, logged-in PKCS#11 token. It owns a bounded pool of
// sessions shared by every key found or generated through it.
//
// A Token is safe for concurrent use. Close waits for operations in flight;
// operations that start after Close fail with ErrClosed.
type Token struct {
	ctx    *pkcs11.Ctx
	module string
	label  string
	serial string
	pin    string
	owner  bool // this Token's C_Initialize loaded the library state; it finalises on Close

	sem  chan struct{} // one slot per operation session (MaxSessions-1)
	done chan struct{} // closed by Close

	keyMu     sync.Mutex // serialises GenerateKey and DeleteKey (label uniqueness)
	recoverMu sync.Mutex // serialises recovery and Close's teardown

	mu     sync.Mutex // guards the fields below
	closed bool
	gen    uint64 // bumped by each recovery; sessions and key handles of older generations are stale
	slot   uint
	login  pkcs11.SessionHandle // kept open so the login state persists
	idle   []session
}

// session is an operation session and the generation it was opened in.
type session struct {
	h   pkcs11.SessionHandle
	gen uint64
}

// Open loads the module, finds the token, and logs in as the user. Each
// failure has its own sentinel: ErrModule (not configured, missing file,
// unloadable, C_Initialize failed), ErrTokenNotFound, ErrNoPIN, ErrPIN; a
// malformed URI wraps ErrURI.
//
// If the module is already initialised in this process (another Token, or a
// raw handle), Open shares that initialisation and Close leaves it in place.
func Open(opts Options) (*Token, error) {
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
		ctx:    ctx,
		module: r.module,
		label:  r.label,
		serial: r.serial,
		done:   make(chan struct{}),
	}
	switch err := ctx.Initialize(); {
	case err == nil:
		t.owner = true
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)):
	default:
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
	if t.pin, err = r.pin(); err != nil {
		return fail(err)
	}
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
	err = t.ctx.Login(h, pkcs11.CKU_USER, t.pin)
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

// Close waits for operations in flight, closes the Token's sessions (which
// logs out once none remain) and, if this Token initialised the module,
// calls C_Finalize so that a later Open re-reads the module's configuration.
// Keys found through the Token fail with ErrClosed afterwards. Close is idempotent.
func (t *Token) Close() error {
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
	t.recoverMu.Lock() // no recovery is running, and none will start
	defer t.recoverMu.Unlock()
	return t.release()
}

// release closes all sessions, finalises the module if owned and unloads it.
func (t *Token) release() error {
	t.mu.Lock()
	idle, login := t.idle, t.login
	t.idle, t.login = nil, 0
	t.mu.Unlock()
	for _, s := range idle {
		_ = t.ctx.CloseSession(s.h)
	}
	if login != 0 {
		_ = t.ctx.CloseSession(login)
	}
	var err error
	if t.owner {
		if ferr := t.ctx.Finalize(); ferr != nil && !errors.Is(ferr, pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)) {
			err = fmt.Errorf("hsm: C_Finalize: %w", ferr)
		}
	}
	t.ctx.Destroy()
	return err
}

// Label returns the label of the token as configured.
func (t *Token) Label() string { return t.label }

// acquire takes an operation session from the pool, opening one if needed.
// It blocks while MaxSessions-1 operations are in flight.
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
		_ = t.ctx.CloseSession(s.h)
	}
	<-t.sem
}

func (t *Token) closeSessions(ss []session) {
	for _, s := range ss {
		_ = t.ctx.CloseSession(s.h)
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

// withSession runs fn on a pooled session. If fn (or opening the session)
// fails in a way that a fresh session or a fresh login cures, the Token
// recovers and fn runs once more; there is no further retry. A key that
// cannot be found, or whose handle is invalid, leads to a retry only if the
// login turns out to be lost (private objects are invisible when logged out).
func (t *Token) withSession(fn func(s session) error) error {
	var err error
	for attempt := range 2 {
		var s session
		s, err = t.acquire()
		if err == nil {
			err = fn(s)
			t.put(s, err)
		}
		if err == nil || attempt == 1 {
			break
		}
		class := classify(err)
		if class == classFatal && !errors.Is(err, ErrKeyNotFound) {
			return err
		}
		changed, rerr := t.recover(s.gen, class != classRecover)
		if rerr != nil {
			return fmt.Errorf("%w (recovery failed: %w)", err, rerr)
		}
		if class == classFatal && !changed {
			return err // the key is really absent
		}
	}
	return err
}

// loggedIn reports whether the login session is alive and logged in as the
// user. It is called with recoverMu held, which serialises use of t.login.
func (t *Token) loggedIn() bool {
	t.mu.Lock()
	login := t.login
	t.mu.Unlock()
	info, err := t.ctx.GetSessionInfo(login)
	return err == nil && (info.State == pkcs11.CKS_RW_USER_FUNCTIONS || info.State == pkcs11.CKS_RO_USER_FUNCTIONS)
}

// recover replaces the login session and discards every session of the
// generation gen; it reports whether the Token state changed since gen. If
// another goroutine already recovered past gen, it returns at once. With
// onlyIfLoggedOut, it does nothing while the login is intact. The old login
// session is closed only after the new one is logged in, so a healthy login
// is never dropped.
func (t *Token) recover(gen uint64, onlyIfLoggedOut bool) (bool, error) {
	t.recoverMu.Lock()
	defer t.recoverMu.Unlock()
	t.mu.Lock()
	closed, cur := t.closed, t.gen
	t.mu.Unlock()
	if closed {
		return false, ErrClosed
	}
	if cur != gen {
		return true, nil
	}
	if onlyIfLoggedOut && t.loggedIn() {
		return false, nil
	}
	slot, _, err := t.findSlot()
	if errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)) {
		// The module was finalised under us (e.g. by its owner): initialise it again.
		if ierr := t.ctx.Initialize(); ierr != nil && !errors.Is(ierr, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			return false, fmt.Errorf("%w: C_Initialize: %w", ErrModule, ierr)
		}
		t.owner = true
		slot, _, err = t.findSlot()
	}
	if err != nil {
		return false, err
	}
	login, err := t.logIn(slot)
	if err != nil {
		return false, err
	}
	t.mu.Lock()
	oldLogin, idle := t.login, t.idle
	t.slot, t.login, t.idle = slot, login, nil
	t.gen++
	t.mu.Unlock()
	t.closeSessions(idle)
	if oldLogin != 0 {
		_ = t.ctx.CloseSession(oldLogin)
	}
	return true, nil
}
