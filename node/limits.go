package node

import (
	"errors"
	"fmt"
	"syscall"

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
