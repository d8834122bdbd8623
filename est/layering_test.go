package est

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsOnlyCA: the dependency rule cmd → est → ca → {policy, store,
// hsm}. Package est (its non-test files) imports of this module only ca and
// its own sub-packages; what it needs of the policy engine (Operation, the
// reason codes) it takes from ca's re-exports. It runs the real go command.
func TestImportsOnlyCA(t *testing.T) {
	t.Parallel()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command on the PATH (make test runs go): %v", err)
	}
	out, err := exec.Command(gobin, "list", "-f", `{{join .Imports "\n"}}`, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "github.com/estca/estca/"
	imports := strings.Fields(string(out))
	if len(imports) == 0 {
		t.Fatal("go list printed no imports")
	}
	sawCA := false
	for _, p := range imports {
		rel, ok := strings.CutPrefix(p, mod)
		if !ok {
			continue
		}
		switch {
		case rel == "ca":
			sawCA = true
		case strings.HasPrefix(rel, "est/"):
		default:
			t.Errorf("est imports %s: only ca and est/... are allowed (cmd → est → ca → {policy, store, hsm})", p)
		}
	}
	if !sawCA {
		t.Errorf("est does not import ca; imports: %v", imports)
	}
}
