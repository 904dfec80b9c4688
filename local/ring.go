package local

// The commit ring holds the ends of entries published ahead of the
// committed position, until every entry before them is published too. It
// starts small and doubles, up to MaxInFlight slots, when an entry is
// published further ahead than it holds: a full ring is 384 KiB, and a node
// holds thousands of mostly idle streams.

// ringMin is the length of a new stream's ring.
const ringMin = 64

// ringSlotLocked is the slot of index i, published while c is the committed
// position (c < i < c+MaxInFlight, as reserve ensures), the ring grown to
// hold it. s.pub is held.
func (s *Stream) ringSlotLocked(i, c uint64) *ringSlot {
	if d := i - c; d >= uint64(len(s.ring)) {
		n := len(s.ring)
		for uint64(n) <= d {
			n *= 2
		}
		grown := make([]ringSlot, n)
		// Only the indices after c can be in use, each in its own slot.
		for j := c + 1; j < c+uint64(len(s.ring)); j++ {
			grown[j&uint64(n-1)] = s.ring[j&uint64(len(s.ring)-1)]
		}
		s.ring = grown
	}
	return &s.ring[i&uint64(len(s.ring)-1)]
}
