package replicate

import (
	"fmt"
	"sort"
)

// RegionHeaderSize is where entries start in a region (local/'s format):
// lines 0 and 1, the header and the commit and seal words. The header is
// replicated as the first bytes of a region's range.
const RegionHeaderSize = 128

// SealWordOffset is where the seal word lives in a region (local/'s
// format): count<<32 | end, once the region is complete.
const SealWordOffset = 72

// headerLine is the part of the header copied from the leader: line 0.
const headerLine = 64

// CommitWordOffset is where the commit word lives in a region (local/'s
// format): the end offset, within the region, of the entries the leader
// has committed, written with one 8-byte atomic write.
const CommitWordOffset = 64

// Pos is a byte position in the stream: offset Off within the region of
// sequence number Seq. Positions order by Seq, then Off.
type Pos struct {
	Seq uint64
	Off int
}

// Less reports whether p comes before q.
func (p Pos) Less(q Pos) bool {
	return p.Seq < q.Seq || (p.Seq == q.Seq && p.Off < q.Off)
}

func (p Pos) String() string { return fmt.Sprintf("%d/%d", p.Seq, p.Off) }

// boundary says that the entries before index End lie before offset Off.
type boundary struct {
	Off int
	End uint64
}

// region is the leader's record of one region: where it lives and where
// its entries end.
type region struct {
	seq   uint64
	slot  int
	first uint64     // index of the region's first entry
	tail  int        // end of the bytes appended to it
	bs    []boundary // one per Append, in order
}

// log is the leader's map of the stream from bytes to entry indexes, for
// the regions it still replicates. It holds no payload: the bytes are in
// the leader's mapping.
type log struct {
	regions   []*region // by seq, contiguous
	compacted int       // regions[:compacted] hold at most one boundary
}

// compactMin is how many boundaries a region must be able to drop before
// compact copies its slice: compaction stays amortised O(1) per append.
const compactMin = 256

// compact drops the boundaries before floor but the last one at or before
// it. Nothing at or after floor changes, and indexAt and posOf below it
// only become conservative (smaller), so floor must be at or before every
// position the Replicator still asks about exactly: every replica's durable
// position and the commit point's.
func (l *log) compact(floor Pos) {
	for k := l.compacted; k < len(l.regions); k++ {
		reg := l.regions[k]
		if reg.seq > floor.Seq {
			return
		}
		limit := reg.tail
		if reg.seq == floor.Seq {
			limit = floor.Off
		}
		i := sort.Search(len(reg.bs), func(i int) bool { return reg.bs[i].Off > limit }) - 1
		sealed := reg.seq < floor.Seq && k < len(l.regions)-1
		if i >= compactMin || (sealed && i > 0) {
			reg.bs = append(reg.bs[:0:0], reg.bs[i:]...)
		}
		if sealed && len(reg.bs) <= 1 && k == l.compacted {
			l.compacted++
		}
	}
}

func (l *log) last() *region {
	if len(l.regions) == 0 {
		return nil
	}
	return l.regions[len(l.regions)-1]
}

func (l *log) region(seq uint64) *region {
	if len(l.regions) == 0 || seq < l.regions[0].seq || seq > l.last().seq {
		return nil
	}
	return l.regions[seq-l.regions[0].seq]
}

// end is the position just after the last appended byte.
func (l *log) end() Pos {
	r := l.last()
	if r == nil {
		return Pos{}
	}
	return Pos{r.seq, r.tail}
}

// appended is the number of entries appended.
func (l *log) appended() uint64 {
	r := l.last()
	if r == nil {
		return 0
	}
	if len(r.bs) == 0 {
		return r.first
	}
	return r.bs[len(r.bs)-1].End
}

// indexAt is the number of entries wholly before p: the entries a replica
// holding every byte before p holds.
func (l *log) indexAt(p Pos) uint64 {
	r := l.region(p.Seq)
	if r == nil {
		if len(l.regions) > 0 && p.Seq > l.last().seq {
			return l.appended()
		}
		return 0
	}
	i := sort.Search(len(r.bs), func(i int) bool { return r.bs[i].Off > p.Off })
	if i == 0 {
		return r.first
	}
	return r.bs[i-1].End
}

// posOf is the position just after the last entry before index i that ends
// on an Append boundary: the largest position whose entries are exactly a
// prefix of the first i (a commit word must never cover an entry that is
// not committed).
func (l *log) posOf(i uint64) Pos {
	for k := len(l.regions) - 1; k >= 0; k-- {
		r := l.regions[k]
		if r.first > i {
			continue
		}
		j := sort.Search(len(r.bs), func(j int) bool { return r.bs[j].End > i })
		if j == 0 {
			return Pos{r.seq, RegionHeaderSize}
		}
		return Pos{r.seq, r.bs[j-1].Off}
	}
	return Pos{}
}

// first is the position replication of a stream starts from.
func (l *log) first() Pos {
	if len(l.regions) == 0 {
		return Pos{}
	}
	return Pos{l.regions[0].seq, 0}
}
