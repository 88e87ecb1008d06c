package itest

import (
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vhqos/vhqos/status"
)

const crashQoS = `
[[vhost]]
name = "shop"
match = ["127.0.0.2"]
dscp = "EF"
`

const crashNameQoS = `
[[vhost]]
name = "shop"
match = ["shop.example"]
dscp = "EF"

[[vhost]]
name = "blog"
match = ["blog.example"]
dscp = "AF21"
`

// wrkErrors reads wrk's error counts: socket errors (connect, read,
// write, timeout) summed, and non-2xx responses.
func wrkErrors(t *testing.T, out string) (socket, non2xx int) {
	t.Helper()
	if m := regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`).FindStringSubmatch(out); m != nil {
		for _, n := range m[1:] {
			v, _ := strconv.Atoi(n)
			socket += v
		}
	}
	if m := regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`).FindStringSubmatch(out); m != nil {
		non2xx, _ = strconv.Atoi(m[1])
	}
	if !strings.Contains(out, "requests in") {
		t.Fatalf("wrk did not run:\n%s", out)
	}
	return socket, non2xx
}

// A supervisor killed (SIGKILL) under load is replaced at once; meanwhile
// the server goes on serving (the keeper lets the kernel do its accepts),
// and the first requests after the restart are served in the vhost's
// cgroup with its mark. With a listener per address no connection is ever
// the supervisor's, so none may fail; with a wildcard listener only those
// the supervisor held at the instant of the kill may, and vhqos says how
// many.
func TestSupervisorKilledUnderLoad(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatal("wrk is needed: apt-get install wrk")
	}
	for _, tc := range []struct {
		name, listenAll string
		qos             string
		host            string // the Host header, "" for none
		vhosts          []VHost
	}{
		{"listener per address", "", crashQoS, "", []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}},
		{"wildcard listener", "8080", crashQoS, "", []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}},
		{"host names", "", crashNameQoS, "shop.example", []VHost{{Name: "shop.example", Addr: "127.0.0.2:8080"}, {Name: "blog.example", Addr: "127.0.0.2:8080"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			capture, err := StartCapture()
			if err != nil {
				t.Fatal(err)
			}
			defer capture.Stop()
			a := startUnderVhqos(t, tc.qos, ApacheConfig{VHosts: tc.vhosts, ListenAll: tc.listenAll, Servers: 8})
			keeper := a.Cmd.Process.Pid
			first := supervisorOf(keeper)
			if first == 0 {
				t.Fatal("no supervisor process under vhqos run")
			}
			wrk := make(chan string, 1)
			go func() {
				args := []string{"-t1", "-c8", "-d4s", "-H", "Connection: close"}
				if tc.host != "" {
					args = append(args, "-H", "Host: "+tc.host)
				}
				out, _ := exec.Command("wrk", append(args, "http://127.0.0.2:8080/index.html")...).CombinedOutput()
				wrk <- string(out)
			}()
			time.Sleep(1500 * time.Millisecond) // wrk is under way
			if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			var second int
			eventually(t, patience, "a new supervisor", func() bool {
				second = supervisorOf(keeper)
				return second != 0 && second != first
			})
			// Up is not ready: the status socket answers once it runs.
			eventually(t, patience, "the new supervisor answering vhqos status", func() bool {
				rep, err := status.Fetch(statusSocketOf(a))
				return err == nil && rep.SupervisorPID == second && rep.SupervisorRestarts == 1
			})
			t.Logf("new supervisor %d answering %v after the kill", second, time.Since(killed).Round(time.Millisecond))
			out := <-wrk
			socket, non2xx := wrkErrors(t, out)
			lost := loggedLost(a.Output())
			t.Logf("wrk: %d socket errors, %d non-2xx; vhqos logged %d connections lost", socket, non2xx, lost)
			if non2xx != 0 {
				t.Errorf("%d non-2xx responses across the kill:\n%s", non2xx, out)
			}
			if tc.listenAll == "" && tc.host == "" && socket != 0 || socket > lost {
				t.Errorf("%d socket errors across the kill, %d connections logged as lost:\n%s", socket, lost, out)
			}
			target := "/cgi-bin/whoami"
			if tc.host != "" {
				target = "http://" + tc.host + target
			}
			// A process whose accept the keeper let through while no
			// supervisor ran serves that one connection without QoS: the
			// last of one request more than there are processes is QoS's.
			var s served
			for range 8 + 1 {
				s = request(t, "127.0.0.2:8080", target)
			}
			if want := fmt.Sprintf("/vhqos.%d/vhost-shop", keeper); !strings.HasSuffix(s.cgroup, want) {
				t.Errorf("after the restart a request was served in %q, want …%s", s.cgroup, want)
			}
			server := netip.MustParseAddrPort("127.0.0.2:8080")
			if dscp := capture.DSCP(server, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), s.clientPort)); len(dscp) != 1 || dscp[46] == 0 {
				t.Errorf("after the restart the server's packets carried DSCP %v, want only 46", dscp)
			}
		})
	}
}

// loggedLost sums what vhqos logged as connections lost with a killed
// supervisor.
func loggedLost(log string) int {
	n := 0
	for _, m := range regexp.MustCompile(`supervisor died.*connections_lost=(\d+)`).FindAllStringSubmatch(log, -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
}

// inNotification reports whether process pid sleeps in a seccomp
// notification, waiting for the supervisor's answer.
func inNotification(pid int) bool {
	wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
	stack, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stack", pid))
	return strings.Contains(string(wchan), "seccomp") || strings.Contains(string(stack), "seccomp_do_user_notification")
}

// A server thread blocked in an accept the supervisor had received (and
// holds until a connection comes) is answered by the keeper when that
// supervisor is killed: it goes on in the kernel's accept, and the next
// connection is served.
func TestSupervisorKilledWhileHoldingAccepts(t *testing.T) {
	a := startUnderVhqos(t, crashQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}, ListenAll: "8080", Servers: 2})
	keeper := a.Cmd.Process.Pid
	request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	var held []int
	eventually(t, patience, "Apache's children waiting in accepts the supervisor holds", func() bool {
		held = held[:0]
		for _, pid := range apachePids(a) {
			if inNotification(pid) {
				held = append(held, pid)
			}
		}
		return len(held) > 0
	})
	sup := supervisorOf(keeper)
	if err := syscall.Kill(sup, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	eventually(t, time.Second, "the held accepts answered", func() bool {
		for _, pid := range held {
			if inNotification(pid) {
				return false
			}
		}
		return true
	})
	t.Logf("%d held accepts answered %v after the kill", len(held), time.Since(killed).Round(time.Millisecond))
	request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
}

// apachePids lists the pids of this Apache's own processes.
func apachePids(a *Apache) []int {
	var pids []int
	for _, l := range a.Leftovers() {
		f := strings.Fields(l)
		if len(f) > 1 && strings.Contains(f[1], "apache2") {
			pid, _ := strconv.Atoi(f[0])
			pids = append(pids, pid)
		}
	}
	return pids
}

// statusSocketOf is the status socket the vhqos running a serves.
func statusSocketOf(a *Apache) string { return statusSocketIn(a.Cmd.Args) }

// statusSocketIn is the --status-socket of a vhqos command line, "" if
// none.
func statusSocketIn(args []string) string {
	for i, arg := range args {
		if arg == "--status-socket" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// cgroupsOf lists the cgroup directories (every hierarchy) of the vhqos
// whose keeper has pid keeper.
func cgroupsOf(keeper int) []string {
	var dirs []string
	name := "vhqos." + strconv.Itoa(keeper)
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if d.Name() == name {
			dirs = append(dirs, p)
			return filepath.SkipDir
		}
		if strings.Count(p, "/") > 8 {
			return filepath.SkipDir
		}
		return nil
	})
	return dirs
}

// A killed keeper takes its server with it, also when it had no
// supervisor at that moment (killed just before, not yet restarted); the
// next vhqos run removes the cgroups it left, and never those of a vhqos
// still running.
func TestKeeperKilled(t *testing.T) {
	live := startUnderVhqos(t, crashQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}, Servers: 2})
	var dead []int
	for i, withoutSupervisor := range []bool{false, true} {
		addr := fmt.Sprintf("127.0.0.%d:8080", 3+i)
		doomed := startUnderVhqos(t, crashQoS, ApacheConfig{VHosts: []VHost{{Name: "blog", Addr: addr}}, Servers: 2})
		request(t, addr, "/cgi-bin/whoami")
		keeper := doomed.Cmd.Process.Pid
		if len(cgroupsOf(keeper)) == 0 {
			t.Fatal("the vhqos to kill has no cgroups")
		}
		if withoutSupervisor {
			syscall.Kill(supervisorOf(keeper), syscall.SIGKILL)
		}
		if err := syscall.Kill(keeper, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Second, fmt.Sprintf("the killed vhqos's server gone (supervisor killed first: %v)", withoutSupervisor), func() bool { return len(apachePids(doomed)) == 0 })
		if dirs := cgroupsOf(keeper); len(dirs) == 0 {
			t.Fatal("the killed keeper's cgroups are gone before any vhqos removed them: the test shows nothing")
		}
		dead = append(dead, keeper)
	}
	next := startUnderVhqos(t, crashQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.5:8080"}}, Servers: 2})
	for _, keeper := range dead {
		if dirs := cgroupsOf(keeper); len(dirs) != 0 {
			t.Errorf("the dead vhqos's cgroups are still there after the next vhqos run started: %v", dirs)
		}
	}
	if !strings.Contains(next.Output(), "removed cgroups left by a vhqos that is gone") {
		t.Errorf("the next vhqos run did not say what it removed:\n%s", next.Output())
	}
	if len(cgroupsOf(live.Cmd.Process.Pid)) == 0 {
		t.Error("the next vhqos run removed the cgroups of a vhqos still running")
	}
	s := request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	if want := fmt.Sprintf("/vhqos.%d/vhost-shop", live.Cmd.Process.Pid); !strings.HasSuffix(s.cgroup, want) {
		t.Errorf("the running vhqos served a request in %q, want …%s", s.cgroup, want)
	}
	request(t, "127.0.0.5:8080", "/cgi-bin/whoami")
}

// vhqos upgrade, three times in a row under load, loses nothing: no
// request fails, the supervisor's pid changes each time, and what the
// status counts carries on.
func TestUpgradeUnderLoad(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatal("wrk is needed: apt-get install wrk")
	}
	for _, tc := range []struct {
		name, listenAll string
	}{{"listener per address", ""}, {"wildcard listener", "8080"}} {
		t.Run(tc.name, func(t *testing.T) {
			a := startUnderVhqos(t, crashQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}, ListenAll: tc.listenAll, Servers: 8})
			socket := statusSocketOf(a)
			wrk := make(chan string, 1)
			go func() {
				out, _ := exec.Command("wrk", "-t1", "-c8", "-d5s", "-H", "Connection: close", "http://127.0.0.2:8080/index.html").CombinedOutput()
				wrk <- string(out)
			}()
			pids := map[int]bool{supervisorOf(a.Cmd.Process.Pid): true}
			for i := range 3 {
				time.Sleep(time.Second) // under load
				out, err := exec.Command(vhqosBinary(t), "upgrade", "--socket", socket).CombinedOutput()
				if err != nil {
					t.Fatalf("upgrade %d: %v: %s", i+1, err, out)
				}
				// The old supervisor may still be finishing: ask the status
				// which one answers.
				rep, err := status.Fetch(socket)
				if err != nil {
					t.Fatal(err)
				}
				pid := rep.SupervisorPID
				if pids[pid] {
					t.Errorf("upgrade %d: supervisor pid %d seen before (%s)", i+1, pid, out)
				}
				pids[pid] = true
			}
			out := <-wrk
			socketErrors, non2xx := wrkErrors(t, out)
			if socketErrors != 0 || non2xx != 0 {
				t.Errorf("%d socket errors and %d non-2xx responses across three upgrades:\n%s", socketErrors, non2xx, out)
			}
			rep, err := status.Fetch(socket)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Upgrades != 3 || rep.SupervisorRestarts != 0 {
				t.Errorf("status says %d upgrades, %d restarts; want 3 and 0", rep.Upgrades, rep.SupervisorRestarts)
			}
			requests := 0
			if m := regexp.MustCompile(`(\d+) requests in`).FindStringSubmatch(out); m != nil {
				requests, _ = strconv.Atoi(m[1])
			}
			var shop uint64
			for _, c := range rep.Classes {
				if c.Name == "shop" {
					shop = c.Connections
				}
			}
			// Counted by four supervisors in turn.
			if shop < uint64(requests)*9/10 {
				t.Errorf("status counts %d connections for shop, wrk made %d: the counts did not carry on", shop, requests)
			}
			s := request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
			if want := fmt.Sprintf("/vhqos.%d/vhost-shop", a.Cmd.Process.Pid); !strings.HasSuffix(s.cgroup, want) {
				t.Errorf("after the upgrades a request was served in %q, want …%s", s.cgroup, want)
			}
			t.Logf("%d requests, %d counted for shop; supervisors %v", requests, shop, pids)
		})
	}
}

// killSoakBudget is how long TestSupervisorKillSoak loads three servers
// and how many supervisor kills it spreads over that time:
// VHQOS_KILL_SOAK_DURATION (default 30s) and VHQOS_KILL_SOAK_KILLS
// (default 15); `make kill-soak` runs the long one (5 minutes, 100 kills).
func killSoakBudget(t *testing.T) (time.Duration, int) {
	d, kills := 30*time.Second, 15
	if v := os.Getenv("VHQOS_KILL_SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			t.Fatalf("VHQOS_KILL_SOAK_DURATION=%q: want a positive Go duration such as 5m", v)
		}
	}
	if v := os.Getenv("VHQOS_KILL_SOAK_KILLS"); v != "" {
		var err error
		if kills, err = strconv.Atoi(v); err != nil || kills <= 0 {
			t.Fatalf("VHQOS_KILL_SOAK_KILLS=%q: want a positive number", v)
		}
	}
	return d, kills
}

const forkTrackQoS = `
[settings]
track = "fork"

[[vhost]]
name = "shop"
match = ["127.0.0.3"]
dscp = "EF"
`

// Supervisors killed at random moments under a mixed load (a listener per
// address, a wildcard listener followed with track = "fork", host names):
// every request is served or among the connections vhqos logged as lost
// with a killed supervisor; afterwards every server still serves, the
// keepers hold the fds they held before, and nothing is left behind (the
// cleanups check processes and cgroups).
func TestSupervisorKillSoak(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatal("wrk is needed: apt-get install wrk")
	}
	duration, kills := killSoakBudget(t)
	type server struct {
		a      *Apache
		url    string
		host   string
		target string
		fds    int
	}
	servers := []*server{
		{a: startUnderVhqos(t, crashQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}, Servers: 6}),
			url: "http://127.0.0.2:8080/index.html", target: "/cgi-bin/whoami"},
		{a: startUnderVhqos(t, forkTrackQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.3:8081"}}, ListenAll: "8081", Servers: 6}),
			url: "http://127.0.0.3:8081/index.html", target: "/cgi-bin/whoami"},
		{a: startUnderVhqos(t, crashNameQoS, ApacheConfig{VHosts: []VHost{{Name: "shop.example", Addr: "127.0.0.4:8082"}, {Name: "blog.example", Addr: "127.0.0.4:8082"}}, Servers: 6}),
			url: "http://127.0.0.4:8082/index.html", host: "shop.example", target: "http://shop.example/cgi-bin/whoami"},
	}
	fdCount := func(pid int) int {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		return len(fds)
	}
	for _, s := range servers {
		s.fds = fdCount(s.a.Cmd.Process.Pid)
	}
	outs := make([]chan string, len(servers))
	for i, s := range servers {
		outs[i] = make(chan string, 1)
		go func() {
			// wrk takes "300s", not Go's "5m0s".
			args := []string{"-t1", "-c3", fmt.Sprintf("-d%ds", int(duration.Seconds())), "-H", "Connection: close"}
			if s.host != "" {
				args = append(args, "-H", "Host: "+s.host)
			}
			out, _ := exec.Command("wrk", append(args, s.url)...).CombinedOutput()
			outs[i] <- string(out)
		}()
	}
	gap := duration / time.Duration(kills+1)
	for k := range kills {
		// A random moment within each slot of the load.
		time.Sleep(gap/2 + time.Duration(int64(k*7919)%int64(gap/2+1)))
		s := servers[k%len(servers)]
		pid := supervisorOf(s.a.Cmd.Process.Pid)
		if pid == 0 {
			continue // still restarting from the kill before
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for i, s := range servers {
		out := <-outs[i]
		socket, non2xx := wrkErrors(t, out)
		lost := loggedLost(s.a.Output())
		t.Logf("%s: %d socket errors, %d non-2xx; %d connections logged lost", s.url, socket, non2xx, lost)
		if non2xx != 0 || socket > lost {
			t.Errorf("%s: %d socket errors and %d non-2xx, but vhqos logged %d connections lost:\n%s", s.url, socket, non2xx, lost, out)
		}
		eventually(t, patience, "a supervisor running after the kills", func() bool { return supervisorOf(s.a.Cmd.Process.Pid) != 0 })
		addr := strings.TrimPrefix(strings.TrimSuffix(s.url, "/index.html"), "http://")
		request(t, addr, s.target)
		if n := fdCount(s.a.Cmd.Process.Pid); n != s.fds {
			t.Errorf("%s: the keeper holds %d fds after the kills, %d before", s.url, n, s.fds)
		}
	}
}

// A supervisor that stops answering (here: stopped with SIGSTOP) is taken
// for hung and killed by the keeper; the server is served again within
// seconds, not left waiting.
func TestSupervisorHung(t *testing.T) {
	a := startUnderVhqos(t, crashQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}, Servers: 2})
	request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	keeper := a.Cmd.Process.Pid
	hung := supervisorOf(keeper)
	if err := syscall.Kill(hung, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// Each child is in the kernel's accept (the listener decides) and
	// serves one more connection; its next accept is a notification that
	// nobody takes. The third request needs a supervisor again.
	var s served
	for range 3 {
		s = request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	}
	t.Logf("three requests served %v after the supervisor stopped", time.Since(stopped).Round(time.Millisecond))
	eventually(t, patience, "vhqos saying it killed the hung supervisor", func() bool {
		return strings.Contains(a.Output(), "the supervisor has not taken a notification for a while; killing it")
	})
	eventually(t, patience, "a new supervisor", func() bool { p := supervisorOf(keeper); return p != 0 && p != hung })
	if want := fmt.Sprintf("/vhqos.%d/", keeper); !strings.Contains(s.cgroup, want) {
		t.Errorf("served in %q, want a cgroup of this vhqos", s.cgroup)
	}
}

// A supervisor started after a crash keeps the table in force when the
// file was broken meanwhile (a refused reload): QoS goes on, and the file
// is refused again until it is fixed.
func TestCrashWithBrokenTable(t *testing.T) {
	path := plainFile(t, t.TempDir(), crashQoS)
	a := startUnderVhqosFile(t, path, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}, Servers: 2})
	keeper := a.Cmd.Process.Pid
	writeByRename(t, path, crashQoS+"\n[[vhost]]\nname = \"blog\"\ncpu_wieght = 10\n")
	eventually(t, patience, "the broken table refused", func() bool {
		return strings.Contains(a.Output(), "refused QoS table")
	})
	first := supervisorOf(keeper)
	syscall.Kill(first, syscall.SIGKILL)
	eventually(t, patience, "a new supervisor", func() bool { p := supervisorOf(keeper); return p != 0 && p != first })
	var rep *status.Report
	eventually(t, patience, "the new supervisor answering vhqos status", func() bool {
		var err error
		rep, err = status.Fetch(statusSocketOf(a))
		return err == nil && rep.SupervisorRestarts == 1
	})
	// The table in force is the one before the broken file: shop with
	// its DSCP, not an empty table (the request alone would not tell:
	// a child placed before the crash may serve it).
	shopKept := false
	for _, c := range rep.Classes {
		if c.Name == "shop" && c.DSCP == 46 {
			shopKept = true
		}
	}
	if !shopKept {
		t.Errorf("after the crash vhqos status lists %+v, want shop with its DSCP EF (the table in force before)", rep.Classes)
	}
	s := request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	if want := fmt.Sprintf("/vhqos.%d/vhost-shop", keeper); !strings.HasSuffix(s.cgroup, want) {
		t.Errorf("after the crash a request was served in %q, want …%s (the table in force before)", s.cgroup, want)
	}
	if n := strings.Count(a.Output(), "refused QoS table"); n < 2 {
		t.Errorf("the new supervisor did not say the file is refused (%d refusals logged)", n)
	}
}
