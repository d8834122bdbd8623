package storetest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/estca/estca/policy/pkitest"
	"golang.org/x/sys/unix"
)

// SmallFS mounts a tmpfs of size bytes on a new temporary directory for the
// test and returns it; it is unmounted at cleanup (close what is open on it
// first). Mounting needs root (CI runs as root): elsewhere the test is
// skipped with the reason. A real, small file system is how the tests fill
// a disk: bbolt's own writes then fail with ENOSPC.
//
// Without root the test is skipped, unless the environment variable CI is
// set (pkitest.CI), where that is a failure. LimitFileSize is the write fault
// that needs no root.
func SmallFS(t testing.TB, size int) string {
	t.Helper()
	skip := t.Skipf
	if pkitest.CI() {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("storetest: mounting a small tmpfs to fill needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput(); err != nil {
		skip("storetest: cannot mount a tmpfs (%v): %s", err, out)
	}
	t.Cleanup(func() {
		// A child process that another parallel test starts can hold the
		// mount for a moment ("target is busy", seen under load): retry
		// for a while before calling it a failure.
		var out []byte
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if out, err = exec.Command("umount", dir).CombinedOutput(); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// Fill writes a file into dir until its file system is full and returns
// the file's path; removing it gives the space back.
func Fill(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("storetest: filling %s: %v", dir, err)
			}
			return p
		}
	}
}

// LimitFileSize lowers the soft file-size limit (RLIMIT_FSIZE) of process
// pid (0: this process) to n bytes and returns the function that puts the
// previous limit back. From then on a write or truncate that would make a
// file of that process larger than n fails with EFBIG (Go ignores the
// SIGXFSZ that comes with it, so the process lives): a store's file cannot
// grow, the way a full disk stops it. It needs no root: a process may lower
// its own soft limit and that of another process of the same user
// (prlimit(2)), and raise it back up to the hard limit. The limit applies
// to every file the process writes, so limit a child process, or a test
// binary re-executed for one test, never a process running other tests.
func LimitFileSize(t testing.TB, pid, n int) (restore func()) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, nil, &old); err != nil {
		t.Fatalf("storetest: prlimit %d: %v", pid, err)
	}
	lim := old
	lim.Cur = uint64(n)
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, &lim, nil); err != nil {
		t.Fatalf("storetest: prlimit %d RLIMIT_FSIZE=%d: %v", pid, n, err)
	}
	return func() {
		if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, &old, nil); err != nil {
			t.Errorf("storetest: prlimit %d: restore RLIMIT_FSIZE: %v", pid, err)
		}
	}
}
