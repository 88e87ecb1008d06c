package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/vhqos/vhqos/policy"
)

func checkCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vhqos check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "vhqos check: name one QoS table, e.g. vhqos check /etc/vhqos/qos.toml")
		return 2
	}
	table, err := policy.Load(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	fmt.Fprintf(stdout, "%s: OK, %d vhost(s)\n", fs.Arg(0), len(table.VHosts))
	return 0
}
