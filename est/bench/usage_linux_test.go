package bench

import (
	"crypto/sha256"
	"os"
	"slices"
	"testing"
	"time"
)

func TestProcessUsage(t *testing.T) {
	before, err := ProcessUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the kernel has counted some: ticks are 10 ms.
	deadline := time.Now().Add(10 * time.Second)
	var after Usage
	for time.Now().Before(deadline) {
		sum := sha256.Sum256([]byte("x"))
		for range 20000 {
			sum = sha256.Sum256(sum[:])
		}
		if after, err = ProcessUsage(os.Getpid()); err != nil {
			t.Fatal(err)
		}
		if after.Sub(before).CPU() >= 50*time.Millisecond {
			break
		}
	}
	d := after.Sub(before)
	if d.CPU() < 50*time.Millisecond || d.User <= 0 {
		t.Fatalf("usage %+v after burning CPU", d)
	}
	if after.Voluntary+after.Involuntary == 0 {
		t.Error("no context switches counted")
	}
	if _, err := ProcessUsage(-1); err == nil {
		t.Error("no error for a missing process")
	}
	if LoadAverage() == "" {
		t.Error("no load average")
	}
}

func TestCPUs(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want []int
		ok   bool
	}{
		{"0", []int{0}, true}, {"0,2", []int{0, 2}, true}, {"1-3", []int{1, 2, 3}, true}, {"0, 4-5", []int{0, 4, 5}, true},
		{"", nil, false}, {"a", nil, false}, {"3-1", nil, false}, {"-1", nil, false}, {"5000", nil, false},
	} {
		got, err := ParseCPUs(c.in)
		if (err == nil) != c.ok || !slices.Equal(got, c.want) {
			t.Errorf("ParseCPUs(%q) = %v, %v", c.in, got, err)
		}
	}
	own, err := Affinity(0)
	if err != nil || len(own) == 0 {
		t.Fatalf("Affinity: %v %v", own, err)
	}
	if err := PinProcess(nil); err == nil {
		t.Error("pinning to no CPU accepted")
	}
}
