package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// benchServer starts a demo `estca serve` and returns the arguments of an
// `estca bench` against it (2 workers, 300 ms), its process id and the device.
func benchServer(t *testing.T) ([]string, string, identity) {
	t.Helper()
	dir, cfg := demoAppliance(t, false)
	srv := startServer(t, cfg)
	dev := demoDevice(dir, "valid")
	args := []string{"bench", "--server", "coaps://" + srv.addr, "--cert", dev.cert, "--key", dev.key,
		"--trust", filepath.Join(dir, "ca", "root.pem"), "--server-name", "127.0.0.1", "-c", "2", "-d", "300ms"}
	return args, strconv.Itoa(srv.cmd.Process.Pid), dev
}

// TestBenchBaseline runs `estca bench --baseline` against a real `estca
// serve`: the baseline server child starts, both servers are measured in
// interleaved rounds, and the report gives their CPU per operation and the
// ratio. The figures themselves are not checked (a test asserts no speed).
func TestBenchBaseline(t *testing.T) {
	args, pid, _ := benchServer(t)

	out, err := exec.Command(estcaBinary(t), append(args, "--mode", "sen-reuse", "--server-pid", pid, "--baseline", "--rounds", "2")...).CombinedOutput()
	if err != nil {
		t.Fatalf("bench --baseline: %v\n%s", err, out)
	}
	t.Logf("\n%s", out)
	text := string(out)
	rows := regexp.MustCompile(`(?m)^[12]\s+(estca|baseline)\s+([0-9.]+)\s+0\s+(\S+)`).FindAllStringSubmatch(text, -1)
	if len(rows) != 4 {
		t.Fatalf("want 2 rounds × 2 servers without errors, got %d rows", len(rows))
	}
	for _, r := range rows {
		if ops, _ := strconv.ParseFloat(r[2], 64); ops <= 0 {
			t.Errorf("%s: no operations", r[1])
		}
	}
	m := regexp.MustCompile(`ratio estca/baseline: cpu per op ([0-9.]+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("no ratio")
	}
	if r, _ := strconv.ParseFloat(m[1], 64); r <= 0 {
		t.Errorf("ratio %s", m[1])
	}
	if !strings.Contains(text, "load average before") || !strings.Contains(text, "on the same cpus") {
		t.Error("the report does not give the load or the CPUs")
	}

	// Without --baseline, --server-pid adds the CPU per operation to the report.
	out, err = exec.Command(estcaBinary(t), append(args, "--mode", "crts", "--server-pid", pid)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "server cpu per op") {
		t.Fatalf("bench --server-pid: %v\n%s", err, out)
	}

	for name, extra := range map[string][]string{
		"baseline without a server pid": {"--baseline"},
		"baseline with keygen":          {"--baseline", "--server-pid", pid, "--mode", "skg"},
		"no rounds":                     {"--baseline", "--server-pid", pid, "--rounds", "0"},
	} {
		code, _, stderr := estca(t, append(args, extra...)...)
		if code != exitUsage {
			t.Errorf("%s: exit %d, want %d\n%s", name, code, exitUsage, stderr)
		}
	}
}

// TestBenchVs runs `estca bench --mode skg --vs sen-reuse` against a real
// `estca serve`: both operations in interleaved rounds on the same server,
// every key and certificate checked, and the ratio of their rates and CPU
// per operation reported (the figures themselves are not checked).
func TestBenchVs(t *testing.T) {
	args, pid, dev := benchServer(t)

	out, err := exec.Command(estcaBinary(t), append(args, "--mode", "skg", "--recipient-key", dev.key,
		"--vs", "sen-reuse", "--server-pid", pid, "--rounds", "2")...).CombinedOutput()
	if err != nil {
		t.Fatalf("bench --vs: %v\n%s", err, out)
	}
	t.Logf("\n%s", out)
	text := string(out)
	rows := regexp.MustCompile(`(?m)^[12]\s+(skg|sen-reuse)\s+([0-9.]+)\s+0\s+(\S+)`).FindAllStringSubmatch(text, -1)
	if len(rows) != 4 {
		t.Fatalf("want 2 rounds × 2 modes without errors, got %d rows", len(rows))
	}
	for _, r := range rows {
		if ops, _ := strconv.ParseFloat(r[2], 64); ops <= 0 {
			t.Errorf("%s: no operations", r[1])
		}
	}
	m := regexp.MustCompile(`ratio skg/sen-reuse: cpu per op ([0-9.]+), throughput ([0-9.]+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("no ratio")
	}
	for _, v := range m[1:] {
		if r, _ := strconv.ParseFloat(v, 64); r <= 0 {
			t.Errorf("ratio %s", v)
		}
	}

	for name, extra := range map[string][]string{
		"vs without a server pid": {"--vs", "sen-reuse"},
		"vs and baseline":         {"--vs", "sen-reuse", "--baseline", "--server-pid", pid},
		"vs the same mode":        {"--mode", "sen-reuse", "--vs", "sen-reuse", "--server-pid", pid},
		"vs an unknown mode":      {"--vs", "nonsense", "--server-pid", pid},
		"an unknown mode vs":      {"--mode", "nonsense", "--vs", "sen", "--server-pid", pid},
	} {
		code, _, stderr := estca(t, append(args, extra...)...)
		if code != exitUsage {
			t.Errorf("%s: exit %d, want %d\n%s", name, code, exitUsage, stderr)
		}
	}
}
