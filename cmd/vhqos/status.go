package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/status"
	"github.com/vhqos/vhqos/supervisor"
)

func statusCommand(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status")
	socket := socketOption(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON, for scripts")
	watch := durationOption(fs, "watch", 0, minWatch, "refresh every `DURATION` (e.g. 2s; 100ms or more), like top, with the CPU rate between refreshes")
	if _, code, ok := parseArgs(fs, args, 0, stdout, stderr); !ok {
		return code
	}
	var prev *status.Report
	for {
		r, err := status.Fetch(*socket)
		if err != nil {
			fmt.Fprintln(stderr, "vhqos status:", err)
			if errors.Is(err, status.ErrNotRunning) {
				return exitNotRunning
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
	refusedWhy := r.refusedWhy()
	rep := &status.Report{
		PID: os.Getpid(), ServerPID: serverPid, Config: path, Started: started, Now: time.Now(),
		Generation: gen, TableRefused: refusedWhy != "", TableRefusedWhy: refusedWhy, Cgroup: cg.Version(),
		Supervisor: status.Counters{
			Notifications: st.Notifications.Load(), Accepted: st.Accepted.Load(), Continued: st.Continued.Load(),
			Requeued: st.Requeued.Load(), PlacementErrors: st.PlacementErrors.Load(), Errors: st.Errors.Load(),
			NamesFound: st.NamesFound.Load(), NameFallbacks: st.NameFallbacks.Load(), NameTimeouts: st.NameTimeouts.Load(), Reclassified: st.Reclassified.Load(),
			Reloads: r.reloads.Load(), ReloadsRefused: r.refused.Load(),
			Track: sup.Track().String(), KnownProcesses: procs, ListenerCopies: listeners, FollowedConnections: followed,
			Placement: sup.Placement().String(), MultiThreadedProcesses: st.MultiThreadedProcesses.Load(),
			UnplacedMultiThreaded: st.UnplacedMultiThreaded.Load(), ThreadPlacements: st.ThreadPlacements.Load(),
		},
	}
	conns := sup.GroupConnections()
	live := sup.LiveConnections()
	admissions := sup.Admissions()
	add := func(c *policy.Class) {
		group := groupName(c, table)
		cl := status.Class{
			Name: c.Name, Default: c == &table.Defaults, Tenant: c.Tenant, Cgroup: cg.Path(group), DSCP: c.DSCP,
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
			cl.Memory, cl.Tasks = memoryTasks(c.Resources, u)
			cl.Threads = u.Threads
		}
		rep.Classes = append(rep.Classes, cl)
	}
	add(&table.Defaults)
	for i := range table.VHosts {
		add(&table.VHosts[i])
	}
	rep.Tenants = tenantReport(cg, table)
	tenantFaultSums(rep, table, pidsEventsLocal(cg.Version()))
	bandwidthReport(r.log, rep, table, r.shapeDevices)
	return rep
}

// tenantReport is what each tenant of table used, read from its cgroup.
func tenantReport(cg *cgroup.Manager, table *policy.Table) []status.Tenant {
	var out []status.Tenant
	for i := range table.Tenants {
		tn := &table.Tenants[i]
		group := table.TenantGroup(tn)
		st := status.Tenant{Name: tn.Name, Parent: tn.Parent, Cgroup: cg.Path(group),
			CPUWeight: tn.Resources.CPUWeight, CPUMax: tn.Resources.CPUQuotaPercent}
		for j := range table.VHosts {
			if strings.EqualFold(table.VHosts[j].Tenant, tn.Name) {
				st.Sites++
			}
		}
		if u, err := cg.Usage(group); err == nil {
			st.CPUUsec, st.Throttled, st.Faults = u.CPUUsec, u.ThrottledUsec, u.ThrottledPeriods
			st.IOReadBytes, st.IOWriteBytes = u.IOReadBytes, u.IOWriteBytes
			st.Memory, st.Tasks = memoryTasks(tn.Resources, u)
		}
		out = append(out, st)
	}
	return out
}

// memoryTasks is a class's memory and task limits with what the kernel
// counted for its group; nil for what the kernel does not account there.
func memoryTasks(r cgroup.Resources, u cgroup.Usage) (*status.Memory, *status.Tasks) {
	var m *status.Memory
	var t *status.Tasks
	if u.Memory {
		m = &status.Memory{Max: r.MemoryMax, High: r.MemoryHigh, Current: u.MemoryBytes, Events: u.MemoryEvents}
	}
	if u.Pids {
		t = &status.Tasks{Max: r.TasksMax, Current: u.Tasks, MaxEvents: u.TasksMaxEvents}
	}
	return m, t
}
