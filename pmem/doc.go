// Package pmem maps files into memory and makes ranges of them durable, in
// the manner of PMDK's libpmem2.
//
// A mapping is one of three kinds, decided when it is opened and reported by
// Memory.Mode:
//
//	PersistFlush  real persistent memory (a MAP_SYNC mapping of a DAX file
//	              succeeded): Persist writes back the cache lines with CLWB
//	              (else CLFLUSHOPT, else CLFLUSH) and then fences with SFENCE.
//	PersistFence  the caches are inside the persistence domain (eADR), or the
//	              file lives in memory (tmpfs), where there is nothing to write
//	              back: Persist is a store fence only.
//	PersistMsync  an ordinary file: Persist is msync(MS_SYNC) of the
//	              page-aligned range.
//
// The environment variable RPSTREAM_PMEM_FORCE overrides detection as
// PMEM_IS_PMEM_FORCE does for libpmem: "1" treats every mapping as real
// persistent memory (cache flushes, no msync), "0" treats every mapping as an
// ordinary file (msync).
//
// A mapping reserves address space sized to the file (twice its size, at
// least MinReserve) and grows with it up to Options.Reserve, in place with
// mremap or by a new mapping while the old one stays mapped: slices taken
// from Bytes stay valid until Close whatever the growth (growth_linux.go).
// When the process has no address space left, mapping or growing fails with
// ErrAddressSpace. Allocate reserves disk blocks with fallocate before
// any byte of the range is stored, so a full disk is an error from Allocate
// and never a SIGBUS on a later store.
//
// All persistence goes through the Memory interface, so that tests can put a
// simulated persistence domain (package pmem/simpmem) in the place of a file.
//
// Copy and Fill use non-temporal stores for ranges of NTThreshold bytes and
// more on amd64 (MOVNTDQ), chosen at start-up by CPU features; other CPUs use
// ordinary stores.
package pmem
