package node

import (
	"google.golang.org/grpc"

	"github.com/rpstream/rpstream/api"
)

// serverOptions are the gRPC server's options for the client port: the
// message size limit and the fixed flow-control windows of api's
// transport constants (the clients use the same).
func serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.InitialWindowSize(api.StreamWindow), grpc.InitialConnWindowSize(api.ConnWindow),
	}
}
