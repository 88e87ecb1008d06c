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
	// Warnings go where errors go, each on its line like them; the
	// verdict stays on stdout.
	for _, w := range table.Warnings {
		fmt.Fprintln(stderr, w)
	}
	verdict := fmt.Sprintf("%s: OK, %d vhost(s)", fs.Arg(0), len(table.VHosts))
	if n := len(table.Tenants); n > 0 {
		verdict += fmt.Sprintf(", %d tenant(s)", n)
	}
	if n := len(table.Warnings); n > 0 {
		verdict += fmt.Sprintf(", %d warning(s)", n)
	}
	fmt.Fprintln(stdout, verdict)
	return 0
}
