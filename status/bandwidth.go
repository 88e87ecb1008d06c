package status

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vhqos/vhqos/policy"
)

// Egress is what the kernel counted in a class's egress shaper (its HTB
// class, package shaper), added up over the shaped devices, since vhqos
// made the class. connection_rate has no counter of its own: the kernel
// keeps none per socket option, only each connection's pacing rate (ss
// -ti shows it).
type Egress struct {
	// Bytes and Packets the class sent, link-layer headers included.
	Bytes   uint64 `json:"bytes"`
	Packets uint64 `json:"packets"`
	// Drops counts packets dropped because the class's queue was full.
	Drops uint64 `json:"drops"`
	// Overlimits counts the times a packet had to wait because the class
	// was at its egress_rate: how often the limit held the vhost back.
	Overlimits uint64 `json:"overlimits"`
	// Backlog is the bytes waiting in the class now.
	Backlog uint64 `json:"backlog_bytes"`
}

// writeBandwidth prints a line per class with a rate or a shaper (a site
// inside a tenant with an egress_rate has one): the rates, and what its
// shaper sent, dropped and held back; then a line per tenant with an
// egress_rate.
func (r *Report) writeBandwidth(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := false
	rows := r.Classes
	for _, tn := range r.Tenants {
		if tn.EgressRate != 0 {
			rows = append(rows[:len(rows):len(rows)], Class{Name: "tenant " + tn.Name, EgressRate: tn.EgressRate, Egress: tn.Egress})
		}
	}
	for _, c := range rows {
		if c.EgressRate == 0 && c.ConnectionRate == 0 && c.Egress == nil {
			continue
		}
		if !header {
			fmt.Fprintln(tw, "RATED VHOST\tEGRESS RATE\tPER CONNECTION\tSENT\tPACKETS\tDROPS\tOVERLIMITS\tBACKLOG")
			header = true
		}
		sent, packets, drops, over, backlog := "-", "-", "-", "-", "-"
		if e := c.Egress; e != nil {
			sent, packets, drops, over, backlog = bytes(e.Bytes), strconv.FormatUint(e.Packets, 10), strconv.FormatUint(e.Drops, 10),
				strconv.FormatUint(e.Overlimits, 10), bytes(e.Backlog)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, bitRate(c.EgressRate), bitRate(c.ConnectionRate), sent, packets, drops, over, backlog)
	}
	tw.Flush()
}

// bitRate writes bits per second as the table does ("40Mbit"), or "-".
func bitRate(n uint64) string {
	if n == 0 {
		return "-"
	}
	return policy.FormatBitRate(n)
}

var (
	descEgressRate     = prometheus.NewDesc("vhqos_egress_rate_limit_bits_per_second", "The vhost's egress_rate, in bits per second (vhosts with one only).", []string{"vhost"}, nil)
	descConnectionRate = prometheus.NewDesc("vhqos_connection_rate_limit_bits_per_second", "The vhost's connection_rate, in bits per second (vhosts with one only).", []string{"vhost"}, nil)
	descEgressBytes    = prometheus.NewDesc("vhqos_egress_bytes_total", "Bytes the vhost's egress shaper sent on the shaped devices, link-layer headers included.", []string{"vhost"}, nil)
	descEgressPackets  = prometheus.NewDesc("vhqos_egress_packets_total", "Packets the vhost's egress shaper sent on the shaped devices.", []string{"vhost"}, nil)
	descEgressDrops    = prometheus.NewDesc("vhqos_egress_drops_total", "Packets of the vhost dropped by its egress shaper (queue full).", []string{"vhost"}, nil)
	descEgressOver     = prometheus.NewDesc("vhqos_egress_overlimits_total", "Times a packet of the vhost waited because the vhost was at its egress_rate.", []string{"vhost"}, nil)
)

func bandwidthDescs() []*prometheus.Desc {
	return []*prometheus.Desc{descEgressRate, descConnectionRate, descEgressBytes, descEgressPackets, descEgressDrops, descEgressOver}
}

// collectBandwidth exports c's rates and shaper counters, for the classes
// that have them.
func collectBandwidth(ch chan<- prometheus.Metric, c Class) {
	if c.EgressRate != 0 {
		ch <- prometheus.MustNewConstMetric(descEgressRate, prometheus.GaugeValue, float64(c.EgressRate), c.Name)
	}
	if c.ConnectionRate != 0 {
		ch <- prometheus.MustNewConstMetric(descConnectionRate, prometheus.GaugeValue, float64(c.ConnectionRate), c.Name)
	}
	if e := c.Egress; e != nil {
		for _, m := range []struct {
			d *prometheus.Desc
			v uint64
		}{{descEgressBytes, e.Bytes}, {descEgressPackets, e.Packets}, {descEgressDrops, e.Drops}, {descEgressOver, e.Overlimits}} {
			ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v), c.Name)
		}
	}
}
