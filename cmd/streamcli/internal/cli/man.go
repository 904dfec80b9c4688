package cli

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// "streamcli man" prints the manual page, streamcli(1), in roff, made
// from the same command table as the usage texts and completion: every
// command and subcommand with its usage, description and flags.

var manCmd = &command{
	name:    "man",
	args:    "",
	summary: "Print the manual page streamcli(1) (roff).",
	detail: `
Read it, or install it:

  streamcli man | man -l -
  streamcli man > /usr/local/share/man/man1/streamcli.1`,
	flags: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 0 {
				return usagef("man takes no arguments, got %q", args)
			}
			_, err := io.WriteString(c.out, manPage(time.Now()))
			return err
		}
	},
}

// manPage renders streamcli(1), dated now.
func manPage(now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH STREAMCLI 1 %q \"rpstream\" \"rpstream manual\"\n", now.Format("2006-01-02"))
	// Left-adjusted: usage lines and flag lists hold long words.
	b.WriteString(".ad l\n.SH NAME\nstreamcli \\- append to, read and administer rpstream streams\n")
	b.WriteString(".SH SYNOPSIS\n.B streamcli\n[\\-\\-data DIR | \\-\\-node HOST:PORT[,...]]\n.I COMMAND\n[ARGUMENTS] [FLAGS]\n")
	var top bytes.Buffer
	topUsage(&top)
	b.WriteString(".SH DESCRIPTION\n")
	manText(&b, top.String())
	b.WriteString(".SH COMMANDS\n")
	var walk func(cmds []*command)
	walk = func(cmds []*command) {
		for _, c := range cmds {
			fmt.Fprintf(&b, ".SS %s\n", roffEscape("streamcli "+c.name+" "+c.args))
			manText(&b, c.summary)
			if c.detail != "" {
				manText(&b, strings.TrimSpace(c.detail))
			}
			if c.flags != nil {
				fs := newFlagSet(c.name)
				c.flags(fs)
				fs.VisitAll(func(f *flag.Flag) {
					name, usage := flag.UnquoteUsage(f)
					head := "\\-\\-" + roffEscape(f.Name)
					if name != "" {
						head += " " + roffEscape(name)
					}
					fmt.Fprintf(&b, ".TP\n.B %s\n%s", head, roffLine(usage))
					if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
						fmt.Fprintf(&b, " (default %s)", roffEscape(f.DefValue))
					}
					b.WriteString("\n")
				})
			}
			walk(c.subs)
		}
	}
	walk(commands)
	b.WriteString(".SH ENVIRONMENT\n")
	for _, e := range []string{"RPSTREAM_DATA", "RPSTREAM_NODE", "RPSTREAM_TLS_CA", "RPSTREAM_TLS_CERT", "RPSTREAM_TLS_KEY", "RPSTREAM_TOKEN_FILE"} {
		fmt.Fprintf(&b, ".TP\n.B %s\nthe global flag of the same name\n", e)
	}
	b.WriteString(".SH SEE ALSO\n.BR streamnode (1)\n")
	return b.String()
}

// manText writes s as roff paragraphs: blank lines separate paragraphs,
// indented lines are kept as they are (examples).
func manText(b *strings.Builder, s string) {
	b.WriteString(".PP\n")
	nofill := false
	for _, line := range strings.Split(s, "\n") {
		switch {
		case strings.TrimSpace(line) == "":
			if nofill {
				b.WriteString(".fi\n")
				nofill = false
			}
			b.WriteString(".PP\n")
		case strings.HasPrefix(line, "  "):
			if !nofill {
				b.WriteString(".nf\n")
				nofill = true
			}
			b.WriteString(roffLine(line) + "\n")
		default:
			if nofill {
				b.WriteString(".fi\n")
				nofill = false
			}
			b.WriteString(roffLine(line) + "\n")
		}
	}
	if nofill {
		b.WriteString(".fi\n")
	}
}

// roffLine escapes a line of text, and keeps a line that starts with a
// dot or an apostrophe from being read as a request.
func roffLine(s string) string {
	s = roffEscape(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = "\\&" + s
	}
	return s
}

func roffEscape(s string) string {
	return strings.NewReplacer("\\", "\\e", "-", "\\-").Replace(s)
}
