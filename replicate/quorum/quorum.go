// Package quorum is the commit-index arithmetic of replicate/: given how
// far the leader has persisted an append stream locally and how far each
// voting replica has flushed it remotely, how far may the leader
// acknowledge under an acknowledgement policy. It holds no state and knows
// nothing of regions or bytes: positions are entry indexes (the number of
// entries durable from the start of the stream).
//
// Every policy requires the leader's own persist: an entry is never
// acknowledged before it is durable in the leader's local stream, because
// the leader's recovery would otherwise truncate it and later appends would
// reuse its bytes. Beyond that:
//
//   - LeaderOnly: the leader's persist alone.
//   - Majority: a majority of the voters counting the leader as one of them
//     (leader + n replicas: floor((n+1)/2)+1 holders, the leader being one).
//   - All: every voting replica as well.
//
// The result is not clamped to an earlier commit index; the caller keeps
// the commit point monotonic (replicate does).
package quorum

import (
	"fmt"
	"slices"
)

// Policy is an acknowledgement policy.
type Policy uint8

const (
	// Majority acknowledges what a majority of leader and voters hold.
	Majority Policy = iota
	// LeaderOnly acknowledges what the leader has persisted.
	LeaderOnly
	// All acknowledges what the leader and every voter hold.
	All
)

func (p Policy) String() string {
	switch p {
	case Majority:
		return "quorum"
	case LeaderOnly:
		return "leader"
	case All:
		return "all"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// ParsePolicy reads "leader", "quorum" (or "majority") and "all".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "leader":
		return LeaderOnly, nil
	case "quorum", "majority":
		return Majority, nil
	case "all":
		return All, nil
	}
	return 0, fmt.Errorf("quorum: unknown policy %q", s)
}

// Needed is how many holders, the leader included, an entry needs under p
// with the given number of voting replicas.
func Needed(p Policy, voters int) int {
	switch p {
	case LeaderOnly:
		return 1
	case All:
		return voters + 1
	}
	return (voters+1)/2 + 1
}

// Committed returns the largest index that the leader has persisted and
// that at least Needed(p, len(voters)) holders (the leader counted as one)
// have made durable. voters is not modified.
func Committed(p Policy, leader uint64, voters []uint64) uint64 {
	need := Needed(p, len(voters))
	if need <= 1 {
		return leader
	}
	// The (need-1)-th largest replica position, capped by the leader's.
	var stack [8]uint64
	s := append(stack[:0], voters...)
	slices.Sort(s)
	return min(leader, s[len(s)-(need-1)])
}
