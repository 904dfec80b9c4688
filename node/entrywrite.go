package node

import (
	"context"
	"errors"
)

// startEntry appends data with its envelope header hdr (putTimed's, data left out)
// without waiting for it to be durable. The header and the payload are
// copied once, side by side, into the stream's mapping (the mover copies
// the payload): the entry is never assembled in a buffer of its own, which
// for large entries was a second copy and an allocation of the entry's
// size on every append. A stream made before envelopes gets data alone.
func (st *stream) startEntry(hdr, data []byte) (uint64, error) {
	if !st.meta.Envelope {
		return st.start(data)
	}
	if st.leader != nil {
		if err := st.leader.Err(); err != nil {
			return 0, err
		}
	}
	if st.app != nil {
		i, err := st.app.StartPrefixed(st.ctx, hdr, data)
		if err != nil && errors.Is(err, context.Canceled) && st.ctx.Err() != nil {
			// As in start: the stream's end, not Canceled.
			err = context.Cause(st.ctx)
		}
		return i, err
	}
	return st.ls.AppendNoSyncPrefixed(hdr, data)
}
