//go:build !linux

package bench

import (
	"context"
	"errors"
	"time"
)

// hostProcs needs Linux's /proc to find a node's process by its port.
type hostProcs struct{}

func newHostProcs(time.Duration) *hostProcs { return &hostProcs{} }

var errNoProc = errors.New("bench failover against a given cluster finds its processes in /proc: Linux only (without --node it starts its own)")

func (*hostProcs) kill(string) (int, error)                     { return 0, errNoProc }
func (*hostProcs) restart(context.Context, string) (int, error) { return 0, errNoProc }
