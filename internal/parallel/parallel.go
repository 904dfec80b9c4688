// Package parallel runs a function over the values of a map, a bounded
// number at a time.
package parallel

import (
	"errors"
	"sync"
)

// Each calls f for every value of m, at most limit at once (at least
// one), and returns every error f returned, joined.
func Each[K comparable, V any](m map[K]V, limit int, f func(V) error) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(limit, 1))
	for _, v := range m {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(v); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
