// Package local is the stream on one node, in the manner of PMDK's
// libpmemstream: one mapped file per stream, holding a sequence of regions,
// each holding entries of any size appended atomically.
//
// # On-media format (version 2)
//
// All integers are little-endian. Checksums are CRC-32C (Castagnoli). These
// constants never change without a bump of FormatVersion.
//
// Version 2 differs from version 1 in one thing: an entry's checksum
// covers its region's epoch. The version is decided per file, by its
// superblock: a file of version 1 is opened, read, recovered and appended
// to in version 1 (its new entries' checksums still leave the epoch out;
// the superblock is never rewritten), and a replica's copy, a byte copy of
// its leader's file, has the leader's version. New files are version 2.
//
//	file:    [ superblock 4096 B ][ slot 0 ][ slot 1 ] ... [ slot n-1 ]
//	         slot k starts at 4096 + k*RegionSize; the file grows by whole
//	         slots, with blocks reserved (fallocate) before use. A stream
//	         nothing was appended to has no slot: the first append
//	         allocates slot 0 for region 1, so an idle empty stream costs
//	         one page.
//
//	superblock (offset 0):
//	    0  magic        "rpstream"
//	    8  version      u32 = 2 (1: entry checksums without the epoch)
//	   12  flags        u32 = 0
//	   16  region size  u64 (multiple of 4096, 16 KiB .. 1 GiB)
//	   24  stream id    u64 random, non-zero; every region repeats it
//	   32  created      u64 unix nanoseconds
//	   40  reserved     zero up to 124
//	  124  crc          u32 over [0, 124)
//	  128  trim records two of {head u64, gen u32, crc u32 over both}, at
//	                    128 and 144; Trim writes generation g into record
//	                    g%2 and persists it before freeing any region, so
//	                    recovery knows where the stream's head must be
//	 2048  live area:   written by a running writer for reader processes,
//	                    never persisted on purpose, never trusted by recovery
//	        2048 committed  u64 entries committed so far (also a futex word)
//	        2056 waiters    u32 reader processes waiting on it
//
//	region (a slot in use), line 0, written once when allocated:
//	    0  magic        "rpregion"
//	    8  seq          u64 region sequence number, from 1, +1 per region
//	   16  first        u64 index of the region's first entry
//	   24  stream id    u64
//	   32  epoch        u64 epoch of the writer that allocated the region;
//	                    this build never writes one below the previous
//	                    region's
//	   40  reserved     zero up to 60
//	   60  crc          u32 over [0, 60)
//	region, line 1, zeroed and persisted before line 0 is written:
//	   64  commit       u64 commit word, written by a remote leader with one
//	                    8-byte atomic write: the end offset (within the
//	                    region) of the entries it has committed
//	   72  seal         u64 count<<32 | end, written once every entry of the
//	                    region is durable and the next region exists
//	                    (count may be 0: a region StartEpoch ended empty)
//	  128  entries, each starting at an 8-byte aligned offset:
//	    0  length       u32 payload bytes
//	    4  crc          u32 over seq u64, epoch u64, offset u32,
//	                    length u32, payload (the region's seq and epoch
//	                    from line 0, the entry's offset within the
//	                    region); version 1: the same without epoch
//	    8  payload      padded with zeroes to a multiple of 8
//
// A region allocated in a slot is a byte-identical copy wherever it lives:
// nothing in it depends on the slot number or the file, so a leader can
// write the same bytes at the same offsets into a replica's region.
//
// # Atomicity and recovery
//
// An entry is valid only if its checksum, which covers the region's
// sequence number and epoch and the entry's offset, matches; so torn
// entries, bytes left by an earlier use of the slot and entries shifted to
// another offset are all rejected, and so are entries an older leader
// left in a slot where a new leader allocated a region of the same
// sequence number (on a replica's copy, after a failover): that region
// has a newer epoch, and the two checksums differ in the epoch's bits
// alone, a difference CRC-32C always detects when the epochs differ only
// within 32 consecutive bits (any two epochs below 2^32). Each region is
// written under one epoch, which StartEpoch (epoch.go) keeps to: a writer
// taking a new epoch ends the tail region where it stands, sealed, and
// appends in a new region under its epoch. Version 1 files have no such
// protection: an older epoch's entries in such a slot validate.
//
// Entries are made durable in index order (the persisted position
// advances only over a contiguous run), so after a crash each region
// holds a valid prefix followed by rejected bytes. Recovery scans the
// regions that are not sealed; the first region whose valid prefix is
// shorter than its successor's first index says becomes the tail, and every
// region after it is freed (last first, so a crash during recovery leaves a
// contiguous sequence). Bytes after the tail are zeroed, so entries lost in
// a crash can never reappear after a later one. A region's header is
// durable before any entry in it is written, and a slot is freed by
// zeroing the whole of line 0 (so no torn rewrite can revive it), so
// region sequence numbers are always contiguous;
// a gap, a checksum error in the superblock, inconsistent region headers,
// a first region that starts after the recorded head, or a last region that
// is sealed (so its successor existed) are corruption (ErrCorrupt), reported
// without changing the file: damage never silently drops entries that come
// before it. A trim interrupted by a crash is finished by recovery.
//
// # Concurrency
//
// One process writes a stream (it holds an exclusive flock on the file);
// any number of processes may open it read-only and follow it through the
// live area. In the writing process, Append, Reserve, Publish, Sync,
// iterators and Trim may all be called from many goroutines at once.
// Reservations are handed out in index order and committed in index order:
// the committed position advances over the contiguous run of published
// entries, and readers see only committed entries.
//
// # Asynchronous appends
//
// An Appender (async.go; its handle and waits in pending.go) keeps many appends in flight from one goroutine:
// each reserves its space as Reserve does, and a mover.Mover copies the
// payload into the mapping; the entry is published when its copy
// completes, in whatever order the copies complete, through the same
// in-order commit. Pending.Wait, Stream.SyncContext and Sync make entries
// durable as for Append, so the format, the ordering and the crash
// guarantees are those of the synchronous path. The Appender owns no
// goroutine: completions run on the mover's (cpu workers, the DSA poller)
// or on the appending goroutine. Close waits for every copy in flight
// before it unmaps the file.
//
// # Reading a replica's copy
//
// A replica's copy is written by a remote leader through rdma, not by a
// writer in another process: its live area stays zero, so OpenReader
// cannot follow it. OpenCopy (copy.go) maps it read-only and reads it
// through its commit and seal words: a region's entries before its commit
// word, a sealed region's counted entries, and every entry of a region
// before one holding a committed entry (the commit point is a prefix).
// Entries are checked by checksum as they are read; one that fails before
// the commit point is ErrCorrupt. CopyIterator.Wait polls the words every
// CopyPollInterval, since nothing notifies the copy's node of a write.
//
// # Walking entries for lookups
//
// Stream.Walk (walk.go) hands a function each committed entry's payload
// in place, unchecked and uncopied, for lookups that need a few bytes of
// many entries (the node finds an entry by the time in its envelope).
// It starts at any WalkStride-th entry of a full region whose entries
// are all committed without stepping over those before it: the offsets
// are noted, in memory only, the first time a walk needs them.
//
// # Observing commits
//
// Stream.SetObserver (observe.go) installs an Observer that is told, in
// commit order and whatever the append path, each region the commit point
// enters (every one, those StartEpoch left empty included), each run of
// committed entries (region, offset, length, end index) and each persist:
// a replicating leader copies exactly those bytes from the mapping.
// Without an observer the commit path pays one nil check.
package local
