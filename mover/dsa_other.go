//go:build !linux

package mover

import "fmt"

// openDSA: the dsa engine needs Linux's idxd driver.
func openDSA(c *Config, why string) (Mover, error) {
	return nil, fmt.Errorf("%w: the dsa engine needs Linux (idxd driver)", ErrNoDevice)
}
