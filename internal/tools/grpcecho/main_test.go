package main

import (
	"context"
	"net"
	"testing"
	"time"
)

// The echo answers every request of every client, and run counts them.
func TestRunCountsAnswers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go serve(l)
	defer l.Close()
	r, err := run(context.Background(), l.Addr().String(), 4, 1000, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.Answers < 4 || r.PerSecond <= 0 || r.P50Micros <= 0 || r.P99Micros < r.P50Micros || r.MBPerSec <= 0 {
		t.Fatalf("%+v", r)
	}
	// A server that is not there is an error, not a result.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	a := dead.Addr().String()
	dead.Close()
	if _, err := run(context.Background(), a, 1, 10, 100*time.Millisecond); err == nil {
		t.Fatal("no error without a server")
	}
}
