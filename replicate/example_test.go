package replicate_test

import (
	"fmt"

	"github.com/rpstream/rpstream/replicate"
)

// The shape of the I/O loop: feed inputs, take a Ready, carry it out, and
// report what completed. Here every replica answers at once; the real
// loop posts rdma operations and reports their completions as they come.
func Example() {
	r, err := replicate.New(replicate.DefaultConfig(), 7) // quorum, epoch 7
	if err != nil {
		panic(err)
	}
	r.AddReplica("node-b", false)
	r.AddReplica("node-c", false)
	r.NewRegion(replicate.RegionInfo{Seq: 1, Slot: 0, First: 0})

	// An append of one 24-byte entry, in the leader's mapping at 128.
	r.Append(replicate.Span{Seq: 1, Off: 128, Len: 24, End: 1})
	r.Persisted(1) // the local persist finished

	for round := 0; round < 5; round++ {
		rd := r.Ready()
		for _, c := range rd.Connects {
			// Dial, remote.Client.Grant(c.Epoch), read its headers.
			fmt.Println("connect", c.Replica, "epoch", c.Epoch)
			r.Connected(c.Replica, c.Gen, replicate.Pos{})
		}
		for _, a := range rd.Allocs {
			// remote.Client.Region(epoch, a.Slot); zero line 1; flush.
			fmt.Println("allocate", a.Replica, "slot", a.Slot)
			r.Allocated(a.Replica, a.Gen, a.Seq)
		}
		for _, o := range rd.Ops {
			switch o.Kind {
			case replicate.OpWrite: // conn.Write + conn.Flush(persistence)
				fmt.Printf("write %s [%d,%d)\n", o.Replica, o.Off, o.Off+o.Len)
				r.Flushed(o.Replica, o.Gen, o.End)
			case replicate.OpCommitWord: // conn.AtomicWrite + conn.Flush
				fmt.Printf("commit word %s %d\n", o.Replica, o.Value)
			}
		}
		if rd.CommitAdvanced {
			fmt.Println("acknowledge appends before", rd.Commit)
		}
		r.Tick() // from a ticker: commit words go out lazily
	}
	// Output:
	// connect node-b epoch 7
	// connect node-c epoch 7
	// allocate node-b slot 0
	// allocate node-c slot 0
	// write node-b [0,64)
	// write node-b [128,152)
	// write node-c [0,64)
	// write node-c [128,152)
	// acknowledge appends before 1
	// commit word node-b 152
	// commit word node-c 152
}
