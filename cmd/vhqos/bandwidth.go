package main

import (
	"log/slog"
	"slices"
	"strings"

	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/shaper"
	"github.com/vhqos/vhqos/status"
)

// Bandwidth limits in the two processes of vhqos run. The keeper owns the
// devices' root qdiscs: it claims them before the server starts (refusing
// to start on a device that has someone else's qdisc) and releases them
// when it exits; its reaper releases them when the keeper is killed. It
// reads no table: shape_devices reaches it with the other settings of
// `vhqos supervise --settings`, and cannot change while vhqos runs. The
// supervisor owns the classes under the root: it syncs them with the table
// when it starts and on every reload, and adopts what a crashed or
// upgraded predecessor left (the qdisc survives both).

// egressPlan is the HTB classes that shape t's egress rates (package
// shaper): a leaf for each class with an egress_rate, an inner class for
// each tenant with one, and, inside it, a leaf for each of its sites,
// whether the site has a rate of its own or not. A leaf's class id is the
// socket mark of its connections.
type egressPlan struct {
	classes map[uint16]shaper.Class
	// sites are the leaves of the defaults and the vhosts, by class.
	sites map[*policy.Class]uint16
	// tenants are the inner classes, by tenant.
	tenants map[*policy.Tenant]uint16
}

// tenantMinorName is the name a tenant's class is numbered by: apart from
// every vhost's (a ':' is in no name), so that a tenant and a vhost may
// share a name.
func tenantMinorName(tn *policy.Tenant) string { return "tenant:" + tn.Name }

// planEgress numbers the classes by name (shaper.Minors, in lower case),
// so that a vhost keeps its class, and its connections their mark, when
// it joins or leaves a tenant, and sets their rates. A class right under
// the root has its egress_rate as rate and ceil. A class inside a
// tenant's is guaranteed an equal share of the tenant's rate (HTB's rate;
// the shares add up to the tenant's, so that HTB bounds the sum: a class
// below its rate sends without asking its parent) and may borrow up to
// its own egress_rate or the tenant's ceil, whichever is less (HTB's
// ceil); a share is at least 8 kbit/s, the least rate a table may set.
func planEgress(t *policy.Table) egressPlan {
	type node struct {
		name   string
		egress uint64
		parent *policy.Tenant
		site   *policy.Class
		tenant *policy.Tenant
	}
	var nodes []node
	for _, tn := range tenantsOuterFirst(t) {
		if tn.Egress != 0 {
			nodes = append(nodes, node{name: tenantMinorName(tn), egress: tn.Egress, parent: t.ShapingTenant(tn.Parent), tenant: tn})
		}
	}
	for _, c := range append([]*policy.Class{&t.Defaults}, vhostPointers(t)...) {
		parent := t.ShapingTenant(c.Tenant)
		if c.Rates.Egress != 0 || parent != nil {
			nodes = append(nodes, node{name: c.Name, egress: c.Rates.Egress, parent: parent, site: c})
		}
	}
	names := make([]string, len(nodes))
	children := map[*policy.Tenant]int{}
	for i, n := range nodes {
		names[i] = n.name
		if n.parent != nil {
			children[n.parent]++
		}
	}
	minors := shaper.Minors(names)
	plan := egressPlan{classes: map[uint16]shaper.Class{}, sites: map[*policy.Class]uint16{}, tenants: map[*policy.Tenant]uint16{}}
	// Tenants come first, outermost first: a parent's class is planned
	// before the classes inside it.
	for _, n := range nodes {
		m, ok := minors[strings.ToLower(n.name)]
		if !ok {
			continue // past shaper.MaxClasses: policy refuses such tables
		}
		c := shaper.Class{Rate: n.egress, Ceil: n.egress}
		if n.parent != nil {
			pm, ok := plan.tenants[n.parent]
			if !ok {
				continue
			}
			p := plan.classes[pm]
			c.Parent = pm
			c.Ceil = p.Ceil
			if n.egress != 0 {
				c.Ceil = min(n.egress, p.Ceil)
			}
			c.Rate = min(max(p.Rate/uint64(children[n.parent]), minShare), c.Ceil)
		}
		plan.classes[m] = c
		if n.site != nil {
			plan.sites[n.site] = m
		} else {
			plan.tenants[n.tenant] = m
		}
	}
	return plan
}

// minShare is the least rate of a class inside a tenant's, in bits per
// second: policy's least egress_rate. Shares that would be smaller (a
// tenant with more sites than its rate has 8 kbit/s for) add up to more
// than the tenant's rate; its ceil still bounds each of them.
const minShare = 8000

// egressMinors is the class, and so the mark, of each class of t whose
// connections are shaped (planEgress).
func egressMinors(t *policy.Table) map[*policy.Class]uint16 {
	return planEgress(t).sites
}

func vhostPointers(t *policy.Table) []*policy.Class {
	out := make([]*policy.Class, len(t.VHosts))
	for i := range t.VHosts {
		out[i] = &t.VHosts[i]
	}
	return out
}

// shapingOf returns the socket mark and pacing cap (bytes per second) of
// the connections of class c.
func shapingOf(c *policy.Class, minors map[*policy.Class]uint16) (mark uint32, pacing uint64) {
	if m, ok := minors[c]; ok {
		mark = shaper.ClassID(m)
	}
	return mark, c.Rates.Connection / 8
}

// syncShaping gives the HTB classes on devices the egress rates of t. A
// device that cannot be shaped (gone, or taken over by another qdisc)
// is logged and the rest of the table applies: serving with the wrong
// bandwidth is better than not serving.
func syncShaping(log *slog.Logger, devices []string, t *policy.Table) {
	if len(devices) == 0 {
		return
	}
	if err := shaper.Sync(devices, planEgress(t).classes); err != nil {
		log.Error("shaping egress_rate on shape_devices", "devices", devices, "err", err)
	}
}

// sameDevices reports whether two shape_devices lists name the same
// devices, in any order.
func sameDevices(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// claimDevices claims the devices for vhqos before the server starts; on
// error what it claimed is given back.
func claimDevices(log *slog.Logger, devices []string) error {
	if len(devices) == 0 {
		return nil
	}
	if err := shaper.Claim(devices); err != nil {
		shaper.Release(devices)
		return err
	}
	log.Info("shaping egress on devices", "devices", devices)
	return nil
}

// releaseDevices gives the devices back their kernel default qdisc.
func releaseDevices(log *slog.Logger, devices []string) {
	if len(devices) == 0 {
		return
	}
	restored, err := shaper.Release(devices)
	if err != nil {
		log.Error("giving the shaped devices their qdiscs back", "err", err)
	}
	if len(restored) > 0 {
		log.Info("gave the shaped devices their default qdisc back", "devices", restored)
	}
}

// bandwidthReport adds each class's and each tenant's rates, and the
// counters of its HTB class, to rep.
func bandwidthReport(log *slog.Logger, rep *status.Report, t *policy.Table, devices []string) {
	plan := planEgress(t)
	var stats map[uint16]shaper.ClassStats
	if len(plan.classes) > 0 && len(devices) > 0 {
		var err error
		if stats, err = shaper.Stats(devices); err != nil {
			log.Warn("reading the counters of the shaped classes", "err", err)
		}
	}
	counters := func(m uint16, ok bool) *status.Egress {
		if !ok || stats == nil {
			return nil
		}
		s := stats[m]
		return &status.Egress{Bytes: s.Bytes, Packets: s.Packets, Drops: s.Drops, Overlimits: s.Overlimits, Backlog: s.Backlog}
	}
	byName := map[string]*policy.Class{}
	for _, c := range append([]*policy.Class{&t.Defaults}, vhostPointers(t)...) {
		byName[c.Name] = c
	}
	for i := range rep.Classes {
		rc := &rep.Classes[i]
		c := byName[rc.Name]
		if c == nil {
			continue
		}
		rc.EgressRate, rc.ConnectionRate = c.Rates.Egress, c.Rates.Connection
		m, ok := plan.sites[c]
		rc.Egress = counters(m, ok)
	}
	for i := range rep.Tenants {
		rt := &rep.Tenants[i]
		tn := t.TenantOf(rt.Name)
		if tn == nil {
			continue
		}
		rt.EgressRate = tn.Egress
		m, ok := plan.tenants[tn]
		rt.Egress = counters(m, ok)
	}
}
