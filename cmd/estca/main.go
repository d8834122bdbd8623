package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const defaultConfig = "var/estca.yaml"

// command is one subcommand.
type command struct {
	name    string
	args    string // usage after the name
	summary string
	run     func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error
	flags   func(fs *flag.FlagSet)
}

// app carries what every command shares: the config path and the outputs.
type app struct {
	configPath string
	stdout     io.Writer
	stderr     io.Writer
	log        *slog.Logger
}

// exitError carries a specific process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func commands() []*command {
	return append([]*command{
		initCommand(),
		serveCommand(),
		caShowCommand(),
		caImportCommand(),
		issueCommand(),
		certsListCommand(),
		certsShowCommand(),
		auditListCommand(),
		auditVerifyCommand(),
		auditCheckpointCommand(),
		revokeCommand(),
		backupCommand(),
		restoreCommand(),
		storeCheckCommand(),
		storeMigrateCommand(),
		enrollCommand(),
		benchCommand(),
	}, keysCommands()...)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	global := flag.NewFlagSet("estca", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.StringVar(&a.configPath, "config", defaultConfig, "configuration `FILE`")
	logLevel := global.String("log-level", "info", "log level: debug, info, warn, error")
	global.Usage = func() { usage(stderr) }
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := global.Args()
	if len(rest) == 0 || rest[0] == "help" || rest[0] == "-h" || rest[0] == "--help" {
		if len(rest) > 1 {
			rest = append(append([]string(nil), rest[1:]...), "--help")
		} else {
			usage(stdout)
			return 0
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "estca: invalid --log-level %q\n", *logLevel)
		return 2
	}
	a.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))

	cmd, n := lookup(rest)
	if cmd == nil {
		fmt.Fprintf(stderr, "estca: unknown command %q (see `estca help`)\n", strings.Join(rest[:min(2, len(rest))], " "))
		return 2
	}
	fs := flag.NewFlagSet("estca "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&a.configPath, "config", a.configPath, "configuration `FILE`")
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: estca %s %s\n\n%s\n\nflags:\n", cmd.name, cmd.args, cmd.summary)
		fs.PrintDefaults()
	}
	// Flags may come before or after the positional arguments
	// (`estca enroll crts --out x`); "--" ends the flags.
	var positional []string
	for rest = rest[n:]; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		if len(rest) > fs.NArg() && rest[len(rest)-fs.NArg()-1] == "--" {
			positional = append(positional, fs.Args()...)
			break
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if err := cmd.run(ctx, a, fs, positional); err != nil {
		fmt.Fprintf(stderr, "estca %s: %v\n", cmd.name, err)
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "estca — private CA appliance for device fleets (EST-coaps, RFC 9148)\n\n")
	fmt.Fprintf(w, "usage: estca [--config FILE] COMMAND [flags] [args]\n\ncommands (estca COMMAND --help tells more):\n")
	width := 0
	for _, c := range commands() {
		width = max(width, len(c.name))
	}
	for _, c := range commands() {
		first, _, _ := strings.Cut(c.summary, "\n")
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, first)
	}
	fmt.Fprintf(w, "\nEvery command takes --config FILE (default %s) and --help.\n", defaultConfig)
	fmt.Fprintf(w, "The HSM PIN comes from the file named by hsm.pin_file or from $ESTCA_HSM_PIN.\n")
}

// lookup finds the command named by the first one or two words of args and
// returns it with the number of words it took.
func lookup(args []string) (*command, int) {
	cs := commands()
	if len(args) >= 2 {
		for _, c := range cs {
			if c.name == args[0]+" "+args[1] {
				return c, 2
			}
		}
	}
	for _, c := range cs {
		if c.name == args[0] {
			return c, 1
		}
	}
	return nil, 0
}
