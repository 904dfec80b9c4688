// Package api holds the protobuf definitions of the client service of a
// stream node (api.proto) and the Go code generated from them with the
// pinned protoc-gen-go and protoc-gen-go-grpc (scripts/proto.sh; `make
// proto` regenerates, `make lint` checks that the committed code is
// current). Never edit the *.pb.go files by hand.
//
// The service is Streams: create, delete and list streams; append (unary,
// and AppendStream for many appends in flight on one call), read, tail
// (server streaming, following the stream) and status; cluster members.
// api.proto documents the meaning of positions and the gRPC status code
// of every error. The node package serves it; the client package calls it.
// transport.go (hand-written) holds the limits and flow-control windows
// of the client port's transport, which both use.
package api
