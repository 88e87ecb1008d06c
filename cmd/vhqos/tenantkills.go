package main

import (
	"strings"

	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/status"
)

// tenantKillsV1 makes each tenant's OOM kills, under cgroup v1, those of
// the sites inside it, however deep, as cgroup v2 counts them. v1 counts
// a kill (memory.oom_control's oom_kill) only in the cgroup of the process
// killed, a site's, even when the tenant's memory_max was what ran out; a
// tenant has no processes of its own, so its own count stays 0. v2's
// memory.events is hierarchical already: a kill counts in the site and in
// every tenant around it. The sites' counts are the report's (rep.Classes).
func tenantKillsV1(rep *status.Report, t *policy.Table) {
	if rep.Cgroup != 1 {
		return
	}
	for i := range rep.Tenants {
		rt := &rep.Tenants[i]
		tn := t.TenantOf(rt.Name)
		if tn == nil || rt.Memory == nil || rt.Memory.Events == nil {
			continue
		}
		inside := t.TenantGroup(tn) + "/"
		var kills uint64
		for _, c := range rep.Classes {
			class := t.Class(c.Name)
			if class == nil || c.Default || c.Memory == nil || !strings.HasPrefix(t.GroupOf(class), inside) {
				continue
			}
			kills += c.Memory.Events["oom_kill"]
		}
		if _, counted := rt.Memory.Events["oom_kill"]; counted || kills > 0 {
			rt.Memory.Events["oom_kill"] += kills
		}
	}
}
