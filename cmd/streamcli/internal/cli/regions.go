package cli

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"sort"

	"github.com/rpstream/rpstream/local"
)

// readRegions describes the live regions of the stream file at path from
// its region headers, as Stream.Regions would.
//
// It exists because (*local.Stream).Regions deadlocks on a read-only
// stream: it holds the stream's mutex while calling Committed, which on a
// reader rescans the file under the same mutex. ls must not take the
// writer lock (that would make a concurrent append fail), so until local
// is fixed ls reads the headers itself, following the on-media format of
// package local (version 1, whose constants never change). Replace this by
// s.Regions() once local.Stream.Regions works for readers.
func readRegions(path string, regionSize int, streamID, committed uint64) ([]local.RegionInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	nslots := int((fi.Size() - local.SuperblockSize) / int64(regionSize))
	var out []local.RegionInfo
	var seals []uint64
	hdr := make([]byte, local.RegionHeaderSize)
	for k := 0; k < nslots; k++ {
		base := local.SuperblockSize + int64(k)*int64(regionSize)
		if _, err := f.ReadAt(hdr, base); err != nil {
			return nil, err
		}
		if string(hdr[:8]) != "rpregion" || le.Uint32(hdr[60:]) != crc32.Checksum(hdr[:60], castagnoli) ||
			le.Uint64(hdr[24:]) != streamID || le.Uint64(hdr[8:]) == 0 {
			continue // a free slot
		}
		out = append(out, local.RegionInfo{Seq: le.Uint64(hdr[8:]), Slot: k, Offset: int(base), First: le.Uint64(hdr[16:])})
		seals = append(seals, le.Uint64(hdr[72:]))
	}
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return out[idx[a]].Seq < out[idx[b]].Seq })
	sorted := make([]local.RegionInfo, 0, len(out))
	for n, i := range idx {
		r := out[i]
		last := n == len(idx)-1
		if !last {
			r.Count = out[idx[n+1]].First - r.First
		} else if committed > r.First {
			r.Count = committed - r.First
		}
		if w := seals[i]; w != 0 {
			r.Sealed = true
			r.Used = int(uint32(w))
		} else {
			r.Used, err = usedBytes(f, r.Offset, regionSize, r.Count)
			if err != nil {
				return nil, err
			}
		}
		sorted = append(sorted, r)
	}
	return sorted, nil
}

// usedBytes walks count entries of the region at off and returns the end
// of the last, header included.
func usedBytes(f *os.File, off, regionSize int, count uint64) (int, error) {
	rb := make([]byte, regionSize)
	if _, err := f.ReadAt(rb, int64(off)); err != nil && err != io.EOF {
		return 0, err
	}
	used := local.RegionHeaderSize
	for i := uint64(0); i < count && used+local.EntryHeaderSize <= len(rb); i++ {
		n := int(binary.LittleEndian.Uint32(rb[used:]))
		used += local.EntryHeaderSize + (n+local.EntryAlign-1)&^(local.EntryAlign-1)
	}
	return min(used, regionSize), nil
}
