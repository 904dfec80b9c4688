package replicate

import "fmt"

// verify panics if the Replicator's state breaks an invariant of the
// package comment. It runs after every Ready when checkInvariants is on.
func (r *Replicator) verify() {
	// Every policy requires the leader's persist. (How many replicas hold
	// the commit point is not checked here: a replica that reconnects may
	// report less than it acknowledged, and added replicas hold nothing;
	// the simulation checks it against what replicas really hold.)
	if r.commit > r.persisted || r.commit > r.log.appended() {
		panic(fmt.Sprintf("replicate: commit %d beyond persisted %d or appended %d", r.commit, r.persisted, r.log.appended()))
	}
	end := r.log.end()
	for _, p := range r.replicas {
		if p.next.Less(p.acked) || end.Less(p.next) {
			panic(fmt.Sprintf("replicate: %s acked %v next %v end %v", p.id, p.acked, p.next, end))
		}
		last := p.acked
		for _, f := range p.inflight {
			if !last.Less(f.end) {
				panic(fmt.Sprintf("replicate: %s in flight out of order: %v after %v", p.id, f.end, last))
			}
			last = f.end
		}
		if last != p.next && !r.sameByte(last, p.next) {
			panic(fmt.Sprintf("replicate: %s last write ends at %v, next is %v", p.id, last, p.next))
		}
		if p.acked.Less(p.published) && p.published.Off > RegionHeaderSize {
			panic(fmt.Sprintf("replicate: %s commit word %v beyond its durable %v", p.id, p.published, p.acked))
		}
	}
}

// sameByte reports whether a, before b, is the end of a's region and b the
// start of the next, or a lies before the log's first region and b is its
// start (a stream that had no region when its leader started): the same
// point of the stream.
func (r *Replicator) sameByte(a, b Pos) bool {
	if first := r.log.first(); b == first && a.Less(first) && r.log.region(a.Seq) == nil {
		return true
	}
	reg := r.log.region(a.Seq)
	return reg != nil && b.Seq == a.Seq+1 && b.Off == 0 && a.Off == reg.tail
}
