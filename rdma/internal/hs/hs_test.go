package hs

import (
	"errors"
	"net"
	"testing"

	"github.com/rpstream/rpstream/rdma"
)

func run(t *testing.T, cs, ss string, cv uint16) (error, error) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cfg := rdma.LoopbackConfig("0123456789abcdef")
	ch := NewHello(rdma.ProviderTCP, 0, cfg)
	ch.Version = cv
	serr := make(chan error, 1)
	go func() {
		_, err := Server(b, []byte(ss), NewHello(rdma.ProviderTCP, 0, cfg))
		b.Close()
		serr <- err
	}()
	_, err := Client(a, []byte(cs), ch)
	a.Close()
	return err, <-serr
}

func TestHandshake(t *testing.T) {
	const s = "0123456789abcdef"
	if ce, se := run(t, s, s, rdma.ProtocolVersion); ce != nil || se != nil {
		t.Fatalf("good: %v %v", ce, se)
	}
	if ce, se := run(t, s, s+"x", rdma.ProtocolVersion); !errors.Is(ce, rdma.ErrAuth) || se == nil {
		t.Fatalf("wrong secret: %v %v", ce, se)
	}
	if _, se := run(t, s, s, 9); !errors.Is(se, rdma.ErrVersion) {
		t.Fatalf("version: server %v", se)
	}
}

func FuzzParseHello(f *testing.F) {
	f.Add(NewHello(rdma.ProviderTCP, 0, rdma.LoopbackConfig("0123456789abcdef")).Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHello(b)
		if err == nil && string(h.Marshal()) != string(b) {
			t.Fatal("accepted hello does not round-trip")
		}
	})
}
