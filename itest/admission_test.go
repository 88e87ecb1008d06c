package itest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
)

// Issue 13's acceptance: admission per vhost (max_connections,
// max_connections_per_ip, over_limit, refuse_status, retry_after).
//
// Requests are held by the hold CGI until every one of a batch has been
// decided in the server's own view (a CGI holds it, or vhqos answered it),
// so "six at once" holds however slow the machine is: no request can end,
// and free its slot, before the last one has been let in or not.

// The vhosts of these tests: shop is capped, blog is not; spare is an
// alternate class with a mark of its own. Every vhost's Apache listens on
// port 8080.
const (
	admShop  = "127.0.0.2:8080"
	admBlog  = "127.0.0.3:8080"
	admPort  = 8080
	dscpEF   = 46
	dscpAF41 = 34
	dscpCS1  = 8
)

// admissionAlternate: shop takes two connections at once; the others are
// served by spare, in spare's cgroup with spare's mark.
const admissionAlternate = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
dscp = "EF"
max_connections = 2
over_limit = "spare"

[[vhost]]
name = "blog"
match = ["127.0.0.3"]
dscp = "AF41"

[[vhost]]
name = "spare"
match = ["127.0.0.4"]
dscp = "CS1"
`

// admissionRefuse is admissionAlternate refusing instead, with the default
// status and Retry-After.
var admissionRefuse = strings.Replace(admissionAlternate, `over_limit = "spare"`, `over_limit = "refuse"`, 1)

// admissionRefuse508 refuses with LVE's status and no Retry-After.
var admissionRefuse508 = strings.Replace(admissionAlternate, `over_limit = "spare"`, "over_limit = \"refuse\"\nrefuse_status = 508\nretry_after = 0", 1)

// admissionServer is Apache under vhqos for these tests: 14 children (more
// than the requests held at once), a status socket and the metrics.
type admissionServer struct {
	*Apache
	socket, qosFile string
}

func startAdmission(t *testing.T, qos string, cfg ApacheConfig) *admissionServer {
	t.Helper()
	s := &admissionServer{qosFile: filepath.Join(t.TempDir(), "qos.toml"), socket: statusSocket(t)}
	if err := os.WriteFile(s.qosFile, []byte(qos), 0o644); err != nil {
		t.Fatal(err)
	}
	if cfg.Servers == 0 {
		cfg.Servers = 14
	}
	cfg.Prefix = []string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", s.qosFile, "--status-socket", s.socket, "--metrics-listen", metricsAddr, "--"}
	s.Apache = startWith(t, cfg)
	waitTableWatched(t, s.Cmd.Process.Pid)
	return s
}

// reload replaces the table and waits until vhqos has applied it; it fails
// the test if vhqos refused it instead.
func (s *admissionServer) reload(t *testing.T, qos string) {
	t.Helper()
	before := statusReport(t, s.socket).Supervisor
	writeByRename(t, s.qosFile, qos)
	eventually(t, patience, "vhqos applying or refusing the new table", func() bool {
		now := statusReport(t, s.socket).Supervisor
		return now.Reloads+now.ReloadsRefused > before.Reloads+before.ReloadsRefused
	})
	if now := statusReport(t, s.socket).Supervisor; now.ReloadsRefused != before.ReloadsRefused {
		t.Fatalf("vhqos refused the table:\n%s\nit said:\n%s", qos, s.Output())
	}
}

// exchange is one request on a connection of its own, as the client saw
// it: every byte the server sent up to its FIN.
type exchange struct {
	From           netip.Addr // the client's source address chosen, if any
	To             string     // the server's address:port
	Raw            []byte
	StatusLine     string
	Status         int
	Header         http.Header // as sent: Connection is not taken out
	Body           string      // decoded (Content-Length, chunked or up to the FIN)
	Client, Server netip.AddrPort
	// Err is why this is not one complete HTTP response followed by the
	// server's FIN: a failed connect, a reset, a cut body, bytes after it.
	Err error
}

// fetch sends GET target with "Connection: close" to to on a new
// connection, from the source address from when it is valid, and reads
// to the end of the connection.
func fetch(from netip.Addr, to, target string) exchange {
	x := exchange{From: from, To: to}
	d := net.Dialer{Timeout: RequestTimeout}
	if from.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: from.AsSlice()}
	}
	c, err := d.Dial("tcp", to)
	if err != nil {
		x.Err = fmt.Errorf("connecting from %v to %s: %w", from, to, err)
		return x
	}
	defer c.Close()
	x.Client, x.Server = ends(c)
	c.SetDeadline(time.Now().Add(RequestTimeout))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: itest.invalid\r\nConnection: close\r\n\r\n", target); err != nil {
		x.Err = fmt.Errorf("sending GET %s to %s: %w", target, to, err)
		return x
	}
	// A reset, instead of the FIN, is an error here.
	x.Raw, err = io.ReadAll(c)
	if err != nil {
		x.Err = fmt.Errorf("reading the answer to GET %s from %s after %d bytes %q: %w", target, to, len(x.Raw), x.Raw, err)
		return x
	}
	if err := x.parse(); err != nil {
		x.Err = fmt.Errorf("the answer to GET %s from %s: %w", target, to, err)
	}
	return x
}

func (x *exchange) parse() error {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(x.Raw)))
	line, err := tp.ReadLine()
	if err != nil {
		return fmt.Errorf("no status line in %q: %w", x.Raw, err)
	}
	x.StatusLine = line
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return fmt.Errorf("not an HTTP/1 status line: %q", line)
	}
	if x.Status, err = strconv.Atoi(f[1]); err != nil {
		return fmt.Errorf("status line %q: %w", line, err)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return fmt.Errorf("header of %q: %w", x.Raw, err)
	}
	x.Header = http.Header(h)
	// The body, by the rules of net/http; then, with a Content-Length,
	// nothing may follow it.
	r := bufio.NewReader(bytes.NewReader(x.Raw))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return fmt.Errorf("%q: %w", x.Raw, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("body of %q: %w", x.Raw, err)
	}
	x.Body = string(body)
	if cl := x.Header.Get("Content-Length"); cl != "" {
		if rest, _ := io.ReadAll(r); len(rest) > 0 {
			return fmt.Errorf("%d bytes after a body of Content-Length %s: %q", len(rest), cl, x.Raw)
		}
	}
	return nil
}

// served reports whether Apache answered (the hold CGI's report).
func (x exchange) served() bool { return x.Err == nil && x.Status == http.StatusOK }

// group is the vhqos group (the last element of its cgroup path:
// "vhost-shop", "default") of the process that served x, "" if the answer
// is no whoami report. The path must be under vhqos with pid vhqosPid.
func (x exchange) group(vhqosPid int) string {
	w, err := ParseWhoami(x.Body)
	if err != nil || !strings.Contains(w.Cgroup(), fmt.Sprintf("/vhqos.%d/", vhqosPid)) {
		return ""
	}
	return path.Base(w.Cgroup())
}

// batch is requests sent at once to hold CGIs behind one gate.
type batch struct {
	a       *Apache
	gate    string
	x       []exchange
	wg      sync.WaitGroup
	done    atomic.Int32
	release sync.Once
}

// sendBatch starts one request per entry of to (from the matching entry of
// from, if any) for /cgi-bin/hold?gate, all at once. They are released
// when the test ends at the latest, before Apache stops.
func sendBatch(t *testing.T, a *Apache, gate string, to []string, from []netip.Addr) *batch {
	t.Helper()
	b := &batch{a: a, gate: gate, x: make([]exchange, len(to))}
	t.Cleanup(func() { b.open(t) })
	for i := range to {
		var src netip.Addr
		if i < len(from) {
			src = from[i]
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.x[i] = fetch(src, to[i], "/cgi-bin/hold?"+gate)
			b.done.Add(1)
		}()
	}
	return b
}

// waitDecided waits until every request of the batch has been decided, in
// the server's view: held by a CGI, or answered without one.
func (b *batch) waitDecided(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		held, answered := b.a.Held(b.gate), int(b.done.Load())
		if held+answered >= len(b.x) {
			t.Logf("batch %s: %d held by the server, %d answered without it", b.gate, held, answered)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s: after %v, %d of %d requests held by a CGI and %d answered; the others are neither", b.gate, patience, held, len(b.x), answered)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// finish opens the gate and returns every exchange once all have ended.
func (b *batch) finish(t *testing.T) []exchange {
	t.Helper()
	b.open(t)
	return b.x
}

func (b *batch) open(t *testing.T) {
	b.release.Do(func() {
		if err := b.a.OpenGate(b.gate); err != nil {
			t.Error(err)
		}
		b.wg.Wait()
	})
}

// outcome names what became of one exchange: "200 vhost-shop DSCP 46", or
// for an answer of vhqos's own its status; transport or HTTP errors are
// spelt out. With capture nil the DSCP is left out.
func outcome(t *testing.T, x exchange, vhqosPid int, capture *Capture) string {
	t.Helper()
	switch {
	case x.Err != nil:
		return "error: " + x.Err.Error()
	case !x.served():
		return strconv.Itoa(x.Status)
	}
	s := "200 " + x.group(vhqosPid)
	if capture != nil {
		m, err := capture.Conn(x.Server, x.Client)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.DSCP) == 1 {
			for d := range m.DSCP {
				s += " DSCP " + strconv.Itoa(d)
			}
		} else {
			s += " " + m.String()
		}
	}
	return s
}

// tally counts outcomes by the key key(x) gives (the server address, the
// client address...).
func tally(t *testing.T, xs []exchange, vhqosPid int, capture *Capture, key func(exchange) string) map[string]map[string]int {
	t.Helper()
	out := map[string]map[string]int{}
	for _, x := range xs {
		k := key(x)
		if out[k] == nil {
			out[k] = map[string]int{}
		}
		out[k][outcome(t, x, vhqosPid, capture)]++
	}
	return out
}

func byServer(x exchange) string { return x.To }

// checkTally compares outcomes by key with what the test wants.
func checkTally(t *testing.T, what string, got, want map[string]map[string]int) {
	t.Helper()
	for k, w := range want {
		if !maps.Equal(got[k], w) {
			t.Errorf("%s, %s: got %v, want %v", what, k, got[k], w)
		}
	}
}

// checkRefusals checks that every answer that is not Apache's is a
// complete refusal from vhqos: status, a short text body of exactly
// Content-Length bytes, Connection: close, Retry-After as wanted ("" for
// none), and then the FIN, not a reset.
func checkRefusals(t *testing.T, xs []exchange, status int, retryAfter string) {
	t.Helper()
	for _, x := range xs {
		if x.served() {
			continue
		}
		if x.Err != nil {
			t.Errorf("%v -> %s: %v", x.Client, x.To, x.Err)
			continue
		}
		h := x.Header
		var problems []string
		if !strings.HasPrefix(x.StatusLine, fmt.Sprintf("HTTP/1.1 %d ", status)) {
			problems = append(problems, fmt.Sprintf("status line %q, want HTTP/1.1 %d", x.StatusLine, status))
		}
		if cl := h.Get("Content-Length"); cl != strconv.Itoa(len(x.Body)) || len(x.Body) == 0 {
			problems = append(problems, fmt.Sprintf("Content-Length %q for a body of %d bytes, want a short body of exactly that", cl, len(x.Body)))
		}
		if !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
			problems = append(problems, fmt.Sprintf("Content-Type %q, want text/plain", h.Get("Content-Type")))
		}
		if !strings.EqualFold(strings.Join(h.Values("Connection"), ","), "close") {
			problems = append(problems, fmt.Sprintf("Connection %q, want close", h.Values("Connection")))
		}
		if got := h.Values("Retry-After"); strings.Join(got, ",") != retryAfter {
			problems = append(problems, fmt.Sprintf("Retry-After %q, want %q", got, retryAfter))
		}
		if len(problems) > 0 {
			t.Errorf("refusal of %v -> %s: %s; it was:\n%s", x.Client, x.To, strings.Join(problems, "; "), x.Raw)
		}
	}
}

// checkAccessLog checks that Apache logged every request it answered, once,
// and none of those vhqos answered: the server never saw them.
func checkAccessLog(t *testing.T, a *Apache, xs []exchange) {
	t.Helper()
	entries, err := a.Log()
	if err != nil {
		t.Fatal(err)
	}
	// A client port is unique per server address only: the kernel may
	// give two connections to two vhosts' addresses the same one.
	type ends struct{ client, local netip.AddrPort }
	logged := map[ends]int{}
	for _, e := range entries {
		logged[ends{e.Client, e.Local}]++
	}
	for _, x := range xs {
		to, err := netip.ParseAddrPort(x.To)
		if err != nil {
			t.Fatalf("exchange to %q: %v", x.To, err)
		}
		switch n := logged[ends{x.Client, to}]; {
		case x.served() && n != 1:
			t.Errorf("Apache served %v -> %s but logged it %d times", x.Client, x.To, n)
		case !x.served() && x.Client.IsValid() && n != 0:
			t.Errorf("%v -> %s was answered %d without Apache, yet Apache logged it %d times", x.Client, x.To, x.Status, n)
		}
	}
}

// admissionJSON is a vhost's "admission" object in vhqos status --json.
type admissionJSON struct {
	MaxConnections      int    `json:"max_connections"`
	MaxConnectionsPerIP int    `json:"max_connections_per_ip"`
	OverLimit           string `json:"over_limit"`
	Open                int    `json:"open"`
	Admitted            uint64 `json:"admitted"`
	Alternate           uint64 `json:"alternate"`
	Refused             uint64 `json:"refused"`
}

// admissions is the "admission" objects of vhqos status --json by vhost
// name; vhosts without one are left out.
func admissions(t *testing.T, socket string) map[string]admissionJSON {
	t.Helper()
	out, code := vhqosStatus(t, socket, nil)
	if code != 0 {
		t.Fatalf("vhqos status exited %d: %s", code, out)
	}
	var r struct {
		VHosts []struct {
			Name      string         `json:"name"`
			Admission *admissionJSON `json:"admission"`
		} `json:"vhosts"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("vhqos status --json: %v\n%s", err, out)
	}
	m := map[string]admissionJSON{}
	for _, v := range r.VHosts {
		if v.Admission != nil {
			m[v.Name] = *v.Admission
		}
	}
	return m
}

// scrapeMetrics reads vhqos's metrics as series name{label="value",...}
// (labels sorted by name) -> value.
func scrapeMetrics(t *testing.T) map[string]float64 {
	t.Helper()
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
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetUntyped().GetValue()
			switch {
			case m.Counter != nil:
				v = m.GetCounter().GetValue()
			case m.Gauge != nil:
				v = m.GetGauge().GetValue()
			}
			out[series(name, labels...)] = v
		}
	}
	return out
}

// series names one series: labels are `name="value"` strings.
func series(name string, labels ...string) string {
	labels = append([]string(nil), labels...)
	sort.Strings(labels)
	return name + "{" + strings.Join(labels, ",") + "}"
}

// counts are a vhost's admission outcomes.
type counts struct{ admitted, alternate, refused uint64 }

// checkCounters waits until nothing counts against vhost's caps any more
// (the test's connections are all closed), then checks that its counters
// in vhqos status grew by want since before, and that the metrics say
// what status says: the counters, the open gauge, the caps.
func checkCounters(t *testing.T, s *admissionServer, vhost string, before admissionJSON, want counts) {
	t.Helper()
	waitNoConnections(t, admPort)
	now, ok := admissions(t, s.socket)[vhost]
	if !ok {
		out, _ := vhqosStatus(t, s.socket, nil)
		t.Errorf("vhqos status --json has no admission object for %s:\n%s", vhost, out)
		return
	}
	if now.Open != 0 {
		t.Errorf("%s: open = %d with every connection closed, want 0", vhost, now.Open)
	}
	got := counts{now.Admitted - before.Admitted, now.Alternate - before.Alternate, now.Refused - before.Refused}
	if got != want {
		t.Errorf("%s: admitted/alternate/refused grew by %d/%d/%d (now %+v), want %d/%d/%d",
			vhost, got.admitted, got.alternate, got.refused, now, want.admitted, want.alternate, want.refused)
	}
	m := scrapeMetrics(t)
	v := fmt.Sprintf("vhost=%q", vhost)
	for o, n := range map[string]uint64{"admitted": now.Admitted, "alternate": now.Alternate, "refused": now.Refused} {
		name := series("vhqos_admissions_total", v, fmt.Sprintf("outcome=%q", o))
		if got, ok := m[name]; !ok || got != float64(n) {
			t.Errorf("metric %s = %v (present: %v), want %d as in vhqos status", name, got, ok, n)
		}
	}
	for name, want := range map[string]int{"vhqos_connections_limit": now.MaxConnections, "vhqos_connections_per_ip_limit": now.MaxConnectionsPerIP} {
		got, ok := m[series(name, v)]
		switch {
		case want == 0 && ok:
			t.Errorf("metric %s{%s} = %v, want none (no such cap)", name, v, got)
		case want != 0 && (!ok || got != float64(want)):
			t.Errorf("metric %s{%s} = %v (present: %v), want %d", name, v, got, ok, want)
		}
	}
	if got, ok := m[series("vhqos_connections_open", v)]; !ok || got != 0 {
		t.Errorf("metric vhqos_connections_open{%s} = %v (present: %v), want 0", v, got, ok)
	}
}

// vhost A (shop) takes two connections at once, the others are served by
// the alternate class (spare: its cgroup, its mark); the uncapped vhost B
// (blog) serves its six at the same time in its own class.
func TestAdmissionAlternate(t *testing.T) {
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	s := startAdmission(t, admissionAlternate, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: admShop}, {Name: "blog", Addr: admBlog}}})
	pid := s.Cmd.Process.Pid
	waitNoConnections(t, admPort) // the harness's readiness probes are closed
	before := admissions(t, s.socket)["shop"]

	var to []string
	for range 6 {
		to = append(to, admShop, admBlog)
	}
	b := sendBatch(t, s.Apache, "alternate", to, nil)
	b.waitDecided(t)
	during := admissions(t, s.socket)
	xs := b.finish(t)

	checkTally(t, "six at once", tally(t, xs, pid, capture, byServer), map[string]map[string]int{
		admShop: {fmt.Sprintf("200 vhost-shop DSCP %d", dscpEF): 2, fmt.Sprintf("200 vhost-spare DSCP %d", dscpCS1): 4},
		admBlog: {fmt.Sprintf("200 vhost-blog DSCP %d", dscpAF41): 6},
	})
	checkAccessLog(t, s.Apache, xs)
	if d, ok := during["shop"]; !ok || d.Open != 2 || d.MaxConnections != 2 || d.OverLimit != "spare" {
		t.Errorf("vhqos status while the six were held: shop's admission %+v (present: %v), want open 2 of max_connections 2, over_limit spare", d, ok)
	}
	for _, v := range []string{"blog", "spare"} {
		if d, ok := during[v]; ok {
			t.Errorf("vhqos status: %s has no cap but an admission object %+v", v, d)
		}
	}
	checkCounters(t, s, "shop", before, counts{admitted: 2, alternate: 4})
	if got, ok := scrapeMetrics(t)[series("vhqos_connections_limit", `vhost="blog"`)]; ok {
		t.Errorf("metric vhqos_connections_limit{vhost=\"blog\"} = %v for a vhost without a cap", got)
	}
}

// After a hot reload to over_limit = "refuse", the four over the cap get
// complete 503 answers from vhqos (Retry-After: 1, Connection: close, then
// the FIN), and Apache never sees them; after one to refuse_status = 508
// and retry_after = 0, a 508 without Retry-After.
func TestAdmissionRefuse(t *testing.T) {
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	s := startAdmission(t, admissionAlternate, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: admShop}}})
	pid := s.Cmd.Process.Pid
	for _, tc := range []struct {
		table, gate string
		status      int
		retryAfter  string
	}{
		{admissionRefuse, "refuse503", http.StatusServiceUnavailable, "1"},
		{admissionRefuse508, "refuse508", 508, ""},
	} {
		s.reload(t, tc.table)
		waitNoConnections(t, admPort)
		before := admissions(t, s.socket)["shop"]
		b := sendBatch(t, s.Apache, tc.gate, []string{admShop, admShop, admShop, admShop, admShop, admShop}, nil)
		b.waitDecided(t)
		xs := b.finish(t)
		checkTally(t, "six at once, refuse_status "+strconv.Itoa(tc.status), tally(t, xs, pid, capture, byServer), map[string]map[string]int{
			admShop: {fmt.Sprintf("200 vhost-shop DSCP %d", dscpEF): 2, strconv.Itoa(tc.status): 4},
		})
		checkRefusals(t, xs, tc.status, tc.retryAfter)
		checkAccessLog(t, s.Apache, xs)
		checkCounters(t, s, "shop", before, counts{admitted: 2, refused: 4})
	}
}

// max_connections_per_ip = 1: two requests at once from each of two client
// addresses; one of each pair is served by shop, the other by the
// alternate, the defaults (their cgroup, their mark).
func TestAdmissionPerIP(t *testing.T) {
	const table = `
[defaults]
dscp = "CS1"

[[vhost]]
name = "shop"
match = ["127.0.0.2"]
dscp = "EF"
max_connections_per_ip = 1
over_limit = "default"
`
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	s := startAdmission(t, table, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: admShop}}})
	pid := s.Cmd.Process.Pid
	waitNoConnections(t, admPort)
	before := admissions(t, s.socket)["shop"]
	c1, c2 := netip.MustParseAddr("127.0.1.1"), netip.MustParseAddr("127.0.1.2")
	b := sendBatch(t, s.Apache, "perip", []string{admShop, admShop, admShop, admShop}, []netip.Addr{c1, c2, c1, c2})
	b.waitDecided(t)
	during := admissions(t, s.socket)
	xs := b.finish(t)

	for _, x := range xs {
		if w, err := ParseWhoami(x.Body); err == nil && w.Remote.Addr() != x.From {
			t.Errorf("Apache saw the request from %v, sent from %v", w.Remote, x.From)
		}
	}
	want := map[string]int{fmt.Sprintf("200 vhost-shop DSCP %d", dscpEF): 1, fmt.Sprintf("200 default DSCP %d", dscpCS1): 1}
	checkTally(t, "two at once from each address", tally(t, xs, pid, capture, func(x exchange) string { return x.From.String() }),
		map[string]map[string]int{c1.String(): want, c2.String(): want})
	checkAccessLog(t, s.Apache, xs)
	if d, ok := during["shop"]; !ok || d.MaxConnectionsPerIP != 1 || d.MaxConnections != 0 || d.OverLimit != "default" {
		t.Errorf("vhqos status: shop's admission %+v (present: %v), want max_connections_per_ip 1, no max_connections, over_limit default", d, ok)
	}
	checkCounters(t, s, "shop", before, counts{admitted: 2, alternate: 2})
}

// A connection idle in keep-alive counts against max_connections: while it
// is open the next connection is refused; once the server has closed it,
// the next is admitted.
func TestAdmissionKeepAlive(t *testing.T) {
	const table = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
max_connections = 1
over_limit = "refuse"
`
	// Apache must not end the idle connection itself while the test looks.
	s := startAdmission(t, table, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: admShop}}, Extra: "KeepAliveTimeout 600\n"})
	waitNoConnections(t, admPort)
	before := admissions(t, s.socket)["shop"]

	k, err := DialKeepAlive(admShop)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if resp, err := k.Get("/index.html"); err != nil || resp.Status != http.StatusOK {
		t.Fatalf("first request on the kept-alive connection: %v %+v", err, resp)
	}
	if d := admissions(t, s.socket)["shop"]; d.Open != 1 {
		t.Errorf("vhqos status with one connection idle in keep-alive: shop open = %d, want 1", d.Open)
	}
	// The second connection is over the cap: refused.
	if second := fetch(netip.Addr{}, admShop, "/index.html"); second.served() {
		t.Errorf("a second connection while the first is idle in keep-alive was served, want a 503 (max_connections = 1):\n%s", second.Raw)
	} else {
		checkRefusals(t, []exchange{second}, http.StatusServiceUnavailable, "1")
	}
	// The first connection was open all along.
	if resp, err := k.Get("/index.html"); err != nil || resp.Status != http.StatusOK {
		t.Fatalf("second request on the kept-alive connection: %v %+v", err, resp)
	}
	k.Close()
	waitNoConnections(t, admPort) // Apache has closed its end too
	if third := fetch(netip.Addr{}, admShop, "/index.html"); third.Err != nil || third.Status != http.StatusOK {
		t.Errorf("a connection after the kept-alive one was closed: %d %v, want 200\n%s", third.Status, third.Err, third.Raw)
	}
	checkCounters(t, s, "shop", before, counts{admitted: 2, refused: 1})
}

// admissionBad has two problems: over_limit naming no class (line of
// `"nosuch"`), and a loop of alternates blog -> news -> blog (reported on
// blog's over_limit, the loop's first vhost in the file). Were it applied,
// shop would take three connections.
const admissionBad = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
max_connections = 3
over_limit = "nosuch"

[[vhost]]
name = "blog"
match = ["127.0.0.3"]
max_connections = 1
over_limit = "news"

[[vhost]]
name = "news"
match = ["127.0.0.4"]
max_connections = 1
over_limit = "blog"
`

// lineOf is the line number (from 1) of the first line of text containing s.
func lineOf(t *testing.T, text, s string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("%q not in the table", s)
	return 0
}

// vhqos check reports an unknown alternate and a loop of alternates, each
// with its line; a hot reload to that table is refused and the caps in
// force still apply.
func TestAdmissionBadTable(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte(admissionBad), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := vhqosCheck(t, bad)
	unknown := fmt.Sprintf("%s:%d:", bad, lineOf(t, admissionBad, `over_limit = "nosuch"`))
	loop := fmt.Sprintf("%s:%d:", bad, lineOf(t, admissionBad, `over_limit = "news"`))
	chain := regexp.MustCompile(`blog"?\s*->\s*"?news"?\s*->\s*"?blog`)
	var foundUnknown, foundLoop bool
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	for _, l := range lines {
		foundUnknown = foundUnknown || strings.HasPrefix(l, unknown) && strings.Contains(l, "over_limit") && strings.Contains(l, "nosuch")
		foundLoop = foundLoop || strings.HasPrefix(l, loop) && strings.Contains(l, "over_limit") && chain.MatchString(l)
	}
	if code != 2 || !foundUnknown || !foundLoop || len(lines) != 2 {
		t.Errorf("vhqos check: status %d, stdout %q, stderr:\n%s\nwant status 2 and two problems: %s ... over_limit ... nosuch, and %s ... over_limit ... blog -> news -> blog",
			code, stdout, stderr, unknown, loop)
	}

	const good = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
max_connections = 1
over_limit = "refuse"
`
	s := startAdmission(t, good, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: admShop}}})
	pid := s.Cmd.Process.Pid
	was := statusReport(t, s.socket).Supervisor
	writeByRename(t, s.qosFile, admissionBad)
	eventually(t, patience, "vhqos refusing the bad table", func() bool {
		return statusReport(t, s.socket).Supervisor.ReloadsRefused > was.ReloadsRefused
	})
	if now := statusReport(t, s.socket).Supervisor; now.Reloads != was.Reloads {
		t.Errorf("reloads applied went from %d to %d with a bad table", was.Reloads, now.Reloads)
	}
	waitNoConnections(t, admPort)
	before := admissions(t, s.socket)["shop"]
	b := sendBatch(t, s.Apache, "badtable", []string{admShop, admShop, admShop}, nil)
	b.waitDecided(t)
	during := admissions(t, s.socket)
	xs := b.finish(t)
	checkTally(t, "three at once after the bad table", tally(t, xs, pid, nil, byServer), map[string]map[string]int{
		admShop: {"200 vhost-shop": 1, "503": 2},
	})
	if d := during["shop"]; d.MaxConnections != 1 || d.OverLimit != "refuse" {
		t.Errorf("vhqos status after the bad table: shop's admission %+v, want the old max_connections 1, over_limit refuse", d)
	}
	checkCounters(t, s, "shop", before, counts{admitted: 1, refused: 2})
}
