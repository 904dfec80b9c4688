package quorum

import (
	"testing"
	"testing/quick"
)

// committedRef is the dumb reference: try every candidate index and keep
// the largest one enough holders have, the leader among them.
func committedRef(p Policy, leader uint64, voters []uint64) uint64 {
	need := 1
	switch p {
	case Majority:
		need = (len(voters)+1)/2 + 1
	case All:
		need = len(voters) + 1
	}
	cands := append([]uint64{0, leader}, voters...)
	var best uint64
	for _, c := range cands {
		if c > leader {
			continue // the leader must hold it
		}
		n := 1
		for _, v := range voters {
			if v >= c {
				n++
			}
		}
		if n >= need && c > best {
			best = c
		}
	}
	return best
}

func TestCommittedQuick(t *testing.T) {
	for _, p := range []Policy{Majority, LeaderOnly, All} {
		f := func(leader uint8, vs []uint8) bool {
			if len(vs) > 12 {
				vs = vs[:12]
			}
			voters := make([]uint64, len(vs))
			for i, v := range vs {
				voters[i] = uint64(v % 16) // small values make ties likely
			}
			before := append([]uint64(nil), voters...)
			got := Committed(p, uint64(leader%16), voters)
			for i := range voters {
				if voters[i] != before[i] {
					return false
				}
			}
			return got == committedRef(p, uint64(leader%16), voters)
		}
		if err := quick.Check(f, &quick.Config{MaxCount: 5000}); err != nil {
			t.Errorf("%v: %v", p, err)
		}
	}
}

func TestCommittedExamples(t *testing.T) {
	for _, c := range []struct {
		p      Policy
		leader uint64
		voters []uint64
		want   uint64
	}{
		{Majority, 10, nil, 10},
		{Majority, 10, []uint64{3, 7}, 7},
		{Majority, 5, []uint64{3, 7}, 5},
		{Majority, 10, []uint64{3, 7, 9}, 7}, // 4 holders need 3
		{Majority, 10, []uint64{3, 7, 9, 1}, 7},
		{All, 10, []uint64{3, 7}, 3},
		{LeaderOnly, 10, []uint64{0, 0}, 10},
	} {
		if got := Committed(c.p, c.leader, c.voters); got != c.want {
			t.Errorf("Committed(%v, %d, %v) = %d, want %d", c.p, c.leader, c.voters, got, c.want)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	for _, p := range []Policy{Majority, LeaderOnly, All} {
		q, err := ParsePolicy(p.String())
		if err != nil || q != p {
			t.Errorf("ParsePolicy(%q) = %v, %v", p, q, err)
		}
	}
	if _, err := ParsePolicy("most"); err == nil {
		t.Error("ParsePolicy(most) succeeded")
	}
}
