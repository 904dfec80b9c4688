// Package simpmem is a simulated persistence domain for crash-consistency
// tests: a pmem.Memory that keeps two images of its bytes, what the program
// sees (the cache) and what would survive a power failure (the media).
//
// Stores go to the cache image only. Persist copies the cache lines that
// overlap its range into the media image. A crash image is the media image
// plus an arbitrary subset of the lines that differ between the two (dirty
// lines); with Torn it is chosen by 8-byte word instead, which is stronger
// than real hardware (x86 writes back whole lines) and so a harder test.
// Aligned 8-byte words never tear.
//
// The cache image lives in anonymous mmap'd memory outside the Go heap, as a
// real mapping does, so that concurrent stores and write-backs of the same
// line behave as they do on hardware instead of tripping the race detector.
//
// Allocate is durable at once (the real one fdatasyncs). Discard zeroes the
// cache image only: after a crash the range may hold its old contents or
// zeroes, line by line.
package simpmem

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/rpstream/rpstream/pmem"
)

// Memory is a simulated persistent memory. It is safe for concurrent use.
type Memory struct {
	cache []byte // anonymous mapping of reserve bytes
	media []byte // reserve bytes

	mu       sync.Mutex
	size     int
	persists int
	allocErr error
	closed   bool

	// BeforePersist, if set, is called at the start of every Persist, with
	// no lock held: tests take crash images there.
	BeforePersist func(m *Memory)
}

var (
	_ pmem.Memory    = (*Memory)(nil)
	_ pmem.Discarder = (*Memory)(nil)
)

// New returns an empty memory that can grow to reserve bytes.
func New(reserve int) *Memory {
	reserve = (reserve + pmem.CacheLine - 1) &^ (pmem.CacheLine - 1)
	cache, err := unix.Mmap(-1, 0, reserve, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		panic(fmt.Sprintf("simpmem: mmap %d bytes: %v", reserve, err)) // test-only package
	}
	return &Memory{cache: cache, media: make([]byte, reserve)}
}

// FromImage returns a memory whose cache and media both hold img, as a file
// does when it is opened after a crash.
func FromImage(img []byte, reserve int) *Memory {
	if reserve < len(img) {
		reserve = len(img)
	}
	m := New(reserve)
	copy(m.cache, img)
	copy(m.media, img)
	m.size = len(img)
	return m
}

// Bytes implements pmem.Memory.
func (m *Memory) Bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cache[:m.size:m.size]
}

// Size implements pmem.Memory.
func (m *Memory) Size() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.size
}

// Mode implements pmem.Memory: the simulation behaves as real pmem.
func (m *Memory) Mode() pmem.Mode { return pmem.PersistFlush }

// FailAllocate makes every later Allocate that grows the memory fail with
// err (nil stops it), as a full disk does.
func (m *Memory) FailAllocate(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.allocErr = err
}

// Allocate implements pmem.Memory.
func (m *Memory) Allocate(off, n int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return pmem.ErrClosed
	}
	if off < 0 || n < 0 || off+n > len(m.cache) {
		return fmt.Errorf("%w: allocate [%d, %d) of a %d-byte reservation", pmem.ErrOutOfRange, off, off+n, len(m.cache))
	}
	if off+n > m.size {
		if m.allocErr != nil {
			return m.allocErr
		}
		m.size = off + n
	}
	return nil
}

// Discard implements pmem.Discarder.
func (m *Memory) Discard(off, n int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || n < 0 || off+n > m.size {
		return fmt.Errorf("%w: discard [%d, %d) of %d", pmem.ErrOutOfRange, off, off+n, m.size)
	}
	clear(m.cache[off : off+n])
	return nil
}

// Persist implements pmem.Memory.
func (m *Memory) Persist(off, n int) error {
	if h := m.BeforePersist; h != nil {
		h(m)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return pmem.ErrClosed
	}
	if off < 0 || n < 0 || off+n > m.size {
		return fmt.Errorf("%w: persist [%d, %d) of %d", pmem.ErrOutOfRange, off, off+n, m.size)
	}
	m.persists++
	if n == 0 {
		return nil
	}
	start := off &^ (pmem.CacheLine - 1)
	end := min((off+n+pmem.CacheLine-1)&^(pmem.CacheLine-1), m.size)
	copy(m.media[start:end], m.cache[start:end])
	return nil
}

// Persists counts the calls to Persist so far.
func (m *Memory) Persists() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.persists
}

// Close implements pmem.Memory. The images stay readable by Media and
// Crash; the cache mapping is released by Release.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return pmem.ErrClosed
	}
	m.closed = true
	return nil
}

// Release frees the cache mapping. The memory must not be used after.
func (m *Memory) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cache != nil {
		unix.Munmap(m.cache)
		m.cache, m.media = nil, nil
		m.closed = true
	}
}

// DirtyLines counts the lines whose cache and media images differ.
func (m *Memory) DirtyLines() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for off := 0; off < m.size; off += pmem.CacheLine {
		end := min(off+pmem.CacheLine, m.size)
		if !bytes.Equal(m.cache[off:end], m.media[off:end]) {
			n++
		}
	}
	return n
}

// Media returns a copy of what is durable now: the image after a crash in
// which every dirty line was lost.
func (m *Memory) Media() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.media[:m.size])
}

// Cache returns a copy of what the program sees now: the image after a
// crash in which every dirty line was written back.
func (m *Memory) Cache() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.cache[:m.size])
}

// Granularity of loss in a crash image.
type Granularity int

const (
	// Lines loses or keeps whole cache lines, as hardware writes them back.
	Lines Granularity = iota
	// Torn loses or keeps each aligned 8-byte word of a dirty line on its
	// own.
	Torn
)

// Crash returns a crash image: the media image with each dirty line (or
// word, with Torn) taken from the cache image with probability keep. The
// memory itself is unchanged and may go on being used.
func (m *Memory) Crash(rng *rand.Rand, g Granularity, keep float64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	img := bytes.Clone(m.media[:m.size])
	unit := pmem.CacheLine
	if g == Torn {
		unit = 8
	}
	for off := 0; off < m.size; off += pmem.CacheLine {
		end := min(off+pmem.CacheLine, m.size)
		if bytes.Equal(m.cache[off:end], m.media[off:end]) {
			continue
		}
		for u := off; u < end; u += unit {
			if rng.Float64() < keep {
				ue := min(u+unit, end)
				copy(img[u:ue], m.cache[u:ue])
			}
		}
	}
	return img
}
