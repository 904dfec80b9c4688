package mover

import (
	"context"
	"errors"
	"fmt"
)

// Kind is the kind of an operation.
type Kind uint8

const (
	// KindCopy copies len(Src) bytes into Dst[:len(Src)]. The ranges must
	// not overlap (use KindMove when they may).
	KindCopy Kind = iota + 1
	// KindMove is KindCopy where Src and Dst may overlap, as memmove.
	KindMove
	// KindFill sets every byte of Dst to Value.
	KindFill
	// KindFlush writes back every cache line overlapping Dst towards the
	// persistence domain and fences, so that earlier stores to Dst are
	// durable on persistent memory when the operation completes.
	KindFlush
)

func (k Kind) String() string {
	switch k {
	case KindCopy:
		return "copy"
	case KindMove:
		return "move"
	case KindFill:
		return "fill"
	case KindFlush:
		return "flush"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Flags modify an operation, in the manner of pmem2's memcpy flags.
type Flags uint32

const (
	// Durable: when the operation completes, the destination is durable on
	// persistent memory mapped for direct access (pmem.PersistFlush or
	// pmem.PersistFence mappings): the engine flushes the written cache
	// lines and fences (CPU), or has the device write past the caches and
	// read the destination back (DSA). It does not msync: on a mapping in
	// pmem.PersistMsync mode call Memory.Persist after completion instead
	// (FlagsFor says which applies).
	Durable Flags = 1 << iota
	// NonTemporal asks for stores that bypass the caches (MOVNTDQ on the
	// CPU, cache control clear on DSA) even without Durable. Useful for data
	// that will not be read soon.
	NonTemporal
	// NoFlush: neither flush nor fence; the caller persists the range later
	// (for example one Persist over many operations). Cannot be combined
	// with Durable.
	NoFlush

	allFlags = Durable | NonTemporal | NoFlush
)

// Request describes one operation. It is passed by value; the slices it
// holds are borrowed until the operation completes (see Mover).
type Request struct {
	Kind  Kind
	Dst   []byte // written by Copy, Move, Fill; flushed by Flush
	Src   []byte // read by Copy and Move; must be nil otherwise
	Value byte   // Fill's byte
	Flags Flags
	// Tag is the caller's cookie, handed back to Completer.Complete as is.
	Tag uint64
}

// Len is the number of destination bytes the request writes or flushes.
func (r *Request) Len() int {
	if r.Kind == KindCopy || r.Kind == KindMove {
		return len(r.Src)
	}
	return len(r.Dst)
}

// Completer receives the completion of a submitted request.
//
// Complete is called exactly once per accepted request, with the request's
// Tag and nil or the error (see PartialError). It may be called on any
// goroutine: an engine worker, the DSA poller, or the submitting goroutine
// itself before Submit returns (the sync engine, and the cpu engine below
// its inline size). It must therefore be quick, must not block, and must
// not call Submit or SubmitBatch of the same Mover: on an engine goroutine
// that can wait for room only that goroutine would make. Completions of
// different requests may arrive in any order and concurrently.
type Completer interface {
	Complete(tag uint64, err error)
}

// Mover moves data asynchronously. All methods may be called concurrently
// from any number of goroutines.
//
// Buffer ownership: from Submit until the request's completion, the engine
// owns Dst (it writes it) and borrows Src (it reads it). The caller must not
// write either, nor read Dst, in that time. The engine keeps both slices
// referenced until completion, so the garbage collector keeps them alive
// even if the caller drops them. Go heap memory never moves, so engines may
// hand its addresses to hardware (DSA) while they hold that reference.
// Memory on a goroutine stack is never involved: slices stored in a Request
// escape to the heap.
//
// Ordering: operations complete in any order, whatever the order of
// submission. Two in-flight operations on overlapping ranges race; order
// them by waiting for the first.
//
// Cancellation: ctx bounds only the wait for room in the engine's queue
// (back-pressure). Once accepted, a request runs to completion.
type Mover interface {
	// Submit starts r. It returns nil when the request was accepted; then
	// c.Complete is called exactly once, possibly before Submit returns.
	// It returns an error, and never calls c, when the request is invalid
	// (ErrInvalid), the mover is closed (ErrClosed), or ctx ended while
	// waiting for queue room (ctx.Err()).
	Submit(ctx context.Context, r Request, c Completer) error
	// SubmitBatch starts every request of b, as one unit where the engine
	// can (one DSA batch descriptor). It is all or nothing: on error no
	// request was started, no Completer added with Batch.Add is called, and
	// the Ops created by b's Copy, Move, Fill and Flush complete with the
	// error. The engine does not keep b: it may be Reset and reused as soon
	// as SubmitBatch returns.
	SubmitBatch(ctx context.Context, b *Batch) error
	// Name is the engine's name: "sync", "cpu" or "dsa".
	Name() string
	// Describe says what the engine is, how it is configured, and why it was
	// chosen.
	Describe() string
	// Close stops accepting requests (later ones get ErrClosed), waits for
	// every accepted request to complete, then stops the engine's
	// goroutines. It is safe to call more than once. The dsa engine gives
	// up after 10 s of a device that completes nothing, returning an error
	// wrapping ErrDevice and leaving its poller and records in place.
	Close() error
}

// Errors returned by this package.
var (
	// ErrInvalid: a request is malformed (unknown kind or flags, Durable
	// with NoFlush, Dst shorter than Src, Src set for Fill or Flush), or a
	// Config is invalid. It is wrapped with the detail.
	ErrInvalid = errors.New("mover: invalid request")
	// ErrClosed: the mover was closed before the request was submitted.
	ErrClosed = errors.New("mover: closed")
	// ErrPending is returned by Op.Err while the operation has not
	// completed.
	ErrPending = errors.New("mover: operation pending")
	// ErrUnknownEngine: an engine name that is not sync, cpu, dsa or auto
	// (from Config, a --mover flag or RPSTREAM_MOVER).
	ErrUnknownEngine = errors.New("mover: unknown engine")
	// ErrNoDevice: the dsa engine was requested but no usable DSA work queue
	// exists; the wrapping error names what is missing.
	ErrNoDevice = errors.New("mover: no usable DSA work queue")
	// ErrDevice: the device reported an error for an operation; the
	// wrapping DeviceError carries the status. Operations failing this way
	// complete with a PartialError wrapping it.
	ErrDevice = errors.New("mover: device error")
)

// PartialError is the error of an operation that stopped part-way. Done is
// the number of bytes at the start of the destination that hold their final
// contents (for Move, 0 unless the operation copied upwards); the rest of
// the destination is unspecified. Err says why it stopped.
type PartialError struct {
	Kind Kind
	Done int
	Len  int
	Err  error
}

func (e *PartialError) Error() string {
	return fmt.Sprintf("mover: %s stopped after %d of %d bytes: %v", e.Kind, e.Done, e.Len, e.Err)
}

func (e *PartialError) Unwrap() error { return e.Err }

// Validate reports whether r is well formed.
func (r *Request) Validate() error {
	if r.Flags&^allFlags != 0 {
		return fmt.Errorf("%w: unknown flags %#x", ErrInvalid, uint32(r.Flags&^allFlags))
	}
	if r.Flags&Durable != 0 && r.Flags&NoFlush != 0 {
		return fmt.Errorf("%w: Durable with NoFlush", ErrInvalid)
	}
	switch r.Kind {
	case KindCopy, KindMove:
		if len(r.Dst) < len(r.Src) {
			return fmt.Errorf("%w: %s of %d bytes into %d", ErrInvalid, r.Kind, len(r.Src), len(r.Dst))
		}
	case KindFill, KindFlush:
		if r.Src != nil {
			return fmt.Errorf("%w: %s with a source", ErrInvalid, r.Kind)
		}
		if r.Kind == KindFlush && r.Flags&NoFlush != 0 {
			return fmt.Errorf("%w: flush with NoFlush", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: %v", ErrInvalid, r.Kind)
	}
	return nil
}
