package node

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem/simpmem"
)

// Crash images of atomic batches, in the manner of local's crash harness
// (local/crash_test.go): batches of many entries are stored by the
// node's append path (store: slots and a record) on a simulated
// persistence domain; at every persist and between operations a crash
// image keeps a random part of what was not flushed. Each image is
// recovered (local.OpenOn) and read as a client reads (entryReader):
//   - every batch shown is whole: all its entries, in order, at
//     consecutive positions, byte-exact;
//   - every batch acknowledged (synced) before the crash is shown;
//   - no entry is shown that was not appended at its position;
//   - appends go on after recovery, and a batch appended then is whole.
//
// RPSTREAM_CRASH_SEED=N reruns one seed.

const batchCrashRegion = 16 << 10

// batchImage is a crash image and what was acknowledged when it was taken.
type batchImage struct {
	img    []byte
	label  string
	synced map[int]bool // batches synced before the crash
}

func TestBatchCrashImages(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6}
	if s := os.Getenv("RPSTREAM_CRASH_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seeds = []uint64{n}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { batchCrashSeed(t, seed) })
	}
}

// batchEntry is entry j of batch b, of k entries.
func batchEntry(rng *rand.Rand, b, j, k int) []byte {
	pad := make([]byte, rng.IntN(300))
	for i := range pad {
		pad[i] = byte('a' + i%26)
	}
	return fmt.Appendf(nil, "%d/%d/%d/%s", b, j, k, pad)
}

func batchCrashSeed(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	mem := simpmem.New(8 << 20)
	defer mem.Release()
	opts := local.Options{RegionSize: batchCrashRegion}
	ls, err := local.CreateOn(mem, opts)
	if err != nil {
		t.Fatal(err)
	}
	st := bareStream(ls, time.Now)
	contents := map[string][]byte{} // "batch/entry" → data
	synced := map[int]bool{}
	var pending []int // batches stored, not synced
	var images []batchImage
	const maxImages = 120
	crash := func(label string) {
		if len(images) >= maxImages {
			return
		}
		acked := make(map[int]bool, len(synced))
		for b := range synced {
			acked[b] = true
		}
		keep := []float64{0, 0.5, 1, rng.Float64()}[rng.IntN(4)]
		images = append(images, batchImage{img: mem.Crash(rng, simpmem.Granularity(rng.IntN(2)), keep), label: label, synced: acked})
	}
	op := 0
	mem.BeforePersist = func(*simpmem.Memory) {
		if rng.IntN(3) == 0 {
			crash(fmt.Sprintf("at a persist in op %d", op))
		}
	}
	for b := 0; op < 150; op++ {
		if rng.IntN(4) == 0 {
			crash(fmt.Sprintf("between ops, before op %d", op))
		}
		if rng.IntN(5) == 0 && len(pending) > 0 {
			if err := ls.Sync(ls.Committed() - 1); err != nil {
				t.Fatal(err)
			}
			for _, p := range pending {
				synced[p] = true
			}
			pending = pending[:0]
			continue
		}
		k := 1 + rng.IntN(40)
		entries := make([][]byte, k)
		for j := range entries {
			entries[j] = batchEntry(rng, b, j, k)
			contents[fmt.Sprintf("%d/%d", b, j)] = entries[j]
		}
		if _, err := storeIn(st, nil, false, true, 1, uint64(b)*100, entries, nil); err != nil {
			t.Fatal(err)
		}
		pending = append(pending, b)
		b++
	}
	mem.BeforePersist = nil
	ls.Close()
	if len(images) < 50 {
		t.Fatalf("only %d crash images", len(images))
	}
	for _, im := range images {
		if err := checkBatchImage(im, contents, opts); err != nil {
			t.Fatal(err)
		}
	}
}

// checkBatchImage recovers one image and checks it (see above).
func checkBatchImage(im batchImage, contents map[string][]byte, opts local.Options) error {
	mem := simpmem.FromImage(im.img, len(im.img)+8*batchCrashRegion)
	defer mem.Release()
	ls, err := local.OpenOn(mem, opts)
	if err != nil {
		return fmt.Errorf("%s: recovery: %w", im.label, err)
	}
	defer ls.Close()
	st := bareStream(ls, time.Now)
	shown, err := readBatches(st)
	if err != nil {
		return fmt.Errorf("%s: %w", im.label, err)
	}
	for b, es := range shown {
		for _, e := range es {
			if want := contents[fmt.Sprintf("%d/%d", b, e.j)]; !bytes.Equal(e.data, want) {
				return fmt.Errorf("%s: batch %d entry %d recovered with bytes never appended", im.label, b, e.j)
			}
		}
	}
	for b := range im.synced {
		if _, ok := shown[b]; !ok {
			return fmt.Errorf("%s: acknowledged batch %d lost", im.label, b)
		}
	}
	// Appends go on: a batch after recovery is whole.
	entries := [][]byte{[]byte("-1/0/2/"), []byte("-1/1/2/")}
	if _, err := storeIn(st, nil, false, false, 0, 0, entries, nil); err != nil {
		return fmt.Errorf("%s: a batch after recovery: %w", im.label, err)
	}
	shown2, err := readBatches(st)
	if err != nil || len(shown2[-1]) != 2 || len(shown2) != len(shown)+1 {
		return fmt.Errorf("%s: after a batch appended on recovery: %d batches (was %d), %v", im.label, len(shown2), len(shown), err)
	}
	return nil
}

type shownEntry struct {
	j    int
	data []byte
}

// readBatches reads every entry of st as a client does and groups them
// by batch, checking that each batch shown is whole, in order, at
// consecutive positions.
func readBatches(st *stream) (map[int][]shownEntry, error) {
	end := st.ls.Committed()
	r := newEntryReader(st.ls.Iterator(0), 0, true)
	out := map[int][]shownEntry{}
	var firstPos = map[int]uint64{}
	for {
		es, err := r.read(end, maxReadEntries, maxReadBytes)
		if err != nil {
			return nil, err
		}
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			f := strings.SplitN(string(e.Data), "/", 4)
			if len(f) != 4 {
				return nil, fmt.Errorf("entry %d: %q is no batch entry", e.Position, e.Data)
			}
			b, _ := strconv.Atoi(f[0])
			j, _ := strconv.Atoi(f[1])
			if j != len(out[b]) {
				return nil, fmt.Errorf("batch %d: entry %d shown after %d of its entries", b, j, len(out[b]))
			}
			if j == 0 {
				firstPos[b] = e.Position
			} else if e.Position != firstPos[b]+uint64(j) {
				return nil, fmt.Errorf("batch %d: entry %d at %d, its first at %d", b, j, e.Position, firstPos[b])
			}
			out[b] = append(out[b], shownEntry{j: j, data: e.Data})
		}
	}
	for b, es := range out {
		k, _ := strconv.Atoi(strings.SplitN(string(es[0].data), "/", 4)[2])
		if len(es) != k {
			return nil, fmt.Errorf("batch %d: %d of its %d entries shown", b, len(es), k)
		}
	}
	return out, nil
}
