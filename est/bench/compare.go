package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/est/client"
)

// Target is one server of a Compare.
type Target struct {
	// Name labels the target in the report ("estca", "baseline").
	Name string
	// Client is how the workers connect to it (Options.Client).
	Client client.Options
	// ServerPID is its process, for the CPU per operation (required).
	ServerPID int
	// FixedAnswer as in Options (a baseline server).
	FixedAnswer bool
	// Mode, if not empty, is this target's load instead of
	// CompareOptions.Mode: two targets on the same server with different
	// modes compare two operations in the same run (skg against
	// sen-reuse). Keygen modes draw from CSRs asking for
	// CompareOptions.KeyRequest, enrollment modes from plain ones.
	Mode string
}

func (t Target) mode(o CompareOptions) string {
	if t.Mode != "" {
		return t.Mode
	}
	return o.Mode
}

// CompareOptions configures Compare. The embedded Options give the mode,
// workers, duration of each round, CSRs and key request; their Client,
// FixedAnswer and ServerPID are those of each Target. The CSRs (Prepared, or
// CSRs prepared once before the first round: by default enough for every
// round of the targets that store what they issue) are drawn in order by
// the rounds of the targets that store, each CSR used once, so that no
// request is a re-sent one (RFC 9148 §4.7: answered from the store);
// targets with a FixedAnswer replay them from the first each round.
type CompareOptions struct {
	Options
	// Targets are measured in turn, Rounds times each: round r runs them in
	// order for even r and in reverse order for odd r (A B, B A, A B, ...),
	// so that neither always runs first after a pause or last.
	Targets []Target
	// Rounds per target; 0 means 5.
	Rounds int
}

// DefaultRounds is CompareOptions.Rounds when it is 0.
const DefaultRounds = 5

// Comparison is the outcome of Compare: a report per round and target.
type Comparison struct {
	Mode    string
	Workers int
	// Names of the targets, in CompareOptions order.
	Names []string
	// Reports[r][t] is round r of target t.
	Reports [][]*Report
	// LoadBefore and LoadAfter are /proc/loadavg when the comparison started
	// and ended: the machine's load, to quote with the figures.
	LoadBefore, LoadAfter string
}

// Compare runs the same load against several servers in interleaved rounds
// in one invocation, with one set of CSRs prepared before the first round,
// and reports each server's CPU per operation (from its ServerPID). It is
// how estca's cost is put in relation to a baseline server (est/baseline)
// on a shared, noisy machine: same machine, same moment, same load; the
// ratio of the medians, not an absolute rate, is the figure to quote.
func Compare(ctx context.Context, o CompareOptions) (*Comparison, error) {
	if len(o.Targets) == 0 {
		return nil, errors.New("bench: no targets to compare")
	}
	for _, t := range o.Targets {
		if t.ServerPID == 0 {
			return nil, fmt.Errorf("bench: target %q: a server process id is needed for its CPU per operation", t.Name)
		}
	}
	if o.Rounds <= 0 {
		o.Rounds = DefaultRounds
	}
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	c := &Comparison{Mode: o.Mode, Workers: o.Workers, LoadBefore: LoadAverage()}
	for _, t := range o.Targets {
		c.Names = append(c.Names, t.Name)
		if m := t.mode(o); m != o.Mode {
			c.Mode = "mixed"
		}
	}
	// One set of CSRs per kind of load (keygen CSRs carry the key request);
	// o.Prepared, if set, is the set of o.Mode's kind.
	sets := map[bool]*CSRSet{}
	if o.Prepared != nil {
		sets[keygen(o.Mode)] = o.Prepared
	}
	for _, t := range o.Targets {
		m := t.mode(o)
		if m == ModeCACerts || sets[keygen(m)] != nil {
			continue
		}
		n := o.CSRs
		if n <= 0 {
			// Targets with a fixed answer replay the CSRs of the others.
			storing := 0
			for _, u := range o.Targets {
				if um := u.mode(o); !u.FixedAnswer && um != ModeCACerts && keygen(um) == keygen(m) {
					storing++
				}
			}
			n = min(defaultCSRs(o.Duration, o.Workers)*o.Rounds*max(storing, 1), 400000)
		}
		var kr *cms.KeyRequest
		if keygen(m) {
			kr = o.KeyRequest
		}
		set, err := PrepareCSRs(ctx, n, t.Client.Certificate, kr)
		if err != nil {
			return nil, err
		}
		sets[keygen(m)] = set
	}
	for r := range o.Rounds {
		c.Reports = append(c.Reports, make([]*Report, len(o.Targets)))
		order := make([]int, len(o.Targets))
		for i := range order {
			order[i] = i
		}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, i := range order {
			t := o.Targets[i]
			ro := o.Options
			ro.Client, ro.ServerPID, ro.FixedAnswer = t.Client, t.ServerPID, t.FixedAnswer
			ro.Mode, ro.Prepared = t.mode(o), sets[keygen(t.mode(o))]
			if ro.Mode == ModeCACerts {
				ro.Prepared = nil
			}
			if t.FixedAnswer && ro.Prepared != nil {
				ro.Prepared = ro.Prepared.Replay()
			}
			rep, err := Run(ctx, ro)
			if err != nil {
				return nil, fmt.Errorf("bench: round %d, %s: %w", r+1, t.Name, err)
			}
			c.Reports[r][i] = rep
		}
	}
	c.LoadAfter = LoadAverage()
	return c, nil
}

// Stat are the medians over the rounds of one target.
type Stat struct {
	OpsPerSec          float64
	CPUPerOp           time.Duration // user + system
	UserPerOp          time.Duration
	SystemPerOp        time.Duration
	SwitchesPerOp      float64
	CoreUse            float64 // server CPU time / wall time
	Ops, Errors        int     // summed over the rounds
	Exhausted, Partial bool    // some round ran out of CSRs; some had errors
}

// Stat returns the medians of target t over the rounds.
func (c *Comparison) Stat(t int) Stat {
	var s Stat
	var ops, cpu, user, sys, sw, core []float64
	for _, round := range c.Reports {
		r := round[t]
		s.Ops += r.Ops
		s.Errors += r.ErrorCount()
		s.Exhausted = s.Exhausted || r.Exhausted
		ops = append(ops, r.OpsPerSec)
		if r.Server == nil || r.Ops == 0 {
			continue
		}
		n := float64(r.Ops)
		cpu = append(cpu, float64(r.Server.CPU())/n)
		user = append(user, float64(r.Server.User)/n)
		sys = append(sys, float64(r.Server.System)/n)
		sw = append(sw, float64(r.Server.Voluntary+r.Server.Involuntary)/n)
		core = append(core, float64(r.Server.CPU())/float64(r.Elapsed))
	}
	s.Partial = s.Errors > 0
	s.OpsPerSec = Median(ops)
	s.CPUPerOp = time.Duration(Median(cpu))
	s.UserPerOp = time.Duration(Median(user))
	s.SystemPerOp = time.Duration(Median(sys))
	s.SwitchesPerOp = Median(sw)
	s.CoreUse = Median(core)
	return s
}

// Ratio is the median over the rounds of target a's CPU per operation
// divided by target b's in the same round: the same-run ratio.
func (c *Comparison) Ratio(a, b int) float64 {
	var rs []float64
	for _, round := range c.Reports {
		x, y := round[a].CPUPerOp(), round[b].CPUPerOp()
		if x > 0 && y > 0 {
			rs = append(rs, float64(x)/float64(y))
		}
	}
	return Median(rs)
}

// ThroughputRatio is the median over the rounds of target a's operations
// per second divided by target b's in the same round.
func (c *Comparison) ThroughputRatio(a, b int) float64 {
	var rs []float64
	for _, round := range c.Reports {
		if y := round[b].OpsPerSec; y > 0 {
			rs = append(rs, round[a].OpsPerSec/y)
		}
	}
	return Median(rs)
}

// Median of xs (the mean of the middle two for an even count); 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// Format writes the comparison: one line per round and target, the medians,
// and the ratios of every target to the last one (the baseline).
func (c *Comparison) Format(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "mode %s, %d workers, %d rounds per target, interleaved\n", c.Mode, c.Workers, len(c.Reports))
	fmt.Fprintf(&b, "load average before: %s\n", c.LoadBefore)
	fmt.Fprintf(&b, "%-6s %-10s %9s %7s %12s %12s %12s %8s %6s\n", "round", "server", "ops/s", "errors", "cpu/op", "user/op", "system/op", "csw/op", "core")
	for r, round := range c.Reports {
		for t, rep := range round {
			u := Usage{}
			if rep.Server != nil {
				u = *rep.Server
			}
			n := time.Duration(max(rep.Ops, 1))
			fmt.Fprintf(&b, "%-6d %-10s %9.1f %7d %12s %12s %12s %8.1f %5.0f%%\n", r+1, c.Names[t], rep.OpsPerSec, rep.ErrorCount(),
				roundDur(rep.CPUPerOp()), roundDur(u.User/n), roundDur(u.System/n),
				float64(u.Voluntary+u.Involuntary)/float64(n), 100*float64(u.CPU())/float64(max(rep.Elapsed, 1)))
			kinds := make([]string, 0, len(rep.Errors))
			for k, v := range rep.Errors {
				kinds = append(kinds, fmt.Sprintf("%s %d", k, v))
			}
			if len(kinds) > 0 {
				slices.Sort(kinds)
				fmt.Fprintf(&b, "       errors: %s\n", strings.Join(kinds, ", "))
			}
		}
	}
	b.WriteString("medians:\n")
	for t, name := range c.Names {
		s := c.Stat(t)
		fmt.Fprintf(&b, "  %-10s %9.1f ops/s, cpu/op %s (user %s, system %s), %.1f context switches/op, %.0f%% of a core\n",
			name, s.OpsPerSec, roundDur(s.CPUPerOp), roundDur(s.UserPerOp), roundDur(s.SystemPerOp), s.SwitchesPerOp, 100*s.CoreUse)
		if s.Exhausted {
			fmt.Fprintf(&b, "  %-10s some rounds ran out of prepared CSRs (raise --csrs)\n", name)
		}
	}
	last := len(c.Names) - 1
	for t := range last {
		fmt.Fprintf(&b, "ratio %s/%s: cpu per op %.2f, throughput %.2f (medians of the per-round ratios)\n",
			c.Names[t], c.Names[last], c.Ratio(t, last), c.ThroughputRatio(t, last))
	}
	fmt.Fprintf(&b, "load average after: %s\n", c.LoadAfter)
	_, err := io.WriteString(w, b.String())
	return err
}
