package remote

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/rpstream/rpstream/internal/scenario"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/remote/remotepb"
)

// TestTruncationStories runs testdata/truncation/stories.txt: where a
// replica is cut back to when a writer of a later epoch connects
// (commonEnd), including Kafka's truncation cases (KIP-101, KIP-279) and
// Raft's figure 8, as data. Command:
//
//	cut replica=SEQ:EPOCH:END,... writer=EPOCH:FIRST-LAST:LASTEND,...
func TestTruncationStories(t *testing.T) {
	scenario.Run(t, "testdata/truncation/stories.txt", *rewrite, func(cmd string) string {
		f := strings.Fields(cmd)
		if len(f) != 3 || f[0] != "cut" {
			t.Fatalf("%q: want cut replica=... writer=...", cmd)
		}
		num := func(s string) uint64 {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatalf("%q: %v", cmd, err)
			}
			return n
		}
		var sc local.ScanResult
		sc.RegionSize = 4096
		for _, r := range strings.Split(strings.TrimPrefix(f[1], "replica="), ",") {
			p := strings.Split(r, ":")
			sc.Regions = append(sc.Regions, local.ScanRegion{Seq: num(p[0]), Epoch: num(p[1]), End: int(num(p[2]))})
		}
		var runs []*remotepb.EpochRun
		for _, r := range strings.Split(strings.TrimPrefix(f[2], "writer="), ",") {
			p := strings.Split(r, ":")
			a, b, _ := strings.Cut(p[1], "-")
			runs = append(runs, &remotepb.EpochRun{Epoch: num(p[0]), FirstSeq: num(a), LastSeq: num(b), LastEnd: num(p[2])})
		}
		k, off, ok := commonEnd(sc, runs)
		if !ok {
			return "nothing in common"
		}
		r := sc.Regions[k]
		if off == r.End {
			return fmt.Sprintf("keep region %d to %d (all of it)", r.Seq, off)
		}
		return fmt.Sprintf("keep region %d to %d (cut from %d)", r.Seq, off, r.End)
	})
}
