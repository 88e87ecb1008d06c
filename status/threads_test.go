package status

import (
	"encoding/json"
	"strings"
	"testing"
)

// Each class's threads are in the JSON as "threads", in the THREADS
// column of the text report beside its processes, and in vhqos_threads.
func TestClassThreads(t *testing.T) {
	r := &Report{Classes: []Class{
		{Name: "shop", PIDs: []int{10, 11}, Threads: 7, DSCP: -1},
		{Name: "default", Default: true, Threads: 0, DSCP: -1},
	}}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		VHosts []map[string]any `json:"vhosts"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{7, 0} {
		if v := got.VHosts[i]["threads"]; v != want {
			t.Errorf("%s: threads in JSON = %v, want %v", r.Classes[i].Name, v, want)
		}
	}

	var out strings.Builder
	r.WriteTable(&out, nil)
	lines := strings.Split(out.String(), "\n")
	var header, shop []string
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) > 0 && f[0] == "VHOST":
			header = f
		case len(f) > 0 && f[0] == "shop":
			shop = f
		}
	}
	col := -1
	for i, h := range header {
		if h == "THREADS" {
			col = i
		}
	}
	switch {
	case col < 0 || len(shop) <= col:
		t.Errorf("no THREADS column for shop:\n%s", out.String())
	case header[col-1] != "PROCS" || shop[col-1] != "2" || shop[col] != "7":
		t.Errorf("shop's PROCS and THREADS are %q %q, want 2 7:\n%s", shop[col-1], shop[col], out.String())
	}

	m := NewMetrics(func() *Report { return r })
	series := gatherAll(t, m)
	for k, v := range map[string]float64{`vhqos_threads{vhost="shop"}`: 7, `vhqos_threads{vhost="default"}`: 0, `vhqos_processes{vhost="shop"}`: 2} {
		if g, ok := series[k]; !ok || g != v {
			t.Errorf("%s = %v (present: %v), want %v", k, g, ok, v)
		}
	}
}
