// Package raftlog is the durable storage of one etcd Raft node
// (go.etcd.io/raft/v3): its hard state, log entries and snapshots. A Log
// is a raft.Storage whose reads are served from an in-memory
// raft.MemoryStorage rebuilt at Open, and whose Save is durable on return,
// which is what the Ready loop needs before it sends messages.
//
// # Files
//
// A log is a directory:
//
//	raft.stream                   a local/ stream of records (below)
//	snap-<term>-<index>.snap      snapshot files, 16 lower-case hex digits
//	                              each; the newest two valid ones are kept
//
// The stream gives each record atomicity (one stream entry, checked by
// CRC-32C), order, recovery of exactly the valid prefix after a crash, and
// Trim with a durable head (see package local). A new stream is created
// under a temporary name and renamed into place.
//
// # Records (format version 1)
//
// Each stream entry is one record. Integers are little-endian. These
// constants never change; a new kind of record gets a new kind number.
//
//	record:     kind u8, then by kind:
//
//	kind 1, batch (what one Save wrote; a large Save writes several):
//	    flags   u8     bit 0: snapshot marker, bit 1: hard state; others 0
//	    [marker]       snapshot index u64, snapshot term u64     (bit 0)
//	    [hs]           length u8 (<= 33), raftpb.HardState protobuf (bit 1)
//	    entries
//	kind 2, checkpoint (after a snapshot file; a large one continues in
//	        kind 3 records):
//	    snapshot index u64, snapshot term u64
//	    base u64, base term u64    the compaction point: entry before the first
//	    last u64                   the last entry restated (base if none)
//	    hs             length u8 (<= 33), raftpb.HardState protobuf
//	    entries        from base+1: every entry the node holds
//	kind 3, restate (more entries of the checkpoint just before):
//	    entries
//
//	entries:    count u32, then count times:
//	    length u32, raftpb.Entry protobuf; indexes contiguous
//
// A record's non-entry part takes at most 96 bytes, so an entry whose
// protobuf takes more than local.MaxEntrySize(region size) - 100 bytes is
// refused (ErrTooLarge) before anything is written. Every length, count,
// kind and flag is checked on replay; a record that fails is ErrCorrupt.
//
// # Replay
//
// Open rebuilds the log record by record:
//
//   - batch entries override: entries from index i replace every entry
//     held at i or after (a follower's uncommitted tail replaced by a new
//     leader's). The file stays append-only, as etcd's WAL does.
//   - a snapshot marker (a snapshot received from the leader, whose data
//     is in its file) replaces the whole log, as
//     MemoryStorage.ApplySnapshot does.
//   - checkpoint and restate entries restate: an entry already held must
//     have the same term, an entry past the end is appended, nothing is
//     removed; so a checkpoint cut short by a crash loses nothing.
//   - a hard state replaces the last one.
//
// One Save is one Sync. A Save larger than a region is split into several
// records: the first carries the marker and the new term and vote (with
// the old commit index), the last the whole new hard state. A crash keeps
// a prefix of the records, so it leaves a prefix of the entries, under a
// term never behind them and a commit index never past them.
//
// Then the newest valid snapshot file is laid under the replayed log. If
// the log holds the snapshot's entry (same index and term), the entries
// after it stay, and SnapshotCatchUp entries behind it. If it does not,
// the file says why: a snapshot received from the leader (header flag)
// replaces the log, because a crash came after its file was durable and
// before its marker was (Open writes the marker, finishing the Save); a
// snapshot taken by CreateSnapshot was taken from committed entries of
// this log, so their absence is ErrCorrupt. A hard state committing less
// than the snapshot is raised to it (a snapshot is committed state).
//
// # Snapshots and compaction
//
// A snapshot file is written to a temporary name, fsynced, renamed into
// place and the directory fsynced, so a crash leaves it whole or absent:
//
//	0   magic     "rpraftsn"
//	8   version   u32 = 1
//	12  crc       u32, CRC-32C of bytes 16 to the end
//	16  length    u64, bytes of protobuf after the header
//	24  flags     u32, bit 0: received from the leader; others 0
//	28  reserved  u32 = 0
//	32  raftpb.Snapshot protobuf; its index and term match the file name
//
// A checkpoint or a snapshot marker is a full-state record: replay can
// start at one, since it restates everything the records before it said
// that still matters, the hard state included (a vote must survive the
// trim of the record that saved it). A checkpoint counts as one only once replay has seen
// all its records (up to last): one cut short by a crash cannot stand for
// the records before it.
//
// CreateSnapshot writes the application's snapshot file, compacts the
// in-memory storage to index - SnapshotCatchUp, trims, and appends and
// syncs a checkpoint: the hard state and every entry held above the
// compaction point. A received snapshot (Save) trims too, before its
// records.
//
// Trimming keeps the newest two snapshot files and removes the older ones.
// It cuts the stream (local Trim) before a full-state record from which
// the older of the two files can be replayed: the newest one that goes
// with it or with an older snapshot. Cutting before the checkpoint of the
// newest file instead would leave a log that only the newest file can
// complete: a damaged newest file would lose the entries between the older
// file and that checkpoint, though they had been durable in the log. So
// the log always reaches back to the older file, and either file can be
// replayed; it holds two snapshot intervals and the catch-up entries.
// Nothing is trimmed until there are two snapshots, so the whole log
// stands behind the only one. Trimming needs no record of the new
// snapshot, so it comes first and frees room for that record.
//
// Replay of a trimmed stream (head above 0) starts at the first complete
// full-state record at or after the head; the older records in that
// region are skipped.
//
// # Damage
//
// Open fails with ErrCorrupt, changing neither the stream (beyond what
// package local's own recovery does) nor any snapshot file, when a record
// does not decode or cannot follow the records before it, when the log
// needs a snapshot no valid file holds (it starts above the newest valid
// snapshot, or above index 0 with none; the error lists the damaged
// files), when a taken snapshot is missing from the log, and when package
// local finds the stream file damaged. A snapshot file cut short or
// damaged is skipped for an older valid one, which the log always reaches
// back to, and reported by Warnings. The one file whose loss cannot be
// made good is a snapshot received from the leader while it is the
// newest: it replaced the log, so its state is nowhere else.
//
// # Concurrency
//
// The raft.Storage methods may be called from any goroutine (the
// MemoryStorage locks). Save, CreateSnapshot and Close are serialized by
// a mutex. The Log starts no goroutine; its stream keeps one that
// allocates a region ahead of the tail, stopped by Close.
package raftlog
