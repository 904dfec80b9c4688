//go:build !amd64

package bench

const haveTSC = false

func rdtsc() uint64 { return 0 }
