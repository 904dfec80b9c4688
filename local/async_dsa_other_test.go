//go:build !linux

package local_test

import "testing"

func dsaModelEngine(t *testing.T) (engine, bool) { return engine{}, false }
