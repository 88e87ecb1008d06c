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

// What the placement in force means for a multi-threaded server, in the
// text report (one line, or none when the server has no such process under
// placement "process"), in the JSON and in the metrics, each figure under
// its own name.
func TestPlacementReport(t *testing.T) {
	for _, tc := range []struct {
		name   string
		s      Counters
		want   []string // in the line that starts with "placement by"
		noLine bool
	}{
		{"by thread", Counters{Placement: "thread", MultiThreadedProcesses: 3, ThreadPlacements: 42},
			[]string{"placement by thread: 3 multi-threaded server processes, 42 moves of a serving thread"}, false},
		{"by thread, none multi-threaded yet", Counters{Placement: "thread"},
			[]string{"placement by thread: 0 multi-threaded server processes, 0 moves"}, false},
		{"by process", Counters{Placement: "process", MultiThreadedProcesses: 2, UnplacedMultiThreaded: 5},
			[]string{"placement by process: 2 multi-threaded server processes stay home", "5 of their connections were served outside", `placement = "thread"`}, false},
		{"by process, none multi-threaded", Counters{Placement: "process"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Report{Supervisor: tc.s}
			var out strings.Builder
			r.WriteTable(&out, nil)
			var line string
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.HasPrefix(l, "placement by") {
					line = l
				}
			}
			if tc.noLine && line != "" {
				t.Errorf("report has %q", line)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("placement line %q lacks %q:\n%s", line, w, out.String())
				}
			}

			data, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Supervisor map[string]any `json:"supervisor"`
			}
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			for k, v := range map[string]any{"placement": tc.s.Placement, "multi_threaded_processes": float64(tc.s.MultiThreadedProcesses),
				"unplaced_multi_threaded": float64(tc.s.UnplacedMultiThreaded), "thread_placements": float64(tc.s.ThreadPlacements)} {
				if g, ok := got.Supervisor[k]; !ok || g != v {
					t.Errorf("supervisor.%s in JSON = %#v (present: %v), want %#v", k, g, ok, v)
				}
			}

			series := gatherAll(t, NewMetrics(func() *Report { return r }))
			for k, v := range map[string]uint64{"vhqos_multi_threaded_processes_total": tc.s.MultiThreadedProcesses,
				"vhqos_unplaced_connections_total": tc.s.UnplacedMultiThreaded, "vhqos_thread_placements_total": tc.s.ThreadPlacements} {
				if g, ok := series[k]; !ok || g != float64(v) {
					t.Errorf("%s = %v (present: %v), want %d", k, g, ok, v)
				}
			}
		})
	}
}
