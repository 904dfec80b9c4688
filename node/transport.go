package node

import "google.golang.org/grpc"

// Flow-control windows of the client port's HTTP/2 connections. Fixed
// windows turn off gRPC's bandwidth-delay estimator, which otherwise
// answers a connection's first data frame after each of its pings with a
// window update and a ping of its own: with one append in flight per
// connection (independent clients) that was one more write and one more
// read per append on each side, about as many system calls as the appends
// themselves. The windows are large enough that loopback and LAN links
// are never window-bound for entries up to MaxMessageSize.
const (
	streamWindow = 8 << 20
	connWindow   = 32 << 20
)

// serverOptions are the gRPC server's options for the client port.
func serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow),
	}
}
