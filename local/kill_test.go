package local_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rpstream/rpstream/internal/testutil"
	"github.com/rpstream/rpstream/local"
)

// The process kill test: a child process appends in a loop from several
// goroutines (through Reserve/Publish/Sync, so the content can depend on
// the index) and prints the index of every acknowledged append; the parent
// kills it with SIGKILL at a random moment, reopens the stream (recovery),
// checks it, and starts the next child on the same stream.

const killEnv = "RPSTREAM_KILL_CHILD"

// killFill writes the content of entry i, of len(b) bytes, into b: known
// from the index and length alone, so any process can check any entry.
func killFill(i uint64, b []byte) {
	x := i*0x9E3779B97F4A7C15 + uint64(len(b))
	for k := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[k] = byte(x)
	}
}

func TestKillChild(t *testing.T) {
	path := os.Getenv(killEnv)
	if path == "" {
		t.Skip("helper process of TestKill9")
	}
	s, err := local.Open(path, local.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(g)))
			for k := 0; k < 1_000_000; k++ { // bounded; the parent kills it long before
				n := rng.IntN(600)
				if rng.IntN(200) == 0 {
					n = local.MaxEntrySize(s.RegionSize()) - rng.IntN(100)
				}
				r, err := s.Reserve(n)
				if err != nil {
					fmt.Fprintln(os.Stderr, "child reserve:", err)
					os.Exit(4)
				}
				killFill(r.Index, r.Bytes())
				i, err := r.Publish()
				if err == nil {
					err = s.Sync(i)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(5)
				}
				mu.Lock()
				fmt.Fprintln(out, i)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	os.Exit(0)
}

// firstAckTimeout bounds the wait for a child's first acknowledgement.
const firstAckTimeout = time.Minute

func TestKill9(t *testing.T) {
	kills := 30 // per directory: 60 in all, one disk file and one tmpfs file
	if testing.Short() {
		kills = 8
	}
	for _, dir := range []string{t.TempDir(), shmDir(t)} {
		path := filepath.Join(dir, "killed")
		s, err := local.Create(path, local.Options{RegionSize: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		seed := rand.Uint64()
		rng := rand.New(rand.NewPCG(seed, 9))
		t.Logf("%s: seed %d", dir, seed)
		var acked uint64 // entries below this were acknowledged by some child
		for k := 0; k < kills; k++ {
			cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), killEnv+"="+path)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr testutil.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Read acknowledgements until the kill.
			acks := make(chan uint64, 1)
			first := make(chan struct{})
			go func() {
				var max uint64
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if v, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil && v+1 > max {
						if max == 0 {
							close(first)
						}
						max = v + 1
					}
				}
				acks <- max
			}()
			// One kill in four comes at any moment from the start (during
			// the child's open and recovery, too); the others come a while
			// after its first acknowledgement, so that the test proves
			// something where starting a process is slow (under QEMU's
			// TCG a child took longer than the whole window to start, and
			// 60 kills acknowledged nothing).
			if rng.IntN(4) != 0 {
				select {
				case <-first:
				case <-time.After(firstAckTimeout):
					syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
					cmd.Wait()
					t.Fatalf("kill %d: the child acknowledged nothing within %v: %s", k, firstAckTimeout, stderr.String())
				}
			}
			time.Sleep(time.Duration(2+rng.IntN(40)) * time.Millisecond)
			if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			err = cmd.Wait()
			if max := <-acks; max > acked {
				acked = max
			}
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
				t.Fatalf("kill %d: child ended by itself (%v): %s", k, err, stderr.String())
			}
			// Recover and check: every acknowledged entry, in order, with
			// the content its index gives; nothing else.
			s, err := local.Open(path, local.Options{})
			if err != nil {
				t.Fatalf("kill %d: reopen: %v", k, err)
			}
			n := uint64(0)
			it := s.Iterator(0)
			for it.Next() {
				e := it.Entry()
				want := make([]byte, len(e.Data))
				killFill(e.Index, want)
				if string(want) != string(e.Data) || e.Index != n {
					t.Fatalf("kill %d: entry %d has content that was never appended", k, e.Index)
				}
				n++
			}
			if it.Err() != nil {
				t.Fatalf("kill %d: %v", k, it.Err())
			}
			if n < acked {
				t.Fatalf("kill %d: %d entries after recovery, but %d were acknowledged", k, n, acked)
			}
			s.Close()
		}
		t.Logf("%s: %d kills, %d entries acknowledged", dir, kills, acked)
		if acked == 0 {
			t.Fatalf("%s: %d kills and no entry acknowledged: nothing was tested", dir, kills)
		}
	}
}

func shmDir(t *testing.T) string {
	d, err := os.MkdirTemp("/dev/shm", "localtest")
	if err != nil {
		t.Skip("no /dev/shm:", err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
