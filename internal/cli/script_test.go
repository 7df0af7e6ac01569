package cli

import (
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	commands = append(commands, testCommands...)
	testscript.Main(m, map[string]func(){
		"fedweave": func() { os.Exit(Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestScript runs the CLI sessions in testdata/script/*.txtar end to end: each "exec fedweave"
// starts this test binary as the fedweave command.
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}
