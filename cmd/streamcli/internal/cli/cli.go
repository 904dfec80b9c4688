// Package cli is streamcli: the commands, their flags and their messages.
// Main is the whole program; cmd/streamcli only hands it the process's
// arguments, standard streams and a context cancelled by SIGINT/SIGTERM.
//
// Exit codes: 0 success, 1 an operation failed (the message says why),
// 2 bad usage (the usage of the command follows the message); status and
// health exit 3 when degraded (under-replicated) and health 4 when the
// catalog has no controller (exitError).
package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/rpstream/rpstream/client"
	"io"
	"maps"
	"os"
	"strings"
	"time"

	"github.com/rpstream/rpstream/internal/buildinfo"
)

// Env is what a command may use of the world.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment (RPSTREAM_DATA); nil means os.Getenv.
	Getenv func(string) string
	// DefaultSignals, if not nil, gives SIGINT and SIGTERM back their
	// default action (ending the process). Main calls it before running a
	// command that does not stop gracefully when its context ends: an
	// append waiting on a terminal must still end on Ctrl-C.
	DefaultSignals func()
}

// command is one subcommand of streamcli.
type command struct {
	name    string
	args    string // positional arguments, for the usage line
	summary string
	detail  string // more usage text, may be empty
	// flags defines the command's own flags on fs and returns the function
	// that runs it with the positional arguments. Nil for a command that
	// is only its subcommands (bench); a command with both (cluster) runs
	// itself when no positional argument names a subcommand.
	flags func(fs *flag.FlagSet) runFunc
	// subs are the subcommands ("bench local"), chosen by the first
	// positional argument; their names include the parent's.
	subs []*command
	// subNoun is what the subcommands are called in messages and usage;
	// "" means "kind".
	subNoun string
	// graceful commands watch their context and return when it ends
	// (tail -f, bench); for the others SIGINT and SIGTERM end the process.
	graceful bool
}

type runFunc func(ctx context.Context, c *invocation, args []string) error

// invocation is one run of a command: its environment and global flags.
type invocation struct {
	Env
	data dataDir
	// node is the client address of a streamnode (--node): when set,
	// commands go through it instead of the data directory (remote.go).
	node string
	// timeout bounds each call in network mode (client.Options.Timeout;
	// zero: client.DefaultTimeout).
	timeout time.Duration
	// tlsCA, tlsCert, tlsKey and tokenFile are how network mode reaches
	// a node that runs TLS (client.Options TLSCAFile, TLSCertFile,
	// TLSKeyFile, TokenFile).
	tlsCA, tlsCert, tlsKey, tokenFile string
	out                               *bufio.Writer
}

// clientOptions are the client options the global flags set.
func (c *invocation) clientOptions() client.Options {
	return client.Options{Timeout: c.timeout, TLSCAFile: c.tlsCA, TLSCertFile: c.tlsCert, TLSKeyFile: c.tlsKey, TokenFile: c.tokenFile}
}

// securityFlags are the global flags of network mode's TLS and
// credentials: name, environment variable, usage.
var securityFlags = [][3]string{
	{"tls-ca", "RPSTREAM_TLS_CA", "`FILE`, CA certificates (PEM) the nodes' certificates must chain to: TLS on ($RPSTREAM_TLS_CA)"},
	{"tls-cert", "RPSTREAM_TLS_CERT", "`FILE`, client certificate (PEM) presented to the nodes, with --tls-key ($RPSTREAM_TLS_CERT)"},
	{"tls-key", "RPSTREAM_TLS_KEY", "`FILE`, the client certificate's private key (PEM) ($RPSTREAM_TLS_KEY)"},
	{"token-file", "RPSTREAM_TOKEN_FILE", "`FILE` holding a bearer token sent to the nodes (needs --tls-ca) ($RPSTREAM_TOKEN_FILE)"},
}

func (c *invocation) securityFlag(name string) *string {
	switch name {
	case "tls-ca":
		return &c.tlsCA
	case "tls-cert":
		return &c.tlsCert
	case "tls-key":
		return &c.tlsKey
	}
	return &c.tokenFile
}

// commands is the table of subcommands, in the order usage lists them.
var commands []*command

func init() {
	commands = []*command{createCmd, appendCmd, tailCmd, lsCmd, deleteCmd, trimCmd, retentionCmd, consumerCmd, statusCmd, healthCmd, membersCmd, clusterCmd, restoreCmd, benchCmd, versionCmd, completionCmd, manCmd}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// globalValueFlags are the global flags that take a value; Main must know
// them to find the command name among the arguments.
var globalValueFlags = map[string]bool{"data": true, "node": true, "tls-ca": true, "tls-cert": true, "tls-key": true, "token-file": true}

// Main runs streamcli with args (without the program name) and returns the
// exit code.
func Main(ctx context.Context, env Env, args []string) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if len(args) > 0 && args[0] == completeCommand {
		return runComplete(env, args[1:])
	}
	// The command is the first argument that is neither a global flag nor
	// its value; every other argument, before or after it, goes to the
	// command, which knows the global flags too.
	k := -1
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if len(a) > 1 && a[0] == '-' {
			name, hasValue := flagName(a)
			if name == "h" || name == "help" {
				topUsage(env.Stderr)
				return 0
			}
			if name == "version" {
				fmt.Fprintln(env.Stdout, buildinfo.Read().String("streamcli"))
				return 0
			}
			if globalValueFlags[name] && !hasValue {
				i++
			} else if !globalValueFlags[name] {
				fmt.Fprintf(env.Stderr, "streamcli: unknown flag %s before the command\n", a)
				topUsage(env.Stderr)
				return 2
			}
			continue
		}
		k = i
		break
	}
	if k < 0 {
		fmt.Fprintln(env.Stderr, "streamcli: no command given")
		topUsage(env.Stderr)
		return 2
	}
	if args[k] == "help" {
		if k+1 < len(args) && lookup(args[k+1]) != nil {
			commandUsage(env.Stderr, lookup(args[k+1]))
		} else {
			topUsage(env.Stderr)
		}
		return 0
	}
	cmd := lookup(args[k])
	if cmd == nil {
		fmt.Fprintf(env.Stderr, "streamcli: unknown command %q (commands: %s; see streamcli --help)\n", args[k], names(commands, ""))
		return 2
	}
	rest := append(append([]string{}, args[:k]...), args[k+1:]...)
	return dispatch(ctx, env, cmd, rest)
}

// dispatch runs cmd, or the subcommand of cmd named by the first
// positional argument.
func dispatch(ctx context.Context, env Env, cmd *command, args []string) int {
	if len(cmd.subs) == 0 {
		return run(ctx, env, cmd, args)
	}
	// The flags of cmd itself that take a value, so that a value is not
	// taken for a subcommand ("cluster --output json").
	valueFlags := globalValueFlags
	if cmd.flags != nil {
		fs := newFlagSet(cmd.name)
		cmd.flags(fs)
		valueFlags = maps.Clone(globalValueFlags)
		fs.VisitAll(func(f *flag.Flag) { valueFlags[f.Name] = !isBool(f) })
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) > 1 && a[0] == '-' && a != "--" {
			name, hasValue := flagName(a)
			if name == "h" || name == "help" {
				commandUsage(env.Stderr, cmd)
				return 0
			}
			if valueFlags[name] && !hasValue {
				i++
			}
			continue
		}
		if a == "--" && i+1 < len(args) {
			i++
			a = args[i]
		}
		for _, sub := range cmd.subs {
			if sub.name == cmd.name+" "+a {
				rest := append(append([]string{}, args[:i]...), args[i+1:]...)
				return run(ctx, env, sub, rest)
			}
		}
		fmt.Fprintf(env.Stderr, "streamcli %s: unknown %s %q (%ss: %s; see streamcli %s --help)\n", cmd.name, cmd.noun(), a, cmd.noun(), names(cmd.subs, cmd.name+" "), cmd.name)
		return 2
	}
	if cmd.flags != nil {
		return run(ctx, env, cmd, args)
	}
	fmt.Fprintf(env.Stderr, "streamcli %s: say which %s\n", cmd.name, cmd.noun())
	commandUsage(env.Stderr, cmd)
	return 2
}

func run(ctx context.Context, env Env, cmd *command, args []string) int {
	if !cmd.graceful && env.DefaultSignals != nil {
		env.DefaultSignals()
	}
	fs := newFlagSet(cmd.name)
	inv := &invocation{Env: env, out: bufio.NewWriterSize(env.Stdout, 64<<10)}
	defDir := env.Getenv("RPSTREAM_DATA")
	if defDir == "" {
		defDir = "./rpstream-data"
	}
	fs.StringVar(&inv.data.dir, "data", defDir, "`DIR`, the data directory holding the streams ($RPSTREAM_DATA)")
	fs.StringVar(&inv.node, "node", env.Getenv("RPSTREAM_NODE"), nodeUsage)
	for _, f := range securityFlags {
		fs.StringVar(inv.securityFlag(f[0]), f[0], env.Getenv(f[1]), f[2])
	}
	runf := cmd.flags(fs)
	pos, err := parseArgs(fs, args)
	if err == nil {
		err = runf(ctx, inv, pos)
	}
	if ferr := inv.out.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write output: %w", ferr)
	}
	var ue *usageError
	var xe *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &xe):
		fmt.Fprintf(env.Stderr, "streamcli %s: %s\n", cmd.name, oneLine(xe.msg))
		return xe.code
	case errors.Is(err, errHelp):
		commandUsage(env.Stderr, cmd)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "streamcli %s: %s\n", cmd.name, ue.msg)
		fmt.Fprintf(env.Stderr, "usage: streamcli %s %s (streamcli %s --help for more)\n", cmd.name, cmd.args, cmd.name)
		return 2
	default:
		fmt.Fprintf(env.Stderr, "streamcli %s: %s\n", cmd.name, oneLine(err.Error()))
		return 1
	}
}

// noun is what c's subcommands are called.
func (c *command) noun() string {
	if c.subNoun == "" {
		return "kind"
	}
	return c.subNoun
}

// names lists the names of cmds without prefix, for messages.
func names(cmds []*command, prefix string) string {
	var ns []string
	for _, c := range cmds {
		ns = append(ns, strings.TrimPrefix(c.name, prefix))
	}
	return strings.Join(ns, ", ")
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

func topUsage(w io.Writer) {
	fmt.Fprint(w, `streamcli works with rpstream streams. In embedded mode it opens the
stream files of a data directory directly: no server is needed.

usage: streamcli [--data DIR | --node HOST:PORT] COMMAND [ARGUMENTS] [FLAGS]

commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s  %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
global flags (before or after the command):
  --data DIR  data directory holding the streams, one file DIR/NAME.stream each
              (default $RPSTREAM_DATA, else ./rpstream-data)
  --node HOST:PORT[,HOST:PORT...]
              client address of a streamnode, or of several nodes of one
              cluster (asked in turn when one is unavailable): create,
              append, tail, ls and delete go through it instead of a data
              directory, status, health, members and cluster ask it, and bench
              cluster and bench failover measure it ($RPSTREAM_NODE)
  --tls-ca FILE, --tls-cert FILE, --tls-key FILE, --token-file FILE
              TLS and credentials for a node that runs TLS: the CA its
              certificate chains to, a client certificate and key, a file
              holding a bearer token ($RPSTREAM_TLS_CA, $RPSTREAM_TLS_CERT,
              $RPSTREAM_TLS_KEY, $RPSTREAM_TOKEN_FILE)

Flags may stand before or after the arguments; "--" ends the flags.
Run "streamcli COMMAND --help" for the flags of a command, "streamcli
--version" for the build. Every command that prints takes --output json.
`)
}

func commandUsage(w io.Writer, c *command) {
	fmt.Fprintf(w, "usage: streamcli %s %s\n\n%s\n", c.name, c.args, c.summary)
	if c.detail != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.detail))
	}
	if len(c.subs) > 0 {
		fmt.Fprintf(w, "\n%ss:\n", c.noun())
		for _, sub := range c.subs {
			fmt.Fprintf(w, "  %s %s\n      %s\n", sub.name, sub.args, sub.summary)
		}
		fmt.Fprintf(w, "\nRun \"streamcli %s %s --help\" for the flags of a %s.\n", c.name, strings.ToUpper(c.noun()), c.noun())
		if c.flags == nil {
			return
		}
	}
	fs := newFlagSet(c.name)
	fs.String("data", "", "`DIR`, the data directory holding the streams (default $RPSTREAM_DATA, else ./rpstream-data)")
	fs.String("node", "", nodeUsage)
	for _, f := range securityFlags {
		fs.String(f[0], "", f[2])
	}
	c.flags(fs)
	fmt.Fprintf(w, "\nflags:\n")
	printFlags(w, fs)
}

const nodeUsage = "`HOST:PORT,...`, the client address of a streamnode, or of several of one cluster (asked in turn), to work through instead of a data directory ($RPSTREAM_NODE)"
