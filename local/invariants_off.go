//go:build !invariants && !race

package local

const checkInvariants = false
