package store

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Environment of the helper process (this test binary re-executed).
const (
	helperModeEnv = "ESTCA_STORE_HELPER"
	helperPathEnv = "ESTCA_STORE_HELPER_PATH"
	helperKeyEnv  = "ESTCA_STORE_HELPER_KEY"
)

// TestHelperProcess is not a test: it is the child process of the lock and
// crash tests, selected by helperModeEnv.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperModeEnv)
	if mode == "" {
		t.Skip("helper process only")
	}
	path := os.Getenv(helperPathEnv)
	if mode == "open" || mode == "open-ro" {
		// Open a (damaged) store and report how that went.
		db, err := Open(path, Options{ReadOnly: mode == "open-ro", LockTimeout: time.Second})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(0)
		}
		_, err = db.Certificates(CertFilter{})
		if err == nil {
			_, err = db.AuditRecords(AuditFilter{})
		}
		db.Close()
		fmt.Println("opened:", err)
		os.Exit(0)
	}
	opts := Options{}
	if kf := os.Getenv(helperKeyEnv); kf != "" {
		key := readKey(t, kf)
		opts = withKey(opts, key, path)
	}
	db, err := Open(path, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	switch mode {
	case "hold":
		// Hold the lock until the parent closes our stdin.
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
		_ = db.Close()
		os.Exit(0)
	case "issue":
		// Issue until killed, from several goroutines so batches form; a serial
		// is printed only after Issue has returned.
		m := newCertMaker(t)
		der := m.der(t, "1")
		var mu sync.Mutex
		out := bufio.NewWriter(os.Stdout)
		var next int
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					next++
					i := next
					mu.Unlock()
					s := serialOf(i)
					c := Certificate{Serial: s, DER: der, Requester: fp("crash"), CSRDigest: digest(s), SKI: []byte(s)}
					if _, err := db.Issue(c, AuditRecord{}); err != nil {
						fmt.Fprintln(os.Stderr, "issue:", err)
						os.Exit(3)
					}
					mu.Lock()
					fmt.Fprintln(out, s)
					_ = out.Flush()
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	os.Exit(4)
}

// helper starts the test binary as a helper process in mode on path.
func helper(t *testing.T, mode, path string, env ...string) (*exec.Cmd, io.WriteCloser, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), helperModeEnv+"="+mode, helperPathEnv+"="+path), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, stdin, bufio.NewScanner(stdout)
}

// openBounded runs Open in a goroutine and fails the test if it hangs far
// beyond its lock timeout (a hang detector, not a speed assertion).
func openBounded(t *testing.T, path string, opts Options) (*DB, error) {
	t.Helper()
	type res struct {
		db  *DB
		err error
	}
	ch := make(chan res, 1)
	go func() { db, err := Open(path, opts); ch <- res{db, err} }()
	select {
	case r := <-ch:
		return r.db, r.err
	case <-time.After(opts.LockTimeout + 30*time.Second):
		t.Fatal("Open hung past its lock timeout")
		return nil, nil
	}
}

func TestLockOtherProcess(t *testing.T) {
	t.Parallel()
	path, _, _ := createClosed(t)
	cmd, stdin, out := helper(t, "hold", path)
	if !out.Scan() || out.Text() != "ready" {
		t.Fatalf("helper did not get ready: %q %v", out.Text(), out.Err())
	}
	for _, ro := range []bool{false, true} {
		db, err := openBounded(t, path, Options{LockTimeout: 150 * time.Millisecond, ReadOnly: ro})
		if !errors.Is(err, ErrLocked) {
			if db != nil {
				db.Close()
			}
			t.Fatalf("Open (read-only %v) while another process holds the store: err = %v, want ErrLocked", ro, err)
		}
	}
	// Once the other process lets go, Open succeeds.
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	db, err := openBounded(t, path, Options{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("Open after release: %v", err)
	}
	checkDB(t, db)
	db.Close()
}

func TestLockSameProcess(t *testing.T) {
	t.Parallel()
	db, path := openTest(t, Options{})
	second, err := openBounded(t, path, Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second Open err = %v, want ErrLocked", err)
	}
	if _, err := db.Append(AuditRecord{Event: EventStart}); err != nil {
		t.Errorf("first handle unusable after failed second Open: %v", err)
	}
}

func TestCrashDurability(t *testing.T) {
	t.Parallel()
	path, key, keyFile := createClosed(t)
	cmd, _, out := helper(t, "issue", path, helperKeyEnv+"="+keyFile)
	var printed []string
	killed := false
	for out.Scan() {
		printed = append(printed, strings.TrimSpace(out.Text()))
		if len(printed) >= 200 && !killed {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true // keep reading: lines already in the pipe were durable too
		}
	}
	err := cmd.Wait()
	if !killed {
		t.Fatalf("helper exited before 200 serials (%d): %v", len(printed), err)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper was not killed by SIGKILL: %v", err)
	}
	db, err := Open(path, withKey(Options{}, key, path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkDB(t, db)
	for _, s := range printed {
		c, err := db.Certificate(s)
		if err != nil {
			t.Errorf("printed serial %s lost: %v", s, err)
			continue
		}
		if got, err := db.IssuedFor(fp("crash"), digest(s)); err != nil || got.Serial != c.Serial {
			t.Errorf("request mapping for %s lost: %v", s, err)
		}
	}
	if _, err := db.SignHead(); err != nil {
		t.Fatal(err)
	}
	cp, err := ReadCheckpoint(path + ".checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := db.Verify(&key.PublicKey, cp)
	if err != nil {
		t.Fatalf("Verify after crash: %v", err)
	}
	n, _ := db.CountCertificates()
	if rep.Certificates != n || n < len(printed) {
		t.Errorf("after crash: %d records, %d certificates, %d printed", rep.Records, n, len(printed))
	}
	t.Logf("%d serials printed, %d certificates durable", len(printed), n)
	// The store keeps working after recovery.
	if _, err := db.Append(AuditRecord{Event: EventStart, Reason: "recovered"}); err != nil {
		t.Fatal(err)
	}
}

// createClosed creates a store with a software audit key, written to a
// PKCS#8 file for the helper process, and closes it.
func createClosed(t *testing.T) (path string, key *ecdsa.PrivateKey, keyFile string) {
	t.Helper()
	key = auditKey(t)
	path = filepath.Join(t.TempDir(), "estca.db")
	db, err := Create(path, withKey(Options{}, key, path))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile = filepath.Join(t.TempDir(), "audit.key")
	if err := os.WriteFile(keyFile, der, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, key, keyFile
}

// readKey reads a PKCS#8 ECDSA key file.
func readKey(t testing.TB, path string) *ecdsa.PrivateKey {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ecdsa.PrivateKey)
}
