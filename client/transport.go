package client

import "google.golang.org/grpc"

// Flow-control windows of a Client's HTTP/2 connections. Fixed windows
// turn off gRPC's bandwidth-delay estimator, which otherwise sends a ping
// (and a window update) after the first answer it receives following each
// ping's acknowledgement: with one append in flight on a connection that
// is one more write and read per append on both ends. The node uses the
// same windows (node/transport.go).
const (
	streamWindow = 8 << 20
	connWindow   = 32 << 20
)

// transportOptions are the dial options that set the windows.
func transportOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow)}
}
