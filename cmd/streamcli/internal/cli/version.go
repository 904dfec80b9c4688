package cli

import (
	"context"
	"flag"
	"fmt"

	"github.com/rpstream/rpstream/internal/buildinfo"
)

// versionCmd is "version", also streamcli --version.
var versionCmd = &command{
	name:    "version",
	args:    "[--output text|json]",
	summary: "Print streamcli's version, the commit it was built from and its Go version.",
	detail: `
The same as streamcli --version. The version is the release's (set when
building with -ldflags "-X github.com/rpstream/rpstream/internal/buildinfo.Version=vX.Y.Z"),
else the module's, else "(devel)"; the commit, and whether the tree had
uncommitted changes, come from the VCS information Go records in the
binary. --output json prints one object with version, commit,
commit_time, modified, go and platform.`,
	flags: func(fs *flag.FlagSet) runFunc {
		output := outputFlag(fs)
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 0 {
				return usagef("version takes no arguments")
			}
			asJSON, err := wantJSON(*output)
			if err != nil {
				return err
			}
			in := buildinfo.Read()
			if asJSON {
				return c.printJSON(in)
			}
			fmt.Fprintln(c.out, in.String("streamcli"))
			return nil
		}
	},
}
