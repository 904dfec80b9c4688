//go:build !invariants && !race

package replicate

const checkInvariants = false
