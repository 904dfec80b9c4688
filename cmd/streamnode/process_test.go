package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/client"
)

// buildNode builds the streamnode binary into a temporary directory.
func buildNode(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "streamnode")
	gotool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gotool); err != nil {
		gotool = "go"
	}
	out, err := exec.Command(gotool, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// process is a running streamnode.
type process struct {
	cmd    *exec.Cmd
	addr   string // client address it serves
	exited chan struct{}
	logMu  sync.Mutex
	log    bytes.Buffer
}

// startProcess starts bin serving dir on a free loopback port, with the
// extra flags, and waits until it logs that it serves clients.
func startProcess(t *testing.T, bin, dir string, extra ...string) *process {
	t.Helper()
	p := &process{exited: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"--name", "n1", "--data", dir, "--client-addr", "127.0.0.1:0",
		"--peer-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--log-format", "json"}, extra...)...)
	p.cmd.Env = append(os.Environ(), "RPSTREAM_CONFIG=")
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// End the process by its PID if the test did not.
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.logMu.Lock()
			p.log.Write(sc.Bytes())
			p.log.WriteByte('\n')
			p.logMu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "serving clients" {
				addrc <- rec.Addr
			}
		}
		io.Copy(io.Discard, stderr)
		p.cmd.Wait()
		close(p.exited)
	}()
	select {
	case p.addr = <-addrc:
	case <-p.exited:
		t.Fatalf("streamnode exited before serving: %v\n%s", p.cmd.ProcessState, p.logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("streamnode did not serve within 30s\n%s", p.logs())
	}
	return p
}

func (p *process) logs() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// terminate sends SIGTERM to the process and checks it exits 0.
func (p *process) terminate(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("streamnode did not exit within 30s of SIGTERM\n%s", p.logs())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("streamnode exited %d after SIGTERM\n%s", code, p.logs())
	}
}

func TestProcessSigtermDrainsAndDataSurvives(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := buildNode(t)
	dir := t.TempDir()
	p := startProcess(t, bin, dir)
	c, err := client.Dial(p.addr, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Appenders run while SIGTERM arrives: every append answered with a
	// position must be there after a restart.
	var mu sync.Mutex
	acked := map[uint64]string{}
	enough := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				data := fmt.Sprintf("%d-%d", g, i)
				pos, err := c.Append(ctx, "s", []byte(data))
				if err != nil {
					if status.Code(err) != codes.Unavailable {
						t.Errorf("append: %v", err)
					}
					return
				}
				mu.Lock()
				acked[pos] = data
				if len(acked) >= 100 {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		})
	}
	<-enough
	p.terminate(t)
	wg.Wait()

	p = startProcess(t, bin, dir)
	c2, err := client.Dial(p.addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	st, err := c2.Status(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if st.Committed < uint64(len(acked)) {
		t.Fatalf("after restart %d entries, %d were acknowledged", st.Committed, len(acked))
	}
	have := map[uint64]string{}
	for from := uint64(0); from < st.Committed; {
		es, next, err := c2.Read(ctx, "s", from, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			have[e.Position] = string(e.Data)
		}
		from = next
	}
	for pos, data := range acked {
		if have[pos] != data {
			t.Fatalf("acknowledged entry %d %q lost (read %q)", pos, data, have[pos])
		}
	}
	p.terminate(t)
}

func TestProcessBadFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	bin := buildNode(t)
	cmd := exec.Command(bin, "--role", "leader")
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 || !bytes.Contains(out, []byte("role")) {
		t.Fatalf("bad --role: %v\n%s", err, out)
	}
}

// TestVersionProcess: --version prints the build, and a release version
// given to the linker.
func TestVersionProcess(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "streamnode")
	gotool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gotool); err != nil {
		gotool = "go"
	}
	out, err := exec.Command(gotool, "build", "-ldflags", "-X github.com/rpstream/rpstream/internal/buildinfo.Version=v9.8.7", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("--version: %v", err)
	}
	// The commit follows when the build recorded one (not with
	// GOFLAGS=-buildvcs=false, as on some machines, nor in a worktree).
	if want := "streamnode v9.8.7 "; !bytes.HasPrefix(out, []byte(want)) || !bytes.Contains(out, []byte(" "+runtime.Version()+" ")) {
		t.Fatalf("--version printed %q, want %q... and %s", out, want, runtime.Version())
	}
}
