package proccluster

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Memory is what a cluster's running members hold, summed, in KiB: their
// anonymous resident memory and page tables, and the blocks of their data
// directories (on tmpfs, memory). File and shared-memory pages mapped
// (counted in DataKiB already on tmpfs) are reported, not added.
type Memory struct {
	RssAnonKiB int64 `json:"rss_anon_kib"`
	PTEKiB     int64 `json:"page_tables_kib"`
	DataKiB    int64 `json:"data_kib"`
	TotalKiB   int64 `json:"total_kib"`
	FileRssKiB int64 `json:"rss_file_shmem_kib"`
	// FDs is the members' open file descriptors.
	FDs int `json:"fds"`
}

// Memory measures the running members (Linux /proc).
func (c *Cluster) Memory() (Memory, error) {
	var m Memory
	for i := range c.Len() {
		n, err := c.Node(i)
		if err != nil {
			return m, err
		}
		if pid := c.PID(i); pid > 0 {
			st, err := ProcStatus(pid)
			if err != nil {
				return m, err
			}
			m.RssAnonKiB += st["RssAnon"]
			m.PTEKiB += st["VmPTE"]
			m.FileRssKiB += st["RssFile"] + st["RssShmem"]
			if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
				m.FDs += len(fds)
			}
		}
		kib, err := DirKiB(n.Data)
		if err != nil {
			return m, err
		}
		m.DataKiB += kib
	}
	m.TotalKiB = m.RssAnonKiB + m.PTEKiB + m.DataKiB
	return m, nil
}

// ProcStatus reads the kB fields of /proc/PID/status.
func ProcStatus(pid int) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 2 && fs[1] == "kB" {
			if n, err := strconv.ParseInt(fs[0], 10, 64); err == nil {
				out[k] = n
			}
		}
	}
	return out, sc.Err()
}

// DirKiB is the space the files under dir take (their blocks: on tmpfs,
// memory).
func DirKiB(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
		return nil
	})
	return n / 1024, err
}
