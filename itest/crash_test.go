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
	}{{"listener per address", ""}, {"wildcard listener", "8080"}} {
		t.Run(tc.name, func(t *testing.T) {
			capture, err := StartCapture()
			if err != nil {
				t.Fatal(err)
			}
			defer capture.Stop()
			a := startUnderVhqos(t, crashQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}, ListenAll: tc.listenAll, Servers: 8})
			keeper := a.Cmd.Process.Pid
			first := supervisorOf(keeper)
			if first == 0 {
				t.Fatal("no supervisor process under vhqos run")
			}
			wrk := make(chan string, 1)
			go func() {
				out, _ := exec.Command("wrk", "-t1", "-c8", "-d4s", "-H", "Connection: close", "http://127.0.0.2:8080/index.html").CombinedOutput()
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
			if tc.listenAll == "" && socket != 0 || socket > lost {
				t.Errorf("%d socket errors across the kill, %d connections logged as lost:\n%s", socket, lost, out)
			}
			s := request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
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
func statusSocketOf(a *Apache) string {
	for i, arg := range a.Cmd.Args {
		if arg == "--status-socket" && i+1 < len(a.Cmd.Args) {
			return a.Cmd.Args[i+1]
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

// A killed keeper takes its server with it; the next vhqos run removes
// the cgroups it left, and never those of a vhqos still running.
func TestKeeperKilled(t *testing.T) {
	live := startUnderVhqos(t, crashQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}, Servers: 2})
	doomed := startUnderVhqos(t, crashQoS, ApacheConfig{VHosts: []VHost{{Name: "blog", Addr: "127.0.0.3:8080"}}, Servers: 2})
	request(t, "127.0.0.3:8080", "/cgi-bin/whoami")
	keeper := doomed.Cmd.Process.Pid
	left := cgroupsOf(keeper)
	if len(left) == 0 {
		t.Fatal("the vhqos to kill has no cgroups")
	}
	if err := syscall.Kill(keeper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "the killed vhqos's server gone", func() bool { return len(apachePids(doomed)) == 0 })
	if dirs := cgroupsOf(keeper); len(dirs) == 0 {
		t.Fatal("the killed keeper's cgroups are gone before any vhqos removed them: the test shows nothing")
	}
	next := startUnderVhqos(t, crashQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.4:8080"}}, Servers: 2})
	if dirs := cgroupsOf(keeper); len(dirs) != 0 {
		t.Errorf("the dead vhqos's cgroups are still there after the next vhqos run started: %v", dirs)
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
	request(t, "127.0.0.4:8080", "/cgi-bin/whoami")
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
				pid := supervisorOf(a.Cmd.Process.Pid)
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
