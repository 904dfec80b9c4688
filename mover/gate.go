package mover

import (
	"sync"
	"sync/atomic"
)

// gate counts the goroutines inside Submit so that Close can refuse new
// ones and wait for those inside, without a lock on the submission path and
// without forbidding a Completer from submitting again (which a read lock
// held across Complete would risk).
type gate struct {
	state   atomic.Uint64 // closedBit | number of goroutines inside
	once    sync.Once
	drained chan struct{} // closed once the gate is closed and empty
}

const closedBit = 1 << 63

func (g *gate) init() { g.drained = make(chan struct{}) }

// enter reports whether the caller may submit; if so it must call exit.
func (g *gate) enter() bool {
	if g.state.Add(1)&closedBit != 0 {
		g.exit()
		return false
	}
	return true
}

func (g *gate) exit() {
	if g.state.Add(^uint64(0)) == closedBit {
		g.once.Do(func() { close(g.drained) })
	}
}

// close refuses later enters and waits until nobody is inside. It reports
// whether this call was the one that closed the gate.
func (g *gate) close() bool {
	old := g.state.Or(closedBit)
	if old == 0 || g.state.Load() == closedBit {
		g.once.Do(func() { close(g.drained) })
	}
	<-g.drained
	return old&closedBit == 0
}
