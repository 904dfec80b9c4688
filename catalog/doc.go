// Package catalog is the state machine of rpstream's catalog: which nodes
// exist (a name and the incarnation of its data directory), which streams
// exist, where their copies are, which node leads each under which epoch,
// and the tombstones of deleted streams. It is the only place an epoch is
// granted (GrantEpoch) and a name is decided (CreateStream).
//
// The catalog is replicated by a Raft group (package catalog/controller,
// on go.etcd.io/raft/v3): each entry of the group's log is a Command
// (catalogpb), applied in log order by Apply on every member, and a
// snapshot is the State message (Snapshot, Restore). Apply is pure and
// deterministic: no clock, file or network; the proposer's time is
// recorded, never compared. A command that fails changes nothing.
//
// Rules Apply enforces, whatever the proposer decided on its (possibly
// stale) view:
//   - a stream name is taken by one live stream (creating, active or
//     deleting) at a time: of any number of creates of a name, the first
//     in the log wins and the others fail with ErrExists;
//   - a stream's id is the log index of its create, so ids are never
//     reused;
//   - copies are placed on registered nodes under their current
//     incarnations, the leader's first, replicas on stream nodes, at most
//     one backup copy, last, on a backup target;
//   - a node name is held by one incarnation; another takes it only with
//     replace (the controller found the old one's lease expired), and the
//     old incarnation's copies then count as holding nothing (HolderOf);
//   - an epoch is granted only to the stream's leader under its
//     registered incarnation, which is also the incarnation its copy was
//     placed on (a leader that lost its data gets none); the create
//     grants epoch 1, each GrantEpoch the next;
//   - a restore (RestoreStream: an operator rebuilding a stream from one
//     copy when failover cannot) places the copies anew by create's
//     rule, gives the new leader the next epoch, resets the commit floor
//     and records the source (Stream.restoring) until an epoch at least
//     the restore's starts (EpochStarted); decided on another epoch it
//     changes nothing;
//   - a delete leaves a tombstone (DELETING) until every copy's holder
//     has reported its copy dropped (CopyDropped), then DELETED; the name
//     may then be created again, with a new id;
//   - a stream's trim head (TrimStream) only rises, and never past the
//     acknowledged position of a consumer that holds retention (ErrHeld);
//     consumers' positions only rise (AckConsumers) and start at the trim
//     head at the earliest (retention.go).
//
// The formats (catalogpb/catalog.proto) are on disk in every member's log
// and snapshots: their field numbers never change.
package catalog
