package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/status"
	"github.com/vhqos/vhqos/supervisor"
)

func statusCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vhqos status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", status.DefaultSocket, "the status socket of the vhqos to ask")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	watch := fs.Duration("watch", 0, "refresh every DURATION (e.g. 2s), like top")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var prev *status.Report
	for {
		r, err := status.Fetch(*socket)
		if err != nil {
			fmt.Fprintln(stderr, "vhqos status:", err)
			if errors.Is(err, status.ErrNotRunning) {
				return 3
			}
			return 1
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			enc.Encode(r)
		} else {
			if *watch > 0 {
				fmt.Fprint(stdout, "\x1b[H\x1b[2J")
			}
			r.WriteTable(stdout, prev)
		}
		if *watch <= 0 {
			return 0
		}
		prev = r
		time.Sleep(*watch)
	}
}

// buildReport gathers what `vhqos status` shows.
func buildReport(started time.Time, serverPid int, path string, r *reloader, cg *cgroup.Manager, sup *supervisor.Supervisor) *status.Report {
	table, gen := r.table()
	st := sup.Stats()
	procs, listeners, followed := sup.Tables()
	rep := &status.Report{
		PID: os.Getpid(), ServerPID: serverPid, Config: path, Started: started, Now: time.Now(),
		Generation: gen, Cgroup: cg.Version(),
		Supervisor: status.Counters{
			Notifications: st.Notifications.Load(), Accepted: st.Accepted.Load(), Continued: st.Continued.Load(),
			Requeued: st.Requeued.Load(), PlacementErrors: st.PlacementErrors.Load(), Errors: st.Errors.Load(),
			NamesFound: st.NamesFound.Load(), NameFallbacks: st.NameFallbacks.Load(), NameTimeouts: st.NameTimeouts.Load(), Reclassified: st.Reclassified.Load(),
			Reloads: r.reloads.Load(), ReloadsRefused: r.refused.Load(),
			Track: sup.Track().String(), KnownProcesses: procs, ListenerCopies: listeners, FollowedConnections: followed,
		},
	}
	conns := sup.GroupConnections()
	live := sup.LiveConnections()
	admissions := sup.Admissions()
	add := func(c *policy.Class) {
		group := groupName(c, table)
		cl := status.Class{
			Name: c.Name, Default: c == &table.Defaults, Cgroup: cg.Path(group), DSCP: c.DSCP,
			CPUWeight: c.Resources.CPUWeight, CPUMax: c.Resources.CPUQuotaPercent, IOWeight: c.Resources.IOWeight,
			Connections: conns[group], Live: live[group],
		}
		if a := c.Admission; a.Capped() {
			st := admissions[group]
			cl.Admission = &status.Admission{
				MaxConnections: a.MaxConnections, MaxConnectionsPerIP: a.MaxConnectionsPerIP, OverLimit: a.OverLimit,
				Open: st.Open, Admitted: st.Admitted, Alternate: st.Alternate, Refused: st.Refused,
			}
		}
		cl.PIDs, _ = cg.Pids(group)
		if u, err := cg.Usage(group); err == nil {
			cl.CPUUsec, cl.Throttled, cl.Faults = u.CPUUsec, u.ThrottledUsec, u.ThrottledPeriods
			cl.IOReadBytes, cl.IOWriteBytes = u.IOReadBytes, u.IOWriteBytes
		}
		rep.Classes = append(rep.Classes, cl)
	}
	add(&table.Defaults)
	for i := range table.VHosts {
		add(&table.VHosts[i])
	}
	return rep
}
