//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
)

// hostProcs are the members of a cluster given by address: processes of
// this machine, found by the TCP port they listen on (/proc/net/tcp and
// the sockets among each process's descriptors), killed by pid, and
// started again from what /proc said of them before the kill (program,
// arguments, environment, working directory; standard output and error
// appended to the files they were, if files), in a session of their own
// so that they outlive this process. Linux only.
type hostProcs struct {
	wait time.Duration
	mu   sync.Mutex
	// specs are the killed processes, by client address, until restart.
	specs map[string]*procSpec
}

func newHostProcs(wait time.Duration) *hostProcs {
	return &hostProcs{wait: wait, specs: map[string]*procSpec{}}
}

// procSpec is how a process was started.
type procSpec struct {
	pid            int
	exe            string
	args, env      []string
	dir            string
	stdout, stderr string // files, or "" for /dev/null
}

func (h *hostProcs) kill(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	pid, err := pidListening(port)
	if err != nil {
		return 0, fmt.Errorf("the process serving %s: %w", addr, err)
	}
	spec, err := readSpec(pid)
	if err != nil {
		return 0, err
	}
	h.mu.Lock()
	h.specs[addr] = spec
	h.mu.Unlock()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return 0, fmt.Errorf("kill %d: %w", pid, err)
	}
	// Not this process's child: wait until it is gone or a zombie.
	deadline := time.Now().Add(h.wait)
	for !exited(pid) {
		if time.Now().After(deadline) {
			return pid, fmt.Errorf("pid %d still runs %v after SIGKILL", pid, h.wait)
		}
		time.Sleep(time.Millisecond)
	}
	return pid, nil
}

func (h *hostProcs) restart(ctx context.Context, addr string) (int, error) {
	h.mu.Lock()
	spec := h.specs[addr]
	delete(h.specs, addr)
	h.mu.Unlock()
	if spec == nil {
		return 0, fmt.Errorf("no process of %s was killed", addr)
	}
	cmd := exec.Command(spec.exe, spec.args[1:]...)
	cmd.Args[0] = spec.args[0]
	cmd.Env, cmd.Dir = spec.env, spec.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var files []*os.File
	open := func(path string) (*os.File, error) {
		if path == "" {
			return os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		}
		return os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	}
	stdout, err := open(spec.stdout)
	if err != nil {
		return 0, err
	}
	files = append(files, stdout)
	stderr, err := open(spec.stderr)
	if err != nil {
		stdout.Close()
		return 0, err
	}
	files = append(files, stderr)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Start()
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		return 0, fmt.Errorf("start %s again: %w", spec.exe, err)
	}
	// Reaped if it exits while this process runs; it outlives it
	// otherwise.
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	if err := waitAnswers(ctx, addr, h.wait); err != nil {
		// Say whether it died, and what it last wrote.
		select {
		case werr := <-waited:
			err = fmt.Errorf("%w; the restarted process (pid %d) exited: %v", err, cmd.Process.Pid, werr)
		default:
			err = fmt.Errorf("%w; the restarted process (pid %d) still runs", err, cmd.Process.Pid)
		}
		if tail := logTail(spec.stderr, 10); tail != "" {
			err = fmt.Errorf("%w; the last lines of %s:\n%s", err, spec.stderr, tail)
		}
		return cmd.Process.Pid, err
	}
	return cmd.Process.Pid, nil
}

// logTail is the last n lines of the file at path, or "".
func logTail(path string, n int) string {
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitAnswers polls the node at addr until it is registered in its
// catalog (or answers Members, without one), for at most wait.
func waitAnswers(ctx context.Context, addr string, wait time.Duration) error {
	cl, err := client.Dial(addr, client.Options{MaxAttempts: 1})
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var last error
	for {
		actx, acancel := context.WithTimeout(ctx, time.Second)
		var cs *api.ClusterStatusResponse
		cs, last = cl.API().ClusterStatus(actx, &api.ClusterStatusRequest{})
		acancel()
		switch {
		case last == nil && cs.Registered:
			return nil
		case status.Code(last) == codes.FailedPrecondition:
			return nil // a node running alone, without a catalog: it answers
		case last == nil:
			last = errors.New("not registered in the catalog yet")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer within %v of its restart: %v", addr, wait, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// exited says whether pid is gone or a zombie.
func exited(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) STATE ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// pidListening finds the process listening on TCP port (decimal).
func pidListening(port string) (int, error) {
	p, err := strconv.Atoi(port)
	if err != nil {
		return 0, err
	}
	want := fmt.Sprintf(":%04X", p)
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local_address rem_address st ... inode
			fs := strings.Fields(sc.Text())
			if len(fs) >= 10 && strings.HasSuffix(fs[1], want) && fs[3] == "0A" {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
		f.Close()
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("nothing on this machine listens on port %d", p)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join("/proc", d.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join("/proc", d.Name(), "fd", fd.Name())); err == nil && inodes[l] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no process of this machine visible here holds the socket listening on port %d", p)
}

// readSpec reads how pid was started.
func readSpec(pid int) (*procSpec, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	s := &procSpec{pid: pid}
	var err error
	if s.exe, err = os.Readlink(dir + "/exe"); err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	s.exe = strings.TrimSuffix(s.exe, " (deleted)")
	split := func(name string) ([]string, error) {
		b, err := os.ReadFile(dir + "/" + name)
		if err != nil {
			return nil, fmt.Errorf("pid %d: %w", pid, err)
		}
		return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"), nil
	}
	if s.args, err = split("cmdline"); err != nil {
		return nil, err
	}
	if s.env, err = split("environ"); err != nil {
		return nil, err
	}
	if s.dir, err = os.Readlink(dir + "/cwd"); err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	output := func(fd string) string {
		l, err := os.Readlink(dir + "/fd/" + fd)
		if err != nil {
			return ""
		}
		if st, err := os.Stat(l); err == nil && st.Mode().IsRegular() {
			return l
		}
		return ""
	}
	s.stdout, s.stderr = output("1"), output("2")
	return s, nil
}
