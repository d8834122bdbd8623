package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// clockTick is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// ProcessUsage samples the usage of process pid from /proc: CPU times from
// /proc/PID/stat (utime, stime: every thread, living or ended, in ticks of
// 10 ms), context switches summed over /proc/PID/task/*/status (the threads
// alive now: a Go server keeps its threads).
func ProcessUsage(pid int) (Usage, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Usage{}, fmt.Errorf("bench: /proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return Usage{}, fmt.Errorf("bench: /proc/%d/stat: unexpected format", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return Usage{}, fmt.Errorf("bench: /proc/%d/stat: unexpected format", pid)
	}
	u := Usage{User: time.Duration(ut) * clockTick, System: time.Duration(st) * clockTick}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		s, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		for _, line := range strings.Split(string(s), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "voluntary_ctxt_switches":
				u.Voluntary += n
			case "nonvoluntary_ctxt_switches":
				u.Involuntary += n
			}
		}
	}
	return u, nil
}

// LoadAverage is the first line of /proc/loadavg (the 1, 5 and 15 minute
// load averages, runnable/total tasks, last pid), "" if unreadable.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Affinity returns the CPUs process pid may run on (0: this process).
func Affinity(pid int) ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &set); err != nil {
		return nil, fmt.Errorf("bench: affinity of %d: %w", pid, err)
	}
	var cpus []int
	for i := range 1024 {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	return cpus, nil
}

// PinProcess restricts every thread of this process to cpus, as taskset
// does for a process it starts: the Go runtime's threads are already
// running, so each is pinned, and the threads they start later inherit it.
func PinProcess(cpus []int) error {
	if len(cpus) == 0 {
		return errors.New("bench: no CPUs to pin to")
	}
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	// Threads started while pinning inherit the mask of the thread that
	// started them, pinned or not: repeat until no new thread appears.
	pinned := map[int]bool{}
	for range 10 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("bench: pin: %w", err)
		}
		fresh := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || pinned[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("bench: pin thread %d: %w", tid, err)
			}
			pinned[tid], fresh = true, true
		}
		if !fresh {
			return nil
		}
	}
	return nil
}

// ParseCPUs reads a CPU list as taskset -c takes it: "0", "0,2", "1-3".
func ParseCPUs(s string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 || a >= 1024 {
			return nil, fmt.Errorf("bench: CPU list %q: bad CPU %q", s, part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a || b >= 1024 {
				return nil, fmt.Errorf("bench: CPU list %q: bad range %q", s, part)
			}
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}
