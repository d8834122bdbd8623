package main

import (
	"context"
	"flag"
	"fmt"
	"runtime/debug"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3"
// (make build does, from git describe). Without it the module version and
// the VCS revision recorded by the Go toolchain are used.
var version string

// versionString describes this binary: the version, the VCS revision and
// time when the toolchain recorded them, and the Go version.
func versionString() string {
	v := version
	info, ok := debug.ReadBuildInfo()
	if v == "" && ok {
		v = info.Main.Version
	}
	if v == "" {
		v = "(devel)"
	}
	s := "estca " + v
	if !ok {
		return s
	}
	var rev, at string
	dirty := false
	for _, kv := range info.Settings {
		switch kv.Key {
		case "vcs.revision":
			rev = kv.Value
		case "vcs.time":
			at = kv.Value
		case "vcs.modified":
			dirty = kv.Value == "true"
		}
	}
	if rev != "" {
		s += " (" + rev[:min(12, len(rev))]
		if dirty {
			s += "+modified"
		}
		if at != "" {
			s += " " + at
		}
		s += ")"
	}
	return s + " " + info.GoVersion
}

func versionCommand() *command {
	return &command{
		name: "version", args: "", noConfig: true,
		noArgs:  true,
		summary: "Print the version of this binary (also: estca --version).",
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			_, err := fmt.Fprintln(a.stdout, versionString())
			return err
		},
	}
}
