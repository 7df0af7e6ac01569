// Command fedweave is the single binary of fedweave: see internal/cli for its commands.
package main

import (
	"os"

	"github.com/fedweave/fedweave/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
