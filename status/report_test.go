package status

import (
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// fullReport has every keeper and supervisor figure set, each to a value
// of its own, so that a figure shown or exported under another's name is
// caught.
func fullReport() *Report {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	keeper := now.Add(-(3*time.Hour + 2*time.Minute))
	return &Report{
		PID: 1234, ServerPID: 1241, Config: "/etc/vhqos/qos.toml", Started: keeper, Now: now,
		Generation: 2, Cgroup: 2,
		KeeperPID: 1234, SupervisorPID: 1240,
		KeeperVersion: "v1.2.3", SupervisorVersion: "v1.2.4",
		KeeperStarted: keeper, SupervisorStarted: now.Add(-5 * time.Minute),
		SupervisorRestarts: 2, Upgrades: 1,
		FailedOpen: 120 * time.Millisecond, FailedOpenNotifications: 31, LostConnections: 4,
	}
}

// `vhqos status --json` names the keeper and supervisor figures as the
// README lists them, gives the time failed open in seconds, and keeps
// "pid" and "started" for older scripts.
func TestReportJSONNames(t *testing.T) {
	data, err := json.Marshal(fullReport())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  string
		want any // as encoding/json decodes it into an any
	}{
		{"pid", 1234.0},
		{"keeper_pid", 1234.0},
		{"supervisor_pid", 1240.0},
		{"server_pid", 1241.0},
		{"keeper_version", "v1.2.3"},
		{"supervisor_version", "v1.2.4"},
		{"started", "2025-03-01T08:58:00Z"},
		{"keeper_started", "2025-03-01T08:58:00Z"},
		{"supervisor_started", "2025-03-01T11:55:00Z"},
		{"supervisor_restarts", 2.0},
		{"upgrades", 1.0},
		{"failed_open_seconds", 0.12},
		{"failed_open_notifications", 31.0},
		{"connections_lost", 4.0},
	} {
		if v, ok := got[tc.key]; !ok || v != tc.want {
			t.Errorf("%s = %#v (present: %v), want %#v", tc.key, v, ok, tc.want)
		}
	}
	for _, key := range []string{"FailedOpen", "failed_open"} {
		if _, ok := got[key]; ok {
			t.Errorf("JSON has %q besides failed_open_seconds: %s", key, data)
		}
	}

	var back Report
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, fullReport()) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, *fullReport())
	}
}

// failed_open_seconds is read back to the nanosecond; a value no duration
// can hold is an error that names it.
func TestReportFailedOpenFromJSON(t *testing.T) {
	for _, tc := range []struct {
		json    string
		want    time.Duration
		wantErr string
	}{
		{`{}`, 0, ""},
		{`{"failed_open_seconds":0}`, 0, ""},
		{`{"failed_open_seconds":0.12}`, 120 * time.Millisecond, ""},
		{`{"failed_open_seconds":1e-9}`, time.Nanosecond, ""},
		{`{"failed_open_seconds":3600.5}`, time.Hour + 500*time.Millisecond, ""},
		{`{"failed_open_seconds":-1}`, 0, "failed_open_seconds -1 is out of range"},
		{`{"failed_open_seconds":1e300}`, 0, "failed_open_seconds 1e+300 is out of range"},
		{`{"failed_open_seconds":"0.5"}`, 0, "failed_open_seconds"},
	} {
		var r Report
		err := json.Unmarshal([]byte(tc.json), &r)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.json, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want one saying %q", tc.json, err, tc.wantErr)
		case r.FailedOpen != tc.want:
			t.Errorf("%s: FailedOpen %v, want %v", tc.json, r.FailedOpen, tc.want)
		}
	}
}

// The text of `vhqos status` shows the keeper and the supervisor under
// the first line, and says so when no supervisor runs; the lines around
// them are as before.
func TestWriteTableParts(t *testing.T) {
	const head = "vhqos pid 1234, server pid 1241, up 3h2m0s, table /etc/vhqos/qos.toml (generation 2), cgroup v2\n"
	const tail = "VHOST  TENANT  LIVE  CONNS  PROCS  THREADS  CPU%  CPU s  THROTTLED s  FAULTS  IO READ  IO WRITE  DSCP  LIMITS\n" +
		"supervisor: 0 notifications, 0 accepted, 0 left to the kernel, 0 requeued, 0 placement errors, 0 errors, 0 reloads (0 refused)\n" +
		"tracking : 0 processes known, 0 listening sockets, 0 connections followed\n"
	for _, tc := range []struct {
		name   string
		change func(*Report)
		parts  string
	}{
		{"both running", func(*Report) {},
			"keeper pid 1234 (version v1.2.3, up 3h2m0s), supervisor pid 1240 (version v1.2.4, up 5m0s), 2 restarts after a crash, 1 upgrades\n" +
				"failed open 0.120 s without a supervisor: 31 notifications left to the kernel, 4 accepted connections lost\n"},
		{"between a crash and the restart", func(r *Report) { r.SupervisorPID, r.SupervisorVersion, r.SupervisorStarted = 0, "", time.Time{} },
			"keeper pid 1234 (version v1.2.3, up 3h2m0s), no supervisor running, 2 restarts after a crash, 1 upgrades\n" +
				"failed open 0.120 s without a supervisor: 31 notifications left to the kernel, 4 accepted connections lost\n"},
		{"versions unknown, never failed open", func(r *Report) {
			r.KeeperVersion, r.SupervisorVersion = "", ""
			r.SupervisorRestarts, r.Upgrades, r.FailedOpen, r.FailedOpenNotifications, r.LostConnections = 0, 0, 0, 0, 0
		},
			"keeper pid 1234 (version unknown, up 3h2m0s), supervisor pid 1240 (version unknown, up 5m0s), 0 restarts after a crash, 0 upgrades\n" +
				"failed open 0.000 s without a supervisor: 0 notifications left to the kernel, 0 accepted connections lost\n"},
		{"report of a vhqos without a keeper", func(r *Report) {
			*r = Report{PID: r.PID, ServerPID: r.ServerPID, Config: r.Config, Started: r.Started, Now: r.Now, Generation: r.Generation, Cgroup: r.Cgroup}
		}, ""},
	} {
		r := fullReport()
		tc.change(r)
		var out strings.Builder
		r.WriteTable(&out, nil)
		if want := head + tc.parts + tail; out.String() != want {
			t.Errorf("%s:\n got:\n%s\nwant:\n%s", tc.name, out.String(), want)
		}
	}
}

// The admission figures of capped vhosts are in the JSON under the names
// the README gives, and in a table of their own in the text report, which
// leaves it out when no vhost has a cap.
func TestReportAdmission(t *testing.T) {
	r := &Report{Classes: []Class{
		{Name: "shop", Admission: &Admission{MaxConnections: 2, OverLimit: "default", Open: 2, Admitted: 5, Alternate: 4}},
		{Name: "blog", Admission: &Admission{MaxConnectionsPerIP: 1, OverLimit: "refuse", Open: 1, Admitted: 1, Refused: 3}},
		{Name: "default", Default: true},
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
	wantShop := map[string]any{"max_connections": 2.0, "over_limit": "default", "open": 2.0, "admitted": 5.0, "alternate": 4.0, "refused": 0.0}
	if a := got.VHosts[0]["admission"]; !reflect.DeepEqual(a, wantShop) {
		t.Errorf("shop's admission in JSON = %v, want %v", a, wantShop)
	}
	if a, ok := got.VHosts[2]["admission"]; ok {
		t.Errorf("a class without a cap has admission %v in JSON", a)
	}
	var out strings.Builder
	r.WriteTable(&out, nil)
	for _, want := range []string{
		"CAPPED VHOST  OPEN/MAX  PER IP  ADMITTED  ALTERNATE  REFUSED  OVER LIMIT\n",
		"shop          2/2       -       5         4          0        default\n",
		"blog          1/-       1       1         0          3        refuse\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	(&Report{Classes: []Class{{Name: "default", Default: true}}}).WriteTable(&out, nil)
	if strings.Contains(out.String(), "CAPPED") {
		t.Errorf("text report without caps shows the admission table:\n%s", out.String())
	}
}

// The vhost table of the text report names each vhost's tenant ("-" for
// none), its DSCP by name and number where the mark has a name, and every
// limit the vhost has, its rates included, as the table writes them.
func TestWriteTableVHosts(t *testing.T) {
	r := &Report{Classes: []Class{
		{Name: "shop", Tenant: "acme", DSCP: 18, CPUMax: 50, EgressRate: 40e6, ConnectionRate: 8e6},
		{Name: "blog", DSCP: 46, Tasks: &Tasks{Max: 20}},
		{Name: "wiki", Tenant: "acme", DSCP: 5, ConnectionRate: 1500e3},
		{Name: "default", Default: true, DSCP: -1},
	}}
	var out strings.Builder
	r.WriteTable(&out, nil)
	_, table, _ := strings.Cut(out.String(), "\nVHOST ")
	table, _, _ = strings.Cut("VHOST "+table, "\nsupervisor:")
	rows := map[string][]string{}
	for _, l := range strings.Split(table, "\n") {
		// Columns are two spaces apart or more; a cell has single spaces.
		cells := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(l), -1)
		rows[cells[0]] = cells
	}
	header := rows["VHOST"]
	col := func(name string) int {
		i := slices.Index(header, name)
		if i < 0 {
			t.Fatalf("no %s column in the vhost table:\n%s", name, out.String())
		}
		return i
	}
	if col("TENANT") != 1 {
		t.Errorf("TENANT is column %d, want the second, beside VHOST:\n%s", col("TENANT"), out.String())
	}
	for _, tc := range []struct{ vhost, tenant, dscp, limits string }{
		{"shop", "acme", "AF21 (18)", "cpu_max=50% egress_rate=40Mbit connection_rate=8Mbit"},
		{"blog", "-", "EF (46)", "tasks_max=20"},
		{"wiki", "acme", "5", "connection_rate=1500kbit"},
		{"default", "-", "-", "-"},
	} {
		row := rows[tc.vhost]
		if len(row) != len(header) {
			t.Errorf("%s: %d cells %q under %d columns:\n%s", tc.vhost, len(row), row, len(header), out.String())
			continue
		}
		got := []string{row[col("TENANT")], row[col("DSCP")], row[col("LIMITS")]}
		if want := []string{tc.tenant, tc.dscp, tc.limits}; !slices.Equal(got, want) {
			t.Errorf("%s: TENANT, DSCP, LIMITS = %q, want %q", tc.vhost, got, want)
		}
	}
}

// TestWriteTableRefused: while the table file is refused, the status says
// so and, when the supervisor reported it, why, each line of it indented.
func TestWriteTableRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Report
		want []string
		not  []string
	}{
		{"in force", Report{Config: "/etc/vhqos/qos.toml"}, nil, []string{"table refused"}},
		{"refused, why reported", Report{Config: "/etc/vhqos/qos.toml", TableRefused: true,
			TableRefusedWhy: "qos.toml:2:1: [defaults] cpu_wieght: unknown key\nqos.toml:3:1: [defaults] dscp: 99 is no DSCP"},
			[]string{"table refused: /etc/vhqos/qos.toml", "\n  qos.toml:2:1: [defaults] cpu_wieght", "\n  qos.toml:3:1:"}, []string{"or the log, says why"}},
		{"refused, why unknown", Report{Config: "/etc/vhqos/qos.toml", TableRefused: true},
			[]string{"table refused: /etc/vhqos/qos.toml", "(vhqos check /etc/vhqos/qos.toml, or the log, says why)"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			tc.r.WriteTable(&b, nil)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("status lacks %q:\n%s", w, b.String())
				}
			}
			for _, n := range tc.not {
				if strings.Contains(b.String(), n) {
					t.Errorf("status says %q:\n%s", n, b.String())
				}
			}
		})
	}
}
