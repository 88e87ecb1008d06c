package itest

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const addressQoS = `
[defaults]
cpu_weight = 100

[[vhost]]
name = "shop"
match = ["127.0.0.2"]
cpu_weight = 800
dscp = "EF"

[[vhost]]
name = "blog"
match = ["127.0.0.3:8080"]
dscp = "AF21"

[[vhost]]
name = "static"
match = ["127.0.0.4/32"]
dscp = "CS1"

[[vhost]]
name = "six"
match = ["::1"]
dscp = "AF41"
`

// Apache prefork with IP-based vhosts: every request is served by a
// process sitting in its vhost's cgroup, the server's packets carry the
// vhost's DSCP on the wire, and an address no vhost matches gets the
// defaults. Run with one listener per address (the listener decides; the
// kernel accepts) and with one wildcard listener (vhqos accepts itself and
// classifies each connection by its local address).
func TestApacheAddressVhosts(t *testing.T) {
	for _, mode := range []struct {
		name, listenAll string
	}{{"listener per address", ""}, {"one wildcard listener", "8080"}} {
		t.Run(mode.name, func(t *testing.T) { testApacheAddressVhosts(t, mode.listenAll) })
	}
}

func testApacheAddressVhosts(t *testing.T, listenAll string) {
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	vhosts := []struct {
		VHost
		group string
		dscp  int
	}{
		{VHost{Name: "shop", Addr: "127.0.0.2:8080"}, "vhost-shop", 46},
		{VHost{Name: "blog", Addr: "127.0.0.3:8080"}, "vhost-blog", 18},
		{VHost{Name: "static", Addr: "127.0.0.4:8080"}, "vhost-static", 8},
		{VHost{Name: "nobody", Addr: "127.0.0.5:8080"}, "default", 0},
		{VHost{Name: "six", Addr: "[::1]:8080"}, "vhost-six", 34},
	}
	var cfg ApacheConfig
	for _, v := range vhosts {
		cfg.VHosts = append(cfg.VHosts, v.VHost)
	}
	cfg.ListenAll = listenAll
	a := startUnderVhqos(t, addressQoS, cfg)
	vhqosPid := a.Cmd.Process.Pid
	const perVhost = 6
	pidsSeen := map[string]map[int]bool{}
	for round := 0; round < perVhost; round++ {
		for _, v := range vhosts {
			s := request(t, v.Addr, "/cgi-bin/whoami")
			want := fmt.Sprintf("/vhqos.%d/%s", vhqosPid, v.group)
			if !strings.HasSuffix(s.cgroup, want) {
				t.Errorf("%s: request served by pid %d in cgroup %q, want …%s", v.Name, s.pid, s.cgroup, want)
			}
			server := addrPort(t, v.Addr)
			client := netip.AddrPortFrom(server.Addr(), s.clientPort)
			if server.Addr().Is4() {
				client = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), s.clientPort)
			}
			dscp := capture.DSCP(server, client)
			if len(dscp) != 1 || dscp[v.dscp] == 0 {
				t.Errorf("%s: server packets to client port %d carried DSCP %v, want only %d", v.Name, s.clientPort, dscp, v.dscp)
			}
			if pidsSeen[v.Name] == nil {
				pidsSeen[v.Name] = map[int]bool{}
			}
			pidsSeen[v.Name][s.pid] = true
		}
	}
	// The PIDs Apache logged (%P) for each vhost are the processes the CGI
	// saw serving it.
	logged := accessLogPids(t, a)
	for _, v := range vhosts {
		if len(logged[v.Name]) == 0 {
			t.Errorf("%s: nothing in the access log", v.Name)
		}
		for pid := range logged[v.Name] {
			if !pidsSeen[v.Name][pid] {
				t.Errorf("%s: access log names pid %d, which no response reported", v.Name, pid)
			}
		}
	}
}

const cpuQoS = `
[[vhost]]
name = "heavy"
match = ["127.0.0.2"]
cpu_weight = 400

[[vhost]]
name = "light"
match = ["127.0.0.3"]
cpu_weight = 100

[[vhost]]
name = "capped"
match = ["127.0.0.4"]
cpu_max = "20%"
`

// CPU-bound requests to two vhosts at once, the server confined to one
// CPU: the cgroups' CPU time follows their weights 4:1; a vhost capped at
// 20% uses at most 25% of a CPU.
//
// Other work on the machine takes its share of that CPU from both vhosts
// alike: the ratio is measured over an amount of CPU time the two used
// (from the cgroups' accounting), however long that takes, and only while
// both had a CGI running; the cap, a share of wall-clock time, is checked
// against the longest the measurement can have lasted.
func TestCPUWeightsAndCap(t *testing.T) { testCGIWeightsAndCap(t, "prefork") }

// testCGIWeightsAndCap is TestCPUWeightsAndCap with Apache's MPM mpm: under
// prefork mod_cgi forks the CGIs from the serving child, under worker and
// event mod_cgid's daemon does.
func testCGIWeightsAndCap(t *testing.T, mpm string) {
	a := startUnderVhqos(t, cpuQoS, ApacheConfig{
		VHosts: []VHost{{Name: "heavy", Addr: "127.0.0.2:8080"}, {Name: "light", Addr: "127.0.0.3:8080"}, {Name: "capped", Addr: "127.0.0.4:8080"}},
		Wrap:   []string{"taskset", "-c", "0"},
		MPM:    mpm,
	})
	vhqosPid := a.Cmd.Process.Pid
	heavyDir, lightDir, cappedDir := cpuDir(t, vhqosPid, "vhost-heavy"), cpuDir(t, vhqosPid, "vhost-light"), cpuDir(t, vhqosPid, "vhost-capped")
	// burn is how long each CGI keeps its CPU busy, in seconds of wall-clock
	// time; enough is the CPU time, in µs, both vhosts together use before
	// the ratio is taken.
	const burn, enough = 12, 3e6
	done := make(chan struct{})
	go func() {
		defer close(done)
		inParallel(4, func(i int) {
			addr := []string{"127.0.0.2:8080", "127.0.0.3:8080"}[i%2]
			request(t, addr, "/cgi-bin/burn?"+strconv.Itoa(burn))
		})
	}()
	eventually(t, patience, "all four CGIs running, two per vhost", func() bool {
		return burners(t, heavyDir) == 2 && burners(t, lightDir) == 2
	})
	h0, l0 := cpuUsec(t, heavyDir), cpuUsec(t, lightDir)
	var heavy, light float64
	start := time.Now()
	for heavy+light < enough {
		h, l := cpuUsec(t, heavyDir), cpuUsec(t, lightDir)
		// Read after the counters: a CGI still there ran all along.
		if burners(t, heavyDir) == 0 || burners(t, lightDir) == 0 {
			break
		}
		heavy, light = h-h0, l-l0
		time.Sleep(100 * time.Millisecond)
	}
	if heavy+light < enough/4 {
		t.Fatalf("the CGIs ended after only %.0f ms of CPU time between them; the ratio would be noise", (heavy+light)/1000)
	}
	checkWeightRatio(t, heavy, light, time.Since(start))
	<-done

	capDone := make(chan struct{})
	go func() {
		defer close(capDone)
		request(t, "127.0.0.4:8080", "/cgi-bin/burn?"+strconv.Itoa(burn/2))
	}()
	eventually(t, patience, "the capped vhost's CGI running", func() bool { return burners(t, cappedDir) > 0 })
	checkCPUCap(t, cappedDir, func() string {
		if burners(t, cappedDir) == 0 {
			return "the capped vhost's CGI ended"
		}
		return ""
	})
	<-capDone
}

// checkWeightRatio fails the test unless heavy and light, the µs of CPU
// time two groups of weights 400 and 100 used over the same time (over, for
// the log), split 4:1 within 20%.
//
// On a real kernel the shares follow the weights to within 20%. In the
// cgroup v2 VM the CPU is emulated (qemu TCG), and when the host is busy
// the guest's clock runs on while its vCPU is not running: the time is
// charged to whichever task the guest was running, and the guest's
// scheduler shares out that clock, not real CPU (a ratio of 2.92 was seen
// with stress-ng --cpu 2 on the host). There (VHQOS_EMULATED_CPU) the test
// only shows that the weights act at all (1:1 without them), within 40%.
func checkWeightRatio(t *testing.T, heavy, light float64, over time.Duration) {
	t.Helper()
	tolerance := 0.2
	if os.Getenv("VHQOS_EMULATED_CPU") != "" {
		tolerance = 0.4
	}
	lo, hi := 4*(1-tolerance), 4*(1+tolerance)
	ratio := heavy / light
	t.Logf("over %v: heavy %.0f ms, light %.0f ms of CPU, ratio %.2f (want %.1f..%.1f)", over.Round(time.Millisecond), heavy/1000, light/1000, ratio, lo, hi)
	if light <= 0 || ratio < lo || ratio > hi {
		t.Errorf("CPU ratio heavy:light = %.2f, want %.1f..%.1f", ratio, lo, hi)
	}
}

// checkCPUCap measures the CPU g, a group with cpu_max = "20%" where
// something burns CPU, uses over 3 s, and fails the test unless it is at
// most 25% of a CPU and the cap held it back at least once. gone says why
// the measurement shows nothing ("" while it does: the burner still runs
// in g); it fails the test at once.
func checkCPUCap(t *testing.T, g cpuGroup, gone func() string) {
	t.Helper()
	// The cap holds per 100 ms period: over a few seconds a period's worth
	// of slack is lost in the 25% allowed.
	const window = 3 * time.Second
	begin := time.Now()
	c0, th0 := cpuUsec(t, g), throttledPeriods(t, g)
	for time.Since(begin) < window {
		if why := gone(); why != "" {
			t.Fatalf("%s %v into a %v measurement", why, time.Since(begin).Round(time.Millisecond), window)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c1, th1 := cpuUsec(t, g), throttledPeriods(t, g)
	// Taken after the last read: at least as long as the burner's time was
	// counted for, so the share can only come out lower than it was.
	elapsed := time.Since(begin)
	share := (c1 - c0) / float64(elapsed.Microseconds())
	t.Logf("capped vhost used %.1f%% of a CPU over %v, throttled in %.0f periods", share*100, elapsed.Round(time.Millisecond), th1-th0)
	if share > 0.25 {
		t.Errorf("vhost with cpu_max 20%% used %.1f%% of a CPU, want at most 25%%", share*100)
	}
	if th1 == th0 {
		t.Errorf("vhost with cpu_max 20%% was never held back (%.1f%% of a CPU): what burned did not run in its group up to its cap", share*100)
	}
}

// cpuGroup is where a vhqos group's CPU figures are: on v2 both in the
// unified hierarchy; on v1 cpu.stat and cgroup.procs in the cpu
// controller's, cpuacct.usage in cpuacct's (which may be mounted apart).
type cpuGroup struct{ cpu, acct string }

func cpuDir(t *testing.T, vhqosPid int, group string) cpuGroup {
	t.Helper()
	return cpuGroup{cgroupDir(t, vhqosPid, "cpu", group), cgroupDir(t, vhqosPid, "cpuacct", group)}
}

// cpuUsec reads the group's CPU time in µs.
func cpuUsec(t *testing.T, g cpuGroup) float64 {
	t.Helper()
	if cgroupV2() {
		return cpuStat(t, g, "usage_usec")
	}
	data, err := os.ReadFile(filepath.Join(g.acct, "cpuacct.usage"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.ParseFloat(strings.TrimSpace(string(data)), 64)
	return n / 1000 // ns
}

// throttledPeriods is how many periods the CPU cap held the group back
// (cpu.stat's nr_throttled, v1 and v2 alike).
func throttledPeriods(t *testing.T, g cpuGroup) float64 {
	t.Helper()
	return cpuStat(t, g, "nr_throttled")
}

func cpuStat(t *testing.T, g cpuGroup, key string) float64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(g.cpu, "cpu.stat"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	t.Fatalf("no %s in %s/cpu.stat", key, g.cpu)
	return 0
}

// burners counts the burn CGIs in the group: the shells running the
// script, not their subshells (a fork for $(date), the script's command
// line until it execs).
func burners(t *testing.T, g cpuGroup) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(g.cpu, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	parent := map[string]string{} // burn shell -> its parent
	for _, pid := range strings.Fields(string(data)) {
		cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
		stat, _ := os.ReadFile("/proc/" + pid + "/stat")
		// pid (comm) state ppid ...
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if strings.Contains(string(cmdline), "cgi-bin/burn") && len(f) > 1 {
			parent[pid] = f[1]
		}
	}
	n := 0
	for _, ppid := range parent {
		if _, sub := parent[ppid]; !sub {
			n++
		}
	}
	return n
}

// When the server dies, even by SIGKILL, vhqos exits with its status and
// leaves no process and no cgroup (checked in the cleanup).
func TestServerKilled(t *testing.T) {
	a := startUnderVhqos(t, addressQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}})
	request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	data, err := readFileEventually(a.Dir+"/httpd.pid", patience)
	if err != nil {
		t.Fatal(err)
	}
	apachePid, _ := strconv.Atoi(strings.TrimSpace(data))
	if err := syscall.Kill(apachePid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Exited():
	case <-time.After(patience):
		t.Fatal("vhqos did not exit after the server was killed")
	}
	if code := a.Cmd.ProcessState.ExitCode(); code != 128+9 {
		t.Errorf("vhqos exited with %d, want 137 (server killed by SIGKILL)", code)
	}
}

// SIGTERM to vhqos stops the server through it; vhqos exits with the
// server's status (0 for Apache) and cleans up.
func TestStopBySIGTERM(t *testing.T) {
	a := startUnderVhqos(t, addressQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}})
	request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	if st := a.Stop(); st.ExitCode() != 0 {
		t.Errorf("vhqos exited with %d after SIGTERM, want Apache's 0", st.ExitCode())
	}
}

// Signals sent to vhqos reach the server: SIGUSR1 makes Apache restart
// gracefully, and it goes on serving under vhqos.
func TestSignalsForwarded(t *testing.T) {
	a := startUnderVhqos(t, addressQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}})
	request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	if err := a.Cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(patience)
	for !strings.Contains(a.Output(), "Graceful restart requested") {
		if time.Now().After(deadline) {
			t.Fatalf("Apache never saw the forwarded SIGUSR1:\n%s", a.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	if want := fmt.Sprintf("/vhqos.%d/vhost-shop", a.Cmd.Process.Pid); !strings.HasSuffix(s.cgroup, want) {
		t.Errorf("after the restart, served in %q, want …%s", s.cgroup, want)
	}
}
