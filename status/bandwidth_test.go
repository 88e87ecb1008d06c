package status

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// ratedReport has a class with both rates and its shaper's counters, one
// with a connection_rate alone, and one without rates.
func ratedReport() *Report {
	return &Report{Classes: []Class{
		{Name: "shop", EgressRate: 40_000_000, ConnectionRate: 8_000_000,
			Egress: &Egress{Bytes: 70 << 20, Packets: 48000, Drops: 3, Overlimits: 5120, Backlog: 3028}},
		{Name: "blog", ConnectionRate: 1_500_000},
		{Name: "default", Default: true},
	}}
}

// `vhqos status --json` names the rates and counters as the README lists
// them, and leaves them out for a class without rates.
func TestReportBandwidthJSON(t *testing.T) {
	data, err := json.Marshal(ratedReport())
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		VHosts []map[string]any `json:"vhosts"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	shop := got.VHosts[0]
	for k, want := range map[string]any{
		"egress_rate_bits_per_second":     40e6,
		"connection_rate_bits_per_second": 8e6,
		"egress":                          map[string]any{"bytes": float64(70 << 20), "packets": 48000.0, "drops": 3.0, "overlimits": 5120.0, "backlog_bytes": 3028.0},
	} {
		if v := shop[k]; !reflect.DeepEqual(v, want) {
			t.Errorf("shop %s = %v, want %v", k, v, want)
		}
	}
	for _, k := range []string{"egress_rate_bits_per_second", "connection_rate_bits_per_second", "egress"} {
		if v, ok := got.VHosts[2][k]; ok {
			t.Errorf("a class without rates has %s %v", k, v)
		}
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back.Classes, ratedReport().Classes) {
		t.Errorf("round trip (%v):\n got %+v\nwant %+v", err, back.Classes, ratedReport().Classes)
	}
}

func TestReportBandwidthTable(t *testing.T) {
	var out strings.Builder
	ratedReport().WriteTable(&out, nil)
	for _, want := range []string{
		"RATED VHOST  EGRESS RATE  PER CONNECTION  SENT   PACKETS  DROPS  OVERLIMITS  BACKLOG\n",
		"shop         40Mbit       8Mbit           70.0M  48000    3      5120        3.0K\n",
		"blog         -            1500kbit        -      -        -      -           -\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, out.String())
		}
	}
	if _, table, _ := strings.Cut(out.String(), "RATED VHOST"); strings.Contains(table, "\ndefault ") {
		t.Errorf("a class without rates is in the rates table:\n%s", out.String())
	}
	out.Reset()
	(&Report{Classes: []Class{{Name: "default", Default: true}}}).WriteTable(&out, nil)
	if strings.Contains(out.String(), "RATED VHOST") {
		t.Errorf("a report without rates shows their table:\n%s", out.String())
	}
}

func TestBandwidthMetrics(t *testing.T) {
	got := gatherAll(t, NewMetrics(ratedReport))
	for k, v := range map[string]float64{
		`vhqos_egress_rate_limit_bits_per_second{vhost="shop"}`:     40e6,
		`vhqos_connection_rate_limit_bits_per_second{vhost="shop"}`: 8e6,
		`vhqos_connection_rate_limit_bits_per_second{vhost="blog"}`: 1.5e6,
		`vhqos_egress_bytes_total{vhost="shop"}`:                    70 << 20,
		`vhqos_egress_packets_total{vhost="shop"}`:                  48000,
		`vhqos_egress_drops_total{vhost="shop"}`:                    3,
		`vhqos_egress_overlimits_total{vhost="shop"}`:               5120,
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present: %v), want %v", k, g, ok, v)
		}
	}
	for _, absent := range []string{`vhqos_egress_rate_limit_bits_per_second{vhost="blog"}`, `vhqos_egress_bytes_total{vhost="blog"}`, `vhqos_connection_rate_limit_bits_per_second{vhost="default"}`} {
		if _, ok := got[absent]; ok {
			t.Errorf("unexpected series %s", absent)
		}
	}
}
