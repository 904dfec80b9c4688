//go:build linux

package mover

import (
	"fmt"
	"strings"
)

// openDSA finds a usable work queue and starts the dsa engine on it. Every
// failure wraps ErrNoDevice and says what is missing.
func openDSA(c *Config, why string) (Mover, error) {
	wqs, err := FindWorkQueues(c.DSA.SysfsRoot, c.DSA.DevRoot)
	if err != nil {
		return nil, err
	}
	var reasons []string
	for i := range wqs {
		w := &wqs[i]
		if c.DSA.WorkQueue != "" && c.DSA.WorkQueue != w.Name && c.DSA.WorkQueue != w.Path {
			continue
		}
		if w.Unusable != "" {
			reasons = append(reasons, w.Name+": "+w.Unusable)
			continue
		}
		sub, err := openSubmitter(w, c.DSA.Submit)
		if err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		e, err := newDSAEngine(c, *w, sub, why)
		if err != nil {
			sub.close()
			reasons = append(reasons, err.Error())
			continue
		}
		return e, nil
	}
	if len(reasons) == 0 {
		return nil, fmt.Errorf("%w: no work queue named %q under %s", ErrNoDevice, c.DSA.WorkQueue, c.DSA.SysfsRoot)
	}
	return nil, fmt.Errorf("%w: %s", ErrNoDevice, strings.Join(reasons, "; "))
}
