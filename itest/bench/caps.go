package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vhqos/vhqos/cgroup"
)

// capsBench measures what a connection cap that is never reached costs:
// the same server under vhqos with the table as it is and with
// max_connections = 1000000 on every vhost, alternating, on each path.
// A capped class counts each connection it admits, so on a listener whose
// address decides the class vhqos takes the accept in hand instead of
// leaving it to the kernel; on the other paths vhqos accepts either way.
func capsBench(cg *cgroup.Manager, bin, table string, setups []setup, pairs, conns int, opts measureOptions) error {
	return tablesBench(cg, bin, tablePair{
		base: table, other: strings.ReplaceAll(table, "dscp = ", "max_connections = 1000000\ndscp = "),
		what: "max_connections = 1000000 on every vhost", baseLabel: "no cap", otherLabel: "cap never reached", ratio: "capped/uncapped",
		baseCPU: "no cap", otherCPU: "cap",
	}, setups, pairs, conns, opts)
}

// tablePair is two tables to measure against each other, and how the
// output names them.
type tablePair struct {
	base, other           string
	what                  string // what other adds, for the heading
	baseLabel, otherLabel string // in each round's line
	ratio                 string // other/base, in words
	baseCPU, otherCPU     string // in the supervisor CPU figures
}

// tablesBench runs the same server under vhqos with the two tables of p,
// alternating, on each path, for Connection: close and keep-alive, and
// prints each round's requests/s and the median ratio other/base.
func tablesBench(cg *cgroup.Manager, bin string, p tablePair, setups []setup, pairs, conns int, opts measureOptions) error {
	files := map[bool]string{}
	for _, other := range []bool{false, true} {
		t := p.base
		if other {
			t = p.other
		}
		f, removeTable, err := writeTable(t)
		if err != nil {
			return err
		}
		defer removeTable()
		files[other] = f
	}
	fmt.Printf("Apache prefork, static file, wrk -t2 -c%d -d%v, %d alternating rounds of vhqos without and with %s; %s\n", conns, opts.duration, pairs, p.what, kernel())
	for _, path := range setups {
		if !strings.Contains(path.name, opts.only) {
			continue
		}
		fmt.Printf("\n%s\n", path.name)
		for _, close := range []bool{true, false} {
			var ratio, cpuBase, cpuOther []float64
			for i := 0; i < pairs; i++ {
				run := func(other bool) (result, supervisorCost, error) {
					prefix := append(opts.pinServer(), bin, "run", "--config", files[other], "--status-socket", filepath.Join(os.TempDir(), fmt.Sprintf("vhqos-bench-%d.sock", os.Getpid())), "--")
					return measure(cg, prefix, opts.pin, path, close, conns, opts.duration, nil)
				}
				base, baseSup, err := run(false)
				if err != nil {
					return err
				}
				other, otherSup, err := run(true)
				if err != nil {
					return err
				}
				ratio = append(ratio, other.rps/base.rps)
				if close && base.requests > 0 && other.requests > 0 {
					cpuBase = append(cpuBase, baseSup.cpu.Seconds()*1e6/float64(base.requests))
					cpuOther = append(cpuOther, otherSup.cpu.Seconds()*1e6/float64(other.requests))
				}
				fmt.Printf("  %-10s round %d: %s %8.0f, %s %8.0f req/s; %s %.3f\n", label(close), i+1, p.baseLabel, base.rps, p.otherLabel, other.rps, p.ratio, other.rps/base.rps)
			}
			fmt.Printf("  %-10s medians: %s %.3f", label(close), p.ratio, median(ratio))
			if close {
				fmt.Printf("; supervisor CPU per connection: %s %.1f µs, %s %.1f µs", p.baseCPU, median(cpuBase), p.otherCPU, median(cpuOther))
			}
			fmt.Println()
		}
	}
	return nil
}
