package itest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/vhqos/vhqos/status"
)

const statusQoS = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
dscp = "EF"

[[vhost]]
name = "blog"
match = ["127.0.0.3"]
cpu_max = "10%"
`

// statusReport is `vhqos status --json` of the vhqos serving its status
// at socket; the test fails if status does not answer.
func statusReport(t *testing.T, socket string) status.Report {
	t.Helper()
	out, code := vhqosStatus(t, socket, nil)
	if code != 0 {
		t.Fatalf("vhqos status exited %d: %s", code, out)
	}
	var r status.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("vhqos status --json: %v\n%s", err, out)
	}
	return r
}

func vhqosStatus(t *testing.T, socket string, cred *syscall.Credential) (string, int) {
	t.Helper()
	cmd := exec.Command(vhqosBinary(t), "status", "--json", "--socket", socket)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// vhqos status reports per vhost what the traffic did: connection counts,
// the processes in its cgroup, and throttling of a capped vhost.
func TestStatus(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "status.sock")
	qosFile := filepath.Join(t.TempDir(), "qos.toml")
	os.WriteFile(qosFile, []byte(statusQoS), 0o644)
	cfg := ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}, {Name: "blog", Addr: "127.0.0.3:8080"}}}
	cfg.Prefix = []string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qosFile, "--status-socket", socket, "--metrics-listen", metricsAddr, "--"}
	a := startWith(t, cfg)
	const shopRequests, blogRequests = 7, 3
	for i := 0; i < shopRequests; i++ {
		request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	}
	for i := 0; i < blogRequests-1; i++ {
		request(t, "127.0.0.3:8080", "/cgi-bin/whoami")
	}
	request(t, "127.0.0.3:8080", "/cgi-bin/burn?2") // held back by cpu_max

	out, code := vhqosStatus(t, socket, nil)
	if code != 0 {
		t.Fatalf("vhqos status exited %d: %s", code, out)
	}
	var r status.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	if r.PID != a.Cmd.Process.Pid {
		t.Errorf("report of pid %d, want vhqos %d", r.PID, a.Cmd.Process.Pid)
	}
	byName := map[string]status.Class{}
	for _, c := range r.Classes {
		byName[c.Name] = c
	}
	for name, want := range map[string]uint64{"shop": shopRequests, "blog": blogRequests} {
		c, ok := byName[name]
		if !ok {
			t.Fatalf("vhost %s missing from the report: %s", name, out)
		}
		// The startup probe of the harness connects once to each vhost.
		if c.Connections < want || c.Connections > want+1 {
			t.Errorf("%s: %d connections reported, %d sent (+1 startup probe)", name, c.Connections, want)
		}
		for _, pid := range c.PIDs {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
			if err != nil {
				continue // exited since
			}
			// An idle child goes home within a second of serving
			// (the sweep), which may fall between the report and
			// this read: home is fine, another vhost is not.
			if !strings.Contains(string(data), fmt.Sprintf("vhqos.%d/vhost-%s", r.PID, name)) && !strings.Contains(string(data), fmt.Sprintf("vhqos.%d/home", r.PID)) {
				t.Errorf("%s lists pid %d, which is in %q", name, pid, data)
			}
		}
	}
	if byName["shop"].DSCP != 46 || byName["blog"].CPUMax != 10 {
		t.Errorf("limits in the report: shop %+v blog %+v", byName["shop"], byName["blog"])
	}
	if b := byName["blog"]; b.Faults == 0 || b.Throttled == 0 {
		t.Errorf("the capped vhost shows no throttling: %+v", b)
	}
	if r.Supervisor.Notifications == 0 {
		t.Errorf("supervisor counters empty: %+v", r.Supervisor)
	}

	// The same figures, scraped as Prometheus metrics.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scraping the metrics: %v", err)
	}
	defer resp.Body.Close()
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("metrics are not Prometheus text format: %v", err)
	}
	value := func(name, label, want string) float64 {
		f, ok := families[name]
		if !ok {
			t.Fatalf("no metric %s", name)
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == want {
					switch {
					case m.Counter != nil:
						return m.GetCounter().GetValue()
					case m.Gauge != nil:
						return m.GetGauge().GetValue()
					case m.Histogram != nil:
						return float64(m.GetHistogram().GetSampleCount())
					}
				}
			}
		}
		t.Fatalf("no %s{%s=%q}", name, label, want)
		return 0
	}
	if got := value("vhqos_connections_total", "vhost", "shop"); got < shopRequests || got > shopRequests+1 {
		t.Errorf("vhqos_connections_total{vhost=shop} = %v, want %d (+1 probe)", got, shopRequests)
	}
	if got := value("vhqos_cpu_throttled_periods_total", "vhost", "blog"); got == 0 {
		t.Error("the capped vhost shows no throttled periods in the metrics")
	}
	if got := value("vhqos_classifications_total", "outcome", "vhost"); got < shopRequests+blogRequests {
		t.Errorf("classifications by address = %v, want at least %d", got, shopRequests+blogRequests)
	}
	accepts := 0.0
	for _, sc := range []string{"accept", "accept4"} {
		if f := families["vhqos_notification_duration_seconds"]; f != nil {
			for _, m := range f.GetMetric() {
				if m.GetLabel()[0].GetValue() == sc {
					accepts += float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	if accepts < shopRequests+blogRequests {
		t.Errorf("notification latency histogram counted %v accepts, want at least %d", accepts, shopRequests+blogRequests)
	}
}

// The metrics address of the tests, inside their own network namespace.
const metricsAddr = "127.0.0.9:9464"

// Only root may ask: the socket is 0600, and even through a socket whose
// mode was opened up, a client that is not root is refused.
func TestStatusRefusesNonRoot(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "status.sock")
	// nobody must be able to reach the socket file itself.
	os.Chmod(filepath.Dir(socket), 0o755)
	os.Chmod(filepath.Dir(filepath.Dir(socket)), 0o755)
	qosFile := filepath.Join(t.TempDir(), "qos.toml")
	os.WriteFile(qosFile, []byte(statusQoS), 0o644)
	cfg := ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}}
	cfg.Prefix = []string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qosFile, "--status-socket", socket, "--"}
	startWith(t, cfg)
	bin := vhqosBinary(t)
	os.Chmod(bin, 0o755)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	if st, err := os.Stat(socket); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("status socket mode: %v %v, want 0600", st.Mode(), err)
	}
	if out, code := vhqosStatus(t, socket, nobody); code == 0 || !strings.Contains(out, "permission denied") {
		t.Errorf("nobody through a 0600 socket: exit %d, %q", code, out)
	}
	os.Chmod(socket, 0o666)
	if out, code := vhqosStatus(t, socket, nobody); code == 0 || !strings.Contains(out, "root only") {
		t.Errorf("nobody through an opened-up socket: exit %d, %q", code, out)
	}
}

func TestStatusWithoutSupervisor(t *testing.T) {
	out, code := vhqosStatus(t, filepath.Join(t.TempDir(), "none.sock"), nil)
	// README: "With no vhqos on the socket it says so in one line and exits 3."
	if code != 3 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "no vhqos is running") {
		t.Errorf("exit %d, output %q; want one line saying no vhqos is running and exit status 3", code, out)
	}
}

// With --log-format json every line vhqos logs is a JSON object, and a run
// logs its start and its stop, not a line per request.
func TestJSONLogs(t *testing.T) {
	qosFile := filepath.Join(t.TempDir(), "qos.toml")
	os.WriteFile(qosFile, []byte(statusQoS), 0o644)
	cfg := ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}}
	cfg.Prefix = []string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qosFile, "--status-socket", statusSocket(t), "--log-format", "json", "--"}
	a := startWith(t, cfg)
	for i := 0; i < 5; i++ {
		request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	}
	a.Stop()
	data, _ := os.ReadFile(filepath.Join(a.Dir, "stderr.log"))
	msgs := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue // Apache's own output
		}
		var rec struct {
			Level, Msg string
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Level == "" || rec.Msg == "" {
			t.Errorf("not a JSON log record: %q (%v)", line, err)
		}
		msgs[rec.Msg]++
	}
	if msgs["server started"] != 1 || msgs["server exited"] != 1 {
		t.Errorf("log records: %v; want one start and one exit", msgs)
	}
	if len(msgs) > 8 {
		t.Errorf("%d kinds of log lines for 5 requests: %v", len(msgs), msgs)
	}
}

// Apache prefork children wait in a blocking accept the kernel performs
// (one Listen, an address vhost): vhqos counts such an accept when it lets
// it through, before a client came. An idle server shows no connections
// all the same, and each client counts once.
func TestStatusCountsNoWaitingAccepts(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "status.sock")
	qosFile := filepath.Join(t.TempDir(), "qos.toml")
	os.WriteFile(qosFile, []byte(statusQoS), 0o644)
	const servers = 4
	cfg := ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}, Servers: servers}
	cfg.Prefix = []string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qosFile, "--status-socket", socket, "--"}
	a := startWith(t, cfg)
	shop := func() uint64 {
		t.Helper()
		r := statusReport(t, socket)
		for _, c := range r.Classes {
			if c.Name == "shop" {
				return c.Connections
			}
		}
		t.Fatalf("no vhost shop in the report: %+v", r)
		return 0
	}
	idle := func() {
		t.Helper()
		waitAccepting(t, a.Cmd.Process.Pid, servers)
	}
	idle()
	// The harness's readiness probe connected once.
	if got := shop(); got != 1 {
		t.Errorf("idle server, %d children waiting in accept: %d connections counted, want 1 (the harness's probe)", servers, got)
	}
	const requests = 6
	for range requests {
		request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	}
	idle()
	if got := shop(); got != 1+requests {
		t.Errorf("after %d requests: %d connections counted, want %d", requests, got, 1+requests)
	}
}

// waitAccepting waits until at least n processes in the cgroups of the
// vhqos with pid vhqosPid are blocked in accept or accept4.
func waitAccepting(t *testing.T, vhqosPid, n int) {
	t.Helper()
	mark := fmt.Sprintf("vhqos.%d/", vhqosPid)
	deadline := time.Now().Add(patience)
	for {
		waiting := 0
		dirs, _ := filepath.Glob("/proc/[0-9]*")
		for _, dir := range dirs {
			cg, err := os.ReadFile(dir + "/cgroup")
			if err != nil || !strings.Contains(string(cg), mark) {
				continue
			}
			sc, err := os.ReadFile(dir + "/syscall")
			if f := strings.Fields(string(sc)); err == nil && len(f) > 0 && (f[0] == strconv.Itoa(syscall.SYS_ACCEPT) || f[0] == strconv.Itoa(syscall.SYS_ACCEPT4)) {
				waiting++
			}
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes of vhqos %d wait in accept after %v, want %d", waiting, vhqosPid, patience, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
