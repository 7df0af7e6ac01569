package cli

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
)

const versionUsage = `usage: fedweave version

Version prints the version of fedweave (the module version it was built at, or "devel" for a
build from a source tree), the Go version that built it, and the platform, on one line.

Example:

	$ fedweave version
	fedweave v0.1.0 go1.26.8 linux/amd64
`

var versionCmd = &Command{
	Name:    "version",
	Summary: "print the versions of fedweave and of Go",
	Usage:   versionUsage,
	Flags: func(fs *flag.FlagSet) RunFunc {
		return func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 {
				return Usagef("version takes no arguments")
			}
			_, err := fmt.Fprintf(env.Stdout, "fedweave %s %s %s/%s\n",
				version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		}
	},
}

// version returns the main module's version from the build information: a tag or pseudo-version
// for "go install ...@version" and for builds with VCS stamping, "devel" otherwise.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Main.Version == "" || bi.Main.Version == "(devel)" {
		return "devel"
	}
	return bi.Main.Version
}
