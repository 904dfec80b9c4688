package proccluster

import (
	"os"
	"testing"
	"time"
)

// TestProcCPUTime: the CPU time read for this process grows by about the
// CPU it burns, and is never more than the wall time passed times the
// threads that could run.
func TestProcCPUTime(t *testing.T) {
	before, err := ProcCPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	x := 0
	for time.Since(start) < 300*time.Millisecond {
		x++
	}
	wall := time.Since(start)
	after, err := ProcCPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	used := after - before
	// A busy loop on a shared machine gets at least a third of the wall
	// time; the accounting's unit is 10 ms.
	if used < wall/3 {
		t.Errorf("CPU time grew %v over a busy loop of %v (x=%d)", used, wall, x)
	}
	if _, err := ProcCPUTime(1 << 30); err == nil {
		t.Error("ProcCPUTime of a pid that cannot exist: no error")
	}
}
