//go:build linux

// Package netlab gives a failure test a small network of its own: a test
// re-runs itself in a new network namespace (the hub), and in it each
// host is another namespace joined to the hub's bridge by a veth pair,
// with its own address. Processes run in a host's namespace through
// nsenter (Wrap). A host can be cut off from the other hosts while the
// hub (the test and its clients) still reaches it, and healed again; the
// cut is an nftables rule on the bridge, so established connections stall
// as on a real partition rather than being reset.
//
// Everything lives in namespaces the test made: when the re-run test
// process exits, its namespaces, bridge, rules and the hosts' holder
// processes go with it. It needs root, ip (iproute2), nft (nftables) and
// nsenter (util-linux); without them Reexec skips with a message naming
// what is missing.
package netlab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// envChild marks the re-run test process, which runs inside the hub.
const envChild = "RPSTREAM_NETLAB_CHILD"

// Subnet is the hub's /24: the hub is .1, host i is .(11+i).
const Subnet = "10.213.7."

// InHub reports whether this process is the re-run test inside the hub.
func InHub() bool { return os.Getenv(envChild) == "1" }

// Reexec runs the calling test again in a new network namespace and
// reports its result as this test's: it returns true in the re-run
// process (the test goes on there) and false in the original one, which
// then has nothing left to do. env is added to the re-run process's
// environment. timeout bounds the re-run.
func Reexec(t *testing.T, timeout time.Duration, env ...string) bool {
	t.Helper()
	if InHub() {
		return true
	}
	if err := Available(); err != nil {
		t.Skip(err)
	}
	args := []string{"-test.run", "^" + t.Name() + "$", "-test.v", "-test.count", "1",
		"-test.timeout", timeout.String()}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), envChild+"=1"), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	skipped := false
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "--- SKIP: "+t.Name()) {
			skipped = true
		}
		t.Log("hub| " + line)
	}
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("cannot create a network namespace: %v", err)
	}
	if err != nil {
		t.Fatalf("the test in its network namespace failed: %v", err)
	}
	if skipped {
		t.Skip("skipped in its network namespace (see above)")
	}
	return false
}

// Available says what this machine lacks to build a lab, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("netlab: needs root to create network namespaces")
	}
	for _, tool := range []struct{ name, pkg string }{{"ip", "iproute2"}, {"nft", "nftables"}, {"nsenter", "util-linux"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			return fmt.Errorf("netlab: %s not found (Debian package %s; scripts/deps.sh installs it)", tool.name, tool.pkg)
		}
	}
	return nil
}

// Lab is a hub with hosts. Its methods may be called from several
// goroutines.
type Lab struct {
	mu      sync.Mutex
	holders []*exec.Cmd // one per host: the process whose namespace it is
	cut     map[int]bool
}

// New builds a hub with n hosts; it must run inside the hub (after
// Reexec returned true). Close removes the hosts.
func New(n int) (*Lab, error) {
	if !InHub() {
		return nil, errors.New("netlab: New outside the hub (call Reexec first)")
	}
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("netlab: %d hosts: want 1 to 200", n)
	}
	l := &Lab{cut: map[int]bool{}}
	if err := run("ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	if err := run("ip", "link", "add", "br0", "type", "bridge"); err != nil {
		return nil, err
	}
	if err := run("ip", "addr", "add", Subnet+"1/24", "dev", "br0"); err != nil {
		return nil, err
	}
	if err := run("ip", "link", "set", "br0", "up"); err != nil {
		return nil, err
	}
	for i := range n {
		if err := l.addHost(i); err != nil {
			l.Close()
			return nil, err
		}
	}
	if err := l.rules(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// addHost makes host i: a holder process in a new namespace, a veth pair
// from the bridge into it, its address, its loopback.
func (l *Lab) addHost(i int) error {
	holder := exec.Command("sleep", "3600")
	holder.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := holder.Start(); err != nil {
		return fmt.Errorf("netlab: host %d: %w", i, err)
	}
	l.holders = append(l.holders, holder)
	pid := strconv.Itoa(holder.Process.Pid)
	veth := vethName(i)
	steps := [][]string{
		{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pid},
		{"ip", "link", "set", veth, "master", "br0"},
		{"ip", "link", "set", veth, "up"},
		{"nsenter", "-t", pid, "-n", "ip", "link", "set", "lo", "up"},
		{"nsenter", "-t", pid, "-n", "ip", "addr", "add", l.Addr(i) + "/24", "dev", "eth0"},
		{"nsenter", "-t", pid, "-n", "ip", "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return fmt.Errorf("netlab: host %d: %w", i, err)
		}
	}
	return nil
}

func vethName(i int) string { return "vh" + strconv.Itoa(i) }

// Addr is host i's address.
func (l *Lab) Addr(i int) string { return Subnet + strconv.Itoa(11+i) }

// Hosts are every host's address, in order.
func (l *Lab) Hosts() []string {
	out := make([]string, len(l.holders))
	for i := range out {
		out[i] = l.Addr(i)
	}
	return out
}

// Wrap is the command prefix that runs a program in host i's namespace.
func (l *Lab) Wrap(i int) []string {
	return []string{"nsenter", "-t", strconv.Itoa(l.holders[i].Process.Pid), "-n", "--"}
}

// Isolate cuts host i off from every other host (both ways); the hub
// still reaches it.
func (l *Lab) Isolate(i int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i < 0 || i >= len(l.holders) {
		return fmt.Errorf("netlab: no host %d", i)
	}
	l.cut[i] = true
	return l.rulesLocked()
}

// Heal removes every cut.
func (l *Lab) Heal() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.cut)
	return l.rulesLocked()
}

func (l *Lab) rules() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rulesLocked()
}

// rulesLocked replaces the bridge's filter with one that drops frames
// between a cut host and any other host. Frames to and from the hub's own
// address are not forwarded, so they never meet these rules.
func (l *Lab) rulesLocked() error {
	var b strings.Builder
	b.WriteString("table bridge netlab\ndelete table bridge netlab\n")
	b.WriteString("table bridge netlab {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n")
	for i := range l.holders {
		if !l.cut[i] {
			continue
		}
		fmt.Fprintf(&b, "  iifname %q drop\n  oifname %q drop\n", vethName(i), vethName(i))
	}
	b.WriteString(" }\n}\n")
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netlab: nft: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// Close ends every host's holder process, and so its namespace once the
// processes run in it have ended.
func (l *Lab) Close() {
	for _, h := range l.holders {
		h.Process.Kill()
		h.Wait()
	}
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
