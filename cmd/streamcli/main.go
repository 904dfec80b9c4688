// Command streamcli creates, appends to, tails, lists and benchmarks
// rpstream streams. See package cli for the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rpstream/rpstream/cmd/streamcli/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// DefaultSignals must not be stop: stop also cancels ctx, which every
	// command that is not graceful still runs with.
	defaults := func() { signal.Reset(os.Interrupt, syscall.SIGTERM) }
	code := cli.Main(ctx, cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, DefaultSignals: defaults}, os.Args[1:])
	stop()
	os.Exit(code)
}
