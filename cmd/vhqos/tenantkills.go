package main

import (
	"os"
	"slices"
	"strings"

	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/status"
)

// Where the kernel counts a tenant's faults. A tenant's cgroup holds no
// processes of its own, only its sites' cgroups; whether its counters see
// what happens in them depends on the counter and the kernel:
//
//   - OOM kills: cgroup v2's memory.events counts a kill in the site and in
//     every cgroup around it; v1 counts it (memory.oom_control's oom_kill)
//     only in the cgroup of the process killed, a site's, even when the
//     tenant's memory_max was what ran out.
//   - Forks refused: pids.events "max" counts a refusal in the cgroup of
//     the process that forked (a site's), whichever cgroup's pids.max
//     refused it, under v1, and under v2 before Linux 6.11 or with the
//     cgroup2 mount option pids_localevents (kernel/cgroup/pids.c,
//     pids_event; Documentation/admin-guide/cgroup-v2.rst). Since 6.11 a v2
//     pids.events is hierarchical instead: it counts the refusals by the
//     cgroup's own pids.max and by those of the cgroups inside it, and no
//     longer those by a parent's.
//
// Where the kernel's count leaves the tenant out, vhqos makes the tenant's
// count the sum of the sites inside it, however deep: every fault of a
// process of the tenant, as the kernel would count it hierarchically. The
// sites' counts are the report's (rep.Classes), read first.

// tenantFaultSums adds the sites' OOM kills (under cgroup v1) and forks
// refused (where pidsLocal: the kernel counts them in the forking cgroup,
// pidsEventsLocal) to the tenants of rep they are inside
// (policy.Table.Enclosing). It runs for every status request and scrape:
// one pass over the sites, whatever the number of tenants.
func tenantFaultSums(rep *status.Report, t *policy.Table, pidsLocal bool) {
	kills, forks := rep.Cgroup == 1, pidsLocal
	if !kills && !forks {
		return
	}
	killed, refused := map[*policy.Tenant]uint64{}, map[*policy.Tenant]uint64{}
	for _, c := range rep.Classes {
		class := t.Class(c.Name)
		if class == nil {
			continue
		}
		for _, tn := range t.Enclosing(class.Tenant) {
			if c.Memory != nil {
				killed[tn] += c.Memory.Events["oom_kill"]
			}
			if c.Tasks != nil {
				refused[tn] += c.Tasks.MaxEvents
			}
		}
	}
	for i := range rep.Tenants {
		rt := &rep.Tenants[i]
		tn := t.TenantOf(rt.Name)
		if tn == nil {
			continue
		}
		if m := rt.Memory; kills && m != nil && m.Events != nil {
			if _, counted := m.Events["oom_kill"]; counted || killed[tn] > 0 {
				m.Events["oom_kill"] += killed[tn]
			}
		}
		if forks && rt.Tasks != nil {
			rt.Tasks.MaxEvents += refused[tn]
		}
	}
}

// pidsEventsLocal says whether the kernel counts a fork that pids.max
// refused in the cgroup of the process that forked (true), rather than
// hierarchically in the cgroup whose pids.max refused it and those around
// it (false): see above. version is the cgroup version vhqos uses.
func pidsEventsLocal(version int) bool {
	if version != 2 {
		return true
	}
	features, _ := os.ReadFile("/sys/kernel/cgroup/features")
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	return pidsLocalFrom(string(features), string(mountinfo))
}

// pidsLocalFrom decides pidsEventsLocal for cgroup v2 from the kernel's
// /sys/kernel/cgroup/features, which lists pids_localevents since the
// kernel made pids.events hierarchical (6.11), and /proc/self/mountinfo,
// whose cgroup2 lines carry pids_localevents among the super options when
// it is set (it is one flag for all cgroup2 mounts).
func pidsLocalFrom(features, mountinfo string) bool {
	if !slices.Contains(strings.Fields(features), "pids_localevents") {
		return true
	}
	for _, line := range strings.Split(mountinfo, "\n") {
		_, after, ok := strings.Cut(line, " - ")
		f := strings.Fields(after)
		if !ok || len(f) < 3 || f[0] != "cgroup2" {
			continue
		}
		if slices.Contains(strings.Split(f[2], ","), "pids_localevents") {
			return true
		}
	}
	return false
}
