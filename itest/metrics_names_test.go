package itest

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/vhqos/vhqos/status"
)

// The alerting rules and the dashboard of dist/ name metrics; a renamed or
// misspelt name would leave an alert that never fires or an empty panel,
// silently. So promtool checks and unit-tests the rules, and every
// vhqos_ name they use must be a family a running vhqos exports.

// metricsNamesQoS turns on every per-vhost family that needs no special
// device: cpu_max (throttling), memory_max, tasks_max and max_connections
// (admissions).
const metricsNamesQoS = `
[[vhost]]
name = "capped"
match = ["127.0.0.30"]
cpu_max = "50%"
memory_max = "256M"
tasks_max = 50
max_connections = 20
`

// describedOnly are the families a scrape shows only under conditions
// this test does not make cheaply (an egress_rate shaped on a device of
// shape_devices): they are checked against what vhqos describes instead.
var describedOnly = map[string]bool{
	"vhqos_egress_bytes_total":                    true,
	"vhqos_egress_packets_total":                  true,
	"vhqos_egress_drops_total":                    true,
	"vhqos_egress_overlimits_total":               true,
	"vhqos_egress_rate_limit_bits_per_second":     true,
	"vhqos_connection_rate_limit_bits_per_second": true,
}

var metricName = regexp.MustCompile(`vhqos_[a-z_]+`)

// sumBy finds the grouping labels of aggregations: sum by (a, b).
var sumBy = regexp.MustCompile(`(?:sum|avg|max|min) by \(([^)]*)\)`)

func TestMetricsNamesOfRulesAndDashboard(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(root, "dist/prometheus/vhqos-rules.yml")
	rulesTest := filepath.Join(root, "dist/prometheus/vhqos-rules.test.yml")
	dashboard := filepath.Join(root, "dist/grafana/vhqos-dashboard.json")

	// Not skipped without promtool: .ci/deps installs Debian's prometheus.
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool (Debian package prometheus, in .ci/deps) is needed: %v", err)
	}
	for _, args := range [][]string{{"check", "rules", rules}, {"test", "rules", rulesTest}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	used := map[string][]string{} // metric name -> where it is used
	for name, exprs := range map[string][]string{"vhqos-rules.yml": ruleExprs(t, rules), "vhqos-dashboard.json": dashboardExprs(t, dashboard)} {
		if len(exprs) == 0 {
			t.Fatalf("%s has no expressions", name)
		}
		for _, e := range exprs {
			for _, m := range metricName.FindAllString(e, -1) {
				used[m] = append(used[m], name+": "+e)
			}
		}
	}

	// A vhost's limits and usage hold per machine: a panel that adds up
	// a vhost's series across instances shows a limit no machine has.
	for _, e := range dashboardExprs(t, dashboard) {
		for _, by := range sumBy.FindAllStringSubmatch(e, -1) {
			if !slices.Contains(strings.Split(strings.ReplaceAll(by[1], " ", ""), ","), "instance") {
				t.Errorf("the dashboard adds up across instances: %s", e)
			}
		}
	}

	scraped := scrapeRunningVhqos(t)
	described := describedFamilies()
	for name, where := range used {
		switch {
		case scraped[name] || scraped[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")]:
		case describedOnly[name] && described[name]:
		case describedOnly[name]:
			t.Errorf("%s (not made by this test's table) is not a family vhqos describes; used in\n  %s", name, strings.Join(where, "\n  "))
		default:
			t.Errorf("%s is not in a scrape of a running vhqos; used in\n  %s", name, strings.Join(where, "\n  "))
		}
	}
	if t.Failed() {
		var have []string
		for n := range scraped {
			have = append(have, n)
		}
		sort.Strings(have)
		t.Logf("families scraped: %s", strings.Join(have, " "))
	}
}

// TestMetricsDocumented: every family a running vhqos exports, and every
// one it describes (those this test's table does not make: egress,
// tenants), is named in README.md's "Seeing what vhqos does", the list
// of metrics an operator reads; vhqos(8) has that section whole
// (docs/man/mkman fails when a section it takes is gone). A new metric
// fails here until it is documented.
func TestMetricsDocumented(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := regexp.MustCompile(`(?ms)^## Seeing what vhqos does\n(.*?)^## `).FindSubmatch(readme)
	if section == nil {
		t.Fatal(`README.md has no section "## Seeing what vhqos does" followed by another`)
	}
	names := scrapeRunningVhqos(t)
	for n := range describedFamilies() {
		names[n] = true
	}
	var missing []string
	for n := range names {
		if !strings.HasPrefix(n, "vhqos_") {
			continue
		}
		if !strings.Contains(string(section[1]), "`"+n+"`") {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("README.md's \"Seeing what vhqos does\" (so vhqos(8) too) does not name the metrics %s", strings.Join(missing, ", "))
	}
	if len(names) < 40 {
		t.Errorf("only %d families scraped and described: %v", len(names), names)
	}
}

// ruleExprs are the expr fields of a Prometheus rule file, each on one
// line (a block scalar is refused rather than read in part).
func ruleExprs(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, m := range ruleExpr.FindAllStringSubmatch(string(data), -1) {
		if e := strings.TrimSpace(m[1]); strings.HasPrefix(e, "|") || strings.HasPrefix(e, ">") {
			t.Errorf("%s: expr %q spans lines; keep exprs on one line for this test", path, e)
		} else {
			exprs = append(exprs, e)
		}
	}
	return exprs
}

var ruleExpr = regexp.MustCompile(`(?m)^\s*(?:- )?expr:\s*(.+)$`)

// dashboardExprs are the queries of a Grafana dashboard: its panels'
// targets and its templating variables' queries.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("the dashboard %s is not JSON: %v", path, err)
	}
	var exprs []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Definition != "" {
			exprs = append(exprs, v.Definition)
		}
	}
	return exprs
}

// scrapeRunningVhqos runs socat under vhqos with metricsNamesQoS, makes a
// connection to the capped vhost (so its cgroup and the notification
// latency histogram have figures) and returns the families of a scrape.
func scrapeRunningVhqos(t *testing.T) map[string]bool {
	t.Helper()
	const addr, metrics = "127.0.0.30:31080", "127.0.0.30:31464"
	dir, err := scratchDir()
	if err != nil {
		t.Fatal(err)
	}
	qos := filepath.Join(dir, "qos.toml")
	if err := os.WriteFile(qos, []byte(metricsNamesQoS), 0o644); err != nil {
		t.Fatal(err)
	}
	RunDaemon(t, DaemonConfig{
		Name:   "socat",
		Dir:    dir,
		Prefix: []string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qos, "--metrics-listen", metrics, "--"},
		Argv:   []string{"socat", "TCP-LISTEN:31080,bind=127.0.0.30,reuseaddr,fork", "OPEN:" + filepath.Join(dir, "received") + ",creat,append"},
		Listen: []string{addr},
	})
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("connecting to socat under vhqos: %v", err)
	}
	c.Write([]byte("hello\n"))
	c.Close()
	if got, err := readFileEventually(filepath.Join(dir, "received"), 30*time.Second); err != nil || got != "hello\n" {
		t.Fatalf("socat under vhqos received %q (%v), want the connection's line", got, err)
	}

	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatalf("scraping the metrics: %v", err)
	}
	defer resp.Body.Close()
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the metrics are not Prometheus text format: %v", err)
	}
	names := map[string]bool{}
	for n := range families {
		names[n] = true
	}
	return names
}

// describedFamilies are the family names vhqos's metrics describe, under
// any conditions.
func describedFamilies() map[string]bool {
	ch := make(chan *prometheus.Desc)
	go func() {
		status.NewMetrics(func() *status.Report { return &status.Report{} }).Describe(ch)
		close(ch)
	}()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{}
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

// TestTableRefusedGauge: vhqos_table_refused says whether the table file
// holds a table vhqos refused, for as long as it does: the alert
// VhqosReloadRefused lasts as long as the broken file, across a
// supervisor's crash, and ends when the file is fixed. vhqos status
// says it too.
func TestTableRefusedGauge(t *testing.T) {
	const addr, metrics = "127.0.0.31:31080", "127.0.0.31:31464"
	dir, err := scratchDir()
	if err != nil {
		t.Fatal(err)
	}
	qos := filepath.Join(dir, "qos.toml")
	socket := filepath.Join(dir, "status.sock")
	const good = "[[vhost]]\nname = \"web\"\nmatch = [\"127.0.0.31\"]\ncpu_weight = 200\n"
	write := func(content string) {
		t.Helper()
		// As an editor saves: a new file renamed over the old one.
		if err := os.WriteFile(qos+".new", []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(qos+".new", qos); err != nil {
			t.Fatal(err)
		}
	}
	write(good)
	d := RunDaemon(t, DaemonConfig{
		Name:   "socat",
		Dir:    dir,
		Prefix: []string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qos, "--status-socket", socket, "--metrics-listen", metrics, "--"},
		Argv:   []string{"socat", "TCP-LISTEN:31080,bind=127.0.0.31,reuseaddr,fork", "SYSTEM:echo hello"},
		Listen: []string{addr},
	})
	gauge := func() float64 {
		t.Helper()
		resp, err := http.Get("http://" + metrics + "/metrics")
		if err != nil {
			return -1 // between a supervisor's crash and its successor
		}
		defer resp.Body.Close()
		var parser expfmt.TextParser
		families, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("the metrics are not Prometheus text format: %v", err)
		}
		f := families["vhqos_table_refused"]
		if f == nil || len(f.GetMetric()) != 1 {
			t.Fatalf("vhqos_table_refused: %v, want one series", f)
		}
		m := f.GetMetric()[0]
		if l := m.GetLabel(); len(l) != 1 || l[0].GetName() != "path" || l[0].GetValue() != qos {
			t.Errorf("vhqos_table_refused's labels are %v, want path=%q", l, qos)
		}
		return m.GetGauge().GetValue()
	}
	waitGauge := func(want float64, what string) {
		t.Helper()
		eventually(t, patience, what, func() bool { return gauge() == want })
	}
	statusSays := func() (bool, string) {
		t.Helper()
		rep, err := status.Fetch(socket)
		if err != nil {
			t.Fatalf("vhqos status: %v", err)
		}
		var text strings.Builder
		rep.WriteTable(&text, nil)
		return rep.TableRefused, text.String()
	}

	if g := gauge(); g != 0 {
		t.Fatalf("vhqos_table_refused is %v with a good table, want 0", g)
	}
	write(good + "cpu_wieght = 3\n")
	waitGauge(1, "vhqos_table_refused 1 after a broken table was written")
	if refused, text := statusSays(); !refused || !strings.Contains(text, "table refused: "+qos) {
		t.Errorf("vhqos status: table_refused %v, and its table says\n%s\nwant it refused", refused, text)
	}
	// Another event on the directory (the file touched, an editor's swap
	// file) changes nothing: the file still holds the refused table.
	os.WriteFile(filepath.Join(dir, "unrelated"), nil, 0o644)
	if g := gauge(); g != 1 {
		t.Errorf("vhqos_table_refused is %v after an unrelated change, want 1", g)
	}

	// A new supervisor after a crash keeps the table in force, and the
	// file is still refused.
	keeper := d.Cmd.Process.Pid
	first := supervisorOf(keeper)
	if first == 0 {
		t.Fatal("no supervisor found")
	}
	syscall.Kill(first, syscall.SIGKILL)
	eventually(t, patience, "a new supervisor", func() bool { p := supervisorOf(keeper); return p != 0 && p != first })
	eventually(t, patience, "the new supervisor answering", func() bool {
		rep, err := status.Fetch(socket)
		return err == nil && rep.SupervisorRestarts == 1 && rep.Supervisor.ReloadsRefused > 0
	})
	if g := gauge(); g != 1 {
		t.Errorf("vhqos_table_refused is %v after the supervisor's restart, the file still broken; want 1", g)
	}

	write(good + "# fixed\n")
	waitGauge(0, "vhqos_table_refused 0 once the file was fixed")
	if refused, text := statusSays(); refused || strings.Contains(text, "table refused") {
		t.Errorf("vhqos status after the fix: table_refused %v, table\n%s", refused, text)
	}
}
