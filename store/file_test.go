package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/estca/estca/store/internal/wire"
	"github.com/estca/estca/store/storetest"
)

// bigStore builds, once per test binary, a closed store of a few MB (many
// pages) and returns its path and the raw bytes of the same store taken
// while it was open (no persisted freelist, as after a crash).
var bigStore = sync.OnceValues(func() (string, []byte) {
	dir, err := os.MkdirTemp("", "estca-store-big-")
	if err != nil {
		panic(err)
	}
	path := filepath.Join(dir, "estca.db")
	db, err := Create(path, Options{})
	if err != nil {
		panic(err)
	}
	der := make([]byte, 600)
	rand.Read(der)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 150 {
				s := serialOf(w*1000 + i)
				c := Certificate{Serial: s, DER: der, Subject: "CN=" + s, SKI: []byte(digest(s)[:40]),
					Requester: fp(s), Profile: "default", CSRDigest: digest(s)}
				if _, err := db.Issue(c, AuditRecord{Requester: ident(s)}); err != nil {
					panic(err)
				}
			}
		}()
	}
	wg.Wait()
	crashed, err := os.ReadFile(path)
	if err != nil {
		panic(err)
	}
	if err := db.Close(); err != nil {
		panic(err)
	}
	return path, crashed
})

// damagedCopy writes a copy of the big store (the crashed form if crashed)
// into a temp dir, lets damage change its bytes, and returns its path.
func damagedCopy(t *testing.T, crashed bool, damage func(b []byte) []byte) string {
	t.Helper()
	path, crash := bigStore()
	b := crash
	if !crashed {
		var err error
		if b, err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
	}
	b = damage(append([]byte(nil), b...))
	out := filepath.Join(t.TempDir(), "estca.db")
	if b != nil {
		if err := os.WriteFile(out, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// hwmBytes returns the bytes below the high-water mark of the newest valid
// meta page of b.
func hwmBytes(t *testing.T, b []byte) int64 {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "meta")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b)
	defer f.Close()
	info, err := checkFile(f, f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return int64(info.meta.hwm) * int64(info.meta.pageSize)
}

// openInChild opens path (read-only or not) in a child process and returns
// its one-line report; a hang, a panic or a fault fails the test.
func openInChild(t *testing.T, path string, readOnly bool) string {
	t.Helper()
	mode := "open"
	if readOnly {
		mode = "open-ro"
	}
	// A hang detector, far above any honest open; not a speed assertion.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperModeEnv+"="+mode, helperPathEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("opening %s hung (killed after 90s):\n%s", path, out)
	}
	if err != nil {
		t.Fatalf("opening %s crashed the process: %v\n%s", path, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "error: ") || strings.HasPrefix(line, "opened: ") {
			return line
		}
	}
	t.Fatalf("no report from the child:\n%s", out)
	return ""
}

// TestDamagedFiles opens missing, empty, foreign, truncated and
// garbage-filled store files in a child process, for writing and
// read-only: each is refused at once with an error naming the damage, never
// a hang, panic or bus error. These reproduce what was seen before the
// file checks: a truncated store hung or panicked `serve`, a 75% one
// died of SIGBUS, garbage in a page panicked.
func TestDamagedFiles(t *testing.T) {
	t.Parallel()
	path, _ := bigStore()
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	leaf := storetest.LeafPage(t, path)
	type tc struct {
		name    string
		crashed bool
		damage  func(b []byte) []byte
		want    string // substring of the report; "opened" for none
	}
	cut := func(pct int) func([]byte) []byte {
		return func(b []byte) []byte { return b[:len(b)*pct/100] }
	}
	garbage := func(page uint64, keepHeader bool) func([]byte) []byte {
		return func(b []byte) []byte {
			ps := uint64(4096)
			off := page * ps
			rand.Read(b[off : off+ps])
			if keepHeader {
				binary.LittleEndian.PutUint64(b[off:], page)
				binary.LittleEndian.PutUint16(b[off+8:], leafPageFlag)
			}
			return b
		}
	}
	cases := []tc{
		{"missing", false, func([]byte) []byte { return nil }, "no store file"},
		{"empty", false, func([]byte) []byte { return []byte{} }, "empty store file"},
		{"text file", false, func([]byte) []byte { return []byte("not a database\n") }, "not an estca store"},
		{"random bytes", false, func(b []byte) []byte { rand.Read(b[:65536]); return b[:65536] }, "not an estca store"},
		{"both meta pages garbage", false, func(b []byte) []byte { rand.Read(b[16:4096]); rand.Read(b[4096+16 : 8192]); return b }, "not an estca store"},
		{"garbage leaf page", false, garbage(leaf, false), "damaged store file: "},
		{"garbage leaf page, header kept", false, garbage(leaf, true), "damaged store file"},
		{"garbage leaf page after a crash", true, garbage(leaf, false), "damaged store file"},
		{"cut mid-page", false, func(b []byte) []byte { return b[:len(b)/2+100] }, "truncated store file"},
	}
	for _, pct := range []int{25, 50, 75} {
		want := "truncated store file"
		if int64(len(full)*pct/100) >= hwmBytes(t, full) {
			want = "opened: <nil>" // only slack past the high-water mark was cut
		}
		cases = append(cases, tc{fmt.Sprintf("truncated to %d%%", pct), false, cut(pct), want})
		crashWant := "truncated store file"
		_, crash := bigStore()
		if int64(len(crash)*pct/100) >= hwmBytes(t, crash) {
			crashWant = "opened: <nil>"
		}
		cases = append(cases, tc{fmt.Sprintf("truncated to %d%% after a crash", pct), true, cut(pct), crashWant})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := damagedCopy(t, c.crashed, c.damage)
			for _, ro := range []bool{false, true} {
				got := openInChild(t, p, ro)
				if !strings.Contains(got, c.want) {
					t.Errorf("read-only %v: %s\nwant %q", ro, got, c.want)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(t.TempDir(), "estca.db")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a store was created")
	}
}

// TestBackgroundCheck: with a small page budget Open returns after the top of
// the tree and checks the rest in the background; damage found there stops
// writes.
func TestBackgroundCheck(t *testing.T) {
	t.Parallel()
	path, _ := bigStore()
	leaf := storetest.LeafPage(t, path)
	good := damagedCopy(t, false, func(b []byte) []byte { return b })
	db, err := Open(good, Options{CheckPages: 4})
	if err != nil {
		t.Fatal(err)
	}
	waitCheck(t, db)
	if h := db.Health(); !h.CheckDone || h.Damaged != nil || h.CheckedPages < 100 {
		t.Errorf("health after the background check = %+v", h)
	}
	db.Close()

	bad := damagedCopy(t, false, func(b []byte) []byte {
		off := leaf * 4096
		binary.LittleEndian.PutUint16(b[off+10:], 0xFFFF) // element count beyond the page
		return b
	})
	db, err = Open(bad, Options{CheckPages: 4})
	if err != nil {
		t.Fatalf("Open with a 4-page budget found the damage already: %v", err)
	}
	defer db.Close()
	waitCheck(t, db)
	h := db.Health()
	if !errors.Is(h.Damaged, ErrDamaged) || !strings.Contains(h.Damaged.Error(), fmt.Sprintf("page %d", leaf)) {
		t.Fatalf("background check: %+v", h)
	}
	if _, err := db.Append(AuditRecord{Event: EventStart}); !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrDamaged) {
		t.Errorf("write after damage found: %v", err)
	}
}

func waitCheck(t *testing.T, db *DB) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if h := db.Health(); h.CheckDone || h.Damaged != nil {
			return
		}
	}
	t.Fatal("background check did not finish")
}

// TestCheck runs the full check of a healthy store.
func TestCheck(t *testing.T) {
	t.Parallel()
	db, _ := openTest(t, Options{})
	rep, err := db.Check()
	if err != nil || rep.Pages == 0 || rep.Buckets != len(wire.Buckets)+len(wire.AddedBuckets) || rep.Bolt {
		t.Errorf("Check = %+v, %v", rep, err)
	}
}

// TestDupFileCloseOnExec: the descriptor bbolt gets shares the store's
// lock, so it must not leak into a child process started meanwhile (by a
// test, or anything the server runs): the child would hold the lock, and
// the file system busy, until it exits. Seen as "umount: target is busy"
// in TestDiskFull/tmpfs while another test started a child.
func TestDupFileCloseOnExec(t *testing.T) {
	t.Parallel()
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := dupFile(f, f.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	flags, err := unix.FcntlInt(d.Fd(), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Fatal("the duplicated store descriptor is inherited by child processes (no FD_CLOEXEC)")
	}
}
