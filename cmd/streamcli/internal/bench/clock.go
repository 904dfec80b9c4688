package bench

import (
	"os"
	"strings"
	_ "unsafe" // for go:linkname
)

// The latency clock. bench reads it once per append, which at 200 ns per
// append must cost little: time.Now costs about 50 ns here, the runtime's
// monotonic nanotime about 27 ns, the CPU's time-stamp counter about
// 10 ns. Latencies are recorded in ticks of clock and converted to
// nanoseconds afterwards with a rate measured over the run against
// nanotime, so the counter's frequency need not be known.

// nanotime is the runtime's monotonic clock in nanoseconds. The runtime
// keeps it linkable on purpose (runtime/time_nofake.go lists it among the
// symbols widely used packages pull with go:linkname).
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// useTSC says the time-stamp counter ticks at a constant rate in every
// power state on every CPU (Linux reports constant_tsc and nonstop_tsc),
// so that its ticks measure time.
var useTSC = haveTSC && tscInvariant()

func tscInvariant() bool {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	s := string(b)
	return strings.Contains(s, " constant_tsc") && strings.Contains(s, " nonstop_tsc")
}

// clock returns the time in ticks: of the time-stamp counter where
// useTSC, else nanoseconds.
func clock() int64 {
	if useTSC {
		return int64(rdtsc())
	}
	return nanotime()
}

// clockSource names the clock for the result.
func clockSource() string {
	if useTSC {
		return "tsc"
	}
	return "nanotime"
}
