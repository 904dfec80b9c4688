package raftlog

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/rpstream/rpstream/internal/testutil"
)

// The process kill test, after local/kill_test.go: a child process (this
// test binary again) runs a leader's Ready loop on a real log — batches of
// entries of all sizes, some larger than a region, a new term now and
// then, the commit index following, a snapshot every so often — and
// prints each Save it completes; the parent kills it with SIGKILL at a
// random moment, reopens the log, checks that every acknowledged Save is
// there, in order, with the content its index and term give, and starts
// the next child on the same log.

const killEnv = "RPSTREAM_RAFTLOG_KILL_DIR"

var killOpts = Options{RegionSize: 64 << 10, SnapshotCatchUp: 50}

// killEntry is the entry a child writes at index in term: its content
// follows from the two, so any process can check it.
func killEntry(index, term uint64, n int) *raftpb.Entry {
	return &raftpb.Entry{Index: new(index), Term: new(term), Type: new(raftpb.EntryNormal), Data: snapData(index^term<<40, n)}
}

func TestKillChild(t *testing.T) {
	dir := os.Getenv(killEnv)
	if dir == "" {
		t.Skip("helper process of TestKill9")
	}
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "child %s: %v\n", what, err)
		os.Exit(3)
	}
	l, err := Open(dir, killOpts)
	if err != nil {
		fail("open", err)
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "ready")
	out.Flush()
	h := l.HardState()
	term, commit := max(h.GetTerm(), 1), h.GetCommit()
	last, _ := l.LastIndex()
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 5))
	for k := 0; k < 1_000_000; k++ { // bounded; the parent kills it long before
		if rng.IntN(20) == 0 {
			term++ // elected again, in a new term
		}
		var batch []*raftpb.Entry
		for n := 1 + rng.IntN(8); n > 0; n-- {
			size := rng.IntN(300)
			if rng.IntN(10) == 0 {
				size = rng.IntN(l.maxEntry - 40)
			}
			last++
			batch = append(batch, killEntry(last, term, size))
		}
		commit += rng.Uint64N(last - commit + 1)
		if err := l.Save(hs(term, 1, commit), batch, nil); err != nil {
			fail("save", err)
		}
		fmt.Fprintf(out, "ack %d %d %d\n", last, term, commit)
		out.Flush()
		if rng.IntN(5) == 0 && commit > l.snapIndex {
			if err := l.CreateSnapshot(commit, testConf, snapData(commit, rng.IntN(20000))); err != nil {
				fail("snapshot", err)
			}
			fmt.Fprintf(out, "snap %d\n", commit)
			out.Flush()
		}
	}
	os.Exit(0)
}

// killAck is what a child acknowledged.
type killAck struct{ last, term, commit, snap uint64 }

func TestKill9(t *testing.T) {
	kills := 20
	if testing.Short() {
		kills = 6
	}
	dir := t.TempDir()
	seed := seeds(t, 1)[0] // the kill moments; the rest is up to the scheduler
	rng := rand.New(rand.NewPCG(seed, 9))
	t.Logf("seed %d", seed)
	var acked killAck
	var saves int
	var head uint64
	for k := 0; k < kills; k++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), killEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr testutil.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan struct{})
		acks := make(chan killAck, 1)
		go func() {
			a, n := acked, 0
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				switch {
				case len(f) == 1 && f[0] == "ready":
					close(ready)
				case len(f) == 4 && f[0] == "ack":
					fmt.Sscan(strings.Join(f[1:], " "), &a.last, &a.term, &a.commit)
					n++
				case len(f) == 2 && f[0] == "snap":
					fmt.Sscan(f[1], &a.snap)
				}
			}
			saves += n
			acks <- a
		}()
		select {
		case <-ready:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("kill %d: the child did not start: %s", k, stderr.String())
		}
		time.Sleep(time.Duration(rng.IntN(80)) * time.Millisecond)
		if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		acked = <-acks
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("kill %d: child ended by itself (%v): %s", k, err, stderr.String())
		}
		l, err := Open(dir, killOpts)
		if err != nil {
			t.Fatalf("kill %d: reopen: %v", k, err)
		}
		if err := checkKilled(l, acked); err != nil {
			t.Fatalf("kill %d: %v", k, err)
		}
		head = l.s.Head()
		l.Close()
	}
	if saves == 0 {
		t.Fatal("no child acknowledged a save")
	}
	t.Logf("%d kills, %d saves acknowledged, last index %d, snapshot %d, stream trimmed to record %d", kills, saves, acked.last, acked.snap, head)
}

// checkKilled checks a log reopened after a kill against what the
// children acknowledged.
func checkKilled(l *Log, a killAck) error {
	o, err := observe(l)
	if err != nil {
		return err
	}
	if err := o.invariants(); err != nil {
		return err
	}
	if o.hs.term < a.term || o.hs.commit < a.commit {
		return fmt.Errorf("hard state %+v, but term %d and commit %d were acknowledged", o.hs, a.term, a.commit)
	}
	if o.last < a.last {
		return fmt.Errorf("last index %d, but %d was acknowledged", o.last, a.last)
	}
	si := o.snap.GetMetadata().GetIndex()
	if si < a.snap {
		return fmt.Errorf("snapshot %d, but %d was acknowledged", si, a.snap)
	}
	if si > 0 && string(o.snap.GetData()) != string(snapData(si, len(o.snap.GetData()))) {
		return fmt.Errorf("snapshot %d holds data never written", si)
	}
	for _, e := range o.ents {
		want := killEntry(e.GetIndex(), e.GetTerm(), len(e.GetData()))
		if string(want.Data) != string(e.GetData()) {
			return fmt.Errorf("entry %d (term %d) holds data never written", e.GetIndex(), e.GetTerm())
		}
		if e.GetIndex() == a.last && e.GetTerm() != a.term {
			return fmt.Errorf("acknowledged entry %d has term %d, not %d", a.last, e.GetTerm(), a.term)
		}
	}
	return nil
}
