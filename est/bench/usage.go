package bench

import "time"

// Usage is what a process spent: CPU time in user and kernel mode, and
// context switches (voluntary: it blocked; involuntary: it was preempted)
// summed over its threads.
type Usage struct {
	User, System           time.Duration
	Voluntary, Involuntary uint64
}

// Sub is u - v: the usage between two samples.
func (u Usage) Sub(v Usage) Usage {
	return Usage{User: u.User - v.User, System: u.System - v.System,
		Voluntary: u.Voluntary - v.Voluntary, Involuntary: u.Involuntary - v.Involuntary}
}

// CPU is User + System.
func (u Usage) CPU() time.Duration { return u.User + u.System }
