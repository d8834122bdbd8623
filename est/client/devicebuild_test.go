package client

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The device side: what runs on device gateways and must cross-compile
// without a C toolchain.
var deviceSide = []string{
	"github.com/estca/estca/est/client",
	"github.com/estca/estca/est/bench",
	"github.com/estca/estca/est/wire",
}

// deviceAllowed are the packages of this module the device side may import:
// itself, the pure-Go CMS package the client needs for server-generated
// keys, and the standard-library-only DER header leaf it encodes with (not
// the policy engine).
var deviceAllowed = append([]string{"github.com/estca/estca/ca/cms", "github.com/estca/estca/policy/der"}, deviceSide...)

// deviceForbidden are packages that must never reach a device build: cgo
// (PKCS#11, and cgo itself), the bbolt store, and the server's Prometheus.
var deviceForbidden = []string{
	"runtime/cgo",
	"github.com/miekg/pkcs11",
	"go.etcd.io/bbolt",
	"github.com/prometheus/client_golang/prometheus",
}

// TestDeviceBuildWithoutCgo cross-compiles est/client, est/bench and est/wire
// for linux/arm64 with CGO_ENABLED=0, as a device gateway without a C
// toolchain would, and checks with `go list -deps` that they import nothing
// of ca, store, hsm, policy or the server (package est). It runs the real go
// command; the first run compiles the standard library for arm64 (about a
// minute of CPU), later runs hit the build cache.
func TestDeviceBuildWithoutCgo(t *testing.T) {
	t.Parallel()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command on the PATH (make test runs go): %v", err)
	}
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(gobin, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	deps := strings.Fields(run(append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, deviceSide...)...))
	if len(deps) < len(deviceSide) {
		t.Fatalf("go list -deps returned %d packages", len(deps))
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "github.com/estca/estca") && !slices.Contains(deviceAllowed, d) {
			t.Errorf("device side imports %s (allowed from this module: %v)", d, deviceAllowed)
		}
		for _, f := range deviceForbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("device side imports %s", d)
			}
		}
	}
	run(append([]string{"build"}, deviceSide...)...)
}
