package remote

import (
	"errors"
	"testing"
	"time"

	"github.com/rpstream/rpstream/rdma"
)

// switchConn is a Conn whose access switch fails or blocks, as a verbs
// queue pair in the error state does.
type switchConn struct {
	rdma.Conn // nil: only the methods below are called
	err       error
	block     chan struct{} // SetRemoteAccess waits for it when not nil
	closed    chan struct{}
}

func (c *switchConn) SetRemoteAccess(bool) error {
	if c.block != nil {
		<-c.block
	}
	return c.err
}

func (c *switchConn) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
		if c.block != nil {
			close(c.block) // closing ends a blocked switch, as verbs does
		}
	}
	return nil
}

// TestRevokeSwitchFails: a deposed writer whose access switch fails is
// closed and revoke returns. It used to wait forever for a second result
// of the switch (found when a restarted backup target hung on SIGTERM over
// verbs on SoftRoCE).
func TestRevokeSwitchFails(t *testing.T) {
	for _, c := range []*switchConn{
		{err: errors.New("ibv_modify_qp: invalid argument"), closed: make(chan struct{})},
		{err: rdma.ErrClosed, block: make(chan struct{}), closed: make(chan struct{})},
	} {
		done := make(chan struct{})
		go func() { revoke(c); close(done) }()
		select {
		case <-done:
		case <-time.After(revokeTimeout + 10*time.Second):
			t.Fatalf("revoke of a conn whose switch fails (%v, blocking %v) did not return", c.err, c.block != nil)
		}
		select {
		case <-c.closed:
		default:
			t.Errorf("revoke left the deposed writer's conn open after its switch failed (%v)", c.err)
		}
	}
}
