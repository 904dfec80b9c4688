// Package logrepeat keeps repeated log lines from flooding a log: a
// condition that recurs (a replica that refuses every reconnect attempt)
// is logged once when it begins, counted silently while it repeats, and
// summarised with its count once per period and when it changes.
//
// Each key (a replica, a peer) has a current state (a short word such as
// "down" or "up"). Log with the key's current state counts a repeat;
// Log with another state logs at once, carrying how many repeats of the
// previous state went untold.
package logrepeat

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limiter holds the state of each key. Its methods may be called
// concurrently.
type Limiter struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	keys map[string]*entry
}

type entry struct {
	state   string
	repeats int       // Log calls in state since the last line written
	total   int       // Log calls in state since it began
	since   time.Time // when state began
	last    time.Time // when the last line for the key was written
}

// DefaultEvery is the summary period of New(0).
const DefaultEvery = time.Minute

// New returns a Limiter that writes at most one summary line per key and
// period every (0: DefaultEvery) while a state repeats.
func New(every time.Duration) *Limiter {
	if every <= 0 {
		every = DefaultEvery
	}
	return &Limiter{every: every, now: time.Now, keys: map[string]*entry{}}
}

// SetClock replaces time.Now, for tests.
func (l *Limiter) SetClock(now func() time.Time) {
	l.mu.Lock()
	l.now = now
	l.mu.Unlock()
}

// Log writes msg with args to log at level if key was not in state (a
// change: the line carries "repeats", the untold repeats of the previous
// state, when there were any), or if it was and the last line for key is
// older than the period (the line carries "repeats" since that line and
// "for", how long the state has lasted). Otherwise it only counts. It
// reports whether it wrote.
func (l *Limiter) Log(log *slog.Logger, level slog.Level, key, state, msg string, args ...any) bool {
	l.mu.Lock()
	now := l.now()
	e := l.keys[key]
	var extra []any
	switch {
	case e == nil:
		if len(l.keys) >= maxKeys {
			l.sweepLocked(now)
		}
		e = &entry{state: state, since: now, last: now, total: 1}
		l.keys[key] = e
	case e.state != state:
		if e.repeats > 0 {
			extra = []any{"previous", e.state, "repeats", e.repeats}
		}
		*e = entry{state: state, since: now, last: now, total: 1}
	default:
		e.total++
		if now.Sub(e.last) < l.every {
			e.repeats++
			l.mu.Unlock()
			return false
		}
		extra = []any{"repeats", e.repeats + 1, "for", now.Sub(e.since).Round(time.Second).String()}
		e.repeats, e.last = 0, now
	}
	l.mu.Unlock()
	if !log.Enabled(context.Background(), level) {
		return false
	}
	log.Log(context.Background(), level, msg, append(args, extra...)...)
	return true
}

// maxKeys bounds the keys kept: beyond it, keys quiet for a period are
// forgotten (their untold repeats with them) when a new key comes.
const maxKeys = 4096

func (l *Limiter) sweepLocked(now time.Time) {
	for k, e := range l.keys {
		if now.Sub(e.last) >= l.every {
			delete(l.keys, k)
		}
	}
}

// Forget drops key, writing one line with its untold repeats if there
// were any (for a key that goes away: a replica removed).
func (l *Limiter) Forget(log *slog.Logger, level slog.Level, key, msg string) {
	l.mu.Lock()
	e := l.keys[key]
	delete(l.keys, key)
	l.mu.Unlock()
	if e != nil && e.repeats > 0 {
		log.Log(context.Background(), level, msg, "key", key, "state", e.state, "repeats", e.repeats)
	}
}
