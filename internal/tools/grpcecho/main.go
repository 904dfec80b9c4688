// Command grpcecho measures the floor that gRPC alone sets on this
// machine for the append rows of issue 14: a server process that answers
// every AppendRequest of an AppendStream call at once (nothing stored,
// nothing replicated) and C clients in this process, each with a
// connection and a call of its own and one request in flight, dialled with
// the client package as `streamcli bench cluster --conns C` dials a node.
// The server uses the client port's limits and windows (api/transport.go).
// A replicated append cannot be faster than this echo on the same
// machine.
//
//	go run ./internal/tools/grpcecho --conns 64 --size 128 --duration 5s
//
// It starts the server as a child process of its own binary (--serve),
// and ends it by PID. It prints one JSON object: answers per second, MB/s
// of payload, p50 and p99 in µs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
)

// echo answers every request of an AppendStream call.
type echo struct {
	api.UnimplementedStreamsServer
}

func (echo) AppendStream(st grpc.BidiStreamingServer[api.AppendRequest, api.AppendResponse]) error {
	var n uint64
	for {
		if _, err := st.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		n++
		if err := st.Send(&api.AppendResponse{Position: n}); err != nil {
			return err
		}
	}
}

// serve runs the echo server on l until it fails.
func serve(l net.Listener) error {
	g := grpc.NewServer(grpc.InitialWindowSize(api.StreamWindow), grpc.InitialConnWindowSize(api.ConnWindow),
		grpc.MaxRecvMsgSize(api.MaxMessageSize), grpc.MaxSendMsgSize(api.MaxMessageSize))
	api.RegisterStreamsServer(g, echo{})
	return g.Serve(l)
}

// result is what a run measured.
type result struct {
	Conns      int     `json:"conns"`
	Size       int     `json:"size"`
	Seconds    float64 `json:"seconds"`
	Answers    int     `json:"answers"`
	PerSecond  float64 `json:"answers_per_sec"`
	MBPerSec   float64 `json:"mb_per_sec"`
	P50Micros  float64 `json:"p50_us"`
	P99Micros  float64 `json:"p99_us"`
	ServerAddr string  `json:"server"`
}

// run drives conns clients of size-byte requests against addr for d.
func run(ctx context.Context, addr string, conns, size int, d time.Duration) (result, error) {
	r := result{Conns: conns, Size: size, ServerAddr: addr}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	var calls []grpc.BidiStreamingClient[api.AppendRequest, api.AppendResponse]
	for range conns {
		cl, err := client.Dial(addr, client.Options{})
		if err != nil {
			return r, err
		}
		defer cl.Close()
		call, err := cl.API().AppendStream(ctx)
		if err != nil {
			return r, fmt.Errorf("call to %s: %w", addr, err)
		}
		calls = append(calls, call)
	}
	data := make([]byte, size)
	var (
		mu    sync.Mutex
		lats  []time.Duration
		first error
		wg    sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for _, call := range calls {
		wg.Go(func() {
			var mine []time.Duration
			var err error
			for time.Now().Before(end) {
				t0 := time.Now()
				if err = call.Send(&api.AppendRequest{Stream: "echo", Data: data}); err != nil {
					break
				}
				if _, err = call.Recv(); err != nil {
					break
				}
				mine = append(mine, time.Since(t0))
			}
			call.CloseSend()
			mu.Lock()
			lats = append(lats, mine...)
			if err != nil && first == nil {
				first = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(start)
	if first != nil {
		return r, fmt.Errorf("echo from %s: %w", addr, first)
	}
	if len(lats) == 0 {
		return r, fmt.Errorf("no answer from %s in %v", addr, d)
	}
	slices.Sort(lats)
	r.Seconds, r.Answers = el.Seconds(), len(lats)
	r.PerSecond = float64(len(lats)) / el.Seconds()
	r.MBPerSec = r.PerSecond * float64(size) / 1e6
	r.P50Micros = float64(lats[len(lats)/2].Nanoseconds()) / 1e3
	r.P99Micros = float64(lats[len(lats)*99/100].Nanoseconds()) / 1e3
	return r, nil
}

// startServer starts this binary with --serve and reads the address it
// listens on (bounded by ctx).
func startServer(ctx context.Context) (*exec.Cmd, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(self, "--serve")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 64)
		n, _ := out.Read(b)
		got <- strings.TrimSpace(string(b[:n]))
	}()
	select {
	case addr := <-got:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, "", fmt.Errorf("echo server printed %q, not its address", addr)
		}
		return cmd, addr, nil
	case <-ctx.Done():
		cmd.Process.Kill()
		cmd.Wait()
		return nil, "", fmt.Errorf("echo server did not print its address: %w", ctx.Err())
	}
}

func main() {
	serveFlag := flag.Bool("serve", false, "be the echo server: listen on --addr, print the address, serve until killed")
	addr := flag.String("addr", "127.0.0.1:0", "the server's listen address (--serve)")
	conns := flag.Int("conns", 64, "`C` clients, each with a connection and a call")
	size := flag.Int("size", 128, "`S` bytes per request")
	d := flag.Duration("duration", 5*time.Second, "how long the clients send")
	flag.Parse()
	if *serveFlag {
		l, err := net.Listen("tcp", *addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpcecho:", err)
			os.Exit(1)
		}
		fmt.Println(l.Addr())
		if err := serve(l); err != nil {
			fmt.Fprintln(os.Stderr, "grpcecho:", err)
			os.Exit(1)
		}
		return
	}
	if *conns < 1 || *size < 0 || *size > api.MaxMessageSize-1024 || *d <= 0 {
		fmt.Fprintln(os.Stderr, "grpcecho: --conns at least 1, --size 0 to 64 MiB - 1 KiB, --duration above 0")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	cmd, srvAddr, err := startServer(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcecho:", err)
		os.Exit(1)
	}
	r, err := run(context.Background(), srvAddr, *conns, *size, *d)
	cmd.Process.Kill()
	cmd.Wait()
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcecho:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(r)
}
