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
	code := cli.Main(ctx, cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, DefaultSignals: stop}, os.Args[1:])
	stop()
	os.Exit(code)
}
