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
	capped := strings.ReplaceAll(table, "dscp = ", "max_connections = 1000000\ndscp = ")
	files := map[bool]string{}
	for _, withCap := range []bool{false, true} {
		t := table
		if withCap {
			t = capped
		}
		f := filepath.Join(os.TempDir(), fmt.Sprintf("vhqos-bench-caps-%v-%d.toml", withCap, os.Getpid()))
		if err := os.WriteFile(f, []byte(t), 0o644); err != nil {
			return err
		}
		defer os.Remove(f)
		files[withCap] = f
	}
	fmt.Printf("Apache prefork, static file, wrk -t2 -c%d -d%v, %d alternating rounds of vhqos without and with max_connections = 1000000 on every vhost; %s\n", conns, opts.duration, pairs, kernel())
	for _, path := range setups {
		if !strings.Contains(path.name, opts.only) {
			continue
		}
		fmt.Printf("\n%s\n", path.name)
		for _, close := range []bool{true, false} {
			var ratio, cpuOpen, cpuCapped []float64
			for i := 0; i < pairs; i++ {
				run := func(withCap bool) (result, supervisorCost, error) {
					prefix := append(opts.pinServer(), bin, "run", "--config", files[withCap], "--status-socket", filepath.Join(os.TempDir(), fmt.Sprintf("vhqos-bench-%d.sock", os.Getpid())), "--")
					return measure(cg, prefix, opts.pin, path, close, conns, opts.duration, nil)
				}
				open, openSup, err := run(false)
				if err != nil {
					return err
				}
				withCap, cappedSup, err := run(true)
				if err != nil {
					return err
				}
				ratio = append(ratio, withCap.rps/open.rps)
				if close && open.requests > 0 && withCap.requests > 0 {
					cpuOpen = append(cpuOpen, openSup.cpu.Seconds()*1e6/float64(open.requests))
					cpuCapped = append(cpuCapped, cappedSup.cpu.Seconds()*1e6/float64(withCap.requests))
				}
				fmt.Printf("  %-10s round %d: no cap %8.0f, cap never reached %8.0f req/s; capped/uncapped %.3f\n", label(close), i+1, open.rps, withCap.rps, withCap.rps/open.rps)
			}
			fmt.Printf("  %-10s medians: capped/uncapped %.3f", label(close), median(ratio))
			if close {
				fmt.Printf("; supervisor CPU per connection: no cap %.1f µs, cap %.1f µs", median(cpuOpen), median(cpuCapped))
			}
			fmt.Println()
		}
	}
	return nil
}
