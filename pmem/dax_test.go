package pmem_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rpstream/rpstream/pmem"
)

// daxEnv, set to 1 (make test-pmem does, inside the VM), makes the DAX
// tests fail instead of skip when the test directory (TMPDIR) is not on a
// file system mounted with -o dax.
const daxEnv = "RPSTREAM_TEST_DAX"

// daxMount reports whether dir is on a mount with the dax option, read
// from /proc/self/mountinfo: an oracle that does not use the code under
// test. The mount of dir is the one with the longest mount point that
// prefixes it.
func daxMount(t *testing.T, dir string) (bool, string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, ""
	}
	defer f.Close()
	dir, _ = filepath.EvalSymlinks(dir)
	best, dax := "", false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - fstype source superoptions
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		mp := fields[4]
		if !(dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) || len(mp) < len(best) {
			continue
		}
		best, dax = mp, false
		for _, o := range strings.Split(fields[5]+","+fields[len(fields)-1], ",") {
			if o == "dax" || o == "dax=always" {
				dax = true
			}
		}
	}
	return dax, best
}

// requireDAX returns a DAX directory for the test, or skips (fails under
// RPSTREAM_TEST_DAX=1) saying why there is none.
func requireDAX(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if dax, mp := daxMount(t, dir); !dax {
		msg := "TMPDIR " + dir + " (mount " + mp + ") is not mounted with -o dax; make test-pmem runs this inside a VM with a DAX ext4"
		if os.Getenv(daxEnv) == "1" {
			t.Fatal(daxEnv + "=1 but " + msg)
		}
		t.Skip(msg)
	}
	return dir
}

// hasCPUFlag reads /proc/cpuinfo (not CPUID, which the code under test
// uses) for a flag.
func hasCPUFlag(flag string) bool {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "flags") {
			for _, f := range strings.Fields(l) {
				if f == flag {
					return true
				}
			}
			return false
		}
	}
	return false
}

// eadrRegions says whether there are NVDIMM regions and every one reports
// its persistence domain as the CPU cache (eADR), read from sysfs by name,
// not through the block device as the code under test does.
func eadrRegions() bool {
	ds, _ := filepath.Glob("/sys/bus/nd/devices/region*/persistence_domain")
	for _, d := range ds {
		b, err := os.ReadFile(d)
		if err != nil || strings.TrimSpace(string(b)) != "cpu_cache" {
			return false
		}
	}
	return len(ds) > 0
}

// TestDAX: on a DAX file system a writer gets a MAP_SYNC mapping and
// persists with cache-line flushes (the best instruction the CPU has), or
// with a fence alone where the platform has eADR, and a reader of the
// same file reports the writer's mode.
func TestDAX(t *testing.T) {
	dir := requireDAX(t)
	path := filepath.Join(dir, "f")
	m, err := pmem.Create(path, 1<<20, pmem.Options{Reserve: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("writer: %s; flush instruction %s", m.Describe(), pmem.FlushInstruction())
	wantMode := pmem.PersistFlush
	if eadrRegions() { // make test-pmem-eadr: a QEMU NVDIMM with nvdimm-persistence=cpu
		wantMode = pmem.PersistFence
	}
	if m.Mode() != wantMode {
		t.Fatalf("writer on DAX: mode %v (%s), want %v", m.Mode(), m.Describe(), wantMode)
	}
	if !strings.Contains(m.Describe(), "MAP_SYNC") {
		t.Fatalf("writer on DAX: %q does not say MAP_SYNC", m.Describe())
	}
	want := "clflush"
	switch {
	case hasCPUFlag("clwb"):
		want = "clwb"
	case hasCPUFlag("clflushopt"):
		want = "clflushopt"
	}
	if got := pmem.FlushInstruction(); got != want {
		t.Errorf("flush instruction %s, /proc/cpuinfo says %s", got, want)
	}
	b := m.Bytes()
	for _, r := range [][2]int{{0, 1}, {63, 2}, {4095, 2}, {100, 1 << 15}, {0, 1 << 20}} {
		for i := r[0]; i < r[0]+r[1]; i++ {
			b[i] = byte(i*7 + r[1])
		}
		if err := m.Persist(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	pmem.Copy(b[1000:], make([]byte, 8192))
	pmem.Fence()
	if err := m.Allocate(1<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	copy(m.Bytes()[(1<<20)+5:], "grown")
	if err := m.Persist(1<<20, 64); err != nil {
		t.Fatal(err)
	}
	wmode, wdesc := m.Mode(), m.Describe()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := pmem.Open(path, pmem.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Mode() != wmode || r.Describe() != wdesc {
		t.Errorf("reader reports %v (%s), the writer had %v (%s)", r.Mode(), r.Describe(), wmode, wdesc)
	}
	if got := string(r.Bytes()[(1<<20)+5 : (1<<20)+10]); got != "grown" {
		t.Errorf("reopened: %q", got)
	}
}
