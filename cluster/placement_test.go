package cluster

import (
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"testing"
	"testing/quick"
)

// candSet generates a random candidate set for testing/quick.
type candSet []Candidate

func (candSet) Generate(r *rand.Rand, size int) reflect.Value {
	n := 1 + r.Intn(12)
	var cs candSet
	for i := range n {
		role := RoleNode
		if r.Intn(4) == 0 {
			role = RoleBackup
		}
		cs = append(cs, Candidate{Name: fmt.Sprintf("m%d", i), Role: role, Capacity: uint64(r.Intn(4))})
	}
	return reflect.ValueOf(cs)
}

func eligible(cs []Candidate, role Role) map[string]bool {
	m := map[string]bool{}
	for _, c := range cs {
		if c.Role == role && c.Capacity > 0 {
			m[c.Name] = true
		}
	}
	return m
}

func TestPlaceProperties(t *testing.T) {
	cfg := &quick.Config{MaxCount: 500}
	prop := func(cs candSet, stream string, r8 uint8, seed int64) bool {
		r := 1 + int(r8%5)
		el := eligible(cs, RoleNode)
		got, err := Place(stream, r, cs)
		if len(el) < r {
			return errors.Is(err, ErrNotEnoughMembers)
		}
		if err != nil || len(got) != r {
			return false
		}
		// r distinct eligible members.
		seen := map[string]bool{}
		for _, n := range got {
			if !el[n] || seen[n] {
				return false
			}
			seen[n] = true
		}
		// Deterministic whatever the order of the candidates.
		shuf := slices.Clone(cs)
		rand.New(rand.NewSource(seed)).Shuffle(len(shuf), func(i, j int) { shuf[i], shuf[j] = shuf[j], shuf[i] })
		again, err := Place(stream, r, shuf)
		if err != nil || !slices.Equal(got, again) {
			return false
		}
		// A member joining moves at most one replica, and only to itself.
		joined := append(slices.Clone(cs), Candidate{Name: "newcomer", Role: RoleNode, Capacity: 2})
		after, err := Place(stream, r, joined)
		if err != nil {
			return false
		}
		moved := 0
		for _, n := range after {
			if !slices.Contains(got, n) {
				moved++
				if n != "newcomer" {
					return false
				}
			}
		}
		if moved > 1 {
			return false
		}
		// An unrelated member leaving changes nothing.
		var unrelated []Candidate
		for _, c := range cs {
			if slices.Contains(got, c.Name) || c.Role != RoleNode {
				unrelated = append(unrelated, c)
			}
		}
		if left, err := Place(stream, r, unrelated); err != nil || !slices.Equal(left, got) {
			return false
		}
		// The backup target is an eligible backup, or none.
		b := PlaceBackup(stream, cs)
		return (b == "") == (len(eligible(cs, RoleBackup)) == 0) && (b == "" || eligible(cs, RoleBackup)[b])
	}
	if err := quick.Check(prop, cfg); err != nil {
		t.Fatal(err)
	}
}

func TestPlaceSpreadsByCapacity(t *testing.T) {
	cs := []Candidate{
		{Name: "a", Role: RoleNode, Capacity: 1},
		{Name: "b", Role: RoleNode, Capacity: 1},
		{Name: "c", Role: RoleNode, Capacity: 2},
		{Name: "z", Role: RoleNode, Capacity: 0},
		{Name: "bk", Role: RoleBackup, Capacity: 9},
	}
	first := map[string]int{}
	const streams = 8000
	for i := range streams {
		got, err := Place(fmt.Sprintf("stream-%d", i), 1, cs)
		if err != nil {
			t.Fatal(err)
		}
		first[got[0]]++
	}
	// Expected shares 1/4, 1/4, 1/2; allow a wide margin (deterministic
	// anyway: the inputs are fixed).
	if first["z"] != 0 || first["bk"] != 0 {
		t.Fatalf("ineligible members chosen: %v", first)
	}
	if c := first["c"]; c < streams*45/100 || c > streams*55/100 {
		t.Errorf("capacity 2 of 4 got %d of %d streams: %v", c, streams, first)
	}
	if a := first["a"]; a < streams*20/100 || a > streams*30/100 {
		t.Errorf("capacity 1 of 4 got %d of %d streams: %v", a, streams, first)
	}
}

func TestPlaceErrors(t *testing.T) {
	if _, err := Place("s", 0, nil); err == nil {
		t.Error("r=0 accepted")
	}
	cs := []Candidate{{Name: "a", Role: RoleNode, Capacity: 1}, {Name: "a", Role: RoleNode, Capacity: 1}}
	if _, err := Place("s", 2, cs); !errors.Is(err, ErrNotEnoughMembers) {
		t.Errorf("a repeated name counted twice: %v", err)
	}
}

func TestCandidates(t *testing.T) {
	ms := []Member{
		{Name: "a", State: StateAlive, Meta: Meta{Role: RoleNode, Capacity: 1}},
		{Name: "b", State: StateSuspect, Meta: Meta{Role: RoleBackup, Capacity: 1}},
		{Name: "c", State: StateDead, Meta: Meta{Role: RoleNode, Capacity: 1}},
		{Name: "d", State: StateLeft, Meta: Meta{Role: RoleNode, Capacity: 1}},
		{Name: "e", State: StateAlive, MetaErr: ErrBadMeta},
	}
	got := Candidates(ms)
	want := []Candidate{{"a", RoleNode, 1}, {"b", RoleBackup, 1}}
	if !slices.Equal(got, want) {
		t.Errorf("Candidates = %v, want %v", got, want)
	}
}
