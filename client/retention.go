package client

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
)

// Retention, trim and named consumers. Calls the stream's leader must
// answer (TrimStream, ListConsumers) follow it as Status does; the others
// are answered by any node of the cluster (they go to the catalog) and
// retried while it is Unavailable.

// SetRetention replaces stream's retention policy (nil: none).
func (c *Client) SetRetention(ctx context.Context, stream string, r *api.Retention) (*api.Retention, error) {
	var resp *api.SetRetentionResponse
	err := c.retryStream(ctx, stream, "retention of "+stream, func(ctx context.Context, rpc api.StreamsClient) (err error) {
		resp, err = rpc.SetRetention(ctx, &api.SetRetentionRequest{Stream: stream, Retention: r})
		return err
	})
	return resp.GetRetention(), err
}

// Trim trims stream before position before; it returns the stream's
// trim head and the oldest entry it still holds.
func (c *Client) Trim(ctx context.Context, stream string, before uint64) (*api.TrimStreamResponse, error) {
	var resp *api.TrimStreamResponse
	err := c.retryStream(ctx, stream, "trim of "+stream, func(ctx context.Context, rpc api.StreamsClient) (err error) {
		resp, err = rpc.TrimStream(ctx, &api.TrimStreamRequest{Stream: stream, Before: before})
		return err
	})
	return resp, err
}

// AddConsumer makes a named consumer of stream starting at start.
func (c *Client) AddConsumer(ctx context.Context, stream, consumer string, start uint64, hold bool) (*api.Consumer, error) {
	// Not retried: a retry of an add that did commit would report
	// AlreadyExists.
	rpc, _ := c.stub(stream)
	resp, err := rpc.AddConsumer(ctx, &api.AddConsumerRequest{Stream: stream, Consumer: consumer, Start: start, Hold: hold})
	return resp.GetConsumer(), err
}

// RemoveConsumer removes a named consumer of stream.
func (c *Client) RemoveConsumer(ctx context.Context, stream, consumer string) error {
	rpc, _ := c.stub(stream)
	_, err := rpc.RemoveConsumer(ctx, &api.RemoveConsumerRequest{Stream: stream, Consumer: consumer})
	return err
}

// Consumers lists stream's consumers with their lag, and the committed
// position the lag is counted from.
func (c *Client) Consumers(ctx context.Context, stream string) (*api.ListConsumersResponse, error) {
	var resp *api.ListConsumersResponse
	err := c.retryStream(ctx, stream, "consumers of "+stream, func(ctx context.Context, rpc api.StreamsClient) (err error) {
		resp, err = rpc.ListConsumers(ctx, &api.ListConsumersRequest{Stream: stream})
		return err
	})
	return resp, err
}

// Consumer is one named consumer of stream (a NotFound status error if
// there is none).
func (c *Client) Consumer(ctx context.Context, stream, consumer string) (*api.Consumer, error) {
	resp, err := c.Consumers(ctx, stream)
	if err != nil {
		return nil, err
	}
	for _, k := range resp.Consumers {
		if k.Name == consumer {
			return k, nil
		}
	}
	return nil, errNoConsumer(stream, consumer)
}

// Ack acknowledges that consumer processed every entry of stream before
// position. Without sync the node commits it within its AckEvery (lost
// if the node stops first: those entries are delivered again); with sync
// it is committed when Ack returns.
func (c *Client) Ack(ctx context.Context, stream, consumer string, position uint64, sync bool) (uint64, error) {
	var resp *api.AckConsumerResponse
	err := c.retryStream(ctx, stream, "ack of "+consumer, func(ctx context.Context, rpc api.StreamsClient) (err error) {
		resp, err = rpc.AckConsumer(ctx, &api.AckConsumerRequest{Stream: stream, Consumer: consumer, Position: position, Sync: sync})
		return err
	})
	return resp.GetAcked(), err
}

func errNoConsumer(stream, consumer string) error {
	return status.Errorf(codes.NotFound, "stream %s has no consumer %s", stream, consumer)
}
