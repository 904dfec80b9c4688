//go:build !linux

package local_test

import "testing"

func dsaModelEngine(t testing.TB) (engine, bool) { return engine{}, false }
