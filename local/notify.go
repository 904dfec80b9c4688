package local

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rpstream/rpstream/pmem"
)

// notifier wakes goroutines of this process waiting for the committed
// position to move. Committing costs one atomic load when nobody waits.
type notifier struct {
	waiters atomic.Int32
	mu      sync.Mutex
	ch      chan struct{} // closed and replaced on every wake
	closed  bool
}

func (n *notifier) init() { n.ch = make(chan struct{}) }

// arm registers a waiter and returns the channel to wait on. The caller
// checks its condition after arm, then calls wait (or disarm).
func (n *notifier) arm() chan struct{} {
	n.waiters.Add(1)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

func (n *notifier) disarm() { n.waiters.Add(-1) }

func (n *notifier) wait(ctx context.Context, ch chan struct{}) error {
	defer n.waiters.Add(-1)
	select {
	case <-ch:
		n.mu.Lock()
		closed := n.closed
		n.mu.Unlock()
		if closed {
			return ErrClosed
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (n *notifier) wake() {
	if n.waiters.Load() == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		close(n.ch)
		n.ch = make(chan struct{})
	}
}

func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.closed = true
		close(n.ch)
	}
}

// liveArea is the part of the superblock page through which a writer tells
// reader processes how far it has committed, and wakes those waiting with
// a futex on the shared mapping.
type liveArea struct {
	committed *uint64
	waiters   *uint32
	page      []byte // a separate writable mapping for a reader, or nil
}

func newLiveArea(mem pmem.Memory) *liveArea {
	b := mem.Bytes()
	return &liveArea{
		committed: (*uint64)(unsafe.Pointer(&b[liveCommitted])),
		waiters:   (*uint32)(unsafe.Pointer(&b[liveWaiters])),
	}
}

// attachReader gives a reader process a writable view of the live area, so
// that it can announce itself as a waiter. Without one (no write permission
// on the file) it polls.
func (l *liveArea) attachReader(path string) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	page, err := unix.Mmap(int(f.Fd()), 0, SuperblockSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return
	}
	l.page = page
	l.committed = (*uint64)(unsafe.Pointer(&page[liveCommitted]))
	l.waiters = (*uint32)(unsafe.Pointer(&page[liveWaiters]))
}

func (l *liveArea) detach() {
	if l.page != nil {
		unix.Munmap(l.page)
		l.page = nil
	}
}

func (l *liveArea) reset(c uint64) {
	atomic.StoreUint64(l.committed, c)
	atomic.StoreUint32(l.waiters, 0)
}

func (l *liveArea) load() uint64 { return atomic.LoadUint64(l.committed) }

// publish records the committed position for readers and wakes any.
func (l *liveArea) publish(c uint64) {
	atomic.StoreUint64(l.committed, c)
	if atomic.LoadUint32(l.waiters) != 0 {
		futexWake(unsafe.Pointer(l.committed))
	}
}

func (l *liveArea) wakeAll() { futexWake(unsafe.Pointer(l.committed)) }

// waitChange blocks until the committed word differs from old, for at most
// d. Without a writable view it sleeps d/10 (polling).
func (l *liveArea) waitChange(old uint64, d time.Duration) {
	if l.page == nil {
		time.Sleep(d / 10)
		return
	}
	atomic.AddUint32(l.waiters, 1)
	defer atomic.AddUint32(l.waiters, ^uint32(0))
	if atomic.LoadUint64(l.committed) != old {
		return
	}
	// The low half of the little-endian word is the futex word; a change
	// of the high half alone would take 2^32 entries without a wake.
	futexWait(unsafe.Pointer(l.committed), uint32(old), d)
}

func futexWake(addr unsafe.Pointer) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(addr), futexOpWake, uintptr(1<<30), 0, 0, 0)
}

func futexWait(addr unsafe.Pointer, val uint32, d time.Duration) {
	ts := unix.NsecToTimespec(d.Nanoseconds())
	unix.Syscall6(unix.SYS_FUTEX, uintptr(addr), futexOpWait, uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// Futex operations without FUTEX_PRIVATE_FLAG: the word is shared between
// processes through the file mapping.
const (
	futexOpWait = 0
	futexOpWake = 1
)
