package itest

import (
	"context"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// patience bounds every wait for something that must happen (a reload to
// land, a process to start or exit, a counter to move). It is generous:
// the tests run on busy 2-core machines and in a VM under software
// emulation, some twenty times slower; a passing test never waits it out.
const patience = time.Minute

// cgroupV2 reports whether this kernel runs unified cgroup v2 only.
func cgroupV2() bool { return CgroupV2() }

// startUnderVhqos starts Apache under vhqos with the given QoS table and
// stops it when the test ends, checking that vhqos left nothing behind.
func startUnderVhqos(t *testing.T, qos string, cfg ApacheConfig) *Apache {
	t.Helper()
	qosFile := filepath.Join(t.TempDir(), "qos.toml")
	if err := os.WriteFile(qosFile, []byte(qos), 0o644); err != nil {
		t.Fatal(err)
	}
	return startUnderVhqosFile(t, qosFile, cfg)
}

// startUnderVhqosFile is startUnderVhqos with the QoS table in a file the
// test keeps changing. It returns once vhqos watches the file: vhqos starts
// watching after it started the server, and a change made before that
// would go unseen.
func startUnderVhqosFile(t *testing.T, qosFile string, cfg ApacheConfig) *Apache {
	t.Helper()
	cfg.Prefix = []string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qosFile, "--status-socket", statusSocket(t), "--"}
	a := startWith(t, cfg)
	waitTableWatched(t, a.Cmd.Process.Pid)
	return a
}

// supervisorOf returns the pid of the supervisor process of the vhqos run
// (the keeper) with pid keeper, or 0 while it has none.
func supervisorOf(keeper int) int {
	// Each thread lists the children it started.
	var children []string
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", keeper))
	for _, task := range tasks {
		data, _ := os.ReadFile(task)
		children = append(children, strings.Fields(string(data))...)
	}
	for _, f := range children {
		cmdline, _ := os.ReadFile("/proc/" + f + "/cmdline")
		if strings.Contains(string(cmdline), "supervise\x00") && strings.Contains(string(cmdline), "--keeper-state") {
			pid, _ := strconv.Atoi(f)
			return pid
		}
	}
	return 0
}

// waitTableWatched waits until the supervisor of the vhqos with pid has an
// inotify watch in place (its fdinfo lists one): from then on it sees
// changes to its table.
func waitTableWatched(t *testing.T, pid int) {
	t.Helper()
	eventually(t, patience, "vhqos watching its QoS table file", func() bool {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fdinfo/*", supervisorOf(pid)))
		for _, fd := range fds {
			if data, err := os.ReadFile(fd); err == nil && strings.Contains(string(data), "inotify wd:") {
				return true
			}
		}
		return false
	})
}

// startWith starts Apache with a ready-made prefix and, when the test
// ends, stops it and checks that vhqos left no cgroup behind (RunApache
// checks for processes).
func startWith(t *testing.T, cfg ApacheConfig) *Apache {
	t.Helper()
	a := RunApache(t, cfg)
	t.Cleanup(func() {
		a.Stop()
		assertNoCgroupLeft(t, a)
	})
	return a
}

// assertNoCgroupLeft checks that no cgroup of this vhqos survived it.
func assertNoCgroupLeft(t *testing.T, a *Apache) {
	t.Helper()
	assertNoCgroupLeftOf(t, a.Cmd.Process.Pid)
}

// assertNoCgroupLeftOf checks that no cgroup of the vhqos with pid
// survived it.
func assertNoCgroupLeftOf(t *testing.T, pid int) {
	t.Helper()
	name := "vhqos." + strconv.Itoa(pid)
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), name) {
			t.Errorf("cgroup %s left behind", p)
			return filepath.SkipDir
		}
		if strings.Count(p, "/") > 8 {
			return filepath.SkipDir
		}
		return nil
	})
}

// served is what one request learned about the process that served it.
type served struct {
	pid        int
	cgroup     string // the serving process's cgroup (cpu line on v1, unified on v2)
	clientPort uint16
}

// request sends one request on a fresh connection and parses the whoami
// CGI's answer.
func request(t *testing.T, addr, path string) served {
	t.Helper()
	resp, err := Get(addr, path)
	if err != nil {
		t.Fatalf("requesting %s from %s: %v", path, addr, err)
	}
	w, err := ParseWhoami(resp.Body)
	if err != nil || w.Cgroup() == "" {
		t.Fatalf("unexpected answer from %s%s (%v): %q", addr, path, err, resp.Body)
	}
	return served{pid: w.PID, cgroup: w.Cgroup(), clientPort: resp.Client.Port()}
}

// cgroupDir finds the directory of a vhqos group in the cgroup file system:
// on v1 in the named hierarchy, on v2 in the unified one.
func cgroupDir(t *testing.T, vhqosPid int, hierarchy, group string) string {
	t.Helper()
	root := "/sys/fs/cgroup"
	if !cgroupV2() {
		root = filepath.Join(root, hierarchy)
	}
	name := "vhqos." + strconv.Itoa(vhqosPid)
	var found string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if d.Name() == name {
			found = filepath.Join(p, group)
			return filepath.SkipAll
		}
		if strings.Count(p, "/") > 8 {
			return filepath.SkipDir
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no cgroup %s under %s", name, root)
	}
	return found
}

// accessLogPids reads the access log: vhost name -> serving PIDs.
func accessLogPids(t *testing.T, a *Apache) map[string]map[int]bool {
	t.Helper()
	entries, err := a.Log()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[int]bool{}
	for _, e := range entries {
		if out[e.VHost] == nil {
			out[e.VHost] = map[int]bool{}
		}
		out[e.VHost][e.PID] = true
	}
	return out
}

// inParallel runs f n times at once and waits.
func inParallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) { defer wg.Done(); f(i) }(i)
	}
	wg.Wait()
}

func addrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func readFileEventually(path string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		data, err := os.ReadFile(path)
		if err == nil && len(data) > 0 {
			return string(data), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not appear: %v", path, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// statusSocket is a status socket path of the test's own, so that tests
// never meet a vhqos running on the host (or each other).
func statusSocket(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "status.sock")
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func hasController(list, c string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == c {
			return true
		}
	}
	return false
}
