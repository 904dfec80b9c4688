package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// usageError is bad usage: a missing or extra argument, an unknown flag, a
// flag value that does not parse. It exits with code 2 after the usage of
// the command.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// exitError is a command's outcome that is not a failure to run but a
// state a script tests by exit code (status and health: 3
// under-replicated, 4 no controller): the message, then that code.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// Exit codes of status, health and append beyond 0, 1 and 2.
const (
	exitDegraded     = 3 // a stream under-replicated or unavailable, a node not alive
	exitNoController = 4 // the catalog has no controller: no quorum of voters
	exitConflict     = 5 // append --expect N: the stream's next position is not N
)

// errHelp is returned for -h and --help: usage, exit code 0.
var errHelp = flag.ErrHelp

// newFlagSet is a flag set that reports errors to its caller instead of
// printing or exiting.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseArgs parses args with fs and returns the positional arguments.
// Unlike fs.Parse, flags may stand anywhere among the positional arguments
// ("append s1 --data d hello"); "--" ends the flags. A flag is written -name
// or --name; a value follows as the next argument or after "=" (boolean
// flags take a value only after "=").
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name, hasValue := flagName(a)
		f := fs.Lookup(name)
		if f == nil {
			if name == "h" || name == "help" {
				return nil, errHelp
			}
			return nil, usagef("unknown flag %s", a)
		}
		flags = append(flags, a)
		if hasValue || isBool(f) {
			continue
		}
		if i+1 >= len(args) {
			return nil, usagef("flag --%s needs a value", name)
		}
		i++
		flags = append(flags, args[i])
	}
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, &usageError{err.Error()}
	}
	return pos, nil
}

// flagName is the name of the flag in argument a ("-x", "--x", "--x=v")
// and whether a carries its value.
func flagName(a string) (name string, hasValue bool) {
	name = strings.TrimPrefix(a[1:], "-")
	if k := strings.IndexByte(name, '='); k >= 0 {
		return name[:k], true
	}
	return name, false
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// printFlags writes the flags of fs as "  --name VALUE  usage (default)".
func printFlags(w io.Writer, fs *flag.FlagSet) {
	type row struct{ left, right string }
	var rows []row
	width := 0
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		left := "--" + f.Name
		if len(f.Name) == 1 {
			left = "-" + f.Name
		}
		if !isBool(f) && kind != "" {
			left += " " + kind
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && !strings.Contains(usage, "(default") {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		rows = append(rows, row{left, usage})
		width = max(width, len(left))
	})
	for _, r := range rows {
		fmt.Fprintf(w, "  %-*s  %s\n", width, r.left, r.right)
	}
}
