package status

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The latency histogram shows a series for each syscall the server made,
// and none for the calls it never made: an operator reading /metrics of a
// server in track "accept" sees accept and accept4, not every call vhqos
// can intercept.
func TestLatencySeriesAppearWithFirstCall(t *testing.T) {
	m := NewMetrics(func() *Report { return &Report{} })
	for _, tc := range []struct {
		observe string
		want    map[string]uint64 // series by syscall label, with their sample counts
	}{
		{"", map[string]uint64{}},
		{"accept4", map[string]uint64{"accept4": 1}},
		{"accept4", map[string]uint64{"accept4": 2}},
		{"close", map[string]uint64{"accept4": 2, "close": 1}},
		{"sendmsg", map[string]uint64{"accept4": 2, "close": 1, "sendmsg": 1}}, // not in intercept's table
	} {
		if tc.observe != "" {
			m.Observe(tc.observe, 3*time.Microsecond)
		}
		families, err := m.registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]uint64{}
		for _, f := range families {
			if f.GetName() != "vhqos_notification_duration_seconds" {
				continue
			}
			for _, s := range f.GetMetric() {
				got[s.GetLabel()[0].GetValue()] = s.GetHistogram().GetSampleCount()
			}
		}
		if len(got) != len(tc.want) {
			t.Errorf("after observing %q: series %v, want %v", tc.observe, got, tc.want)
			continue
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("after observing %q: series %v, want %v", tc.observe, got, tc.want)
			}
		}
	}
}

// The keeper's and the supervisor's figures are exported with the
// report's values, each under its own name; build info shows each part's
// version, and no series for a part whose version is unknown.
func TestKeeperSupervisorMetrics(t *testing.T) {
	for _, tc := range []struct {
		name   string
		report *Report
		want   map[string]float64 // series (name, or name{labels}) and value
		absent []string
	}{
		{"both running", fullReport(), map[string]float64{
			"vhqos_supervisor_restarts_total":                      2,
			"vhqos_supervisor_upgrades_total":                      1,
			"vhqos_failed_open_notifications_total":                31,
			"vhqos_failed_open_seconds_total":                      0.12,
			"vhqos_connections_lost_total":                         4,
			`vhqos_build_info{part="keeper",version="v1.2.3"}`:     1,
			`vhqos_build_info{part="supervisor",version="v1.2.4"}`: 1,
		}, nil},
		{"no supervisor, versions unknown", &Report{KeeperPID: 1}, map[string]float64{
			"vhqos_supervisor_restarts_total":       0,
			"vhqos_supervisor_upgrades_total":       0,
			"vhqos_failed_open_notifications_total": 0,
			"vhqos_failed_open_seconds_total":       0,
			"vhqos_connections_lost_total":          0,
		}, []string{"vhqos_build_info"}},
	} {
		m := NewMetrics(func() *Report { return tc.report })
		got := gatherAll(t, m)
		for k, v := range tc.want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("%s: %s = %v (present: %v), want %v", tc.name, k, g, ok, v)
			}
		}
		for _, name := range tc.absent {
			for k := range got {
				if strings.HasPrefix(k, name+"{") || k == name {
					t.Errorf("%s: unexpected series %s", tc.name, k)
				}
			}
		}
	}
}

// A vhost with a connection cap exports what its cap decided, its cap and
// its open connections; a vhost without one exports none of them.
func TestAdmissionMetrics(t *testing.T) {
	r := &Report{Classes: []Class{
		{Name: "shop", Admission: &Admission{MaxConnections: 2, OverLimit: "default", Open: 2, Admitted: 5, Alternate: 4, Refused: 0}},
		{Name: "blog", Admission: &Admission{MaxConnectionsPerIP: 1, OverLimit: "refuse", Open: 1, Admitted: 1, Refused: 3}},
		{Name: "default", Default: true},
	}}
	m := NewMetrics(func() *Report { return r })
	got := gatherAll(t, m)
	for k, v := range map[string]float64{
		`vhqos_admissions_total{outcome="admitted",vhost="shop"}`:  5,
		`vhqos_admissions_total{outcome="alternate",vhost="shop"}`: 4,
		`vhqos_admissions_total{outcome="refused",vhost="shop"}`:   0,
		`vhqos_admissions_total{outcome="refused",vhost="blog"}`:   3,
		`vhqos_connections_limit{vhost="shop"}`:                    2,
		`vhqos_connections_per_ip_limit{vhost="blog"}`:             1,
		`vhqos_connections_open{vhost="shop"}`:                     2,
		`vhqos_connections_open{vhost="blog"}`:                     1,
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present: %v), want %v", k, g, ok, v)
		}
	}
	for _, absent := range []string{`vhqos_connections_limit{vhost="blog"}`, `vhqos_connections_per_ip_limit{vhost="shop"}`, `vhqos_connections_open{vhost="default"}`, `vhqos_admissions_total{outcome="admitted",vhost="default"}`} {
		if _, ok := got[absent]; ok {
			t.Errorf("unexpected series %s", absent)
		}
	}
}

// gatherAll returns every series of m as name{label="value",...} (labels
// in Prometheus's order: sorted by name) with its value.
func gatherAll(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			key := f.GetName()
			if len(s.GetLabel()) > 0 {
				var labels []string
				for _, l := range s.GetLabel() {
					labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case s.GetCounter() != nil:
				got[key] = s.GetCounter().GetValue()
			case s.GetGauge() != nil:
				got[key] = s.GetGauge().GetValue()
			}
		}
	}
	return got
}
