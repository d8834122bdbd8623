package main

import (
	"context"
	"errors"
	"flag"
)

func serveCommand() *command {
	return &command{
		name: "serve", args: "[--listen ADDR]",
		summary: "Run the appliance: the EST-coaps server, the metrics listener and the admin socket.",
		run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
			return errors.New("not yet")
		},
	}
}

func enrollCommand() *command {
	return &command{name: "enroll", summary: "EST-coaps device client.", run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
		return errors.New("not yet")
	}}
}

func benchCommand() *command {
	return &command{name: "bench", summary: "EST-coaps load generator.", run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
		return errors.New("not yet")
	}}
}

func caImportCommand() *command {
	return &command{name: "ca import", summary: "Import an externally signed issuing CA certificate.", run: func(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
		return errors.New("not yet")
	}}
}
