package proccluster

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPUTime is the CPU time (user and system, every thread) the running
// members have used since they started, summed, from /proc/PID/stat
// (Linux; in clock ticks, 10 ms each with the usual USER_HZ of 100). A
// member that is not running counts nothing.
func (c *Cluster) CPUTime() (time.Duration, error) {
	var sum time.Duration
	for i := range c.Len() {
		pid := c.PID(i)
		if pid <= 0 {
			continue
		}
		d, err := ProcCPUTime(pid)
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

// userHZ is the unit of /proc/PID/stat's times: USER_HZ, 100 on every
// Linux architecture Go runs on.
const userHZ = 100

// ProcCPUTime is the CPU time process pid has used: utime and stime, the
// 14th and 15th fields of /proc/PID/stat.
func ProcCPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("CPU time of pid %d: %w", pid, err)
	}
	// The command (field 2) is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("CPU time of pid %d: /proc/%d/stat is malformed", pid, pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3, the state
	if len(f) < 13 {
		return 0, fmt.Errorf("CPU time of pid %d: /proc/%d/stat has %d fields", pid, pid, len(f)+2)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("CPU time of pid %d: /proc/%d/stat: %w", pid, pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}
