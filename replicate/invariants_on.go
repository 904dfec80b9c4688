//go:build invariants || race

package replicate

// checkInvariants turns on expensive self-checks: builds with -race or
// -tags invariants run them, others compile them away.
const checkInvariants = true
