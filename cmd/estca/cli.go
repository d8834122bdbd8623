package main

// The command-line conventions every command shares: usage errors, help
// text and flag listings.

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// usageError is a wrong command line: run prints the command's usage line,
// then the error as the last line, and exits 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usageErrorf returns a usage error (exit 2) with a one-line message, e.g.
// usageErrorf("one SERIAL is required").
func usageErrorf(format string, a ...any) error {
	return &usageError{fmt.Errorf(format, a...)}
}

// asUsage marks err as a usage error (exit 2), keeping it for errors.Is.
func asUsage(err error) error {
	if err == nil {
		return nil
	}
	return &usageError{err}
}

// usageFailure prints the usage line of cmd and the error last, on stderr,
// and returns exit code 2.
func usageFailure(w io.Writer, cmd *command, err error) int {
	fmt.Fprintf(w, "usage: estca %s %s\n(estca %s --help lists the flags)\n", cmd.name, cmd.args, cmd.name)
	fmt.Fprintf(w, "estca %s: %s\n", cmd.name, oneLine(err.Error()))
	return exitUsage
}

// flagError rewords the flag package's parse errors with two dashes:
// "flag provided but not defined: -x" becomes "unknown flag --x".
func flagError(err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Errorf("unknown flag --%s", name)
	}
	if rest, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("flag --%s needs a value", rest)
	}
	if rest, ok := strings.CutPrefix(msg, "invalid value "); ok {
		return fmt.Errorf("invalid value %s", strings.Replace(rest, " for flag -", " for --", 1))
	}
	return err
}

// oneLine joins the lines of a multi-line message (errors.Join) with "; ".
func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

// commandHelp prints the whole help of cmd: usage, description, flags.
func commandHelp(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: estca %s %s\n\n", cmd.name, cmd.args)
	for _, p := range strings.Split(cmd.summary, "\n\n") {
		fmt.Fprintf(w, "%s\n\n", reflow(p, helpWidth))
	}
	fmt.Fprintf(w, "flags:\n")
	printFlags(w, fs)
}

// helpWidth is the line length of reflowed help text.
const helpWidth = 96

// reflow fills the paragraph p to lines of at most width columns; a
// paragraph with an indented line (a list) is left as it is.
func reflow(p string, width int) string {
	if strings.Contains(p, "\n  ") {
		return p
	}
	var b strings.Builder
	n := 0
	for _, word := range strings.Fields(p) {
		switch {
		case n == 0:
		case n+1+len(word) > width:
			b.WriteByte('\n')
			n = 0
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}

// flagHelp is one flag as help and the README show it.
type flagHelp struct {
	name        string // without dashes
	placeholder string // "" for booleans
	usage       string
	def         string // "" when the default is the zero value
}

// flagHelps returns the flags of fs sorted by name. The placeholder is the
// first `backquoted` word of the usage (its backquotes removed, the text
// kept), as in the flag package; booleans take none, whatever their usage
// says, and other flags without one take VALUE (N for numbers, DUR for
// durations).
func flagHelps(fs *flag.FlagSet) []flagHelp {
	var out []flagHelp
	fs.VisitAll(func(f *flag.Flag) {
		h := flagHelp{name: f.Name, usage: f.Usage}
		if i := strings.IndexByte(f.Usage, '`'); i >= 0 {
			if j := strings.IndexByte(f.Usage[i+1:], '`'); j >= 0 {
				h.placeholder = f.Usage[i+1 : i+1+j]
				h.usage = f.Usage[:i] + h.placeholder + f.Usage[i+1+j+1:]
			}
		}
		kind := fmt.Sprintf("%T", f.Value)
		switch {
		case isBoolFlag(f):
			h.placeholder = ""
		case h.placeholder != "":
		case strings.Contains(kind, "int"), strings.Contains(kind, "float"):
			h.placeholder = "N"
		case strings.Contains(kind, "duration"):
			h.placeholder = "DUR"
		default:
			h.placeholder = "VALUE"
		}
		switch f.DefValue {
		case "", "0", "0s", "false", "[]":
		default:
			h.def = f.DefValue
			if strings.Contains(kind, "duration") {
				h.def = shortDuration(f.DefValue)
			}
		}
		out = append(out, h)
	})
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// shortDuration drops the zero units Go prints: "720h0m0s" → "720h".
func shortDuration(s string) string {
	if strings.HasSuffix(s, "m0s") && len(s) > 3 {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// synopsis is "--name PLACEHOLDER" ("--name" for booleans; one dash for
// one-letter names, "-c N").
func (h flagHelp) synopsis() string {
	dashes := "--"
	if len(h.name) == 1 {
		dashes = "-"
	}
	if h.placeholder == "" {
		return dashes + h.name
	}
	return dashes + h.name + " " + h.placeholder
}

// printFlags lists the flags of fs, two dashes each, aligned.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	hs := flagHelps(fs)
	width := 0
	for _, h := range hs {
		width = max(width, len(h.synopsis()))
	}
	for _, h := range hs {
		text := h.usage
		if h.def != "" {
			text += fmt.Sprintf(" (default %s)", h.def)
		}
		fmt.Fprintf(w, "  %-*s  %s\n", width, h.synopsis(), text)
	}
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
