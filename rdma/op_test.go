package rdma

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestOpCompletesOnce(t *testing.T) {
	op, complete := NewOp(OpRecv)
	if op.Err() != nil {
		t.Fatal("pending op has an error")
	}
	complete(5, nil)
	complete(0, errors.New("second"))
	if err := op.Wait(context.Background()); err != nil || op.Len() != 5 {
		t.Fatalf("err %v len %d", err, op.Len())
	}
}

func TestOpWaitContext(t *testing.T) {
	op, _ := NewOp(OpWrite)
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := op.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
}

func TestCQ(t *testing.T) {
	cq := NewCQ()
	a, ca := NewOp(OpWrite)
	b, cb := NewOp(OpFlush)
	a.Notify(cq, "a")
	cb(0, ErrClosed)
	b.Notify(cq, "b") // already done: delivered at once
	ca(0, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	first, err := cq.Wait(ctx)
	if err != nil || first.Context != "b" || !errors.Is(first.Op.Err(), ErrClosed) {
		t.Fatalf("first %+v %v", first, err)
	}
	second, err := cq.Wait(ctx)
	if err != nil || second.Context != "a" {
		t.Fatalf("second %+v %v", second, err)
	}
	if _, ok := cq.Poll(); ok {
		t.Fatal("extra")
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); !errors.Is(err, ErrConfig) {
		t.Fatal("config without a secret validated")
	}
	c = LoopbackConfig("sixteen bytes at least")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.MaxInflight = 0
	if err := c.Validate(); !errors.Is(err, ErrConfig) {
		t.Fatal("MaxInflight 0 validated")
	}
}
