package proccluster

import (
	"net"
	"os"
	"strconv"
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

// TestFreePortsBelowEphemeral: the ports handed out are distinct, free
// for TCP and UDP, and below the kernel's ephemeral range, so that a
// member restarted on its port cannot find it taken by some process's
// outgoing connection.
func TestFreePortsBelowEphemeral(t *testing.T) {
	eph := ephemeralLow()
	ports, err := FreePorts("127.0.0.1", 50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if eph-minDrawnPort >= 4096 && (p < minDrawnPort || p >= eph) {
			t.Errorf("port %d is outside [%d, %d)", p, minDrawnPort, eph)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d: %v", p, err)
		}
		l.Close()
	}
	if eph == 0 {
		t.Log("no ephemeral range readable: the kernel picked the ports")
	}
}
