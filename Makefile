# estca — see README.md. `make run` serves the embedded default appliance,
# `make test` runs the whole suite against real SoftHSM, libcoap and OpenSSL.
GO      ?= go
BIN     := bin/estca
VAR     ?= var
FUZZTIME ?= 10s
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all deps build run test test-long bench bench-scale fuzz lint clean install-systemd

all: build

deps:
	@scripts/deps.sh

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/estca

# The binary and the systemd unit (cmd/estca/systemd/estca.service), the
# estca system user, daemon-reload; PREFIX, UNITDIR, DESTDIR as usual.
install-systemd: build
	BIN=$(BIN) scripts/install-systemd.sh

run: deps build
	@test -f $(VAR)/estca.yaml || ./$(BIN) init --dir $(VAR) --demo
	./$(BIN) --config $(VAR)/estca.yaml serve

test: deps
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) vet ./hsm/
	CGO_ENABLED=0 $(GO) test -count=1 ./hsm/
	$(GO) test -race -count=1 -timeout 14m ./...

# Long runs behind the 'long' build tag: the 20-round kill -9 crash test and the
# 1,000-client EST-coaps load (est/load_long_test.go; numbers without -race are in its log).
test-long: deps
	$(GO) test -race -count=1 -timeout 30m -tags long -run 'Long$$' ./...

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 3 ./store/ ./hsm/ ./ca/

# Issue 11, flat with growth (est.BenchmarkScale): a store filled to SCALE_N certificates
# through the store API (store/storefill) against an empty one, the real authority and est
# server in front of each, interleaved rounds, same run; prints bytes per certificate and
# the full/empty ratios of server CPU per enrollment and throughput (the load generator is a
# child process, so the server's CPU is its own). The full store (about 1.5 kB per certificate)
# goes under SCALE_DIR (default: $$TMPDIR) and is deleted afterwards.
SCALE_N ?= 1000000
SCALE_ROUNDS ?= 5
SCALE_DIR ?=
bench-scale: deps
	$(GO) test -run '^$$' -bench '^BenchmarkScale$$' -benchtime 1x -timeout 3h -v ./est/ \
		-args -scale.n $(SCALE_N) -scale.rounds $(SCALE_ROUNDS) $(if $(SCALE_DIR),-scale.dir $(SCALE_DIR))

# Each fuzz target for FUZZTIME; bounded, for a quick local check.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s $$pkg; \
		done; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

clean:
	rm -rf bin
