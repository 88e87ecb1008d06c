package itest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vhqos/vhqos/status"
)

// Memory and task limits (memory_max, memory_high, tasks_max) on Apache
// prefork with CGIs: what the kernel does to the site that runs into them,
// what it counts, and that the other sites, and the site's static files,
// are served meanwhile.

const limitsQoS = `
[[vhost]]
name = "mem"
match = ["127.0.0.2"]
memory_max = "128M"

[[vhost]]
name = "bomb"
match = ["127.0.0.3"]
tasks_max = 20

[[vhost]]
name = "soft"
match = ["127.0.0.4"]
memory_high = "32M"

[[vhost]]
name = "other"
match = ["127.0.0.5"]
`

const (
	memSite   = "127.0.0.2:8080"
	bombSite  = "127.0.0.3:8080"
	softSite  = "127.0.0.4:8080"
	otherSite = "127.0.0.5:8080"
)

// allocCGI touches as many MiB as its query says (a Perl string of that
// size is written byte by byte), then waits for the gate file named after
// a "-" in the query, if any, and answers.
const allocCGI = `#!/usr/bin/perl
my ($mib, $gate) = split /-/, ($ENV{QUERY_STRING} || "300"), 2;
my $x = "a" x ($mib << 20);
if ($gate) {
	for (1 .. 3000) { last if -e "@GATES@/$gate"; select(undef, undef, undef, 0.2) }
}
print "Content-Type: text/plain\r\n\r\nallocated $mib MiB\n";
`

// bombCGI is a fork bomb that stops by itself: it forks children that
// close the connection's pipes and sleep (so that Apache's answer does not
// wait for them) until it has 100 of them or its gate opens, retrying
// failed forks every 10 ms; then it answers how many forks succeeded and
// failed. Without a limit it makes 100 sleeping processes and no more.
const bombCGI = `#!/usr/bin/perl
my $gate = "@GATES@/" . ($ENV{QUERY_STRING} || "bomb");
my ($ok, $failed) = (0, 0);
while ($ok < 100 && ! -e $gate) {
	my $pid = fork();
	if (!defined $pid) { $failed++; select(undef, undef, undef, 0.01); next }
	if ($pid == 0) { close STDIN; close STDOUT; close STDERR; sleep 600; exit 0 }
	$ok++;
}
for (1 .. 3000) { last if -e $gate; select(undef, undef, undef, 0.2) }
print "Content-Type: text/plain\r\n\r\nforked $ok failed $failed\n";
`

// startLimited starts Apache under vhqos with table qos, the alloc and
// bomb CGIs installed, and returns it with vhqos's status socket.
func startLimited(t *testing.T, qos string, vhosts ...VHost) (*Apache, string) {
	t.Helper()
	qosFile := filepath.Join(t.TempDir(), "qos.toml")
	if err := os.WriteFile(qosFile, []byte(qos), 0o644); err != nil {
		t.Fatal(err)
	}
	socket := statusSocket(t)
	a := startWith(t, ApacheConfig{VHosts: vhosts,
		Prefix: []string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qosFile, "--status-socket", socket, "--"}})
	gates := filepath.Join(a.Dir, "gates")
	for name, body := range map[string]string{"alloc": allocCGI, "bomb": bombCGI} {
		// mod_cgi runs what is in the directory at request time.
		if err := os.WriteFile(filepath.Join(a.Dir, "cgi-bin", name), []byte(strings.ReplaceAll(body, "@GATES@", gates)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return a, socket
}

// getLater sends GET path to site and returns where its answer will be,
// "HTTP 200 body" or the error, for a request that blocks until the test
// lets it go on (a gate) or the kernel stops it.
func getLater(site, path string) <-chan string {
	answer := make(chan string, 1)
	go func() {
		resp, err := Get(site, path)
		if err != nil {
			answer <- err.Error()
			return
		}
		answer <- fmt.Sprintf("HTTP %d %s", resp.Status, strings.TrimSpace(resp.Body))
	}()
	return answer
}

// tenantOf finds a tenant in a status report.
func tenantOf(t *testing.T, r status.Report, name string) status.Tenant {
	t.Helper()
	for _, tn := range r.Tenants {
		if tn.Name == name {
			return tn
		}
	}
	t.Fatalf("no tenant %s in the status report: %+v", name, r.Tenants)
	return status.Tenant{}
}

// classOf finds a vhost in a status report.
func classOf(t *testing.T, r status.Report, name string) status.Class {
	t.Helper()
	for _, c := range r.Classes {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no vhost %s in the status report", name)
	return status.Class{}
}

// groupProcs lists the processes in a vhqos group: on v1 in the hierarchy
// named, on v2 in the unified one.
func groupProcs(t *testing.T, vhqosPid int, hierarchy, group string) []int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(cgroupDir(t, vhqosPid, hierarchy, group), "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// runningCGI lists the processes of a group that run the CGI script name
// (its command line names the script).
func runningCGI(t *testing.T, vhqosPid int, hierarchy, group, name string) []int {
	t.Helper()
	var out []int
	for _, pid := range groupProcs(t, vhqosPid, hierarchy, group) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), "/cgi-bin/"+name) {
			out = append(out, pid)
		}
	}
	return out
}

// killCGIs kills the processes of a group that run the CGI script name,
// again and again until none is left (a fork bomb forks on meanwhile).
func killCGIs(t *testing.T, vhqosPid int, hierarchy, group, name string) int {
	t.Helper()
	killed := map[int]bool{}
	eventually(t, patience, "the "+name+" CGI's processes gone", func() bool {
		left := runningCGI(t, vhqosPid, hierarchy, group, name)
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
			killed[pid] = true
		}
		return len(left) == 0
	})
	return len(killed)
}

// servedMeanwhile asks the other site (a static file and a CGI) and the
// limited site's static file until stop is closed, at least once each,
// and fails the test on any answer but 200.
func servedMeanwhile(t *testing.T, limitedSite string, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			for _, q := range []struct{ addr, path string }{
				{otherSite, "/index.html"}, {otherSite, "/cgi-bin/whoami"}, {limitedSite, "/index.html"},
			} {
				resp, err := Get(q.addr, q.path)
				if err != nil || resp.Status != 200 {
					t.Errorf("%s%s while the limited site is at its limit: %v %+v", q.addr, q.path, err, resp)
					return
				}
			}
			select {
			case <-stop:
				t.Logf("%d rounds of requests to the other site and the static file served meanwhile", n+1)
				return
			default:
			}
		}
	}()
	return &wg
}

// A CGI that touches 300 MiB in a site with memory_max = "128M" is killed
// by the kernel's OOM killer (its request fails with a 500), the fault is
// counted in vhqos status, and the other site and the site's own static
// file are served meanwhile. The same CGI asking for 64 MiB there, and
// for 300 MiB in the other site, succeeds: the limit is the site's, and
// covers the CGIs its serving processes fork.
func TestLimitsMemoryMax(t *testing.T) {
	_, socket := startLimited(t, limitsQoS, VHost{Name: "mem", Addr: memSite}, VHost{Name: "other", Addr: otherSite})
	if resp, err := Get(memSite, "/cgi-bin/alloc?64"); err != nil || resp.Status != 200 || !strings.Contains(resp.Body, "allocated 64 MiB") {
		t.Fatalf("64 MiB under memory_max 128M: %v %+v", err, resp)
	}
	before := classOf(t, statusReport(t, socket), "mem").Memory
	if before == nil || before.Max != 128<<20 {
		t.Fatalf("status shows mem's memory as %+v, want memory_max 128M", before)
	}

	stop := make(chan struct{})
	others := servedMeanwhile(t, memSite, stop)
	resp, err := Get(memSite, "/cgi-bin/alloc?300")
	close(stop)
	others.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status == 200 || strings.Contains(resp.Body, "allocated") {
		t.Errorf("300 MiB under memory_max 128M: status %d, %q; want the CGI stopped", resp.Status, resp.Body)
	}
	var after *status.Memory
	eventually(t, patience, "the OOM kill counted in vhqos status", func() bool {
		after = classOf(t, statusReport(t, socket), "mem").Memory
		return after != nil && after.Events["oom_kill"] > before.Events["oom_kill"]
	})
	t.Logf("300 MiB under memory_max 128M: HTTP %d; memory events before %v, after %v", resp.Status, before.Events, after.Events)
	if after.Events["max"] <= before.Events["max"] {
		t.Errorf("memory events %v, before %v: no charge counted at memory_max", after.Events, before.Events)
	}
	if m := classOf(t, statusReport(t, socket), "other").Memory; m == nil || m.Events["oom_kill"] != 0 {
		t.Errorf("the other site's memory: %+v; want accounted, without OOM kills", m)
	}

	resp, err = Get(otherSite, "/cgi-bin/alloc?300")
	if err != nil || resp.Status != 200 || !strings.Contains(resp.Body, "allocated 300 MiB") {
		t.Errorf("300 MiB in the site without a memory limit: %v %+v", err, resp)
	}
	resp, err = Get(memSite, "/cgi-bin/alloc?64")
	if err != nil || resp.Status != 200 || !strings.Contains(resp.Body, "allocated 64 MiB") {
		t.Errorf("64 MiB under memory_max 128M after the OOM kill: %v %+v", err, resp)
	}
}

// A CGI fork bomb in a site with tasks_max = 20: the tasks in the site's
// cgroup stop at 20, the forks beyond fail and are counted (pids.events),
// and the other site and the site's static file are served meanwhile.
// The test kills the bomb's processes at the end.
func TestLimitsTasksMax(t *testing.T) {
	a, socket := startLimited(t, limitsQoS, VHost{Name: "bomb", Addr: bombSite}, VHost{Name: "other", Addr: otherSite})
	vhqosPid := a.Cmd.Process.Pid
	hier := "pids"
	pidsFile := filepath.Join(cgroupDir(t, vhqosPid, hier, "vhost-bomb"), "pids.current")
	defer func() { t.Logf("killed %d processes of the bomb", killCGIs(t, vhqosPid, hier, "vhost-bomb", "bomb")) }()

	answer := getLater(bombSite, "/cgi-bin/bomb?bomb")
	var bomb status.Class
	eventually(t, patience, "forks in the bomb's site refused by tasks_max", func() bool {
		bomb = classOf(t, statusReport(t, socket), "bomb")
		return bomb.Tasks != nil && bomb.Tasks.MaxEvents > 0
	})
	// While the bomb goes on forking, the site holds 20 tasks and no more
	// (a moment less when Apache ends an idle child there, until the bomb
	// forks again).
	tasks := func() int {
		data, err := os.ReadFile(pidsFile)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		return n
	}
	maxSeen := 0
	for range 20 {
		maxSeen = max(maxSeen, tasks())
		time.Sleep(20 * time.Millisecond)
	}
	procs := 0
	eventually(t, patience, "20 processes in the bomb's site", func() bool {
		procs = len(groupProcs(t, vhqosPid, hier, "vhost-bomb"))
		return procs == 20 && tasks() == 20
	})
	t.Logf("bomb's site: %d tasks at most in 20 samples, %d processes, %d forks refused so far", maxSeen, procs, bomb.Tasks.MaxEvents)
	if maxSeen > 20 {
		t.Errorf("tasks_max 20: the site held up to %d tasks", maxSeen)
	}

	stop := make(chan struct{})
	others := servedMeanwhile(t, bombSite, stop)
	eventually(t, patience, "the bomb still refused while the others were served", func() bool {
		return classOf(t, statusReport(t, socket), "bomb").Tasks.MaxEvents > bomb.Tasks.MaxEvents
	})
	close(stop)
	others.Wait()
	// The site's own CGIs cannot start while it is full: mod_cgi's fork
	// fails.
	resp, err := Get(bombSite, "/cgi-bin/whoami")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a CGI of the full site: HTTP %d", resp.Status)
	if resp.Status < 500 {
		t.Errorf("a CGI of the site at tasks_max answered %d %q; want a server error", resp.Status, resp.Body)
	}
	// vhqos moved the processes serving the static file into the full
	// cgroup without a failure: the kernel lets moves through.
	if n := statusReport(t, socket).Supervisor.PlacementErrors; n != 0 {
		t.Errorf("%d placement errors while the site was at tasks_max", n)
	}

	if err := a.OpenGate("bomb"); err != nil {
		t.Fatal(err)
	}
	var got string
	select {
	case got = <-answer:
	case <-time.After(patience):
		t.Fatal("the bomb did not answer after its gate opened")
	}
	m := regexp.MustCompile(`^HTTP 200 forked (\d+) failed (\d+)$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("the bomb answered %q", got)
	}
	forked, _ := strconv.Atoi(m[1])
	failed, _ := strconv.Atoi(m[2])
	t.Logf("the bomb forked %d processes, %d forks failed", forked, failed)
	// The Apache child serving it and the CGI itself count among the 20.
	if forked > 18 || failed == 0 {
		t.Errorf("the bomb forked %d children (%d failed) under tasks_max 20; want at most 18, and failures", forked, failed)
	}
	final := classOf(t, statusReport(t, socket), "bomb").Tasks
	if final == nil || final.Max != 20 || final.MaxEvents < uint64(failed) {
		t.Errorf("status shows the bomb's tasks as %+v; want tasks_max 20 and at least the %d failed forks", final, failed)
	}
}

// memory_high = "32M" and a CGI touching 64 MiB: under cgroup v2 the
// kernel counts the site's "high" events and throttles the CGI, which is
// neither killed nor let past quickly; under v1 the limit is a soft limit
// that acts only when the whole machine is short of memory: the CGI
// finishes, and the kernel has no count for it ("high" is absent from the
// status). The other site serves meanwhile in both.
func TestLimitsMemoryHigh(t *testing.T) {
	a, socket := startLimited(t, limitsQoS, VHost{Name: "soft", Addr: softSite}, VHost{Name: "other", Addr: otherSite})
	vhqosPid := a.Cmd.Process.Pid
	hier := "memory"
	answer := getLater(softSite, "/cgi-bin/alloc?64-soft")
	stop := make(chan struct{})
	others := servedMeanwhile(t, softSite, stop)
	var soft *status.Memory
	if cgroupV2() {
		eventually(t, patience, "memory.high events of the soft site", func() bool {
			soft = classOf(t, statusReport(t, socket), "soft").Memory
			return soft != nil && soft.Events["high"] > 0
		})
		close(stop)
		others.Wait()
		cgis := runningCGI(t, vhqosPid, hier, "vhost-soft", "alloc")
		t.Logf("memory_high 32M, 64 MiB touched: %d bytes charged, events %v, %d CGI running", soft.Current, soft.Events, len(cgis))
		if len(cgis) != 1 || soft.Events["oom_kill"] != 0 || soft.Events["max"] != 0 {
			t.Errorf("over memory_high: %d alloc CGIs alive, events %v; want the CGI alive (throttled, not killed)", len(cgis), soft.Events)
		}
		// The kernel throttles by making the CGI sleep each time it
		// allocates over the limit, longer the further over it is (up to 2
		// s for each 256 KiB); the test does not wait for it to finish.
		killCGIs(t, vhqosPid, hier, "vhost-soft", "alloc")
		if got := <-answer; strings.HasPrefix(got, "HTTP 200") {
			t.Errorf("the killed CGI answered %q", got)
		}
		return
	}
	eventually(t, patience, "the soft site's CGI holding 64 MiB", func() bool {
		soft = classOf(t, statusReport(t, socket), "soft").Memory
		return soft != nil && soft.Current >= 64<<20
	})
	close(stop)
	others.Wait()
	t.Logf("v1 soft limit 32M, 64 MiB touched: %d bytes charged, events %v", soft.Current, soft.Events)
	limit, err := os.ReadFile(filepath.Join(cgroupDir(t, vhqosPid, hier, "vhost-soft"), "memory.soft_limit_in_bytes"))
	if err != nil || strings.TrimSpace(string(limit)) != strconv.Itoa(32<<20) {
		t.Errorf("memory.soft_limit_in_bytes of the soft site: %q, %v; want 32M", limit, err)
	}
	if _, counted := soft.Events["high"]; counted || soft.Events["max"] != 0 || soft.Events["oom_kill"] != 0 {
		t.Errorf("v1 soft limit: events %v; want no \"high\" count, no max events, no OOM kill", soft.Events)
	}
	if err := a.OpenGate("soft"); err != nil {
		t.Fatal(err)
	}
	if got := <-answer; got != "HTTP 200 allocated 64 MiB" {
		t.Errorf("the CGI over the v1 soft limit answered %q", got)
	}
}

// chargeServer is one Python process serving HTTP on every address given,
// one connection at a time: /grow?N allocates N MiB (written, so the pages
// exist) and keeps it, /free lets go of all it keeps; each answer is "pid
// P" and the process's /proc/self/cgroup lines, as ParseWhoami reads them.
const chargeServer = `
import os, selectors, socket, sys
held = []
sel = selectors.DefaultSelector()
for a in sys.argv[1:]:
    host, port = a.rsplit(":", 1)
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, int(port)))
    l.listen(16)
    sel.register(l, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        c, _ = key.fileobj.accept()
        with c:
            req = b""
            while b"\r\n\r\n" not in req:
                d = c.recv(4096)
                if not d:
                    break
                req += d
            parts = req.split(b" ", 2)
            path = parts[1].decode() if len(parts) > 2 else "/"
            if path.startswith("/grow?"):
                held.append(b"\x01" * (int(path[6:]) << 20))
            elif path == "/free":
                held.clear()
            with open("/proc/self/cgroup") as f:
                body = "pid %d\n" % os.getpid() + "".join("cgroup " + line for line in f)
            c.sendall(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)).encode() + body.encode())
`

const chargeQoS = `
[settings]
track = "TRACK"

[[vhost]]
name = "a"
match = ["127.0.0.2"]
memory_max = "1G"

[[vhost]]
name = "b"
match = ["127.0.0.3"]
memory_max = "1G"
`

// The kernel charges memory to the cgroup a process is in when it
// allocates, and moving the process moves none of it: a server process
// that allocates 64 MiB while serving vhost a, then serves b, leaves the
// 64 MiB charged to a (and to a's memory_max) until it frees them, even
// while it sits in b; what it allocates while serving b is b's. So under
// every tracking mode.
func TestLimitsMemoryChargeStaysWhereAllocated(t *testing.T) {
	for _, track := range []string{"accept", "fork", "full"} {
		t.Run(track, func(t *testing.T) { testChargeStays(t, track) })
	}
}

func testChargeStays(t *testing.T, track string) {
	dir, err := scratchDir()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "charge.py")
	if err := os.WriteFile(script, []byte(chargeServer), 0o644); err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	qosFile := filepath.Join(t.TempDir(), "qos.toml")
	if err := os.WriteFile(qosFile, []byte(strings.Replace(chargeQoS, "TRACK", track, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	socket := statusSocket(t)
	addrs := []string{"127.0.0.2:8080", "127.0.0.3:8080"}
	d := RunDaemon(t, DaemonConfig{Name: "charge server", Dir: dir,
		Prefix: []string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qosFile, "--status-socket", socket, "--"},
		Argv:   append([]string{"/usr/bin/python3", script}, addrs...), Listen: addrs})
	checkCgroupsGone(t, d)

	const mib = 1 << 20
	step := func(addr, path, vhost string) {
		t.Helper()
		resp, err := Get(addr, path)
		if err != nil || resp.Status != 200 {
			t.Fatalf("%s%s: %v %+v", addr, path, err, resp)
		}
		w, err := ParseWhoami(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		// The memory hierarchy's line on v1, the unified one on v2.
		line := w.Cgroups[""]
		for list, p := range w.Cgroups {
			if hasController(list, "memory") {
				line = p
			}
		}
		if !strings.HasSuffix(line, "/vhost-"+vhost) {
			t.Fatalf("%s%s served in memory cgroup %q, want vhost-%s", addr, path, line, vhost)
		}
	}
	charged := func() (a, b uint64) {
		r := statusReport(t, socket)
		ma, mb := classOf(t, r, "a").Memory, classOf(t, r, "b").Memory
		if ma == nil || mb == nil {
			t.Fatalf("status shows no memory for a (%+v) or b (%+v)", ma, mb)
		}
		return ma.Current, mb.Current
	}
	a0, b0 := charged()
	step(addrs[0], "/grow?64", "a")
	a1, b1 := charged()
	step(addrs[1], "/", "b")
	a2, b2 := charged()
	step(addrs[1], "/grow?40", "b")
	a3, b3 := charged()
	step(addrs[1], "/free", "b")
	a4, b4 := charged()
	m := func(n uint64) string { return strconv.FormatFloat(float64(n)/mib, 'f', 1, 64) }
	t.Logf("MiB charged to a, b: at start %s, %s; after 64 MiB allocated serving a %s, %s; then serving b %s, %s; after 40 MiB allocated serving b %s, %s; after both freed, serving b %s, %s",
		m(a0), m(b0), m(a1), m(b1), m(a2), m(b2), m(a3), m(b3), m(a4), m(b4))
	// Small allocations and socket buffers come and go: 16 MiB of slack.
	for _, c := range []struct {
		what string
		ok   bool
	}{
		{"a holds the 64 MiB allocated serving it", a1 >= a0+64*mib},
		{"the move to b took none of it along", a2 >= a0+64*mib && b2 < b0+16*mib},
		{"the 40 MiB allocated serving b are b's", b3 >= b0+40*mib && b3 < b0+56*mib},
		{"and none of them a's", a3 < a0+80*mib},
		{"freeing, while in b, gives a its 64 MiB back", a4 < a0+16*mib && b4 < b0+16*mib},
	} {
		if !c.ok {
			t.Errorf("%s: no", c.what)
		}
	}
}

// A reload changes memory and task limits in place and gives a removed
// limit back to the kernel's "no limit"; processes keep serving.
func TestLimitsReload(t *testing.T) {
	qosFile := filepath.Join(t.TempDir(), "qos.toml")
	table := func(limits string) string {
		return "[[vhost]]\nname = \"mem\"\nmatch = [\"127.0.0.2\"]\n" + limits
	}
	if err := os.WriteFile(qosFile, []byte(table("memory_max = \"128M\"\nmemory_high = \"96M\"\ntasks_max = 20\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startUnderVhqosFile(t, qosFile, ApacheConfig{VHosts: []VHost{{Name: "mem", Addr: memSite}}})
	vhqosPid := a.Cmd.Process.Pid
	maxFile, highFile := "memory.max", "memory.high"
	if !cgroupV2() {
		maxFile, highFile = "memory.limit_in_bytes", "memory.soft_limit_in_bytes"
	}
	// What each file reads for "no limit": v1 memory files show -1 as the
	// largest page-aligned number.
	unlimited := func(v string) bool {
		n, err := strconv.ParseUint(v, 10, 64)
		return v == "max" || err == nil && n >= 1<<62
	}
	files := func() (max, high, tasks string) {
		read := func(hier, file string) string {
			data, err := os.ReadFile(filepath.Join(cgroupDir(t, vhqosPid, hier, "vhost-mem"), file))
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(string(data))
		}
		return read("memory", maxFile), read("memory", highFile), read("pids", "pids.max")
	}
	for _, step := range []struct {
		name, limits string
		ok           func(max, high, tasks string) bool
	}{
		{"as started", "", func(max, high, tasks string) bool { return max == "134217728" && high == "100663296" && tasks == "20" }},
		{"changed", "memory_max = \"256M\"\nmemory_high = \"96M\"\ntasks_max = 40\n",
			func(max, high, tasks string) bool { return max == "268435456" && high == "100663296" && tasks == "40" }},
		{"memory_high and tasks_max removed", "memory_max = \"256M\"\n",
			func(max, high, tasks string) bool { return max == "268435456" && unlimited(high) && tasks == "max" }},
		{"all removed", "tasks_max = \"infinity\"\nmemory_max = \"infinity\"\n",
			func(max, high, tasks string) bool { return unlimited(max) && unlimited(high) && tasks == "max" }},
	} {
		if step.limits != "" {
			writeByRename(t, qosFile, table(step.limits))
		}
		eventually(t, patience, step.name+": limits in the cgroup files", func() bool { return step.ok(files()) })
		if resp, err := Get(memSite, "/cgi-bin/whoami"); err != nil || resp.Status != 200 {
			t.Errorf("%s: a request after the reload: %v %+v", step.name, err, resp)
		}
	}
}

// Apache prefork with several listeners waits for the next connection in
// poll and on its accept mutex, not in accept, so its children are not
// seen idling where vhqos sees accepts. After a burst of CGI requests to a
// site with tasks_max = 8 (Apache forks children for it), those children
// must leave the site's cgroup once idle: otherwise they fill its
// tasks_max, and the idle site's next CGI cannot fork (a fresh-user
// review saw every CGI of such a site answered 500).
func TestLimitsIdleChildrenLeave(t *testing.T) {
	const qos = `
[[vhost]]
name = "lim"
match = ["127.0.0.3"]
tasks_max = 8

[[vhost]]
name = "other"
match = ["127.0.0.5"]
`
	a, _ := startLimited(t, qos, VHost{Name: "lim", Addr: bombSite}, VHost{Name: "other", Addr: otherSite})
	vhqosPid := a.Cmd.Process.Pid
	inParallel(10, func(int) { Get(bombSite, "/cgi-bin/whoami") })
	eventually(t, patience, "the site's idle children gone from its cgroup", func() bool {
		return len(groupProcs(t, vhqosPid, "pids", "vhost-lim")) == 0
	})
	for i := range 3 {
		resp, err := Get(bombSite, "/cgi-bin/whoami")
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != 200 {
			t.Errorf("CGI %d of the idle site after the burst: HTTP %d, want 200", i, resp.Status)
		}
	}
}

// A tenant's memory_max bounds its sites together: a CGI touching 300 MiB
// in a site without a memory limit of its own, inside a tenant with
// memory_max = "128M", is killed, and vhqos status counts the kill on the
// tenant as well as on the site, under cgroup v1 too (whose kernel counts
// it in the site's cgroup only). The site of no tenant serves meanwhile.
func TestLimitsTenantMemoryMax(t *testing.T) {
	const qos = `
[[tenant]]
name = "acme"
memory_max = "128M"

[[vhost]]
name = "mem"
tenant = "acme"
match = ["127.0.0.2"]

[[vhost]]
name = "other"
match = ["127.0.0.5"]
`
	_, socket := startLimited(t, qos, VHost{Name: "mem", Addr: memSite}, VHost{Name: "other", Addr: otherSite})
	tenantKills := func(r status.Report) uint64 {
		acme := tenantOf(t, r, "acme")
		if acme.Memory == nil {
			t.Fatalf("no memory accounting for tenant acme in the status report: %+v", acme)
		}
		return acme.Memory.Events["oom_kill"]
	}
	first := statusReport(t, socket)
	before, siteBefore := tenantKills(first), classOf(t, first, "mem").Memory.Events["oom_kill"]
	stop := make(chan struct{})
	others := servedMeanwhile(t, memSite, stop)
	resp, err := Get(memSite, "/cgi-bin/alloc?300")
	close(stop)
	others.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status == 200 || strings.Contains(resp.Body, "allocated") {
		t.Errorf("300 MiB under the tenant's memory_max 128M: status %d, %q; want the CGI stopped", resp.Status, resp.Body)
	}
	var r status.Report
	eventually(t, patience, "the OOM kill counted on the site in vhqos status", func() bool {
		r = statusReport(t, socket)
		return classOf(t, r, "mem").Memory.Events["oom_kill"] > siteBefore
	})
	kills := classOf(t, r, "mem").Memory.Events["oom_kill"] - siteBefore
	t.Logf("300 MiB under tenant acme's memory_max 128M: HTTP %d; OOM kills on the site %d, on the tenant %d before, %d after", resp.Status, kills, before, tenantKills(r))
	if got := tenantKills(r) - before; got != kills {
		t.Errorf("tenant acme counts %d OOM kills, its site %d; want the site's kills on the tenant too", got, kills)
	}
}

// A CGI fork bomb in a site without a tasks_max of its own, inside a
// tenant with tasks_max = 20: the tenant's cap stops it, and vhqos status
// counts the refused forks on the tenant, whether the kernel counts them
// in the cgroup whose pids.max refused them and those around it (cgroup v2
// since Linux 6.11) or in the cgroup of the process that forked, the
// site's (v1, and v2 before 6.11: the VM's 6.1), where vhqos adds up the
// sites' for the tenant. The site of no tenant serves meanwhile.
func TestLimitsTenantTasksMax(t *testing.T) {
	const qos = `
[[tenant]]
name = "acme"
tasks_max = 20

[[vhost]]
name = "bomb"
tenant = "acme"
match = ["127.0.0.3"]

[[vhost]]
name = "other"
match = ["127.0.0.5"]
`
	a, socket := startLimited(t, qos, VHost{Name: "bomb", Addr: bombSite}, VHost{Name: "other", Addr: otherSite})
	vhqosPid := a.Cmd.Process.Pid
	const group = "tenant-acme/vhost-bomb"
	defer func() { t.Logf("killed %d processes of the bomb", killCGIs(t, vhqosPid, "pids", group, "bomb")) }()
	tenantTasks := func(r status.Report) *status.Tasks {
		acme := tenantOf(t, r, "acme")
		if acme.Tasks == nil {
			t.Fatalf("no task accounting for tenant acme in the status report: %+v", acme)
		}
		return acme.Tasks
	}
	answer := getLater(bombSite, "/cgi-bin/bomb?bomb")
	var r status.Report
	eventually(t, patience, "forks in the tenant's site refused, counted on the tenant", func() bool {
		r = statusReport(t, socket)
		return tenantTasks(r).MaxEvents > 0
	})
	// Counted before the traffic below: the kernel lets a move into a
	// full cgroup through (pids.max bounds forks only), so a child vhqos
	// places there to serve the static file may take it past 20.
	acme, site := tenantTasks(r), classOf(t, r, "bomb").Tasks
	stop := make(chan struct{})
	others := servedMeanwhile(t, bombSite, stop)
	eventually(t, patience, "more forks refused while the others were served", func() bool {
		return tenantTasks(statusReport(t, socket)).MaxEvents > acme.MaxEvents
	})
	close(stop)
	others.Wait()
	t.Logf("tenant acme: %d tasks, %d forks refused; its site bomb: %d tasks, %d forks refused", acme.Current, acme.MaxEvents, site.Current, site.MaxEvents)
	if acme.Max != 20 || acme.Current > 20 {
		t.Errorf("tenant acme's tasks: %+v; want tasks_max 20 and at most 20 tasks", acme)
	}
	if site.MaxEvents > acme.MaxEvents {
		t.Errorf("site bomb counts %d forks refused, its tenant only %d: the tenant's count lacks its site's", site.MaxEvents, acme.MaxEvents)
	}
	text, err := exec.Command(vhqosBinary(t), "status", "--socket", socket).CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^acme +- +1 +.* 20 +[1-9]\d*$`).Match(text) {
		t.Errorf("vhqos status (%v) shows no refused forks for tenant acme:\n%s", err, text)
	}
	if err := a.OpenGate("bomb"); err != nil {
		t.Fatal(err)
	}
	var got string
	select {
	case got = <-answer:
		t.Logf("the bomb answered %q", got)
	case <-time.After(patience):
		t.Fatal("the bomb did not answer after its gate opened")
	}
	m := regexp.MustCompile(`^HTTP 200 forked (\d+) failed (\d+)$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("the bomb answered %q", got)
	}
	// The Apache child serving it and the CGI itself count among the
	// tenant's 20.
	if forked, _ := strconv.Atoi(m[1]); forked > 18 || m[2] == "0" {
		t.Errorf("the bomb forked %s children (%s failed) under its tenant's tasks_max 20; want at most 18, and failures", m[1], m[2])
	}
}
