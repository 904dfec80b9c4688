package client

import (
	"google.golang.org/grpc"

	"github.com/rpstream/rpstream/api"
)

// transportOptions are the dial options that set the flow-control
// windows: fixed, as the node's (api.StreamWindow says why).
func transportOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithInitialWindowSize(api.StreamWindow), grpc.WithInitialConnWindowSize(api.ConnWindow)}
}
