package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Shell completion: "streamcli completion SHELL" prints a script that
// asks "streamcli __complete WORDS..." for the candidates of the last
// word (commands, subcommands, flags, flag values, the streams of the
// data directory), so that the scripts stay small and the command table
// is the only list of what exists.

var completionCmd = &command{
	name:    "completion",
	args:    "bash|zsh|fish",
	summary: "Print a shell completion script for bash, zsh or fish.",
	detail: `
Load it in the current shell, or install it for every new one:

  bash:  source <(streamcli completion bash)
         streamcli completion bash > /etc/bash_completion.d/streamcli
  zsh:   source <(streamcli completion zsh)
         streamcli completion zsh > "${fpath[1]}/_streamcli"
  fish:  streamcli completion fish | source
         streamcli completion fish > ~/.config/fish/completions/streamcli.fish

It completes commands, subcommands, flags, the values of --output and
--acks, and stream names of the data directory (embedded mode; it asks no
node).`,
	flags: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 1 {
				return usagef("completion takes one shell: bash, zsh or fish")
			}
			script, ok := completionScripts[args[0]]
			if !ok {
				return usagef("no completion for shell %q: bash, zsh or fish", args[0])
			}
			_, err := io.WriteString(c.out, script)
			return err
		}
	},
}

var completionScripts = map[string]string{
	"bash": `# bash completion for streamcli: source <(streamcli completion bash)
_streamcli() {
	local IFS=$'\n'
	COMPREPLY=($("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _streamcli streamcli
`,
	"zsh": `#compdef streamcli
# zsh completion for streamcli: source <(streamcli completion zsh)
_streamcli() {
	local -a cands
	cands=(${(f)"$("${words[1]}" __complete "${(@)words[2,CURRENT]}" 2>/dev/null)"})
	if (( ${#cands} )); then
		compadd -- "${cands[@]}"
	else
		_files
	fi
}
compdef _streamcli streamcli
`,
	"fish": `# fish completion for streamcli: streamcli completion fish | source
complete -c streamcli -f -a '(streamcli __complete (commandline -opc)[2..-1] (commandline -ct))'
`,
}

// completeCommand is the name of the hidden command the scripts call.
const completeCommand = "__complete"

// complete returns the candidates for the last of words (the arguments
// after the program name, the last being the word under the cursor,
// maybe empty), one per line, those that start with it.
func complete(env Env, words []string) []string {
	if len(words) == 0 {
		words = []string{""}
	}
	// bash splits "--output=js" into "--output", "=", "js".
	var ws []string
	for i := 0; i < len(words); i++ {
		if words[i] == "=" && len(ws) > 0 && strings.HasPrefix(ws[len(ws)-1], "-") {
			continue
		}
		ws = append(ws, words[i])
	}
	cur := ws[len(ws)-1]
	prev := ws[:len(ws)-1]

	var cmd *command
	var positional []string
	data := ""
	node := ""
	valueFlags := globalValueFlags
	for i := 0; i < len(prev); i++ {
		a := prev[i]
		if len(a) > 1 && a[0] == '-' {
			name, hasValue := flagName(a)
			if !hasValue && valueFlags[name] && i+1 < len(prev) {
				i++
				switch name {
				case "data":
					data = prev[i]
				case "node":
					node = prev[i]
				}
			}
			continue
		}
		switch {
		case cmd == nil:
			cmd = lookup(a)
			if cmd == nil {
				return nil
			}
			valueFlags = commandValueFlags(cmd)
		case len(cmd.subs) > 0 && len(positional) == 0 && subcommand(cmd, a) != nil:
			cmd = subcommand(cmd, a)
			valueFlags = commandValueFlags(cmd)
		default:
			positional = append(positional, a)
		}
	}
	// The value of a flag.
	if len(prev) > 0 {
		if name, hasValue := flagName0(prev[len(prev)-1]); name != "" && !hasValue && valueFlags[name] {
			return filter(flagValues(name), cur)
		}
	}
	if strings.HasPrefix(cur, "-") {
		fs := newFlagSet("complete")
		fs.String("data", "", "")
		fs.String("node", "", "")
		if cmd != nil && cmd.flags != nil {
			cmd.flags(fs)
		}
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
		if cmd == nil {
			names = append(names, "--help", "--version")
		}
		return filter(names, cur)
	}
	switch {
	case cmd == nil:
		var names []string
		for _, c := range commands {
			names = append(names, c.name)
		}
		return filter(append(names, "help"), cur)
	case len(cmd.subs) > 0 && len(positional) == 0:
		var names []string
		for _, s := range cmd.subs {
			names = append(names, strings.TrimPrefix(s.name, cmd.name+" "))
		}
		return filter(names, cur)
	case cmd.name == "completion" && len(positional) == 0:
		return filter([]string{"bash", "fish", "zsh"}, cur)
	case cmd.name == "help" && len(positional) == 0:
		return nil
	case takesStream[cmd.name] && len(positional) == 0 && node == "" && env.Getenv("RPSTREAM_NODE") == "":
		if data == "" {
			data = env.Getenv("RPSTREAM_DATA")
		}
		if data == "" {
			data = "./rpstream-data"
		}
		names, _ := dataDir{data}.names()
		return filter(names, cur)
	}
	return nil
}

// takesStream are the commands whose first argument is an existing
// stream.
var takesStream = map[string]bool{"append": true, "tail": true, "ls": true, "delete": true, "status": true, "trim": true}

func subcommand(cmd *command, name string) *command {
	for _, s := range cmd.subs {
		if s.name == cmd.name+" "+name {
			return s
		}
	}
	return nil
}

// commandValueFlags are the flags of cmd that take a value, global ones
// included.
func commandValueFlags(cmd *command) map[string]bool {
	m := map[string]bool{}
	for k, v := range globalValueFlags {
		m[k] = v
	}
	if cmd.flags != nil {
		fs := newFlagSet(cmd.name)
		cmd.flags(fs)
		fs.VisitAll(func(f *flag.Flag) { m[f.Name] = !isBool(f) })
	}
	return m
}

// flagName0 is flagName for an argument that may not be a flag ("").
func flagName0(a string) (string, bool) {
	if len(a) < 2 || a[0] != '-' {
		return "", false
	}
	return flagName(a)
}

// flagValues are the values a flag takes, where they are few.
func flagValues(name string) []string {
	switch name {
	case "output":
		return []string{"text", "json"}
	case "acks":
		return []string{"leader", "quorum", "all"}
	case "mover":
		return []string{"auto", "sync", "cpu", "dsa"}
	case "provider":
		return []string{"tcp", "verbs"}
	}
	return nil
}

func filter(cands []string, prefix string) []string {
	var out []string
	for _, c := range cands {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// runComplete answers "streamcli __complete WORDS...".
func runComplete(env Env, words []string) int {
	for _, c := range complete(env, words) {
		fmt.Fprintln(env.Stdout, c)
	}
	return 0
}
