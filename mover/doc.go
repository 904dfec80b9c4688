// Package mover moves data asynchronously: copy, move (overlap allowed),
// fill and cache flush, submitted as operations that complete later, in
// the manner of miniasync's virtual data mover. It is what the local
// stream uses to put entries into persistent memory with many appends in
// flight from one goroutine.
//
// # Using it
//
//	m, err := mover.New(mover.Config{Engine: mover.EngineAuto})
//	defer m.Close()
//
//	// One operation, with a handle:
//	op := mover.Copy(ctx, m, dst, src, mover.Durable)
//	err = op.Wait(ctx) // or <-op.Done(), then op.Err()
//
//	// Many in flight, no allocation per operation (sync and cpu engines):
//	// Complete(tag, err) is called once per accepted request, on any
//	// goroutine, in any order; fold the tags into a watermark there.
//	err = m.Submit(ctx, mover.Request{Kind: mover.KindCopy, Dst: d, Src: s,
//		Flags: mover.Durable, Tag: seq}, completer)
//
//	// Several at once (on DSA: batch descriptors, or one write() of all):
//	var b mover.Batch
//	b.Copy(d1, s1, mover.Durable)
//	b.Add(req, completer)
//	err = m.SubmitBatch(ctx, &b)
//
// The contracts — who owns which buffer until when, what may run
// concurrently, what a partial completion means — are on Mover,
// Completer, Request, Flags and PartialError.
//
// # Engines
//
//	sync  runs each operation inside Submit, on the caller's goroutine.
//	cpu   a pool of Config.Workers goroutines (GOMAXPROCS-1) beside the
//	      caller's. Requests below Config.InlineBelow bytes run inline; 0
//	      measures that crossover once per process by trying both ways
//	      (always inline where handing off never wins, as on a busy or
//	      virtual machine where waking a parked thread costs more than the
//	      copy). Above it: while workers are awake, a request is queued
//	      if each has less than one waiting (no wake-up), else run by the
//	      caller; with a worker parked, it is shared out in 32 KiB chunks
//	      with it while that measures faster than inline.
//	dsa   an Intel Data Streaming Accelerator work queue (below).
//	auto  dsa where a usable work queue exists, else cpu; Describe says
//	      why.
//
// The engine comes from Config.Engine; if that is unset, from the
// environment variable RPSTREAM_MOVER; else auto. Commands offer --mover
// with flag.Var(&cfg.Engine, "mover", mover.EngineUsage). Describe names
// the engine, its settings and why it was chosen. Asking for dsa where
// none is usable fails with ErrNoDevice and names what is missing.
//
// # DSA
//
// FindWorkQueues reads /sys/bus/dsa/devices (wqD.Q: mode, size,
// max_transfer_size, max_batch_size, state, type, name, block_on_fault;
// dsaD: state, gen_cap) and /dev/dsa. Descriptors and completion records
// have the layouts of the kernel's uapi linux/idxd.h, drawn in dsa_hw.go.
// Three submission paths, chosen by DSAConfig.Submit and the CPU: write()
// of the descriptor to /dev/dsa/wqD.Q (no privilege needed on kernels
// patched for CVE-2024-21823); MOVDIR64B to the mapped portal of a
// dedicated queue; ENQCMD to the portal of a shared queue, retried with
// backoff while it reports the queue full. Both instructions are emitted
// as bytes (the Go assembler lacks them) and used only when CPUID leaf 7
// ECX reports them (MOVDIR64B bit 28, ENQCMD bit 29); an SFENCE precedes
// each portal store. Requests are split at the queue's maximum transfer
// size. A Batch goes as DSA batch descriptors on the portal paths, and as
// several descriptors in one write() on the write() path: the idxd driver
// refuses batch descriptors from user space on every device it does not
// deem safe for user submission (all shipping ones, as of Linux 6.12).
// Completion records (and batch descriptor lists) live in mmap'd memory
// outside the Go heap, 32-byte (64-byte) aligned, mlock'ed. One poller
// goroutine reads them with backoff: PAUSE spins, then yields, then UMWAIT
// where the CPU has WAITPKG, else nanosleeps from 2µs growing to 64µs on
// its own OS thread with 1µs timer slack (time.Sleep's granularity was
// 0.3-1 ms here). A page fault (DSA_COMP_PAGE_FAULT_NOBOF) completes
// part of a descriptor: the engine touches the faulting page and submits
// the rest, and after DSAConfig.FaultRetries faults finishes on the CPU;
// a batch whose descriptor list faulted has its descriptors resubmitted
// one by one. Durable destinations are written with cache control off and
// destination readback (DRDBK) where GENCAP says the device has it. Close
// waits for every descriptor, submits a drain descriptor, and only then
// unmaps the records.
//
// What has been verified only against the software model of the device
// (package mover/dsamodel), because no machine of ours has DSA: everything
// the device does — that it accepts these descriptors and writes these
// records, the write() path into the idxd driver, ENQCMD (no CPU here has
// it; the model stands in for the instruction), the PASID setup it needs,
// UMWAIT polling (no WAITPKG here), the readback and cache-control
// semantics for persistence, page-fault and busy behaviour, and every
// performance claim. What runs for real here: descriptor encoding (decoded
// independently by the model), sysfs discovery (on a fake tree), opening
// the queue file and falling back from the portal to write(), MOVDIR64B
// itself (these CPUs have it; the model polls the page it stores into),
// the CPUID checks, and the encodings of MOVDIR64B, ENQCMD, UMONITOR and
// UMWAIT (checked with GNU objdump).
//
// # Goroutines
//
//	cpu engine: Config.Workers workers, started by New, owned by the
//	  engine, stopped by Close (queue closed once no Submit is inside,
//	  workers drain it and exit). They park as soon as the queue is
//	  empty.
//	dsa engine: one poller, started by New, stopped by Close once every
//	  descriptor has completed.
//	sync engine: none.
//	Crossover measurement: runs on the first cpu engine's workers, once
//	  per process, inside New.
//
// Completer.Complete runs on these goroutines or on the submitter's.
package mover
