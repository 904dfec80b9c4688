// Package verbs is the rdma provider over rdma-core: libibverbs for the
// data path and librdmacm for connections, for real RDMA NICs and for
// SoftRoCE (rxe). It is built only with the build tag "verbs" (and cgo);
// otherwise Provider.NewPeer returns rdma.ErrNoDevice, so default and
// CGO_ENABLED=0 builds stay pure Go. Devices are discovered with
// github.com/Mellanox/rdmamap (Devices, Check) without cgo.
//
// # Mapping of rdma operations to verbs
//
//	Write        RDMA WRITE, signaled
//	Read         RDMA READ, signaled
//	AtomicWrite  native RDMA ATOMIC WRITE (ibv_wr_atomic_write) where
//	             rdma-core has it (IBV_QP_EX_WITH_ATOMIC_WRITE, build time)
//	             and the device reports it (device_cap_flags_ex bit 40, run
//	             time); else an 8-byte inline RDMA WRITE with IBV_SEND_FENCE
//	Flush        native RDMA FLUSH (ibv_wr_flush) where rdma-core has it
//	             (IBV_QP_EX_WITH_FLUSH: rdma-core 45 and later) and the
//	             device reports the flush type (bits 38 global, 39
//	             persistent); else, as librpma does, an 8-byte RDMA READ of
//	             the range after the writes ("read after write"): on an RC
//	             queue pair the read's completion means every earlier write
//	             was placed in the target's memory, which is persistent when
//	             the target declared DirectWriteToPmem (pmem with DDIO off or
//	             eADR). A persistence flush needs that declaration.
//	Send, Recv   SEND and RECV on the same queue pair
//
// The handshake of package rdma/internal/hs runs as SEND/RECV messages
// right after rdma_cm reports the connection established, before the Conn
// is returned; the peer's registrations are unreachable until then because
// no descriptor has been exchanged. Its receives are posted before
// connecting: a SEND that finds none is retried only after the receiver's
// RNR timer. Once connected the queue pair's min_rnr_timer is 0.12 ms, so
// a Recv posted late costs the sender little (rdma_cm leaves 655 ms).
//
// Tested on SoftRoCE (rxe of Linux 6.1, inside the VM of make
// test-softroce): the conformance suite and streamnodes replicating over
// verbs. That rxe has no ATOMIC WRITE or FLUSH, so the fallbacks ran.
//
// # Memory
//
// Registered memory is pinned and addressed by the NIC after Register
// returns, so it must not be Go heap memory (the collector may move or
// free it, and cgo forbids C keeping Go pointers): register rdma.Alloc
// buffers or pmem mappings only. Control buffers of each Conn (work
// request arrays, completions, handshake messages) are allocated with
// C.malloc or rdma.Alloc for the same reason.
//
// # Goroutines
//
// Each Conn owns one poller goroutine, started when the Conn is made and
// stopped by Close: it sleeps in poll(2) on the completion channel's and
// the connection event channel's file descriptors and on an eventfd that
// Close writes to wake it, drains the completion queue in batches of 32
// with one cgo call, and completes Ops. Each Listener owns an accept loop
// (polling its event channel every 100 ms so that Close is noticed) and one
// goroutine per handshake in progress, at most 64.
// Posting happens in the caller's goroutine, one cgo call per operation.
package verbs
