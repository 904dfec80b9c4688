package controller

import (
	"context"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// Retention and consumers (catalog/retention.go): each call commits one
// command through the controller and returns the stream as it left it.

// SetRetention replaces stream name's (id; 0: whichever) retention
// policy.
func (c *Controller) SetRetention(ctx context.Context, name string, id uint64, r *pb.Retention) (*pb.Stream, error) {
	return c.streamRequest(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_SetRetention{SetRetention: &pb.SetRetention{Name: name, StreamId: id, Retention: r}}})
}

// TrimStream records that stream name (id) is trimmed to head: the
// stream's leader proposes it before it trims any copy, so that no copy
// ever opens at a head later than the catalog's. It fails wrapping
// catalog.ErrHeld when a consumer holding retention has not acknowledged
// up to head.
func (c *Controller) TrimStream(ctx context.Context, name string, id, head uint64) (*pb.Stream, error) {
	return c.streamRequest(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_TrimStream{TrimStream: &pb.TrimStream{Name: name, StreamId: id, Head: head}}})
}

// AddConsumer makes a named consumer of stream name starting at start.
func (c *Controller) AddConsumer(ctx context.Context, name, consumer string, start uint64, hold bool) (*pb.Stream, error) {
	return c.streamRequest(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_AddConsumer{AddConsumer: &pb.AddConsumer{Name: name, Consumer: consumer, Start: start, Hold: hold}}})
}

// RemoveConsumer removes a named consumer of stream name.
func (c *Controller) RemoveConsumer(ctx context.Context, name, consumer string) (*pb.Stream, error) {
	return c.streamRequest(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_RemoveConsumer{RemoveConsumer: &pb.RemoveConsumer{Name: name, Consumer: consumer}}})
}

// AckConsumers commits the acknowledged positions acks of consumers of
// stream name (id), in one command.
func (c *Controller) AckConsumers(ctx context.Context, name string, id uint64, acks []*pb.ConsumerAck) (*pb.Stream, error) {
	return c.streamRequest(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_AckConsumers{AckConsumers: &pb.AckConsumers{Name: name, StreamId: id, Acks: acks}}})
}

func (c *Controller) streamRequest(ctx context.Context, req *pb.ControlRequest) (*pb.Stream, error) {
	resp, err := c.request(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.Stream, nil
}
