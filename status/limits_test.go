package status

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// limitedReport has a class with memory and task limits on cgroup v2, one
// on v1 (no "high" or "oom" count there), one without limits that the
// kernel still accounts, and one it does not.
func limitedReport() *Report {
	return &Report{Classes: []Class{
		{Name: "shop", Memory: &Memory{Max: 128 << 20, High: 96 << 20, Current: 100 << 20,
			Events: map[string]uint64{"high": 7, "max": 12, "oom": 2, "oom_kill": 1}},
			Tasks: &Tasks{Max: 20, Current: 20, MaxEvents: 180}},
		{Name: "blog", Memory: &Memory{Max: 64 << 20, Current: 1 << 20, Events: map[string]uint64{"max": 3, "oom_kill": 0}},
			Tasks: &Tasks{Current: 2}},
		{Name: "wiki", Memory: &Memory{Current: 5 << 20, Events: map[string]uint64{"max": 0, "oom_kill": 0}}, Tasks: &Tasks{Current: 1}},
		{Name: "default", Default: true},
	}}
}

// `vhqos status --json` names the memory and task figures as the README
// lists them, and leaves them out where the kernel counts nothing.
func TestReportMemoryTasksJSON(t *testing.T) {
	data, err := json.Marshal(limitedReport())
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		VHosts []map[string]any `json:"vhosts"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		i           int
		memory, tsk any
	}{
		{0, map[string]any{"max_bytes": 134217728.0, "high_bytes": 100663296.0, "current_bytes": 104857600.0,
			"events": map[string]any{"high": 7.0, "max": 12.0, "oom": 2.0, "oom_kill": 1.0}},
			map[string]any{"max": 20.0, "current": 20.0, "max_events": 180.0}},
		{1, map[string]any{"max_bytes": 67108864.0, "current_bytes": 1048576.0, "events": map[string]any{"max": 3.0, "oom_kill": 0.0}},
			map[string]any{"current": 2.0, "max_events": 0.0}},
	} {
		if m := got.VHosts[tc.i]["memory"]; !reflect.DeepEqual(m, tc.memory) {
			t.Errorf("vhost %d memory = %v, want %v", tc.i, m, tc.memory)
		}
		if m := got.VHosts[tc.i]["tasks"]; !reflect.DeepEqual(m, tc.tsk) {
			t.Errorf("vhost %d tasks = %v, want %v", tc.i, m, tc.tsk)
		}
	}
	for _, key := range []string{"memory", "tasks"} {
		if v, ok := got.VHosts[3][key]; ok {
			t.Errorf("a class the kernel accounts nothing for has %s %v", key, v)
		}
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Classes, limitedReport().Classes) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back.Classes, limitedReport().Classes)
	}
}

// The text report has a table of the classes with memory or task limits,
// "-" for what the kernel does not count; the limits are in LIMITS too.
func TestReportMemoryTasksTable(t *testing.T) {
	var out strings.Builder
	limitedReport().WriteTable(&out, nil)
	for _, want := range []string{
		"LIMITED VHOST  MEMORY  MEMORY_MAX  MEMORY_HIGH  HIT MAX  HIT HIGH  OOM KILLS  TASKS  TASKS_MAX  FORKS REFUSED\n",
		"shop           100.0M  128.0M      96.0M        12       7         1          20     20         180\n",
		"blog           1.0M    64.0M       -            3        -         0          2      -          0\n",
		"memory_max=128.0M memory_high=96.0M tasks_max=20\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, out.String())
		}
	}
	_, table, _ := strings.Cut(out.String(), "LIMITED VHOST")
	if strings.Contains(table, "\nwiki ") || strings.Contains(table, "\ndefault ") {
		t.Errorf("classes without memory or task limits are in the limits table:\n%s", out.String())
	}
	out.Reset()
	(&Report{Classes: []Class{{Name: "default", Default: true, Memory: &Memory{Current: 1}}}}).WriteTable(&out, nil)
	if strings.Contains(out.String(), "LIMITED VHOST") {
		t.Errorf("text report without memory or task limits shows their table:\n%s", out.String())
	}
}

// The metrics export the memory and task figures by vhost, each memory
// event the kernel counts by its name, and the limits only where set.
func TestMemoryTasksMetrics(t *testing.T) {
	m := NewMetrics(limitedReport)
	got := gatherAll(t, m)
	for k, v := range map[string]float64{
		`vhqos_memory_bytes{vhost="shop"}`:                         100 << 20,
		`vhqos_memory_bytes{vhost="wiki"}`:                         5 << 20,
		`vhqos_memory_limit_bytes{limit="max",vhost="shop"}`:       128 << 20,
		`vhqos_memory_limit_bytes{limit="high",vhost="shop"}`:      96 << 20,
		`vhqos_memory_limit_bytes{limit="max",vhost="blog"}`:       64 << 20,
		`vhqos_memory_events_total{event="high",vhost="shop"}`:     7,
		`vhqos_memory_events_total{event="max",vhost="shop"}`:      12,
		`vhqos_memory_events_total{event="oom",vhost="shop"}`:      2,
		`vhqos_memory_events_total{event="oom_kill",vhost="shop"}`: 1,
		`vhqos_memory_events_total{event="max",vhost="blog"}`:      3,
		`vhqos_tasks{vhost="shop"}`:                                20,
		`vhqos_tasks_limit{vhost="shop"}`:                          20,
		`vhqos_pids_max_events_total{vhost="shop"}`:                180,
		`vhqos_pids_max_events_total{vhost="blog"}`:                0,
		`vhqos_memory_events_total{event="oom_kill",vhost="wiki"}`: 0,
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present: %v), want %v", k, g, ok, v)
		}
	}
	for _, absent := range []string{
		`vhqos_memory_limit_bytes{limit="high",vhost="blog"}`, `vhqos_memory_events_total{event="high",vhost="blog"}`,
		`vhqos_tasks_limit{vhost="blog"}`, `vhqos_memory_bytes{vhost="default"}`, `vhqos_tasks{vhost="default"}`,
	} {
		if _, ok := got[absent]; ok {
			t.Errorf("unexpected series %s", absent)
		}
	}
}
