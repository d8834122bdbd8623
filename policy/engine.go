package policy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"
)

// Options configure an Engine. Every field may be zero except Profiles.
type Options struct {
	// Requesters configures client authentication: this CA's certificates
	// (operational requesters) and the manufacturer anchors (IDevIDs).
	// OperationalGrace is computed from the profiles' RenewalGrace.
	Requesters Requesters
	// Profiles are the certificate profiles (at least one).
	Profiles []Profile
	// DefaultProfile names the profile for requests without a label; ""
	// means the first profile.
	DefaultProfile string
	// Reserved are certificates whose names no device may claim, e.g. the
	// DTLS server certificate: their subject CN, DNS and IP SANs. The
	// subject CNs of Requesters.Operational (this CA) are always reserved.
	Reserved []*x509.Certificate
	// ReservedNames are more reserved names: DNS names, IP addresses and
	// common names (compared case-insensitively).
	ReservedNames []string
}

// Engine decides enrollment requests. It is immutable after New and safe
// for concurrent use; a configuration reload builds a new Engine and swaps
// the pointer.
type Engine struct {
	verifier *Verifier
	anchors  map[string]*anchor
	profiles map[string]*profile
	order    []*profile
	def      *profile
	issuing  *x509.Certificate
	reserved reserved
}

// reserved names, lowercased.
type reserved struct {
	names map[string]bool // DNS names and common names
	ips   map[netip.Addr]bool
}

func (r *reserved) name(s string) bool {
	if len(r.names) == 0 {
		return false
	}
	if strings.IndexFunc(s, unicode.IsUpper) >= 0 {
		s = strings.ToLower(s)
	}
	return r.names[s]
}

func (r *reserved) add(s string) {
	if s == "" {
		return
	}
	if a, err := netip.ParseAddr(s); err == nil {
		r.ips[a.Unmap()] = true
		return
	}
	r.names[strings.ToLower(s)] = true
}

// New validates opts, reporting every problem at once, and compiles it.
func New(opts Options) (*Engine, error) {
	var errs []error
	e := &Engine{profiles: map[string]*profile{}, anchors: map[string]*anchor{},
		reserved: reserved{names: map[string]bool{}, ips: map[netip.Addr]bool{}}}
	if len(opts.Profiles) == 0 {
		errs = append(errs, errors.New("policy: no profiles"))
	}
	for i, p := range opts.Profiles {
		c, perrs := compileProfile(p)
		errs = append(errs, perrs...)
		switch {
		case p.Name == "":
			errs = append(errs, fmt.Errorf("policy: profile %d has no name", i))
		case strings.ContainsAny(p.Name, "/?# "):
			errs = append(errs, fmt.Errorf("policy: profile %q: name must be a single path label", p.Name))
		case e.profiles[p.Name] != nil:
			errs = append(errs, fmt.Errorf("policy: profile %q is defined twice", p.Name))
		default:
			e.profiles[p.Name] = c
		}
		e.order = append(e.order, c)
		if c.grace > opts.Requesters.OperationalGrace {
			opts.Requesters.OperationalGrace = c.grace
		}
	}
	for _, c := range e.order {
		for n := range c.renewFrom {
			if e.profiles[n] == nil {
				errs = append(errs, fmt.Errorf("policy: profile %q: renew_from names unknown profile %q", c.name, n))
			}
		}
	}
	switch {
	case opts.DefaultProfile != "":
		if e.def = e.profiles[opts.DefaultProfile]; e.def == nil {
			errs = append(errs, fmt.Errorf("policy: default profile %q is not defined", opts.DefaultProfile))
		}
	case len(e.order) > 0:
		e.def = e.order[0]
	}
	v, err := NewVerifier(opts.Requesters)
	if err != nil {
		errs = append(errs, err)
	} else {
		e.verifier = v
		for i := range v.anchors {
			a := &v.anchors[i]
			e.anchors[a.name] = a
			for n := range a.profiles {
				if e.profiles[n] == nil {
					errs = append(errs, fmt.Errorf("policy: anchor %q: profiles names unknown profile %q", a.name, n))
				}
			}
		}
		e.issuing = v.issuing
	}
	for _, c := range opts.Requesters.Operational {
		if c != nil {
			e.reserved.add(c.Subject.CommonName)
		}
	}
	for _, c := range opts.Reserved {
		if c == nil {
			errs = append(errs, errors.New("policy: nil reserved certificate"))
			continue
		}
		e.reserved.add(c.Subject.CommonName)
		for _, n := range c.DNSNames {
			e.reserved.add(n)
		}
		for _, ip := range c.IPAddresses {
			if a, ok := netip.AddrFromSlice(ip); ok {
				e.reserved.ips[a.Unmap()] = true
			}
		}
	}
	for _, n := range opts.ReservedNames {
		e.reserved.add(n)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return e, nil
}

// Verify authenticates a DTLS client chain (see Verifier.Verify).
func (e *Engine) Verify(chain []*x509.Certificate, now time.Time) (Verified, error) {
	return e.verifier.Verify(chain, now)
}

// Profiles returns the profile names in configuration order.
func (e *Engine) Profiles() []string {
	out := make([]string, len(e.order))
	for i, p := range e.order {
		out[i] = p.name
	}
	return out
}

// HasProfile reports whether label names a profile ("" names the default).
func (e *Engine) HasProfile(label string) bool { return e.profile(label) != nil }

func (e *Engine) profile(label string) *profile {
	if label == "" {
		return e.def
	}
	return e.profiles[label]
}

// Limits are the counters a profile needs from the caller.
type Limits struct {
	// Profile is the resolved profile name.
	Profile string
	// RateCount and RateWindow: count issuances per identity in the window
	// (RateCount 0: no limit, the count is not needed).
	RateCount  int
	RateWindow time.Duration
	// Manual says requests wait for an operator; PendingMaxAge is the
	// Max-Age of pending answers; MaxPending bounds pending requests per
	// identity.
	Manual        bool
	PendingMaxAge time.Duration
	MaxPending    int
}

// Limits returns what the caller must count for a request under label,
// false for an unknown profile.
func (e *Engine) Limits(label string) (Limits, bool) {
	p := e.profile(label)
	if p == nil {
		return Limits{}, false
	}
	return Limits{Profile: p.name, RateCount: p.rateCount, RateWindow: p.rateWindow,
		Manual: p.manual, PendingMaxAge: p.pendingMaxAge, MaxPending: p.maxPending}, true
}

// maxReasons bounds the reasons of a decision.
const maxReasons = 8

// findings collects the reasons of a decision, one per code.
type findings struct {
	rs []Reason
}

func (f *findings) add(c Code, detail string) {
	for _, r := range f.rs {
		if r.Code == c {
			return
		}
	}
	if len(f.rs) < maxReasons {
		f.rs = append(f.rs, Reason{Code: c, Detail: detail})
	}
}

// classRank orders classes for the device: what it may not do before what
// it got wrong.
func classRank(c Class) int {
	switch c {
	case ClassInternal:
		return 0
	case ClassNotFound:
		return 1
	case ClassForbidden:
		return 2
	case ClassBadRequest:
		return 3
	}
	return 4
}

func deny(d Decision, rs ...Reason) Decision {
	slices.SortStableFunc(rs, func(a, b Reason) int { return classRank(a.Class()) - classRank(b.Class()) })
	d.Action, d.Reasons, d.Template = ActionDeny, rs, nil
	return d
}

// ceilSecond rounds a Max-Age up to whole seconds, at least one.
func ceilSecond(d time.Duration) time.Duration {
	if d < time.Second {
		return time.Second
	}
	return (d + time.Second - 1).Truncate(time.Second)
}
