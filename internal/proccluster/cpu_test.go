package proccluster

import (
	"os"
	"syscall"
	"testing"
	"time"
)

func rusageSelf(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestProcCPUTime: the CPU time read from /proc for this process grows
// as getrusage says it does, within the accounting's 10 ms ticks.
func TestProcCPUTime(t *testing.T) {
	before, err := ProcCPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	r0 := rusageSelf(t)
	// Burn 200 ms of CPU, however long a loaded machine takes to give it
	// (bounded).
	x := 0
	for deadline := time.Now().Add(time.Minute); rusageSelf(t)-r0 < 200*time.Millisecond; x++ {
		if time.Now().After(deadline) {
			t.Skipf("got %v of CPU in a minute: the machine is too loaded to measure", rusageSelf(t)-r0)
		}
		for i := 0; i < 100000; i++ {
			x ^= i
		}
	}
	after, err := ProcCPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	used, want := after-before, rusageSelf(t)-r0
	if d := used - want; d < -40*time.Millisecond || d > 40*time.Millisecond {
		t.Errorf("/proc says %v of CPU, getrusage %v (x=%d)", used, want, x)
	}
	if _, err := ProcCPUTime(1 << 30); err == nil {
		t.Error("ProcCPUTime of a pid that cannot exist: no error")
	}
}
