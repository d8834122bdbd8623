# estca — see README.md. `make run` serves the embedded default appliance,
# `make test` runs the whole suite against real SoftHSM, libcoap and OpenSSL.
GO      ?= go
BIN     := bin/estca
VAR     ?= var
FUZZTIME ?= 10s
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all deps build run test test-long bench fuzz lint clean install-systemd

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
