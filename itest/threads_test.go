package itest

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Threaded servers (issue 16): under placement = "thread" the thread that
// reads a connection sits in the connection's vhost cgroup while it serves
// it, and goes home when it waits for work; under placement = "process"
// a multi-threaded process is never moved into a vhost's cgroup, and vhqos
// says so once.

// threadNameQoS has two name vhosts on one address; %s is the placement.
const threadNameQoS = `
[settings]
placement = %q

[[vhost]]
name = "shop"
match = ["shop.example.test"]

[[vhost]]
name = "blog"
match = ["blog.example.test"]
`

// threadGroupSuffix is where a thread placed in vhost name shows itself in
// /proc/.../cgroup (the cpu controller's line on v1, the unified one on
// v2): on v1 the vhost's own group, on v2 its threaded twin.
func threadGroupSuffix(vhqosPid int, name string) string {
	if cgroupV2() {
		return fmt.Sprintf("/vhqos.%d/threads/vhost-%s", vhqosPid, name)
	}
	return fmt.Sprintf("/vhqos.%d/vhost-%s", vhqosPid, name)
}

// threadCPUGroup is where the CPU time of threads placed in vhost name is
// counted: on v1 the vhost's groups in the cpu and cpuacct hierarchies, on
// v2 its threaded twin.
func threadCPUGroup(t *testing.T, vhqosPid int, name string) cpuGroup {
	t.Helper()
	if cgroupV2() {
		return cpuDir(t, vhqosPid, "threads/vhost-"+name)
	}
	return cpuDir(t, vhqosPid, "vhost-"+name)
}

// threadCgroup is the cgroup of thread tid (cpu controller's on v1,
// unified on v2), "" if it is gone.
func threadCgroup(tid int) string {
	// /proc/TID is there for any thread, though only leaders are listed,
	// and its task/ lists the threads of TID's process.
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", tid, tid))
	if err != nil {
		return ""
	}
	return cpuCgroup(parseCgroupFile(string(data)))
}

// parseCgroupFile reads /proc/.../cgroup: path by controller list.
func parseCgroupFile(data string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(data), "\n") {
		if controllers, path, ok := splitCgroupLine(line); ok {
			out[controllers] = path
		}
	}
	return out
}

// threadsOf lists the cgroup of every thread of the processes pids, by
// thread id.
func threadsOf(pids []int) map[int]string {
	out := map[int]string{}
	for _, pid := range pids {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
		for _, task := range tasks {
			tid, _ := strconv.Atoi(filepath.Base(task))
			data, err := os.ReadFile(task + "/cgroup")
			if err == nil {
				out[tid] = cpuCgroup(parseCgroupFile(string(data)))
			}
		}
	}
	return out
}

// pidsNaming is processesNaming's pids.
func pidsNaming(tag string) []int {
	var out []int
	for _, l := range processesNaming(tag) {
		pid, _ := strconv.Atoi(strings.Fields(l)[0])
		out = append(out, pid)
	}
	return out
}

// threadGet requests target from addr and parses the handler's report.
func threadGet(addr, target string) (ThreadReport, error) {
	resp, err := Get(addr, target)
	if err != nil {
		return ThreadReport{}, err
	}
	if resp.Status != 200 {
		return ThreadReport{}, fmt.Errorf("GET %s: status %d: %q", target, resp.Status, resp.Body)
	}
	return ParseThreadReport(resp.Body)
}

// vhqosPrefix is the command line that runs a server under vhqos with the
// table qos, its status at socket. Its log is at debug level: a failed
// test shows every move of a thread (a few per connection, not a line per
// read).
func vhqosPrefix(t *testing.T, qos, socket string) []string {
	t.Helper()
	qosFile := filepath.Join(t.TempDir(), "qos.toml")
	if err := os.WriteFile(qosFile, []byte(qos), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{vhqosBinary(t), "run", "--log-level", "debug", "--stop-timeout", "10s", "--config", qosFile, "--status-socket", socket, "--"}
}

// statusText is `vhqos status` as a terminal shows it.
func statusText(t *testing.T, socket string) string {
	t.Helper()
	out, err := exec.Command(vhqosBinary(t), "status", "--socket", socket).CombinedOutput()
	if err != nil {
		t.Fatalf("vhqos status: %v\n%s", err, out)
	}
	return string(out)
}

// multiThreadedLines are the lines of vhqos's log about a multi-threaded
// server.
func multiThreadedLines(log string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "multi-threaded") {
			out = append(out, line)
		}
	}
	return out
}

// held is one request of TestThreadedPython: its answer, once it came.
type held struct {
	report ThreadReport
	err    error
	done   chan struct{}
}

func holdRequest(addr, target string) *held {
	h := &held{done: make(chan struct{})}
	go func() {
		defer close(h.done)
		h.report, h.err = threadGet(addr, target)
	}()
	return h
}

func (h *held) wait(t *testing.T) ThreadReport {
	t.Helper()
	select {
	case <-h.done:
	case <-time.After(RequestTimeout + patience):
		t.Fatal("a held request never answered")
	}
	if h.err != nil {
		t.Fatal(h.err)
	}
	return h.report
}

// waitStarted waits until n holds or burns at gate g have begun and
// returns their threads.
func waitStarted(t *testing.T, what string, started func(string) ([]int, error), g string, n int) []int {
	t.Helper()
	var tids []int
	eventually(t, patience, fmt.Sprintf("%d %s at gate %s begun", n, what, g), func() bool {
		var err error
		if tids, err = started(g); err != nil {
			t.Fatal(err)
		}
		return len(tids) >= n
	})
	return tids
}

// Python's ThreadingHTTPServer, two name vhosts on one address: a request
// for shop is held (asleep, as a handler waiting on a backend is) for at
// least 2 s, a request for blog comes while it is; each handler reads
// /proc/thread-self/cgroup as it begins and as it answers.
//
// Under placement = "thread" each request's thread is in its own vhost's
// cgroup from start to end, while the other is served; under "process" the
// server (multi-threaded once it serves) is in neither vhost's cgroup at
// the end, and vhqos's log says why in one line for all the connections,
// and vhqos status says it too.
func TestThreadedPython(t *testing.T) {
	for _, placement := range []string{"thread", "process"} {
		t.Run(placement, func(t *testing.T) { testThreadedPython(t, placement) })
	}
}

func testThreadedPython(t *testing.T, placement string) {
	socket := statusSocket(t)
	p := RunPythonThreads(t, PythonThreadsConfig{Prefix: vhqosPrefix(t, fmt.Sprintf(threadNameQoS, placement), socket)})
	vhqosPid := p.Cmd.Process.Pid
	server := childOf(t, vhqosPid)
	shopGroup, blogGroup := threadGroupSuffix(vhqosPid, "shop"), threadGroupSuffix(vhqosPid, "blog")

	shop := holdRequest(p.Addr, "http://shop.example.test/hold?gate=shop&min=2")
	shopTid := waitStarted(t, "shop holds", p.Started, "shop", 1)[0]
	blog := holdRequest(p.Addr, "http://blog.example.test/hold?gate=blog&min=0.5")
	blogTid := waitStarted(t, "blog holds", p.Started, "blog", 1)[0]
	// Both are being served now, each on a thread of its own.
	during := map[string]string{"shop": threadCgroup(shopTid), "blog": threadCgroup(blogTid)}
	t.Logf("placement %s, both held: shop's thread %d in %s, blog's thread %d in %s", placement, shopTid, during["shop"], blogTid, during["blog"])
	if err := p.OpenGate("blog"); err != nil {
		t.Fatal(err)
	}
	b := blog.wait(t)
	if err := p.OpenGate("shop"); err != nil {
		t.Fatal(err)
	}
	s := shop.wait(t)
	t.Logf("shop: thread %d began in %s, ended in %s", s.TID, s.StartCgroup(), s.EndCgroup())
	t.Logf("blog: thread %d began in %s, ended in %s", b.TID, b.StartCgroup(), b.EndCgroup())
	if s.PID != server || b.PID != server || s.TID == b.TID {
		t.Fatalf("shop served by %d/%d, blog by %d/%d: want two threads of the server %d", s.PID, s.TID, b.PID, b.TID, server)
	}

	if placement == "thread" {
		for _, c := range []struct {
			name, want, start, during, end string
		}{
			{"shop", shopGroup, s.StartCgroup(), during["shop"], s.EndCgroup()},
			{"blog", blogGroup, b.StartCgroup(), during["blog"], b.EndCgroup()},
		} {
			if !strings.HasSuffix(c.start, c.want) || !strings.HasSuffix(c.during, c.want) || !strings.HasSuffix(c.end, c.want) {
				t.Errorf("%s's thread was in %s as it began, %s while both were served, %s as it answered; want …%s throughout",
					c.name, c.start, c.during, c.end, c.want)
			}
		}
	}

	// More connections, one after the other, each served on a thread of
	// a process that has had several.
	var later []ThreadReport
	for i := 0; i < 4; i++ {
		host := []string{"shop", "blog"}[i%2]
		r, err := threadGet(p.Addr, "http://"+host+".example.test/whoami")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s /whoami: thread %d began in %s, ended in %s", host, r.TID, r.StartCgroup(), r.EndCgroup())
		if want := threadGroupSuffix(vhqosPid, host); placement == "thread" && (!strings.HasSuffix(r.StartCgroup(), want) || !strings.HasSuffix(r.EndCgroup(), want)) {
			t.Errorf("%s /whoami: thread %d was in %s, then %s; want …%s", host, r.TID, r.StartCgroup(), r.EndCgroup(), want)
		}
		later = append(later, r)
	}

	report := statusReport(t, socket)
	text := statusText(t, socket)
	lines := multiThreadedLines(p.Output())
	t.Logf("status: placement %q, %d multi-threaded processes, %d connections unplaced, %d thread moves; log lines about it: %q",
		report.Supervisor.Placement, report.Supervisor.MultiThreadedProcesses, report.Supervisor.UnplacedMultiThreaded, report.Supervisor.ThreadPlacements, lines)
	if report.Supervisor.Placement != placement {
		t.Errorf("vhqos status says placement %q, want %q", report.Supervisor.Placement, placement)
	}
	// Six connections: one line says it.
	if len(lines) != 1 {
		t.Errorf("vhqos logged %d lines about the multi-threaded server over 6 connections, want 1:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	if report.Supervisor.MultiThreadedProcesses == 0 {
		t.Errorf("vhqos status counts no multi-threaded process")
	}

	// Every request has been answered: the server's main, listening
	// thread is in no vhost's cgroup, though the process had one thread
	// when it accepted its first connection; under "process" no thread is
	// (under "thread" one that has just answered may not have exited yet).
	for tid, cg := range threadsOf([]int{server}) {
		if (tid == server || placement == "process") && (strings.HasSuffix(cg, "/vhost-shop") || strings.HasSuffix(cg, "/vhost-blog")) {
			t.Errorf("under placement %s, thread %d of the multi-threaded server %d is in %s with every request answered", placement, tid, server, cg)
		}
	}
	if placement == "process" {
		for _, r := range later {
			if strings.Contains(r.StartCgroup(), "/vhost-") || strings.Contains(r.EndCgroup(), "/vhost-") {
				t.Errorf("under placement process, a connection to the multi-threaded server was served by thread %d in %s, then %s; want neither in a vhost's cgroup",
					r.TID, r.StartCgroup(), r.EndCgroup())
			}
		}
		if report.Supervisor.UnplacedMultiThreaded == 0 {
			t.Errorf("vhqos status counts no connection served outside its cgroup by the multi-threaded server")
		}
		if !strings.Contains(text, "placement by process") || !strings.Contains(text, "stay home") {
			t.Errorf("vhqos status does not say why the server stays home:\n%s", text)
		}
		if len(lines) > 0 && !strings.Contains(lines[0], "placement") {
			t.Errorf("vhqos's log line about the multi-threaded server does not name the placement setting: %s", lines[0])
		}
	}
}

// weightQoS has two name vhosts on one address, weights 400 and 100, and
// places threads.
const weightQoS = `
[settings]
placement = "thread"

[[vhost]]
name = "heavy"
match = ["heavy.example.test"]
cpu_weight = 400

[[vhost]]
name = "light"
match = ["light.example.test"]
cpu_weight = 100
`

// burnersPerVhost is how many requests burn CPU at once for each vhost in
// the weight tests.
const burnersPerVhost = 3

// measureThreadWeights measures the CPU time the threads placed in heavy
// and light use while all of heavyTids and lightTids burn: over an amount
// of CPU the two groups used together, however long a busy machine takes
// to give it. It fails the test if a burning thread leaves its group
// meanwhile (a thread that serves must stay) and checks the ratio is 4:1
// (checkWeightRatio).
func measureThreadWeights(t *testing.T, vhqosPid int, heavyTids, lightTids []int) {
	t.Helper()
	heavy, light := threadCPUGroup(t, vhqosPid, "heavy"), threadCPUGroup(t, vhqosPid, "light")
	want := map[int]string{}
	for _, tid := range heavyTids {
		want[tid] = threadGroupSuffix(vhqosPid, "heavy")
	}
	for _, tid := range lightTids {
		want[tid] = threadGroupSuffix(vhqosPid, "light")
	}
	stray := func() string {
		for tid, w := range want {
			if cg := threadCgroup(tid); !strings.HasSuffix(cg, w) {
				return fmt.Sprintf("burning thread %d is in %q, want …%s", tid, cg, w)
			}
		}
		return ""
	}
	if s := stray(); s != "" {
		t.Fatalf("before the measurement: %s", s)
	}
	t.Logf("burning: heavy's threads %v, light's %v", heavyTids, lightTids)
	// µs of CPU, both groups together: 5 s of the one CPU the server has
	// when nothing else runs there.
	const enough = 5e6
	h0, l0 := cpuUsec(t, heavy), cpuUsec(t, light)
	var h, l float64
	start := time.Now()
	for h+l < enough {
		if time.Since(start) > 3*patience {
			t.Fatalf("the burning threads used only %.0f ms (heavy) and %.0f ms (light) of CPU in %v", h/1000, l/1000, 3*patience)
		}
		time.Sleep(100 * time.Millisecond)
		hh, ll := cpuUsec(t, heavy), cpuUsec(t, light)
		// Checked after the counters: a thread still there was there all
		// along.
		if s := stray(); s != "" {
			t.Fatalf("after %.0f ms of CPU: %s", (h+l)/1000, s)
		}
		h, l = hh-h0, ll-l0
	}
	checkWeightRatio(t, h, l, time.Since(start))
}

// Python's ThreadingHTTPServer confined to one CPU, a CPU-bound handler,
// two vhosts with cpu_weight 400 and 100, each with several requests
// burning at once: the threads' CPU splits 4:1.
func TestThreadedPythonCPUWeights(t *testing.T) {
	socket := statusSocket(t)
	p := RunPythonThreads(t, PythonThreadsConfig{Prefix: vhqosPrefix(t, weightQoS, socket), Wrap: []string{"taskset", "-c", "0"}})
	vhqosPid := p.Cmd.Process.Pid
	var wg sync.WaitGroup
	reports := make([]ThreadReport, 2*burnersPerVhost)
	errs := make([]error, len(reports))
	for i := range reports {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := []string{"heavy", "light"}[i%2]
			reports[i], errs[i] = threadGet(p.Addr, "http://"+name+".example.test/burn?gate="+name)
		}(i)
	}
	// However the test ends, the burns end and answer first.
	defer func() {
		p.OpenGate("heavy")
		p.OpenGate("light")
		wg.Wait()
	}()
	heavyTids := waitStarted(t, "heavy burns", p.Started, "heavy", burnersPerVhost)
	lightTids := waitStarted(t, "light burns", p.Started, "light", burnersPerVhost)
	measureThreadWeights(t, vhqosPid, heavyTids, lightTids)
	p.OpenGate("heavy")
	p.OpenGate("light")
	wg.Wait()
	for i, r := range reports {
		name := []string{"heavy", "light"}[i%2]
		if errs[i] != nil {
			t.Errorf("%s burn: %v", name, errs[i])
			continue
		}
		if want := threadGroupSuffix(vhqosPid, name); !strings.HasSuffix(r.StartCgroup(), want) || !strings.HasSuffix(r.EndCgroup(), want) {
			t.Errorf("%s burn on thread %d: began in %s, ended in %s, want …%s", name, r.TID, r.StartCgroup(), r.EndCgroup(), want)
		}
	}
}

// threadCPUQoS is cpuQoS (address vhosts heavy and light with weights 400
// and 100, capped at 20%) with threads placed.
const threadCPUQoS = "[settings]\nplacement = \"thread\"\n" + cpuQoS

// Debian's Apache with the worker and the event MPM, confined to one CPU, a
// CPU-bound mod_lua handler that runs in the serving thread: two vhosts
// with weights 400 and 100, each with several requests burning at once,
// split the CPU 4:1; a vhost capped at 20% uses at most 25% of a CPU.
func TestThreadedApacheLua(t *testing.T) {
	for _, mpm := range []string{"worker", "event"} {
		t.Run(mpm, func(t *testing.T) { testThreadedApacheLua(t, mpm) })
	}
}

func testThreadedApacheLua(t *testing.T, mpm string) {
	socket := statusSocket(t)
	a := startWith(t, ApacheConfig{
		VHosts: []VHost{{Name: "heavy", Addr: "127.0.0.2:8080"}, {Name: "light", Addr: "127.0.0.3:8080"}, {Name: "capped", Addr: "127.0.0.4:8080"}},
		Prefix: vhqosPrefix(t, threadCPUQoS, socket),
		Wrap:   []string{"taskset", "-c", "0"},
		MPM:    mpm, Servers: 2, Threads: 8, Lua: true,
	})
	vhqosPid := a.Cmd.Process.Pid
	addrs := map[string]string{"heavy": "127.0.0.2:8080", "light": "127.0.0.3:8080", "capped": "127.0.0.4:8080"}

	var wg sync.WaitGroup
	burn := func(name string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := threadGet(addrs[name], "/lua/burn?"+name)
			if err != nil {
				t.Errorf("%s burn: %v", name, err)
				return
			}
			if want := threadGroupSuffix(vhqosPid, name); !strings.HasSuffix(r.StartCgroup(), want) || !strings.HasSuffix(r.EndCgroup(), want) {
				t.Errorf("%s burn on thread %d of %d: began in %s, ended in %s, want …%s", name, r.TID, r.PID, r.StartCgroup(), r.EndCgroup(), want)
			}
		}()
	}
	// However the test ends, the burns end and answer first.
	defer func() {
		for name := range addrs {
			a.OpenGate(name)
		}
		wg.Wait()
	}()
	for i := 0; i < burnersPerVhost; i++ {
		burn("heavy")
		burn("light")
	}
	heavyTids := waitStarted(t, "heavy burns", a.LuaStarted, "heavy", burnersPerVhost)
	lightTids := waitStarted(t, "light burns", a.LuaStarted, "light", burnersPerVhost)
	measureThreadWeights(t, vhqosPid, heavyTids, lightTids)
	a.OpenGate("heavy")
	a.OpenGate("light")
	wg.Wait()

	burn("capped")
	tid := waitStarted(t, "capped burns", a.LuaStarted, "capped", 1)[0]
	capped, want := threadCPUGroup(t, vhqosPid, "capped"), threadGroupSuffix(vhqosPid, "capped")
	checkCPUCap(t, capped, func() string {
		if cg := threadCgroup(tid); !strings.HasSuffix(cg, want) {
			return fmt.Sprintf("the capped vhost's burning thread %d is in %q, want …%s,", tid, cg, want)
		}
		return ""
	})
	a.OpenGate("capped")
	wg.Wait()
	r := statusReport(t, socket)
	t.Logf("status: placement %q, %d multi-threaded processes, %d thread moves", r.Supervisor.Placement, r.Supervisor.MultiThreadedProcesses, r.Supervisor.ThreadPlacements)
	if r.Supervisor.Placement != "thread" || r.Supervisor.MultiThreadedProcesses == 0 || r.Supervisor.ThreadPlacements == 0 {
		t.Errorf("vhqos status says placement %q, %d multi-threaded processes, %d thread moves; want thread, Apache's children, the burning threads moved",
			r.Supervisor.Placement, r.Supervisor.MultiThreadedProcesses, r.Supervisor.ThreadPlacements)
	}
}

// keepAliveQoS: address vhosts shop and blog, threads placed; %s is the
// tracking mode.
const keepAliveQoS = `
[settings]
placement = "thread"
track = %q

[[vhost]]
name = "shop"
match = ["127.0.0.2"]

[[vhost]]
name = "blog"
match = ["127.0.0.3"]
`

// idleWithin bounds how long a worker thread may stay in the cgroup of a
// keep-alive connection it no longer serves: the sweep runs every second
// and sends home a thread that waits for work and used no CPU since the
// sweep before, so two or three sweeps; the rest is slack for a busy
// machine. It stays well under the connection's KeepAliveTimeout, so the
// thread cannot go home because the connection closed.
const idleWithin = 10 * time.Second

// Apache's event MPM, a keep-alive connection to vhost shop left idle after
// one request: its worker thread hands the connection back to the listener
// and waits for other work, and does not stay in shop's cgroup. The
// connection stays open (KeepAliveTimeout 60 s, longer than the test
// waits), and its next request is served in shop again. With the default
// tracking (accept) and with full tracking, which follows every read
// itself.
func TestEventKeepAliveIdleThreadGoesHome(t *testing.T) {
	for _, track := range []string{"accept", "full"} {
		t.Run(track, func(t *testing.T) { testEventKeepAliveIdleThreadGoesHome(t, track) })
	}
}

func testEventKeepAliveIdleThreadGoesHome(t *testing.T, track string) {
	socket := statusSocket(t)
	a := startWith(t, ApacheConfig{
		VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}, {Name: "blog", Addr: "127.0.0.3:8080"}},
		Prefix: vhqosPrefix(t, fmt.Sprintf(keepAliveQoS, track), socket),
		MPM:    "event", Servers: 2, Threads: 8, Lua: true,
		// Later than the harness's KeepAliveTimeout 5: the last one counts.
		Extra: "KeepAliveTimeout 60\n",
	})
	vhqosPid := a.Cmd.Process.Pid
	shop := threadGroupSuffix(vhqosPid, "shop")
	k, err := DialKeepAlive("127.0.0.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	get := func(which string) ThreadReport {
		t.Helper()
		resp, err := k.Get("/lua/whoami")
		if err != nil {
			t.Fatalf("%s request on the kept-alive connection: %v", which, err)
		}
		r, err := ParseThreadReport(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s request: thread %d of %d, began in %s, ended in %s", which, r.TID, r.PID, r.StartCgroup(), r.EndCgroup())
		if !strings.HasSuffix(r.StartCgroup(), shop) || !strings.HasSuffix(r.EndCgroup(), shop) {
			t.Fatalf("%s request served by thread %d in %s, then %s; want …%s", which, r.TID, r.StartCgroup(), r.EndCgroup(), shop)
		}
		return r
	}
	first := get("first")
	// Apache's threads in shop's cgroup now, by thread id.
	inShop := func() []int {
		var out []int
		for tid, cg := range threadsOf(pidsNaming(a.Dir)) {
			if strings.HasSuffix(cg, shop) {
				out = append(out, tid)
			}
		}
		return out
	}
	begin := time.Now()
	for left := inShop(); len(left) > 0; left = inShop() {
		if time.Since(begin) > idleWithin {
			t.Fatalf("%v after the answer, with the connection idle, Apache threads %v are still in %s (the first request's was %d)",
				idleWithin, left, shop, first.TID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("no Apache thread in shop's cgroup %v after the first answer", time.Since(begin).Round(time.Millisecond))
	if st := tcpState(t, k.Server, k.Client); st != "01" {
		t.Fatalf("the kept-alive connection is in TCP state %s, want 01 (established): it closed, so the test shows nothing", st)
	}
	get("second")
}

// tcpState is the state (hex, /proc/net/tcp's st: 01 established) of the
// IPv4 TCP socket with local address local and remote address remote, ""
// if there is none.
func tcpState(t *testing.T, local, remote netip.AddrPort) string {
	t.Helper()
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	hex := func(ap netip.AddrPort) string {
		b := ap.Addr().As4()
		return fmt.Sprintf("%02X%02X%02X%02X:%04X", b[3], b[2], b[1], b[0], ap.Port())
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 3 && f[1] == hex(local) && f[2] == hex(remote) {
			return f[3]
		}
	}
	return ""
}

// ParseThreadReport reads what the handlers answer, cgroup v1 and v2 lines
// alike (a path may hold colons), and refuses what is not a report.
func TestParseThreadReport(t *testing.T) {
	for _, tc := range []struct {
		label, body string
		want        ThreadReport
		ok          bool
	}{
		{"cgroup v2", "pid 10\ntid 12\nstart 0::/vhqos.1/threads/vhost-shop\nend 0::/vhqos.1/threads/vhost-shop\n",
			ThreadReport{PID: 10, TID: 12, Start: map[string]string{"": "/vhqos.1/threads/vhost-shop"}, End: map[string]string{"": "/vhqos.1/threads/vhost-shop"}}, true},
		{"cgroup v1, a path with a colon", "pid 10\ntid 10\nstart 4:cpu,cpuacct:/a:b\nstart 9:name=systemd:/\nend 4:cpu,cpuacct:/\n",
			ThreadReport{PID: 10, TID: 10, Start: map[string]string{"cpu,cpuacct": "/a:b", "name=systemd": "/"}, End: map[string]string{"cpu,cpuacct": "/"}}, true},
		{"a line without its path", "pid 10\ntid 12\nstart 0:\nend 0::/\n", ThreadReport{}, false},
		{"no tid", "pid 10\nstart 0::/\nend 0::/\n", ThreadReport{}, false},
		{"a bad pid", "pid x\ntid 12\nstart 0::/\nend 0::/\n", ThreadReport{}, false},
		{"a CGI's answer", "pid 10\ncgroup 0::/\n", ThreadReport{}, false},
	} {
		got, err := ParseThreadReport(tc.body)
		if (err == nil) != tc.ok {
			t.Errorf("%s: error %v, want ok %v", tc.label, err, tc.ok)
			continue
		}
		if tc.ok && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.label, got, tc.want)
		}
	}
}
