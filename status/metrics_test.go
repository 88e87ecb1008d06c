package status

import (
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
