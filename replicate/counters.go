package replicate

import "sync/atomic"

// Counters are cumulative counts of a Leader's rdma work and replica
// failures, for metrics. One Counters may be shared by every Leader of a
// node; its fields are only ever added to, atomically, and may be read
// at any time.
type Counters struct {
	// Writes, AtomicWrites and Flushes count rdma operations posted to
	// replicas; WriteBytes the bytes of the Writes.
	Writes, WriteBytes, AtomicWrites, Flushes atomic.Uint64
	// OpErrors counts posted operations that completed with an error.
	OpErrors atomic.Uint64
	// Connects counts connection attempts to replicas (dial, grant,
	// catch-up survey), ConnectErrors the attempts that failed, and
	// ReplicaFailures every loss of a replica (a failed attempt or a
	// live connection lost).
	Connects, ConnectErrors, ReplicaFailures atomic.Uint64
	// Trims counts trims that freed regions of a replicated stream
	// (each brings every copy to the new head).
	Trims atomic.Uint64
}
