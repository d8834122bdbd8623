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

// Exit codes of every command.
const (
	exitOK      = 0 // done; for doctor and audit verify: healthy, verified
	exitFailure = 1 // the command ran and failed (a plain message says why)
	exitUsage   = 2 // the command line is wrong (usage, then the one-line error last)
)

// command is one subcommand. A command in a group has a two-word name
// ("certs list"); the group ("certs") then lists its subcommands in `estca
// certs --help`. To add a command, write a function returning a *command in
// its own file and list it in commands().
//
// Conventions every command follows (see cli.go for the helpers):
//   - usage errors return usageErrorf(...): exit 2, usage then the error last;
//   - serials are read with parseSerial (serialArg for the SERIAL argument),
//     revocation reasons with ca.ParseRevocationReason;
//   - --json prints snake_case views through printJSON (see json.go);
//   - errors from the admin socket are matched with errors.Is against the
//     store's sentinels (admin.go maps them both ways).
type command struct {
	name    string
	args    string // usage after the name
	summary string // first line: the one-line description in `estca help`
	run     func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error
	flags   func(fs *flag.FlagSet)
	// noConfig marks commands that read no appliance configuration (the
	// device client, the load generator, init, version): no --config flag.
	noConfig bool
	// noArgs marks commands that take no positional arguments: any is a
	// usage error, before run.
	noArgs bool
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
	var out []*command
	out = append(out,
		initCommand(),
		serveCommand(),
		doctorCommand(),
		caShowCommand(),
		caImportCommand(),
		caReissueServerCommand(),
		issueCommand(),
		certsListCommand(),
		certsShowCommand(),
		auditListCommand(),
		auditVerifyCommand(),
		auditCheckpointCommand(),
		revokeCommand(),
		crlCommand(),
		requestsListCommand(),
		requestsDecideCommand(true),
		requestsDecideCommand(false),
		policyCheckCommand(),
		reloadCommand(),
		backupCommand(),
		restoreCommand(),
		storeCheckCommand(),
		storeMigrateCommand())
	out = append(out, keysCommands()...)
	return append(out,
		enrollCommand(),
		benchCommand(),
		versionCommand())
}

func main() {
	if cpus, ok := os.LookupEnv(baselineEnv); ok {
		os.Exit(runBaselineChild(cpus, os.Stdin, os.Stdout, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// globals are the flags accepted before the command name and by every
// command: --config (unless the command reads no configuration) and
// --log-level.
type globals struct {
	config   string
	logLevel string
}

func (g *globals) register(fs *flag.FlagSet, withConfig bool) {
	if withConfig {
		fs.StringVar(&g.config, "config", g.config, "configuration `FILE`")
	}
	fs.StringVar(&g.logLevel, "log-level", g.logLevel, "log `LEVEL`: debug, info, warn, error")
}

// run executes one command line and returns the process exit code: 0 done,
// 1 failed, 2 usage error. Help that was asked for goes to stdout (exit 0);
// usage errors go to stderr with the error on the last line.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	g := &globals{config: defaultConfig, logLevel: "info"}
	global := flag.NewFlagSet("estca", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	g.register(global, true)
	version := global.Bool("version", false, "print the version and exit")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return exitOK
		}
		usage(stderr)
		fmt.Fprintf(stderr, "estca: %v\n", flagError(err))
		return exitUsage
	}
	rest := global.Args()
	if *version {
		rest = []string{"version"}
	}
	if len(rest) == 0 {
		usage(stderr)
		fmt.Fprintln(stderr, "estca: a command is required")
		return exitUsage
	}
	if rest[0] == "help" {
		if len(rest) == 1 {
			usage(stdout)
			return exitOK
		}
		rest = append(append([]string(nil), rest[1:]...), "--help")
	}

	cmd, n := lookup(rest)
	if cmd == nil {
		return unknownCommand(rest, stdout, stderr)
	}
	fs := flag.NewFlagSet("estca "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs, !cmd.noConfig)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	positional, err := parseFlags(fs, rest[n:])
	if errors.Is(err, flag.ErrHelp) {
		commandHelp(stdout, cmd, fs)
		return exitOK
	}
	if err != nil {
		return usageFailure(stderr, cmd, flagError(err))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return usageFailure(stderr, cmd, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel))
	}
	a.configPath = g.config
	a.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	if cmd.noArgs && len(positional) > 0 {
		return usageFailure(stderr, cmd, fmt.Errorf("no arguments expected, got %q", positional[0]))
	}
	err = cmd.run(ctx, a, fs, positional)
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return usageFailure(stderr, cmd, err)
	}
	fmt.Fprintf(stderr, "estca %s: %v\n", cmd.name, err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}

// parseFlags parses flags that may come before or after the positional
// arguments (`estca enroll crts --out x`); "--" ends the flags.
func parseFlags(fs *flag.FlagSet, rest []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(rest); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		if len(rest) > fs.NArg() && rest[len(rest)-fs.NArg()-1] == "--" {
			return append(positional, fs.Args()...), nil
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
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

// unknownCommand answers a command line that names no command: the help of
// a group (`estca certs --help`: exit 0), a group without its subcommand
// (exit 2), or an unknown name (exit 2).
func unknownCommand(rest []string, stdout, stderr io.Writer) int {
	group := rest[0]
	subs := groupCommands(group)
	if len(subs) == 0 {
		usage(stderr)
		fmt.Fprintf(stderr, "estca: unknown command %q\n", rest[0])
		return exitUsage
	}
	if len(rest) > 1 && isHelp(rest[1]) {
		groupHelp(stdout, group, subs)
		return exitOK
	}
	groupHelp(stderr, group, subs)
	if len(rest) == 1 || strings.HasPrefix(rest[1], "-") {
		fmt.Fprintf(stderr, "estca %s: a subcommand is required\n", group)
	} else {
		fmt.Fprintf(stderr, "estca %s: unknown subcommand %q\n", group, rest[1])
	}
	return exitUsage
}

func isHelp(s string) bool { return s == "-h" || s == "--help" || s == "-help" || s == "help" }

// groupCommands returns the commands named "group SUB", in listing order.
func groupCommands(group string) []*command {
	var out []*command
	for _, c := range commands() {
		if g, _, ok := strings.Cut(c.name, " "); ok && g == group {
			out = append(out, c)
		}
	}
	return out
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "estca — private CA appliance for device fleets (EST-coaps, RFC 9148)\n\n")
	fmt.Fprintf(w, "usage: estca [--config FILE] [--log-level LEVEL] COMMAND [flags] [args]\n\ncommands (estca COMMAND --help tells more):\n")
	listCommands(w, commands())
	fmt.Fprintf(w, "\nEvery command takes --help and --log-level LEVEL (debug, info, warn, error; default info);\n")
	fmt.Fprintf(w, "those that read the appliance take --config FILE (default %s).\n", defaultConfig)
	fmt.Fprintf(w, "The HSM PIN comes from the file named by hsm.pin_file or from $ESTCA_HSM_PIN.\n")
	fmt.Fprintf(w, "Exit status: 0 done, 1 failed (the last line says why), 2 usage error.\n")
}

func listCommands(w io.Writer, cs []*command) {
	width := 0
	for _, c := range cs {
		width = max(width, len(c.name))
	}
	for _, c := range cs {
		first, _, _ := strings.Cut(c.summary, "\n")
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, first)
	}
}

func groupHelp(w io.Writer, group string, subs []*command) {
	fmt.Fprintf(w, "usage: estca %s SUBCOMMAND [flags] [args]\n\nsubcommands (estca %s SUBCOMMAND --help tells more):\n", group, group)
	listCommands(w, subs)
}
