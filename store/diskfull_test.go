package store

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/estca/estca/store/storetest"
)

// fsizeChildEnv selects, in the re-executed test binary, the file size
// limit variant of TestDiskFull (the limit is per process).
const fsizeChildEnv = "ESTCA_STORE_FSIZE_CHILD"

// TestDiskFull makes the file system under a real store refuse writes, two
// ways: a small tmpfs filled up (ENOSPC; needs root) and a file-size limit
// on the process (EFBIG, RLIMIT_FSIZE; runs as any user, in a re-executed
// test binary since the limit is per process). Writes fail with a
// *WriteError matching ErrUnavailable and the errno (a bbolt commit failing
// in its page writes or its file growth), fail fast between retries without
// touching the disk, and succeed again by themselves once space is back;
// the store stays consistent throughout.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	t.Run("tmpfs", func(t *testing.T) {
		t.Parallel()
		dir := storetest.SmallFS(t, 4<<20)
		diskFull(t, dir, syscall.ENOSPC, func(string) func() {
			filler := storetest.Fill(t, dir)
			return func() {
				if err := os.Remove(filler); err != nil {
					t.Fatal(err)
				}
			}
		})
	})
	t.Run("file size limit", func(t *testing.T) {
		t.Parallel()
		if os.Getenv(fsizeChildEnv) == "1" {
			diskFull(t, t.TempDir(), syscall.EFBIG, func(path string) func() {
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				return storetest.LimitFileSize(t, 0, int(fi.Size()))
			})
			return
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestDiskFull$/^file_size_limit$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), fsizeChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestDiskFull/file_size_limit") {
			t.Fatalf("child test: %v\n%s", err, out)
		}
	})
}

// diskFull runs the disk-full episode on a store in dir: full makes writes
// fail with errno (given the store file's path) and returns the function
// that gives the space back.
func diskFull(t *testing.T, dir string, errno syscall.Errno, full func(path string) (free func())) {
	key := auditKey(t)
	path := filepath.Join(dir, "estca.db")
	// The fail-fast window is checked below by the next write: 2 s, not
	// 50 ms, so that a loaded machine's pause between two writes does not
	// end it first (seen under a load average of 7 on 2 cores); recovery
	// below waits up to 30 s.
	opts := withKey(Options{WriteRetry: 2 * time.Second}, key, path)
	db, err := Create(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m := newCertMaker(t)
	der := m.der(t, "1")
	issue := func(i int) error {
		s := serialOf(i)
		_, err := db.Issue(Certificate{Serial: s, DER: der, Requester: fp(s), CSRDigest: digest(s)}, AuditRecord{})
		return err
	}
	free := full(path)
	i := 0
	var werr error
	for ; i < 10000; i++ {
		if werr = issue(i); werr != nil {
			break
		}
	}
	var we *WriteError
	// bbolt v1.5 reports a failed file growth as "file resize error: %s",
	// which keeps the errno's text but not the error itself.
	if !errors.As(werr, &we) || !errors.Is(werr, ErrUnavailable) || !(errors.Is(werr, errno) || strings.Contains(werr.Error(), errno.Error())) {
		t.Fatalf("issue %d on a full disk: %v", i, werr)
	}
	t.Logf("disk full after %d more certificates: %v", i, werr)
	h := db.Health()
	if h.WriteErr == nil || h.Since.IsZero() {
		t.Fatalf("Health = %+v", h)
	}
	// Within the retry window a write fails at once, without a commit.
	if err := issue(i + 1); !errors.As(err, &we) || !we.FailFast {
		t.Errorf("write within the retry window: %v", err)
	}
	free()
	var ok bool
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := issue(i + 2); err == nil {
			ok = true
			break
		} else if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("write after space came back: %v", err)
		}
	}
	if !ok {
		t.Fatal("writes did not recover after space came back")
	}
	if h := db.Health(); h.WriteErr != nil {
		t.Errorf("Health after recovery = %+v", h)
	}
	if _, err := db.SignHead(); err != nil {
		t.Fatal(err)
	}
	checkDB(t, db)
	if _, err := db.Verify(&key.PublicKey); err != nil {
		t.Fatalf("Verify after the disk-full episode: %v", err)
	}
	if _, err := db.Certificate(serialOf(i)); !errors.Is(err, ErrNotFound) {
		t.Errorf("the failed certificate is there: %v", err)
	}
	// And the file reopens cleanly.
	db.Close()
	db, err = Open(path, opts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	db.Close()
}
