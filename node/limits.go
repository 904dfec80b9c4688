package node

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/rpstream/rpstream/pmem"
)

// ErrTooManyStreams is returned when opening a stream or a copy would take
// this node past Config.MaxOpenStreams (ResourceExhausted to clients).
var ErrTooManyStreams = errors.New("node: too many open streams")

// openCountLocked is how many streams are open or opening here: those this
// node leads and the copies it serves. s.mu is held.
func (s *Server) openCountLocked() int {
	n := len(s.streams) + len(s.opening)
	if s.hub != nil {
		n += s.hub.Len()
	}
	return n
}

// Descriptors, for the default of Config.MaxOpenStreams. An open stream
// this node leads holds its file (whose descriptor also holds the writer's
// lock), a copy its file. Their rdma connections cost nothing more with
// the tcp provider, which carries every connection to a peer on one
// socket (rdma/tcp, link.go): fdsPerOpenShared. The verbs provider gives
// each connection its own event channel, so there a led stream holds
// three with three copies and a copy two: fdsPerOpen. fdReserveMin, or
// an eighth of the limit if more, is left for the rest (the catalog's
// Raft log and connections, gossip, clients, the sockets to peers,
// connections being accepted).
const (
	fdsPerOpen       = 3
	fdsPerOpenShared = 1
	fdReserveMin     = 256
)

// DefaultMaxOpenStreams is the default of Config.MaxOpenStreams for a
// process allowed nofile descriptors (RLIMIT_NOFILE): as many streams and
// copies as their descriptors fit in, so that the limit is met with
// ResourceExhausted and idle streams closed to make room, never with
// "too many open files" in the catalog, gossip or the copies' connections.
// Zero (no limit of the node's own) for a limit too small or unknown.
// shared says the rdma provider carries a node's connections to a peer on
// one descriptor (tcp), so that an open stream or copy takes one.
func DefaultMaxOpenStreams(nofile uint64, shared bool) int {
	per := fdsPerOpen
	if shared {
		per = fdsPerOpenShared
	}
	n := int(min(nofile, 1<<24))
	reserve := max(fdReserveMin, n/8)
	if n <= reserve+per {
		return 0
	}
	return (n - reserve) / per
}

// processMaxOpenStreams is DefaultMaxOpenStreams of this process's
// descriptor limit (Go raises the soft limit to the hard one at start).
func processMaxOpenStreams(shared bool) int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return 0
	}
	return DefaultMaxOpenStreams(rl.Cur, shared)
}

// checkOpenLimitLocked refuses one more open stream at the limit. s.mu is
// held.
func (s *Server) checkOpenLimitLocked() error {
	max := s.cfg.MaxOpenStreams
	if max == 0 {
		return nil
	}
	if n := s.openCountLocked(); n >= max {
		return fmt.Errorf("%w: node %s has %d streams and copies open, its limit (max-open-streams) is %d", ErrTooManyStreams, s.cfg.Name, n, max)
	}
	return nil
}

// exhausted says whether err is the process running out of a resource an
// open stream takes: address space for its mapping, file descriptors,
// memory.
func exhausted(err error) bool {
	return errors.Is(err, pmem.ErrAddressSpace) || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOMEM)
}
