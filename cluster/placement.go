package cluster

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strings"
)

// Candidate is what placement needs to know of a member.
type Candidate struct {
	Name     string
	Role     Role
	Capacity uint64
}

// Candidates are the members placement may choose from: live (alive or
// suspect) members whose metadata parsed and who are not leaving. Dead,
// left, leaving and untrusted members are left out.
func Candidates(members []Member) []Candidate {
	var out []Candidate
	for _, m := range members {
		if m.State.Live() && m.MetaErr == nil && m.Role != RoleUnknown && !m.Leaving {
			out = append(out, Candidate{Name: m.Name, Role: m.Role, Capacity: m.Capacity})
		}
	}
	return out
}

// Place chooses r distinct stream nodes (RoleNode, capacity > 0) to hold
// the replicas of stream, best first, by weighted rendezvous hashing: each
// candidate scores -capacity/ln(h) for a hash h in (0,1) of (stream, its
// name), and the r highest scores win. The result depends only on the set
// of candidates and the stream name (not their order); a candidate
// joining or leaving changes at most one of the r; over many streams each
// node holds replicas in proportion to its capacity. It fails with
// ErrNotEnoughMembers when fewer than r qualify.
func Place(stream string, r int, cands []Candidate) ([]string, error) {
	if r < 1 {
		return nil, fmt.Errorf("cluster: replication factor %d", r)
	}
	top := rank(stream, cands, RoleNode)
	if len(top) < r {
		return nil, fmt.Errorf("%w: %d of %d stream nodes for %q", ErrNotEnoughMembers, len(top), r, stream)
	}
	return top[:r], nil
}

// PlaceBackup chooses the backup target (RoleBackup, capacity > 0) for
// stream's extra copy by the same rule as Place, or "" when there is none.
func PlaceBackup(stream string, cands []Candidate) string {
	if top := rank(stream, cands, RoleBackup); len(top) > 0 {
		return top[0]
	}
	return ""
}

// rank orders the distinct eligible candidates of role by score, highest
// first, ties by name.
func rank(stream string, cands []Candidate, role Role) []string {
	type scored struct {
		name  string
		score float64
	}
	var s []scored
	seen := map[string]bool{}
	for _, c := range cands {
		if c.Role != role || c.Capacity == 0 || seen[c.Name] {
			continue
		}
		seen[c.Name] = true
		s = append(s, scored{c.Name, score(stream, c.Name, c.Capacity)})
	}
	slices.SortFunc(s, func(a, b scored) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i].name
	}
	return out
}

// score is the weighted rendezvous score of member for stream. The hash
// and the formula decide placement on every node: they must not change
// while a cluster runs mixed versions.
func score(stream, member string, capacity uint64) float64 {
	h := fnv.New64a()
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(stream)))
	h.Write(n[:])
	h.Write([]byte(stream))
	h.Write([]byte(member))
	x := mix64(h.Sum64())
	// u in (0,1): 53 random bits, never 0 or 1.
	u := (float64(x>>11) + 0.5) / (1 << 53)
	return -float64(capacity) / math.Log(u)
}

// mix64 is the splitmix64 finaliser: FNV's low bits are weak.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
