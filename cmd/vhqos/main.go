// Command vhqos runs an unmodified server so that every virtual host it
// serves gets its own CPU and IO limits and DSCP mark. See `vhqos help`.
//
//go:debug updatemaxprocs=0
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/vhqos/vhqos/shim"
)

// version is set by the Makefile through -ldflags.
var version = "dev"

// The go:debug line above keeps the runtime (Go 1.25 and later) from
// re-reading its cgroup's CPU limits every second to adjust GOMAXPROCS,
// which woke an idle keeper for nothing; the supervisor sets GOMAXPROCS
// itself (supervisor.Run).
func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 1 && args[1] == shim.Arg {
		return shim.Main(args[2:])
	}
	if len(args) < 2 {
		writeUsage(stderr)
		return exitUsage
	}
	switch name := args[1]; name {
	case "supervise":
		// Started by vhqos run (the keeper), not by hand.
		return superviseCommand(args[2:], stdout, stderr)
	case "reap":
		// Started by vhqos run (the keeper), not by hand.
		return reapCommand(args[2:], stderr)
	// One dash does as well as two, as for every command's options.
	case "--version", "-version", "-V":
		return versionCommand(args[2:], stdout, stderr)
	case "-h", "--help", "-help":
		return helpCommand(args[2:], stdout, stderr)
	default:
		if c := lookupCommand(name); c != nil {
			return c.main(args[2:], stdout, stderr)
		}
		if len(name) > 1 && name[0] == '-' {
			fmt.Fprintf(stderr, "vhqos: unknown option %s; a command comes first (vhqos COMMAND [options]); see 'vhqos help'\n", name)
			return exitUsage
		}
		fmt.Fprintf(stderr, "vhqos: unknown command %q; see 'vhqos help'\n", name)
		return exitUsage
	}
}

func versionCommand(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version")
	if _, code, ok := parseArgs(fs, args, 0, stdout, stderr); !ok {
		return code
	}
	fmt.Fprintln(stdout, "vhqos", version)
	return 0
}

// helpCommand is `vhqos help [COMMAND]`: the overview, or what
// `vhqos COMMAND --help` prints.
func helpCommand(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("help")
	operands, code, ok := parseArgs(fs, args, 1, stdout, stderr)
	if !ok {
		return code
	}
	if len(operands) == 0 {
		writeUsage(stdout)
		return 0
	}
	c := lookupCommand(operands[0])
	if c == nil {
		fmt.Fprintf(stderr, "vhqos help: unknown command %q; see 'vhqos help'\n", operands[0])
		return exitUsage
	}
	return c.main([]string{"--help"}, stdout, stderr)
}
