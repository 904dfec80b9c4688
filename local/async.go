package local

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/rpstream/rpstream/mover"
	"github.com/rpstream/rpstream/pmem"
)

// Asynchronous appends.
//
// An Appender lets one goroutine keep many appends in flight: Append
// reserves the entry's space (in index order, as Reserve), computes the
// entry's checksum from the caller's buffer, and hands the copy of the
// payload into the mapping to a mover.Mover. When the mover reports the
// copy complete — in any order, on any goroutine — the Appender writes the
// entry's header and publishes it through the same in-order commit ring as
// Reservation.Publish. Durability is the synchronous path's: Sync (group
// commit) persists the committed run, so the persisted position advances
// only over a contiguous run of completed appends, and an append still
// being copied holds back every later one. On-media format, ordering and
// crash guarantees are exactly those of Append.
//
// Checksum. It is computed from the source, on the appending goroutine,
// before the copy is submitted, and never from the destination. The source
// is what the caller asked to append and is hot in its cache, while the
// destination may have been written past the caches (non-temporal stores,
// DSA with cache control off), so reading it back would cost a trip to
// the media. And it is end to end: a mover that landed other bytes than it
// was given, yet reported success, makes a torn entry that recovery
// rejects, instead of a valid checksum over wrong data. The price is the
// caller's part of the contract: p must not change until the copy has
// completed, or the checksum will not match (builds with -race or
// -tags invariants check the destination against it at every publish).
//
// Mover errors. An entry's index is taken when its space is reserved and
// cannot be given back, so an append that was reserved is always
// published: if the mover refuses the request (closed, ctx ended while it
// waited for room) the payload is copied on the calling goroutine; if it
// completes the request with an error (a DSA fault the engine could not
// finish, a device error), the whole payload is copied again on the CPU in
// the completion. Either way the entry lands byte-exact and nothing blocks
// later commits; Fallbacks counts these copies. Only a failed persist
// fails the stream (ErrFailed), as on the synchronous path.
//
// Flags. Copies use mover.FlagsFor(Stream.Mode()): on pmem mapped for
// direct access the mover flushes what it wrote (so the persist at Sync
// finds the lines already clean), elsewhere it leaves them to Sync's
// msync. Sync persists the whole committed range either way.
//
// Close. Stream.Close waits for every copy in flight (the mapping must not
// be unmapped under a mover) and publishes and persists those entries
// before it returns; appends started after Close began fail with
// ErrClosed.

// AppenderOptions configure NewAppender. The zero value is usable.
type AppenderOptions struct {
	// MaxInFlight is the most appends in flight (copy not yet complete)
	// through this Appender; Append and Start wait for one to complete
	// when it is reached. Zero means DefaultAppendWindow; at most the
	// stream's MaxInFlight.
	MaxInFlight int
	// Published, if set, is called once for every append started with
	// Start or Append, after its copy completed and the entry was
	// published (p may then be reused), with the entry's index. It runs
	// on any goroutine — a mover worker, the DSA poller, or the appending
	// goroutine before Start returns — in any order: it must be quick,
	// must not block, and must not call the Appender. This is the
	// completion path without allocation; fold the indexes into a
	// watermark there, or use Stream.Committed.
	Published func(index uint64)
}

// DefaultAppendWindow is the default AppenderOptions.MaxInFlight.
const DefaultAppendWindow = 64

// Validate reports whether the options are usable.
func (o AppenderOptions) Validate() error {
	if o.MaxInFlight < 0 || o.MaxInFlight > MaxInFlight {
		return fmt.Errorf("local: AppenderOptions.MaxInFlight %d not in [0, %d]", o.MaxInFlight, MaxInFlight)
	}
	return nil
}

// Appender appends entries to one stream with their payload copied by one
// mover. Its methods may be called from any number of goroutines; it owns
// no goroutine (the mover's run the completions) and needs no closing:
// Flush waits for its appends, Stream.Close for everyone's.
type Appender struct {
	s     *Stream
	m     mover.Mover
	flags mover.Flags
	opts  AppenderOptions

	// The window: a slot per append in flight, by tag. Tags (and their
	// slots, in chunks) are made when an append finds none free, up to
	// MaxInFlight, so that an Appender of a stream that is written one
	// entry at a time (or not at all: a node leads thousands) holds one
	// chunk, not MaxInFlight slots.
	chunks []atomic.Pointer[slotChunk]
	growMu sync.Mutex // guards made
	made   int32      // tags made: 0 .. made-1
	free   chan int32 // tags of free slots

	last      atomic.Uint64
	started   atomic.Bool
	fallbacks atomic.Uint64
}

// appendSlot is an append in flight. It is written by the goroutine that
// took its tag from free and read by the completion, which the mover's
// Submit/Complete ordering makes happen after; the completion gives the
// tag back.
type appendSlot struct {
	index uint64
	r     *region
	off   int // entry offset within the region
	crc   uint32
	src   []byte // the caller's payload: read by the mover, and by a fallback copy
	dst   []byte // the entry's space in the mapping: the prefix, then src's copy
	pre   int    // bytes of dst before src's copy (StartPrefixed)
	p     *Pending
}

// slotChunkLen is how many slots are made at a time.
const slotChunkLen = 32

type slotChunk [slotChunkLen]appendSlot

// slot is tag k's slot.
func (a *Appender) slot(k int32) *appendSlot {
	return &a.chunks[k/slotChunkLen].Load()[k%slotChunkLen]
}

// newTag makes a tag (and its chunk of slots if it is the first of one),
// or reports that MaxInFlight are made.
func (a *Appender) newTag() (int32, bool) {
	a.growMu.Lock()
	defer a.growMu.Unlock()
	if int(a.made) >= a.opts.MaxInFlight {
		return 0, false
	}
	k := a.made
	if k%slotChunkLen == 0 {
		a.chunks[k/slotChunkLen].Store(new(slotChunk))
	}
	a.made++
	return k, true
}

// NewAppender returns an Appender of s whose copies go to m. The caller
// keeps m open while appends are in flight and closes it after.
func NewAppender(s *Stream, m mover.Mover, opts AppenderOptions) (*Appender, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := s.writable(); err != nil {
		return nil, err
	}
	if opts.MaxInFlight == 0 {
		opts.MaxInFlight = DefaultAppendWindow
	}
	f, _ := mover.FlagsFor(s.Mode()) // Sync persists afterwards regardless
	if s.Mode() == pmem.PersistFence {
		f = mover.NoFlush
	}
	a := &Appender{s: s, m: m, flags: f, opts: opts,
		chunks: make([]atomic.Pointer[slotChunk], (opts.MaxInFlight+slotChunkLen-1)/slotChunkLen),
		free:   make(chan int32, opts.MaxInFlight)}
	return a, nil
}

// Mover is the mover the Appender copies with.
func (a *Appender) Mover() mover.Mover { return a.m }

// Fallbacks counts the copies done on the CPU because the mover refused a
// request or completed it with an error.
func (a *Appender) Fallbacks() uint64 { return a.fallbacks.Load() }

// Append starts appending p as one entry and returns its handle. The
// caller must not modify p until the handle's Done is closed (or the
// Published callback ran for its index); the mover reads it until then.
//
// An error means nothing was appended: ctx ended while the window was
// full (ctx.Err()), or the stream refused the reservation (ErrTooLarge,
// ErrNoSpace, ErrClosed, ErrFailed, ErrTooManyReservations). Once a
// handle is returned, the entry has its index and will be published.
//
// Append costs one allocation (the handle); Start costs none.
func (a *Appender) Append(ctx context.Context, p []byte) (*Pending, error) {
	pd := &Pending{s: a.s}
	if _, err := a.start(ctx, nil, p, pd); err != nil {
		return nil, err
	}
	return pd, nil
}

// Start is Append without a handle and without allocation: it returns the
// entry's index. Learn of its completion from the Published callback (p
// is free again then), from Stream.Committed, or by waiting with
// Stream.SyncContext, which returns once it is durable.
func (a *Appender) Start(ctx context.Context, p []byte) (uint64, error) {
	return a.start(ctx, nil, p, nil)
}

// StartPrefixed is Start of the entry prefix followed by p, without
// assembling it in a buffer first: prefix (a caller's header of a few
// bytes) is stored into the mapping on the calling goroutine and p copied
// by the mover, under the entry's one checksum. The entry is exactly the
// one Start(append(prefix, p...)) would store. prefix may be reused as
// soon as StartPrefixed returns; p as Start says.
func (a *Appender) StartPrefixed(ctx context.Context, prefix, p []byte) (uint64, error) {
	return a.start(ctx, prefix, p, nil)
}

func (a *Appender) start(ctx context.Context, prefix, p []byte, pd *Pending) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var k int32
	select {
	case k = <-a.free:
	default:
		var made bool
		if k, made = a.newTag(); !made {
			select {
			case k = <-a.free:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
	}
	s := a.s
	if !s.copies.enter() {
		a.free <- k
		return 0, ErrClosed
	}
	var v Reservation
	if err := s.reserve(len(prefix)+len(p), &v); err != nil {
		a.free <- k
		s.copies.exit()
		return 0, err
	}
	pre := copy(v.buf, prefix)
	sl := a.slot(k)
	*sl = appendSlot{index: v.Index, r: v.r, off: v.off, crc: entryCRCParts(v.r.key, v.off, prefix, p), src: p, dst: v.buf, pre: pre, p: pd}
	if pd != nil {
		pd.Index = v.Index
	}
	a.noteStarted(v.Index)
	if len(p) == 0 {
		(*appendCompleter)(a).publish(k)
		return v.Index, nil
	}
	r := mover.Request{Kind: mover.KindCopy, Dst: v.buf[pre:], Src: p, Flags: a.flags, Tag: uint64(k)}
	if err := a.m.Submit(ctx, r, (*appendCompleter)(a)); err != nil {
		// Never started, and the index is taken: copy it here.
		copy(v.buf[pre:], p)
		a.fallbacks.Add(1)
		(*appendCompleter)(a).publish(k)
	}
	return v.Index, nil
}

// noteStarted raises last to i.
func (a *Appender) noteStarted(i uint64) {
	a.started.Store(true)
	for {
		l := a.last.Load()
		if l >= i || a.last.CompareAndSwap(l, i) {
			return
		}
	}
}

// Flush waits until every append started through a before Flush was
// called has been copied and published, then until it is durable. It
// takes the whole window to know that no copy is in flight, so appends
// started meanwhile compete with it for the window: call it once the
// appending goroutines are done (or pause them). ctx bounds the waiting,
// not a persist already under way.
func (a *Appender) Flush(ctx context.Context) error {
	// Holding every tag means no copy of a is in flight; making the
	// rest first means none can be made meanwhile.
	taken := make([]int32, 0, a.opts.MaxInFlight)
	defer func() {
		for _, k := range taken {
			a.free <- k
		}
	}()
	for {
		k, made := a.newTag()
		if !made {
			break
		}
		taken = append(taken, k)
	}
	for len(taken) < a.opts.MaxInFlight {
		select {
		case k := <-a.free:
			taken = append(taken, k)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if !a.started.Load() {
		return nil
	}
	return a.s.SyncContext(ctx, a.last.Load())
}

// appendCompleter is the Appender seen as the mover's Completer; kept
// unexported so that callers cannot complete appends.
type appendCompleter Appender

var _ mover.Completer = (*appendCompleter)(nil)

// Complete publishes the append in slot tag. On a mover error the payload
// is copied again on the CPU first: see the comment at the top of the file.
func (c *appendCompleter) Complete(tag uint64, err error) {
	if err != nil {
		sl := (*Appender)(c).slot(int32(tag))
		copy(sl.dst[sl.pre:], sl.src)
		c.fallbacks.Add(1)
	}
	c.publish(int32(tag))
}

// publish writes the header of slot k's entry, commits it, frees the slot
// and tells whoever waits. It runs once per append, after its copy.
func (c *appendCompleter) publish(k int32) {
	s := c.s
	sl := (*Appender)(c).slot(k)
	i, r, off, n, pd := sl.index, sl.r, sl.off, len(sl.dst), sl.p
	b := s.regionBytes(r)
	if checkInvariants {
		if got := entryCRC(r.key, off, sl.dst); got != sl.crc {
			panic(fmt.Sprintf("local: entry %d: the mover landed bytes whose checksum %#x is not the source's %#x (source changed during the copy?)", i, got, sl.crc))
		}
	}
	writeEntryHeaderCRC(b, off, n, sl.crc)
	*sl = appendSlot{}
	s.commit(i, loc{r, off + entrySize(n)})
	c.free <- k
	if pd != nil {
		pd.complete()
	}
	if f := c.opts.Published; f != nil {
		f(i)
	}
	s.copies.exit() // last: Close may unmap once every copy has exited
}
