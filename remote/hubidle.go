package remote

import (
	"errors"
	"time"
)

// idleFor is how long the Target has had no connection (negative while
// it has one: CloseIdle(0) must not close a copy a writer is using).
func (t *Target) idleFor(now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.conns) > 0 {
		return -1
	}
	return now.Sub(t.unused)
}

// CloseIdle closes, as Drop does, the Targets of the streams that have had
// no connection for at least d, and returns how many it closed: a node
// holds copies of thousands of streams, most of them idle, and each open
// Target holds its store's mapping and file. The files stay; a writer's
// next Open of the name opens the copy again, and its Grant is checked by
// Authorize as any (the epochs a copy granted are Authorize's to keep
// durably, not the Target's).
func (h *Hub) CloseIdle(d time.Duration) (int, error) {
	// openMu keeps connections from binding to a Target being closed.
	h.openMu.Lock()
	defer h.openMu.Unlock()
	return h.closeIdleOpenLocked(d)
}

// closeIdleOpenLocked is CloseIdle with h.openMu held.
func (h *Hub) closeIdleOpenLocked(d time.Duration) (int, error) {
	now := time.Now()
	h.mu.Lock()
	var idle []*Target
	for name, t := range h.streams {
		if t.idleFor(now) >= d {
			idle = append(idle, t)
			delete(h.streams, name)
		}
	}
	h.mu.Unlock()
	var err error
	for _, t := range idle {
		err = errors.Join(err, closeTarget(t))
	}
	return len(idle), err
}
