//go:build verbs && cgo

package verbs

/*
#cgo LDFLAGS: -libverbs -lrdmacm
#include "rp_verbs.h"
*/
import "C"

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rpstream/rpstream/rdma"
)

// Built says whether the cgo provider is compiled in.
const Built = true

// Build-time abilities of the rdma-core this package was compiled with.
var (
	haveAtomicWrite = C.rp_have_atomic_write() != 0
	haveFlush       = C.rp_have_flush() != 0
)

// Run-time capability bits of ibv_device_attr_ex.device_cap_flags_ex
// (the kernel's IB_UVERBS_DEVICE_* values, stable uAPI).
const (
	devFlushGlobal     = 1 << 38
	devFlushPersistent = 1 << 39
	devAtomicWrite     = 1 << 40
)

// Access flags (the IBV_ACCESS_* values are stable ABI; FLUSH_* exist from
// rdma-core 45 and are used only when haveFlush).
const (
	accessLocalWrite      = C.IBV_ACCESS_LOCAL_WRITE
	accessRemoteWrite     = C.IBV_ACCESS_REMOTE_WRITE
	accessRemoteRead      = C.IBV_ACCESS_REMOTE_READ
	accessRemoteAtomic    = C.IBV_ACCESS_REMOTE_ATOMIC
	accessFlushGlobal     = 1 << 8
	accessFlushPersistent = 1 << 9
)

// accessFor maps usage bits to ibv_reg_mr access flags. Without native
// flush, both flush usages need remote read (read-after-write).
func accessFor(u rdma.Usage, nativeFlush bool) C.int {
	a := 0
	if u&(rdma.UsageReadDst|rdma.UsageRecv|rdma.UsageWriteDst|rdma.UsageAtomicWrite) != 0 {
		a |= accessLocalWrite
	}
	if u&rdma.UsageWriteDst != 0 {
		a |= accessRemoteWrite
	}
	if u&rdma.UsageReadSrc != 0 {
		a |= accessRemoteRead
	}
	if u&rdma.UsageAtomicWrite != 0 {
		a |= accessRemoteWrite | accessRemoteAtomic
	}
	if u&(rdma.UsageFlushVisibility|rdma.UsageFlushPersistence) != 0 {
		if nativeFlush {
			if u&rdma.UsageFlushVisibility != 0 {
				a |= accessFlushGlobal
			}
			if u&rdma.UsageFlushPersistence != 0 {
				a |= accessFlushPersistent
			}
		} else {
			a |= accessRemoteRead
		}
	}
	return C.int(a)
}

func errnoErr(what string, e C.int) error {
	return fmt.Errorf("rdma/verbs: %s: %w", what, syscall.Errno(e))
}

// sockaddr parses "host:port" into C memory the caller frees.
func sockaddr(addr string) (*C.struct_sockaddr_storage, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("rdma/verbs: address %q: %w", addr, err)
	}
	if port == "" {
		port = "0"
	}
	sa := (*C.struct_sockaddr_storage)(C.calloc(1, C.size_t(unsafe.Sizeof(C.struct_sockaddr_storage{}))))
	ch, cp := C.CString(host), C.CString(port)
	defer C.free(unsafe.Pointer(ch))
	defer C.free(unsafe.Pointer(cp))
	if e := C.rp_sockaddr(ch, cp, sa); e != 0 {
		C.free(unsafe.Pointer(sa))
		return nil, fmt.Errorf("rdma/verbs: address %q is not a numeric IP and port", addr)
	}
	return sa, nil
}

// cmEvent is one connection-manager event.
type cmEvent struct {
	typ, status int
	id          *C.struct_rdma_cm_id
}

// waitEvent waits for the next event on ch, polling its non-blocking fd
// so that ctx and stop are honoured.
func waitEvent(ctx context.Context, ch *C.struct_rdma_event_channel) (cmEvent, error) {
	fd := int(C.rp_ech_fd(ch))
	for {
		var ev cmEvent
		var typ, status C.int
		e := C.rp_event(ch, &typ, &status, &ev.id)
		if e == 0 {
			ev.typ, ev.status = int(typ), int(status)
			return ev, nil
		}
		if e != C.EAGAIN {
			return ev, errnoErr("rdma_get_cm_event", e)
		}
		if err := ctx.Err(); err != nil {
			return ev, err
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		unix.Poll(pfd, 100)
	}
}

// expect waits for an event of type want; any other is an error.
func expect(ctx context.Context, ch *C.struct_rdma_event_channel, want C.enum_rdma_cm_event_type) (cmEvent, error) {
	ev, err := waitEvent(ctx, ch)
	if err != nil {
		return ev, err
	}
	if ev.typ != int(want) {
		name := C.GoString(C.rdma_event_str(C.enum_rdma_cm_event_type(ev.typ)))
		return ev, fmt.Errorf("rdma/verbs: connection manager: %s (status %d)", name, ev.status)
	}
	return ev, nil
}

func newEventChannel() (*C.struct_rdma_event_channel, error) {
	ch, err := C.rdma_create_event_channel()
	if ch == nil {
		return nil, fmt.Errorf("rdma/verbs: rdma_create_event_channel: %v (is the rdma_cm module loaded?)", err)
	}
	if e := C.rp_nonblock(C.rp_ech_fd(ch)); e != 0 {
		C.rdma_destroy_event_channel(ch)
		return nil, errnoErr("event channel", e)
	}
	return ch, nil
}

func portOf(id *C.struct_rdma_cm_id) string { return strconv.Itoa(int(C.rp_port(id))) }
