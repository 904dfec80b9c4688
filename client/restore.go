package client

import (
	"context"
	"errors"

	"github.com/rpstream/rpstream/api"
)

// Restore asks the node the Client was dialled to (the current seed) to
// restore a stream (req.Stream), or every stream a lost node led
// (req.Node), from a surviving copy (api/restore.proto), and returns once
// each restored stream's new leader serves. It is not retried: a restore
// that reached the controller and is under way answers a retry with
// FailedPrecondition (the stream's epoch moved on). ctx bounds it, not
// Options.Timeout: a restore moves a whole copy, which may take minutes.
func (c *Client) Restore(ctx context.Context, req *api.RestoreStreamRequest) (*api.RestoreStreamResponse, error) {
	if (req.Stream == "") == (req.Node == "") {
		return nil, errors.New("client: restore names a stream or a node, one of the two")
	}
	_, addr := c.home()
	c.mu.Lock()
	cc := c.conns[addr]
	c.mu.Unlock()
	if cc == nil {
		return nil, errors.New("client: closed")
	}
	return api.NewRestoresClient(cc).RestoreStream(ctx, req)
}
