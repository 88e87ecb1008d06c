package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests run for real on whatever layout the host has: the v1
// (hybrid) hierarchies here, unified cgroup v2 in the project's VM.

var testSeq atomic.Int64

// patience bounds every wait for something that must happen (a process to
// die, Close to finish): generous, because the tests run beside others on
// busy machines and in a VM under software emulation; a passing test never
// waits it out.
const patience = 60 * time.Second

func testName() string {
	return fmt.Sprintf("vhqos-test.%d.%d", os.Getpid(), testSeq.Add(1))
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating cgroups needs root")
	}
}

// newTestManager makes a real subtree and makes sure, even when the test
// fails, that Close ran and nothing named like it is left in any hierarchy.
func newTestManager(t testing.TB, opts Options) *Manager {
	t.Helper()
	needRoot(t)
	if opts.Name == "" {
		opts.Name = testName()
	}
	m, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	cleanupManager(t, m)
	return m
}

func cleanupManager(t testing.TB, m *Manager) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, d := range leftovers(m) {
			t.Errorf("%s left behind", d)
			removeTree(ctx, d)
		}
	})
}

// leftovers lists the manager's subtree (and supervisor leaf) wherever it
// could be: every hierarchy mounted under /sys/fs/cgroup.
func leftovers(m *Manager) []string {
	var out []string
	cands := m.subtreeDirs()
	for _, h := range m.hier {
		cands = append(cands, filepath.Join(h.root, h.parent, m.name+".supervisor"))
	}
	for _, mnt := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/*"} {
		for _, h := range m.hier {
			matches, _ := filepath.Glob(filepath.Join(mnt, h.parent, m.name))
			cands = append(cands, matches...)
		}
	}
	seen := map[string]bool{}
	for _, c := range cands {
		if _, err := os.Stat(c); err == nil && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// start runs a command in its own process group and kills it at the end.
func start(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	c := exec.Command(name, args...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		<-done
	})
	return c
}

func startSleeper(t testing.TB) int { return start(t, "sleep", "600").Process.Pid }

// cgroupOf is pid's cgroup as /proc shows it: the cpu hierarchy's line on
// v1, the "0::" line on v2.
func cgroupOf(t testing.TB, pid, version int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if version == 2 && parts[1] == "" {
			return parts[2]
		}
		if version == 1 && contains(strings.Split(parts[1], ","), "cpu") {
			return parts[2]
		}
	}
	t.Fatalf("no cgroup line for pid %d in %q", pid, data)
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// fileOf is a group's interface file for a controller ("cpu", "blkio";
// under v2 all live in one directory).
func fileOf(t testing.TB, m *Manager, group, ctrl, file string) string {
	t.Helper()
	m.placeMu.RLock()
	g := m.groups[group]
	m.placeMu.RUnlock()
	if g == nil {
		t.Fatalf("no group %s", group)
	}
	i := 0
	if m.version == 1 {
		var ok bool
		if i, ok = m.ctrlHier[ctrl]; !ok {
			t.Skipf("no v1 %s hierarchy", ctrl)
		}
	}
	return filepath.Join(g.dirs[i], file)
}

func read(t testing.TB, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func TestLimitsAreWritten(t *testing.T) {
	m := newTestManager(t, Options{})
	tests := []struct {
		name   string
		r      Resources
		v1, v2 map[string]string // file → content
	}{
		{"weight and cap", Resources{CPUWeight: 400, CPUQuotaPercent: 20},
			map[string]string{"cpu.shares": "4096", "cpu.cfs_quota_us": "20000", "cpu.cfs_period_us": "100000"},
			map[string]string{"cpu.weight": "400", "cpu.max": "20000 100000"}},
		{"more than one CPU", Resources{CPUWeight: 100, CPUQuotaPercent: 150},
			map[string]string{"cpu.shares": "1024", "cpu.cfs_quota_us": "150000"},
			map[string]string{"cpu.weight": "100", "cpu.max": "150000 100000"}},
		{"dropped limits go back to the defaults", Resources{CPUWeight: 100},
			map[string]string{"cpu.shares": "1024", "cpu.cfs_quota_us": "-1"},
			map[string]string{"cpu.weight": "100", "cpu.max": "max 100000"}},
		{"everything dropped", Resources{},
			map[string]string{"cpu.shares": "1024", "cpu.cfs_quota_us": "-1"},
			map[string]string{"cpu.weight": "100", "cpu.max": "max 100000"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := m.Set("vhost-a", tc.r); err != nil {
				t.Fatal(err)
			}
			want := tc.v1
			if m.Version() == 2 {
				want = tc.v2
			}
			for file, v := range want {
				if got := read(t, fileOf(t, m, "vhost-a", "cpu", file)); got != v {
					t.Errorf("%s = %q, want %q", file, got, v)
				}
			}
		})
	}
}

// TestOnlyChangedFilesAreWritten: a file changed behind the manager's back
// stays as it is when Set repeats the same limits, and is corrected when
// the limit itself changes.
func TestOnlyChangedFilesAreWritten(t *testing.T) {
	m := newTestManager(t, Options{})
	r := Resources{CPUWeight: 200, CPUQuotaPercent: 30}
	if err := m.Set("vhost-a", r); err != nil {
		t.Fatal(err)
	}
	file, by, want := "cpu.shares", "4096", "2048"
	if m.Version() == 2 {
		file, by, want = "cpu.weight", "400", "200"
	}
	path := fileOf(t, m, "vhost-a", "cpu", file)
	if err := os.WriteFile(path, []byte(by), 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Set("vhost-a", r); err != nil {
		t.Fatal(err)
	}
	if got := read(t, path); got != by {
		t.Errorf("repeating the same limits rewrote %s: %q", file, got)
	}
	r.CPUWeight = 300
	if err := m.Set("vhost-a", r); err != nil {
		t.Fatal(err)
	}
	if m.Version() == 1 {
		want = "3072"
	} else {
		want = "300"
	}
	if got := read(t, path); got != want {
		t.Errorf("after a change %s = %q, want %q", file, got, want)
	}
}

// blockDevice finds a whole disk for IO limits, e.g. 254:0 for vda.
func blockDevice(t testing.TB) DeviceLimit {
	entries, _ := os.ReadDir("/sys/block")
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "zram") {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/sys/block", n, "dev"))
		if err != nil {
			continue
		}
		maj, min, ok := strings.Cut(strings.TrimSpace(string(data)), ":")
		a, err1 := strconv.ParseInt(maj, 10, 64)
		b, err2 := strconv.ParseInt(min, 10, 64)
		if ok && err1 == nil && err2 == nil {
			return DeviceLimit{Path: "/dev/" + n, Major: a, Minor: b}
		}
	}
	t.Skip("no block device for IO limits")
	return DeviceLimit{}
}

func TestIOLimits(t *testing.T) {
	m := newTestManager(t, Options{})
	dev := blockDevice(t)
	d := withLimits(dev, 1<<20, 0, 0, 300)
	err := m.Set("vhost-io", Resources{Devices: []DeviceLimit{d}})
	if m.Version() == 2 && err != nil && strings.Contains(err.Error(), "controller is not available") {
		t.Skipf("no io controller: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("%d:%d", dev.Major, dev.Minor)
	if m.Version() == 1 {
		if got := read(t, fileOf(t, m, "vhost-io", "blkio", "blkio.throttle.read_bps_device")); got != key+" 1048576" {
			t.Errorf("read_bps_device = %q", got)
		}
		if got := read(t, fileOf(t, m, "vhost-io", "blkio", "blkio.throttle.write_iops_device")); got != key+" 300" {
			t.Errorf("write_iops_device = %q", got)
		}
	} else if got := read(t, fileOf(t, m, "vhost-io", "io", "io.max")); !strings.Contains(got, key+" rbps=1048576 wbps=max riops=max wiops=300") {
		t.Errorf("io.max = %q", got)
	}
	// Dropping the limits removes them.
	if err := m.Set("vhost-io", Resources{}); err != nil {
		t.Fatal(err)
	}
	if m.Version() == 1 {
		if got := read(t, fileOf(t, m, "vhost-io", "blkio", "blkio.throttle.read_bps_device")); got != "" {
			t.Errorf("read_bps_device after removal = %q", got)
		}
	} else if got := read(t, fileOf(t, m, "vhost-io", "io", "io.max")); strings.Contains(got, key) {
		t.Errorf("io.max after removal = %q", got)
	}
	// An unknown device is a clear error.
	bad := withLimits(DeviceLimit{Path: "/dev/nope", Major: 4095, Minor: 4095}, 1, 0, 0, 0)
	err = m.Set("vhost-io", Resources{Devices: []DeviceLimit{bad}})
	if err == nil || !strings.Contains(err.Error(), "/dev/nope") {
		t.Errorf("limits on a missing device: err = %v", err)
	}
}

// TestIOWeight sets io_weight where the kernel offers a weight file, and
// otherwise checks that the error says why.
func TestIOWeight(t *testing.T) {
	m := newTestManager(t, Options{})
	err := m.Set("vhost-w", Resources{IOWeight: 500})
	if err != nil {
		for _, why := range []string{"no proportional IO scheduler", "neither io.weight nor io.bfq.weight", "controller is not available"} {
			if strings.Contains(err.Error(), why) {
				t.Skipf("kernel has no IO weight here: %v", err)
			}
		}
		t.Fatal(err)
	}
	m.placeMu.RLock()
	applied := m.groups["vhost-w"].applied
	m.placeMu.RUnlock()
	for _, s := range applied {
		if got := read(t, fileOf(t, m, "vhost-w", s.ctrl, s.file)); !strings.HasSuffix(got, strings.TrimPrefix(s.value, "default ")) {
			t.Errorf("%s = %q, want %q", s.file, got, s.value)
		}
	}
}

func TestPlaceRemoveClose(t *testing.T) {
	m := newTestManager(t, Options{})
	if err := m.Set("vhost-a", Resources{CPUWeight: 200}); err != nil {
		t.Fatal(err)
	}
	sleeper := start(t, "sleep", "600")
	pid := sleeper.Process.Pid
	for _, g := range []string{"vhost-a", HomeGroup, "vhost-a"} {
		if err := m.Place(g, pid); err != nil {
			t.Fatal(err)
		}
		if got, want := cgroupOf(t, pid, m.Version()), m.Path(g); got != want {
			t.Errorf("pid %d is in %q, want %q", pid, got, want)
		}
	}
	if m.Version() == 1 {
		// Every hierarchy, not just cpu's.
		for i, h := range m.hier {
			procs, _ := readPids(filepath.Join(h.dir(m.name, "vhost-a"), "cgroup.procs"))
			if !slices.Contains(procs, pid) {
				t.Errorf("hierarchy %d (%v): pid %d not in vhost-a: %v", i, h.ctrls, pid, procs)
			}
		}
	}
	u, err := m.Usage("vhost-a")
	if err != nil {
		t.Fatal(err)
	}
	if u.Processes != 1 {
		t.Errorf("Usage.Processes = %d, want 1", u.Processes)
	}
	// Removing a group sends its processes home.
	if err := m.Remove("vhost-a"); err != nil {
		t.Fatal(err)
	}
	if got, want := cgroupOf(t, pid, m.Version()), m.Path(HomeGroup); got != want {
		t.Errorf("after Remove pid %d is in %q, want %q", pid, got, want)
	}
	for _, d := range m.subtreeDirs() {
		if _, err := os.Stat(filepath.Join(d, "vhost-a")); err == nil {
			t.Errorf("%s/vhost-a still exists", d)
		}
	}
	if err := m.Place("vhost-a", pid); err == nil || !strings.Contains(err.Error(), "no such group") {
		t.Errorf("placing into a removed group: err = %v", err)
	}
	if err := m.Remove("vhost-a"); err != nil {
		t.Errorf("removing again: %v", err)
	}
	if err := m.Remove(HomeGroup); err == nil {
		t.Error("removed the home group")
	}

	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(sleeper.Process.Pid, patience); err != nil {
		t.Fatal(err)
	}
	if d := leftovers(m); len(d) > 0 {
		t.Errorf("left behind: %v", d)
	}
	if err := m.Place(HomeGroup, pid); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Place after Close: err = %v", err)
	}
	if err := m.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// waitExit waits for a process to be gone (or a zombie).
func waitExit(pid int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := unix.Kill(pid, 0); err == unix.ESRCH {
			return nil
		}
		if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(data), ") Z ") {
			return nil // dead, waiting to be reaped
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("pid %d survived", pid)
}

// TestCloseKillsEverything: processes in several groups, including one
// that keeps forking, all die, and no directory is left in any hierarchy.
func TestCloseKillsEverything(t *testing.T) {
	m := newTestManager(t, Options{})
	var cmds []*exec.Cmd
	for _, g := range []string{"vhost-a", "vhost-b", HomeGroup} {
		if err := m.Set(g, Resources{CPUWeight: 50}); err != nil {
			t.Fatal(err)
		}
		c := start(t, "sleep", "600")
		cmds = append(cmds, c)
		if err := m.Place(g, c.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	forker := start(t, "sh", "-c", "while :; do sleep 600 & sleep 0.01; done")
	cmds = append(cmds, forker)
	if err := m.Place("vhost-b", forker.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// Close must meet the forker at work: wait for its first child.
	for deadline := time.Now().Add(patience); ; time.Sleep(5 * time.Millisecond) {
		u, err := m.Usage("vhost-b")
		if err != nil {
			t.Fatal(err)
		}
		if u.Processes >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the forker in vhost-b made no child in %v (%d processes there)", patience, u.Processes)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if err := waitExit(c.Process.Pid, patience); err != nil {
			t.Error(err)
		}
	}
	if d := leftovers(m); len(d) > 0 {
		t.Errorf("left behind: %v", d)
	}
}

// TestCloseBoundedByContext: an expired context stops the kill loop with
// an error instead of hanging.
func TestCloseBoundedByContext(t *testing.T) {
	m := newTestManager(t, Options{})
	c := start(t, "sleep", "600")
	if err := m.Place(HomeGroup, c.Process.Pid); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	begin := time.Now()
	err := m.Close(ctx) // may or may not finish: SIGKILL is quick
	// A hang, not a slow machine, is what this bound catches.
	if d := time.Since(begin); d > patience/4 {
		t.Errorf("Close with a cancelled context took %v", d)
	}
	t.Logf("Close with a cancelled context: %v", err)
	// Close again, with time: it finishes the job.
	ctx, cancel = context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d := leftovers(m); len(d) > 0 {
		t.Errorf("left behind: %v", d)
	}
}

// TestCPUUsageAndThrottling: a busy child's CPU time shows up, and one
// capped at 10% is throttled and stays under its cap. The machine may be
// busy with other work, so it waits for evidence rather than timing it.
func TestCPUUsageAndThrottling(t *testing.T) {
	m := newTestManager(t, Options{})
	if err := m.Set("busy", Resources{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Set("capped", Resources{CPUQuotaPercent: 10}); err != nil {
		t.Fatal(err)
	}
	busy := start(t, "sh", "-c", "while :; do :; done")
	capped := start(t, "sh", "-c", "while :; do :; done")
	if err := m.Place("busy", busy.Process.Pid); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := m.Place("capped", capped.Process.Pid); err != nil {
		t.Fatal(err)
	}
	var u, cu Usage
	deadline := time.Now().Add(patience)
	for {
		var err error
		if u, err = m.Usage("busy"); err != nil {
			t.Fatal(err)
		}
		if cu, err = m.Usage("capped"); err != nil {
			t.Fatal(err)
		}
		if u.CPUUsec >= 100000 && cu.ThrottledPeriods >= 3 && cu.ThrottledUsec > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(begin)
	t.Logf("after %v: busy %+v; capped %+v", elapsed.Round(time.Millisecond), u, cu)
	if u.CPUUsec < 100000 {
		t.Errorf("a busy process used only %d µs of CPU", u.CPUUsec)
	}
	if cu.ThrottledPeriods < 3 || cu.ThrottledUsec == 0 || cu.Periods < cu.ThrottledPeriods {
		t.Errorf("a busy process capped at 10%% was not throttled: %+v", cu)
	}
	// 10% of the time, plus a period of slack.
	if limit := uint64(elapsed.Microseconds())/10 + cfsPeriodUsec; cu.CPUUsec > limit {
		t.Errorf("a process capped at 10%% used %d µs in %v (limit %d)", cu.CPUUsec, elapsed, limit)
	}
}

// TestConcurrentPlace moves processes between groups from many goroutines
// while the limits are being reloaded and a group comes and goes.
func TestConcurrentPlace(t *testing.T) {
	m := newTestManager(t, Options{})
	groups := []string{"a", "b", "c"}
	for _, g := range groups {
		if err := m.Set(g, Resources{}); err != nil {
			t.Fatal(err)
		}
	}
	var pids []int
	for range 8 {
		pids = append(pids, startSleeper(t))
	}
	stop := make(chan struct{})
	var reload sync.WaitGroup
	reload.Add(1)
	go func() {
		defer reload.Done()
		for i := uint64(1); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := m.Set("a", Resources{CPUWeight: 100 + i%100}); err != nil {
				t.Error(err)
				return
			}
			if err := m.Set("tmp", Resources{}); err != nil {
				t.Error(err)
				return
			}
			if err := m.Remove("tmp"); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 300 {
				g := groups[(i+j)%len(groups)]
				if err := m.Place(g, pids[(i*7+j)%len(pids)]); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	reload.Wait()
	for _, pid := range pids {
		got := cgroupOf(t, pid, m.Version())
		if got != m.Path("a") && got != m.Path("b") && got != m.Path("c") {
			t.Errorf("pid %d ended in %q", pid, got)
		}
	}
}

func TestPlaceErrors(t *testing.T) {
	m := newTestManager(t, Options{})
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		group string
		pid   int
		want  string
	}{
		{HomeGroup, 0, "not a server process"},
		{HomeGroup, -1, "not a server process"},
		{HomeGroup, os.Getpid(), "not a server process"},
		{"nope", 1, "no such group"},
		{HomeGroup, dead.Process.Pid, "no such process"},
	} {
		err := m.Place(tc.group, tc.pid)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Place(%q, %d) = %v, want %q", tc.group, tc.pid, err, tc.want)
		}
		if tc.want == "no such process" && !errors.Is(err, unix.ESRCH) {
			t.Errorf("Place of a dead pid: %v does not wrap ESRCH", err)
		}
	}
}

func TestBadNames(t *testing.T) {
	m := newTestManager(t, Options{})
	for _, name := range []string{"", "..", "a//b", "/a", "a/", "a/../b", ".", "../x", "-x", "a b"} {
		if err := m.Set(name, Resources{}); err == nil {
			t.Errorf("group name %q accepted", name)
		}
		if err := m.Remove(name); err == nil {
			t.Errorf("Remove(%q) accepted", name)
		}
	}
	needRoot(t)
	for _, o := range []Options{{Name: ""}, {Name: ".."}, {Name: "a/b"}, {Name: "x", Parent: "relative"}, {Name: "x", Parent: "/a/../b"}} {
		if m, err := New(context.Background(), o); err == nil {
			m.Close(context.Background())
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// TestParentCreated: a Parent that does not exist is created, and removed
// again by Close.
func TestParentCreated(t *testing.T) {
	top := "/" + testName()
	m := newTestManager(t, Options{Parent: top + "/inner"})
	if err := m.Set("vhost-a", Resources{CPUWeight: 300}); err != nil {
		t.Fatal(err)
	}
	pid := startSleeper(t)
	if err := m.Place("vhost-a", pid); err != nil {
		t.Fatal(err)
	}
	if got, want := cgroupOf(t, pid, m.Version()), top+"/inner/"+m.name+"/vhost-a"; got != want {
		t.Errorf("pid in %q, want %q", got, want)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, h := range m.hier {
		if _, err := os.Stat(filepath.Join(h.root, top)); err == nil {
			t.Errorf("%s left behind", filepath.Join(h.root, top))
		}
	}
}

// TestLeftoverSubtree: an empty leftover of the same name is replaced; one
// with processes in it belongs to someone else and is left alone.
func TestLeftoverSubtree(t *testing.T) {
	m := newTestManager(t, Options{})
	name := testName()
	// A leftover with a group but no process.
	for _, h := range m.hier {
		if err := os.MkdirAll(h.dir(name, "vhost-old"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m2 := newTestManager(t, Options{Name: name})
	for _, d := range m2.subtreeDirs() {
		if _, err := os.Stat(filepath.Join(d, "vhost-old")); err == nil {
			t.Errorf("leftover %s/vhost-old kept", d)
		}
	}
	// A live one.
	pid := startSleeper(t)
	if err := m2.Place(HomeGroup, pid); err != nil {
		t.Fatal(err)
	}
	if m3, err := New(context.Background(), Options{Name: name}); err == nil {
		m3.Close(context.Background())
		t.Fatal("New took over a subtree with processes in it")
	} else if !strings.Contains(err.Error(), "holds processes") {
		t.Errorf("err = %v", err)
	}
	if err := unix.Kill(pid, 0); err != nil {
		t.Errorf("the failed New harmed the other subtree's process: %v", err)
	}
	if got := cgroupOf(t, pid, m2.Version()); got != m2.Path(HomeGroup) {
		t.Errorf("the other subtree's process moved to %q", got)
	}
}

func BenchmarkPlace(b *testing.B) {
	m := newTestManager(b, Options{})
	for _, g := range []string{"a", "b"} {
		if err := m.Set(g, Resources{}); err != nil {
			b.Fatal(err)
		}
	}
	pid := startSleeper(b)
	groups := [2]string{"a", "b"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := m.Place(groups[i&1], pid); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(len(m.hier)), "writes/op")
}
