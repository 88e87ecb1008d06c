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

// egressMinors numbers the classes of t that have an egress_rate
// (shaper.Minors, by name in lower case), the defaults among them.
func egressMinors(t *policy.Table) map[*policy.Class]uint16 {
	var rated []*policy.Class
	for _, c := range append([]*policy.Class{&t.Defaults}, vhostPointers(t)...) {
		if c.Rates.Egress != 0 {
			rated = append(rated, c)
		}
	}
	names := make([]string, len(rated))
	for i, c := range rated {
		names[i] = c.Name
	}
	minors := shaper.Minors(names)
	out := make(map[*policy.Class]uint16, len(rated))
	for _, c := range rated {
		if m, ok := minors[strings.ToLower(c.Name)]; ok {
			out[c] = m
		}
	}
	return out
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
	rates := map[uint16]uint64{}
	for c, m := range egressMinors(t) {
		rates[m] = c.Rates.Egress
	}
	if err := shaper.Sync(devices, rates); err != nil {
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

// bandwidthReport adds each class's rates, and the counters of its HTB
// class, to rep.
func bandwidthReport(log *slog.Logger, rep *status.Report, t *policy.Table, devices []string) {
	minors := egressMinors(t)
	var stats map[uint16]shaper.ClassStats
	if len(minors) > 0 && len(devices) > 0 {
		var err error
		if stats, err = shaper.Stats(devices); err != nil {
			log.Warn("reading the counters of the shaped classes", "err", err)
		}
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
		if m, ok := minors[c]; ok && stats != nil {
			s := stats[m]
			rc.Egress = &status.Egress{Bytes: s.Bytes, Packets: s.Packets, Drops: s.Drops, Overlimits: s.Overlimits, Backlog: s.Backlog}
		}
	}
}
