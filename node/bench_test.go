package node

import (
	"context"
	"log/slog"
	"net"
	"os"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rpstream/rpstream/api"
)

// benchNode serves a node on loopback with its data on tmpfs when there is
// one (the stand-in for pmem speed), else in a temporary directory.
func benchNode(b *testing.B) api.StreamsClient {
	dir := b.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "rpstream-bench-"); err == nil {
			dir = d
			b.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	cfg := DefaultConfig(dir)
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		conn.Close()
		srv.Shutdown(context.Background())
	})
	c := api.NewStreamsClient(conn)
	if _, err := c.CreateStream(context.Background(), &api.CreateStreamRequest{Stream: "b"}); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkAppendUnary: durable 128-byte appends, one unary call each,
// from parallel goroutines (GOMAXPROCS of them; -cpu to vary).
func BenchmarkAppendUnary(b *testing.B) {
	c := benchNode(b)
	data := make([]byte, 128)
	b.SetBytes(128)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Append(context.Background(), &api.AppendRequest{Stream: "b", Data: data}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAppendStream: durable 128-byte appends pipelined on one
// AppendStream call.
func BenchmarkAppendStream(b *testing.B) {
	c := benchNode(b)
	data := make([]byte, 128)
	b.SetBytes(128)
	call, err := c.AppendStream(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() {
		for range b.N {
			if err := call.Send(&api.AppendRequest{Stream: "b", Data: data}); err != nil {
				sent <- err
				return
			}
		}
		sent <- call.CloseSend()
	}()
	for range b.N {
		if _, err := call.Recv(); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-sent; err != nil {
		b.Fatal(err)
	}
}
