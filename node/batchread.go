package node

import (
	"fmt"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/local"
)

// entryReader reads the client's entries of a stream through an
// entryIterator (a led stream's or a copy's): it strips envelopes, skips
// epoch markers and batch slots, and shows a batch's entries only once it
// has read the batch's record, at the positions of its slots and record
// (batchenv.go). Readers thus never see part of a batch: a batch whose
// record is not committed shows none of its entries, and one whose record
// never made it (a crash, a failed append) leaves only skipped slots. Used
// by one goroutine at a time.
type entryReader struct {
	it   entryIterator
	from uint64 // entries before it are not shown (a read from inside a batch)
	env  bool   // the stream has envelopes (else entries are bare data)
	// pending are entries of a record read and not yet returned (a read
	// that stopped at its limits inside a batch).
	pending []*api.Entry
	// slotsAt is the first of a run of batch slots read whose record is
	// not, when inSlots.
	slotsAt uint64
	inSlots bool
}

func newEntryReader(it entryIterator, from uint64, env bool) *entryReader {
	return &entryReader{it: it, from: from, env: env}
}

// next is where a new reader would start to see every entry this one has
// not returned: the first pending entry, the first slot of a batch whose
// record is still to come, or the iterator's position.
func (r *entryReader) next() uint64 {
	switch {
	case len(r.pending) > 0:
		return r.pending[0].Position
	case r.inSlots:
		return r.slotsAt
	}
	return r.it.Pos()
}

// read returns up to maxEntries entries (and about maxBytes payload
// bytes: the first entry whatever its size), reading stored entries before
// index limit.
func (r *entryReader) read(limit uint64, maxEntries, maxBytes int) ([]*api.Entry, error) {
	var out []*api.Entry
	size := 0
	take := func() bool {
		for len(r.pending) > 0 && len(out) < maxEntries && size < maxBytes {
			e := r.pending[0]
			r.pending = r.pending[1:]
			out = append(out, e)
			size += len(e.Data) + 16
		}
		return len(out) < maxEntries && size < maxBytes
	}
	if !take() {
		return out, nil
	}
	for r.it.Pos() < limit && r.it.Next() {
		e := r.it.Entry()
		if !r.env {
			r.pending = append(r.pending, &api.Entry{Position: e.Index, Data: append([]byte(nil), e.Data...)})
		} else if err := r.decode(e.Index, e.Data); err != nil {
			return out, err
		}
		if !take() {
			break
		}
	}
	return out, r.it.Err()
}

// decode queues the entries of stored entry i, b, that are to be shown.
func (r *entryReader) decode(i uint64, b []byte) error {
	d, err := decodeStored(b)
	if err != nil {
		return fmt.Errorf("entry %d: %w", i, err)
	}
	if d.kind == envBatchSlot {
		if !r.inSlots {
			r.slotsAt, r.inSlots = i, true
		}
		return nil
	}
	r.inSlots = false
	if uint64(d.visible()) > i+1 {
		return fmt.Errorf("entry %d: %w: a batch record of %d entries", i, local.ErrCorrupt, d.visible())
	}
	first := i + 1 - uint64(d.visible())
	return d.eachEntry(func(j int, _ uint64, data []byte) error {
		if pos := first + uint64(j); pos >= r.from {
			r.pending = append(r.pending, &api.Entry{Position: pos, Data: append([]byte(nil), data...), TimeUnixNano: d.time})
		}
		return nil
	})
}
