//go:build !linux

package bench

import "errors"

// ProcessUsage needs Linux's /proc; elsewhere it fails.
func ProcessUsage(pid int) (Usage, error) {
	return Usage{}, errors.New("bench: server CPU usage is read from /proc (Linux only)")
}

// LoadAverage needs Linux's /proc; elsewhere it is "".
func LoadAverage() string { return "" }

// Affinity needs Linux; elsewhere it fails.
func Affinity(pid int) ([]int, error) {
	return nil, errors.New("bench: CPU affinity is Linux only")
}

// PinProcess needs Linux; elsewhere it fails.
func PinProcess(cpus []int) error { return errors.New("bench: CPU affinity is Linux only") }

// ParseCPUs needs Linux; elsewhere it fails.
func ParseCPUs(s string) ([]int, error) { return nil, errors.New("bench: CPU affinity is Linux only") }
