//go:build linux

package netlab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as a tiny server run inside a host: with
// NETLAB_ECHO=ADDR it accepts connections on ADDR and answers each with
// one line; with NETLAB_DIAL=ADDR it connects, reads that line and
// prints it.
func TestMain(m *testing.M) {
	if a := os.Getenv("NETLAB_ECHO"); a != "" {
		l, err := net.Listen("tcp", a)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for {
			c, err := l.Accept()
			if err != nil {
				os.Exit(1)
			}
			fmt.Fprintf(c, "hello from %s\n", a)
			c.Close()
		}
	}
	if a := os.Getenv("NETLAB_DIAL"); a != "" {
		c, err := net.DialTimeout("tcp", a, 500*time.Millisecond)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(3)
		}
		c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Println("read:", err)
			os.Exit(3)
		}
		fmt.Print(line)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// reach says whether a dial from host from (or the hub, -1) to addr gets
// the echo server's line.
func reach(t *testing.T, l *Lab, from int, addr string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	argv := []string{os.Args[0]}
	if from >= 0 {
		argv = append(l.Wrap(from), argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "NETLAB_DIAL="+addr)
	out, err := cmd.CombinedOutput()
	if err == nil && strings.HasPrefix(string(out), "hello from "+addr) {
		return true
	}
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 3 {
		return false
	}
	t.Fatalf("dial %s from %d: %v: %s", addr, from, err, out)
	return false
}

// TestLabIsolateHeal: hosts reach one another and the hub; an isolated
// host reaches no other host (and none reaches it) while the hub still
// reaches it; after Heal all is reachable again.
func TestLabIsolateHeal(t *testing.T) {
	if !Reexec(t, 2*time.Minute) {
		return
	}
	l, err := New(3)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var servers []*exec.Cmd
	defer func() {
		for _, s := range servers {
			s.Process.Kill()
			s.Wait()
		}
	}()
	addr := func(i int) string { return net.JoinHostPort(l.Addr(i), "7000") }
	for i := range 3 {
		argv := append(l.Wrap(i), os.Args[0])
		s := exec.Command(argv[0], argv[1:]...)
		s.Env = append(os.Environ(), "NETLAB_ECHO="+addr(i))
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
	}
	// The servers need a moment to listen: wait until the hub reaches
	// each (bounded).
	for i := range 3 {
		deadline := time.Now().Add(5 * time.Second)
		for !reach(t, l, -1, addr(i)) {
			if time.Now().After(deadline) {
				t.Fatalf("host %d's server never answered the hub", i)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	check := func(state string, want func(from, to int) bool) {
		t.Helper()
		for from := -1; from < 3; from++ {
			for to := range 3 {
				if from == to {
					continue
				}
				if got := reach(t, l, from, addr(to)); got != want(from, to) {
					t.Errorf("%s: %d reaches %d: %v, want %v", state, from, to, got, want(from, to))
				}
			}
		}
	}
	check("before", func(int, int) bool { return true })
	if err := l.Isolate(1); err != nil {
		t.Fatal(err)
	}
	check("host 1 isolated", func(from, to int) bool { return from == -1 || (from != 1 && to != 1) })
	if err := l.Heal(); err != nil {
		t.Fatal(err)
	}
	check("healed", func(int, int) bool { return true })
}
