//go:build long

package main

import "testing"

// TestCrashKeepsDeliveredCertificatesLong is the crash test of issue 6's
// acceptance: 20 rounds of kill -9 under concurrent enrollment (make
// test-long).
func TestCrashKeepsDeliveredCertificatesLong(t *testing.T) {
	testCrashRounds(t, 20)
}
