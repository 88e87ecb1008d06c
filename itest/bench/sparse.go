package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/itest"
)

// Sparse traffic: what a supervisor costs a server that is idle or takes a
// few connections a second, as most of a hosting machine's sites do. At
// full load the cost per connection is what counts (main.go); here it is
// the cost per second, mostly wake-ups: the floor sleeps in NOTIF_RECV
// until a notification comes, while a Go supervisor's runtime wakes for
// its own reasons (sysmon, timers) unless it is kept quiet.

// sparseRates are the connection rates of -sparse, per second; 0 is idle.
var sparseRates = []int{0, 10, 100}

// sparseSettle is how long a server runs, after its first connections,
// before a measurement starts: start-up costs are not what this measures.
const sparseSettle = 2 * time.Second

// sparseBench measures the floor and vhqos (and a baseline build, if
// given) alternating, each at every rate for d, pairs rounds, and prints
// the medians of each supervisor's context switches and CPU per second.
func sparseBench(cg *cgroup.Manager, floorBin string, vhqosRun func(bin string) []string, bin, baseline string, setups []setup, only string, pairs int, d time.Duration) error {
	fmt.Printf("Apache prefork, static file, connections at a fixed rate (Connection: close, each on its own) for %v, %d alternating rounds of the floor (C reference supervisor) and vhqos; the supervisor's context switches and CPU per second; %s\n", d, pairs, kernel())
	type who struct {
		name           string
		prefix         []string
		switches, cpuS []float64
	}
	for _, su := range setups {
		if !strings.Contains(su.name, only) {
			continue
		}
		fmt.Printf("\n%s (floor: %s)\n", su.name, su.floorMode)
		for _, rate := range sparseRates {
			whos := []*who{
				{name: "floor", prefix: []string{floorBin, su.floorMode, "--"}},
				{name: "vhqos", prefix: vhqosRun(bin)},
			}
			if baseline != "" {
				whos = append(whos, &who{name: "baseline", prefix: vhqosRun(baseline)})
			}
			for round := 0; round < pairs; round++ {
				for _, w := range whos {
					switches, cpu, err := sparseRun(cg, w.prefix, su, rate, d)
					if err != nil {
						return fmt.Errorf("%s at %d connections/s: %w", w.name, rate, err)
					}
					w.switches = append(w.switches, switches)
					w.cpuS = append(w.cpuS, cpu)
				}
			}
			fmt.Printf("  %3d connections/s:", rate)
			for i, w := range whos {
				if i > 0 {
					fmt.Print(";")
				}
				fmt.Printf(" %s %.1f switches/s, %.2f ms CPU/s", w.name, median(w.switches), median(w.cpuS))
				if rate > 0 {
					fmt.Printf(" (%.1f switches per connection)", median(w.switches)/float64(rate))
				}
			}
			fmt.Println()
		}
	}
	return nil
}

// sparseRun starts Apache under prefix, lets it settle, and measures its
// supervisor's context switches and CPU milliseconds per second while
// connections come at rate a second for d.
func sparseRun(cg *cgroup.Manager, prefix []string, su setup, rate int, d time.Duration) (switchesPerS, cpuMsPerS float64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	a, supervisors, err := startApache(ctx, cg, prefix, su, 5)
	if err != nil {
		return 0, 0, err
	}
	defer a.Remove()
	defer a.Stop()
	addr := net.JoinHostPort(su.server, "8080")
	if su.server == "" {
		addr = "127.0.0.2:8080"
	}
	// A few connections first, so that every supervisor has seen the
	// server's listeners and processes.
	if failed := openAtRate(addr, 20, time.Second); failed > 0 {
		return 0, 0, fmt.Errorf("%d of the first connections failed", failed)
	}
	time.Sleep(sparseSettle)
	cpu0, switches0 := costOf(supervisors)
	start := time.Now()
	if rate == 0 {
		time.Sleep(d)
	} else if failed := openAtRate(addr, rate, d); failed > 0 {
		return 0, 0, fmt.Errorf("%d connections failed", failed)
	}
	elapsed := time.Since(start).Seconds()
	cpu1, switches1 := costOf(supervisors)
	return float64(switches1-switches0) / elapsed, (cpu1 - cpu0).Seconds() * 1000 / elapsed, nil
}

// openAtRate opens rate connections a second to addr for d, each asking
// for the static file and reading the answer to its end (itest.Get), and
// returns how many failed (not answered 200, or any error).
func openAtRate(addr string, rate int, d time.Duration) (failed int) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var fails atomic.Int64
	var wg sync.WaitGroup
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := itest.GetWithin(addr, "/index.html", 10*time.Second); err != nil || r.Status != 200 {
				fails.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(fails.Load())
}
