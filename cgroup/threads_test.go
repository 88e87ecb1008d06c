package cgroup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Thread placement, for real: a child process with a few OS threads of
// its own (this test binary run again as TestThreadsHelperProcess), some
// of them placed into groups one by one, read back from
// /proc/PID/task/TID/cgroup. On the host's layout (v1 and hybrid here,
// unified v2 in the project's VM) and, where the host is not unified, on
// its cgroup2 mount too, where what needs no controller is real (the
// threaded subtree, cgroup.threads, moving processes into it); the limits
// of the twins need the cpu and pids controllers, so the VM proves them.

// TestThreadsHelperProcess is no test: it is the child threadedChild
// starts. It locks VHQOS_TEST_THREADS goroutines to OS threads of their
// own, prints their thread ids on one line and waits to be killed; with
// VHQOS_TEST_SPIN the threads spin.
func TestThreadsHelperProcess(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("VHQOS_TEST_THREADS"))
	if n <= 0 {
		t.Skip("the child process of threadedChild")
	}
	spin := os.Getenv("VHQOS_TEST_SPIN") != ""
	tids := make(chan int)
	for range n {
		go func() {
			runtime.LockOSThread()
			tids <- unix.Gettid()
			if spin {
				for {
				}
			}
			select {}
		}()
	}
	var line []string
	for range n {
		line = append(line, strconv.Itoa(<-tids))
	}
	fmt.Println(strings.Join(line, " "))
	select {}
}

// threadedChild starts a process with n threads of its own besides the
// Go runtime's and returns its pid and those threads' ids. It is killed
// when the test ends.
func threadedChild(t testing.TB, n int, spin bool) (int, []int) {
	t.Helper()
	c := exec.Command(os.Args[0], "-test.run=^TestThreadsHelperProcess$", "-test.count=1")
	c.Env = append(os.Environ(), "VHQOS_TEST_THREADS="+strconv.Itoa(n), fmt.Sprintf("GOMAXPROCS=%d", n+2))
	if spin {
		c.Env = append(c.Env, "VHQOS_TEST_SPIN=1")
	}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		<-done
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		for sc.Scan() {
		}
		c.Wait()
		close(done)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(patience):
		t.Fatal("the threaded child printed no thread ids")
	}
	var tids []int
	for _, f := range strings.Fields(line) {
		tid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("the threaded child printed %q", line)
		}
		tids = append(tids, tid)
	}
	if len(tids) != n {
		t.Fatalf("the threaded child printed %q, want %d thread ids", line, n)
	}
	return c.Process.Pid, tids
}

// taskCgroups is a thread's /proc/PID/task/TID/cgroup: its cgroup by
// controller, "" for the v2 line.
func taskCgroups(t testing.TB, pid, tid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", pid, tid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out
}

// tasksOf lists the threads of pid.
func tasksOf(t testing.TB, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	return out
}

// threadLayout is a cgroup layout the thread tests run on.
type threadLayout struct {
	name string
	lay  layout
	opts Options // Parent: the caller's cgroup on the host's layout, the root of a forced v2 mount
}

// threadLayouts are the host's layout and, when that is not unified, the
// cgroup2 mount beside it.
func threadLayouts(t *testing.T) []threadLayout {
	needRoot(t)
	host, err := hostLayout()
	if err != nil {
		t.Fatal(err)
	}
	name := "v1"
	if host.v2mount != "" {
		name = "v2"
	}
	out := []threadLayout{{name: name, lay: host}}
	if host.v2mount == "" {
		for _, p := range []string{"/sys/fs/cgroup/unified"} {
			var st unix.Statfs_t
			if err := unix.Statfs(p, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
				out = append(out, threadLayout{name: "v2 at " + p, lay: layout{v2mount: p}, opts: Options{Parent: "/"}})
			}
		}
	}
	return out
}

// forThreadLayouts runs f as a subtest on each of threadLayouts.
func forThreadLayouts(t *testing.T, f func(t *testing.T, tl threadLayout)) {
	for _, tl := range threadLayouts(t) {
		t.Run(tl.name, func(t *testing.T) { f(t, tl) })
	}
}

// closeKills closes m, which must kill pids and leave no cgroup behind.
func closeKills(t testing.TB, m *Manager, pids ...int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if err := waitExit(pid, patience); err != nil {
			t.Error(err)
		}
	}
	if d := leftovers(m); len(d) > 0 {
		t.Errorf("left behind: %v", d)
	}
}

// newThreadManager makes a manager on tl with Options.Threads (unless
// opts says otherwise through tl) and cleans it up like newTestManager.
func newThreadManager(t testing.TB, tl threadLayout, threads bool) *Manager {
	t.Helper()
	opts := tl.opts
	opts.Name = testName()
	opts.Threads = threads
	m, err := newManager(context.Background(), opts, tl.lay)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	cleanupManager(t, m)
	return m
}

// where says where a thread is, as a user reading /proc would: the v2
// line, or under v1 the line of every hierarchy m uses (memory apart).
func where(t testing.TB, m *Manager, pid, tid int) (perThread string, memory string) {
	t.Helper()
	cg := taskCgroups(t, pid, tid)
	if m.version == 2 {
		return cg[""], ""
	}
	perThread = cg["cpu"]
	for _, c := range []string{"cpuacct", "blkio", "pids"} {
		if _, ok := m.ctrlHier[c]; ok && cg[c] != perThread {
			return fmt.Sprintf("cpu %s but %s %s", perThread, c, cg[c]), cg["memory"]
		}
	}
	return perThread, cg["memory"]
}

func TestPlaceThread(t *testing.T) {
	forThreadLayouts(t, func(t *testing.T, tl threadLayout) {
		m := newThreadManager(t, tl, true)
		for _, g := range []string{DefaultGroup, "vhost-a", "vhost-b"} {
			if err := m.Set(g, Resources{}); err != nil {
				t.Fatal(err)
			}
		}
		pid, tids := threadedChild(t, 4, false)
		// The server's process starts in home, as Place puts it.
		if err := m.Place(HomeGroup, pid); err != nil {
			t.Fatal(err)
		}
		_, memHome := where(t, m, pid, pid)
		placed := map[int]string{tids[0]: "vhost-a", tids[1]: "vhost-b", tids[2]: "vhost-a"}
		for _, tid := range tids[:3] {
			if err := m.PlaceThread(placed[tid], pid, tid); err != nil {
				t.Fatal(err)
			}
		}
		all := tasksOf(t, pid)
		check := func(step string) {
			t.Helper()
			for _, tid := range all {
				want := m.ThreadPath(HomeGroup)
				if g, ok := placed[tid]; ok {
					want = m.ThreadPath(g)
				}
				got, mem := where(t, m, pid, tid)
				if got != want {
					t.Errorf("%s: thread %d is in %s, want %s", step, tid, got, want)
				}
				if m.version == 1 && mem != memHome {
					t.Errorf("%s: thread %d is in memory cgroup %s, want its process's %s", step, tid, mem, memHome)
				}
			}
		}
		check("placed")
		for _, tc := range []struct {
			group   string
			threads int
		}{{"vhost-a", 2}, {"vhost-b", 1}, {DefaultGroup, 0}, {HomeGroup, len(all) - 3}} {
			u, err := m.Usage(tc.group)
			if err != nil {
				t.Fatal(err)
			}
			most := tc.threads
			if tc.group == HomeGroup {
				// The child's Go runtime may start a thread of its own
				// at any time, and it is born beside its creator, at
				// home; runtime threads never end, so the count read
				// after Usage bounds it.
				most = len(tasksOf(t, pid)) - 3
			}
			if u.Threads < tc.threads || u.Threads > most {
				t.Errorf("Usage(%s).Threads = %d, want %d (%d with threads started since)", tc.group, u.Threads, tc.threads, most)
			}
		}
		// Placing a thread again where it is, or elsewhere, moves it
		// alone.
		placed[tids[2]] = "vhost-b"
		if err := m.PlaceThread("vhost-b", pid, tids[2]); err != nil {
			t.Fatal(err)
		}
		if err := m.PlaceThread("vhost-b", pid, tids[2]); err != nil {
			t.Fatal(err)
		}
		check("moved")
		if err := m.Remove("vhost-a"); err != nil {
			t.Fatal(err)
		}
		delete(placed, tids[0])
		check("vhost-a removed")
		if err := m.RemoveTo("vhost-b", DefaultGroup); err != nil {
			t.Fatal(err)
		}
		placed[tids[1]], placed[tids[2]] = DefaultGroup, DefaultGroup
		check("vhost-b removed to default")
		if m.version == 2 {
			for _, g := range []string{"vhost-a", "vhost-b"} {
				if d := filepath.Join(m.threadRoot, g); exists(t, d) {
					t.Errorf("%s left behind by Remove", d)
				}
			}
		}
		// Place moves the process whole again, out of the threaded
		// subtree under v2.
		if err := m.Place(DefaultGroup, pid); err != nil {
			t.Fatal(err)
		}
		for _, tid := range all {
			if got, _ := where(t, m, pid, tid); got != m.Path(DefaultGroup) {
				t.Errorf("after Place thread %d is in %s, want %s", tid, got, m.Path(DefaultGroup))
			}
		}
		closeKills(t, m, pid)
	})
}

func TestPlaceThreadErrors(t *testing.T) {
	forThreadLayouts(t, func(t *testing.T, tl threadLayout) {
		m := newThreadManager(t, tl, true)
		off := newThreadManager(t, tl, false)
		if m.version == 2 && exists(t, off.hier[0].dir(off.name, threadsDir)) {
			t.Errorf("a manager without Options.Threads made %s", off.hier[0].dir(off.name, threadsDir))
		}
		pid, tids := threadedChild(t, 2, false)
		other, otherTids := threadedChild(t, 1, false)
		for _, mm := range []*Manager{off, m} {
			for _, p := range []int{pid, other} {
				if err := mm.Place(HomeGroup, p); err != nil {
					t.Fatal(err)
				}
			}
		}
		dead := exec.Command("true")
		if err := dead.Run(); err != nil {
			t.Fatal(err)
		}
		gone := dead.Process.Pid
		for _, tc := range []struct {
			name      string
			m         *Manager
			group     string
			tgid, tid int
			want      string
			esrch     bool
		}{
			{"no thread", m, HomeGroup, pid, 0, "not a server thread", false},
			{"no process", m, HomeGroup, 0, tids[0], "not a server thread", false},
			{"the manager's own", m, HomeGroup, os.Getpid(), unix.Gettid(), "not a server thread", false},
			{"no group", m, "vhost-nope", pid, tids[0], "no such group", false},
			{"not enabled", off, HomeGroup, pid, tids[0], "not enabled", false},
			{"gone", m, HomeGroup, gone, gone, "", true},
			{"gone thread of a live process", m, HomeGroup, pid, gone, "", true},
		} {
			err := tc.m.PlaceThread(tc.group, tc.tgid, tc.tid)
			switch {
			case err == nil:
				t.Errorf("%s: PlaceThread(%q, %d, %d) succeeded", tc.name, tc.group, tc.tgid, tc.tid)
			case tc.esrch != errors.Is(err, unix.ESRCH):
				t.Errorf("%s: %v: wraps ESRCH %v, want %v", tc.name, err, !tc.esrch, tc.esrch)
			case !strings.Contains(err.Error(), tc.want):
				t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			}
		}
		// A thread id of another process: under v2 the move of the
		// whole process that would precede it must not take the wrong
		// one (under v1 tasks takes any thread, as the caller says).
		if m.version == 2 {
			err := m.PlaceThread(HomeGroup, pid, otherTids[0])
			if err == nil || errors.Is(err, unix.ESRCH) || !strings.Contains(err.Error(), "not a thread of") {
				t.Errorf("a thread of another process: %v", err)
			}
			if got := v2Line(t, pid); got != m.Path(HomeGroup) {
				t.Errorf("pid %d moved to %s", pid, got)
			}
			// A process that is gone, named with a live thread of
			// another: ESRCH, which the supervisor does not count as a
			// failure, and the other process stays where it is.
			err = m.PlaceThread(HomeGroup, gone, otherTids[0])
			if !errors.Is(err, unix.ESRCH) || !strings.Contains(err.Error(), fmt.Sprintf(": process %d is gone", gone)) {
				t.Errorf("a gone process with a live thread of another: %v", err)
			}
			if got := v2Line(t, other); got != m.Path(HomeGroup) {
				t.Errorf("pid %d moved to %s", other, got)
			}
		}
		// A removed group is refused as one never made, and the thread
		// placed there went home with Remove.
		r := VHostGroup("r")
		if err := m.Set(r, Resources{}); err != nil {
			t.Fatal(err)
		}
		if err := m.PlaceThread(r, pid, tids[1]); err != nil {
			t.Fatal(err)
		}
		if err := m.Remove(r); err != nil {
			t.Fatal(err)
		}
		if err := m.PlaceThread(r, pid, tids[1]); err == nil || !strings.Contains(err.Error(), "no such group") {
			t.Errorf("placing into a removed group: %v", err)
		}
		if got, _ := where(t, m, pid, tids[1]); got != m.ThreadPath(HomeGroup) {
			t.Errorf("after Remove thread %d is in %s, want %s", tids[1], got, m.ThreadPath(HomeGroup))
		}
		closeKills(t, m, pid, other)
		if err := m.PlaceThread(HomeGroup, pid, tids[0]); err == nil || !strings.Contains(err.Error(), "closed") {
			t.Errorf("PlaceThread after Close: %v", err)
		}
	})
}

// TestThreadTwinLimits: the cgroup a placed thread sits in has its group's
// cpu and pids limits, nested under a tenant's, and loses them with Set.
func TestThreadTwinLimits(t *testing.T) {
	forThreadLayouts(t, func(t *testing.T, tl threadLayout) {
		if tl.lay.v2mount != "" && (!rootHas(t, tl.lay.v2mount, "cpu") || !rootHas(t, tl.lay.v2mount, "pids")) {
			t.Skip(tl.lay.v2mount + " offers no cpu and pids controllers (the VM's v2 has them)")
		}
		m := newThreadManager(t, tl, true)
		tenant := TenantGroup("t")
		site := tenant + "/" + VHostGroup("x")
		steps := []struct {
			group string
			r     Resources
		}{
			{VHostGroup("a"), Resources{CPUWeight: 400, CPUQuotaPercent: 50, TasksMax: 20}},
			{tenant, Resources{CPUQuotaPercent: 30}},
			{site, Resources{CPUWeight: 200, CPUQuotaPercent: 80}},
		}
		for _, s := range steps {
			if err := m.Set(s.group, s.r); err != nil {
				t.Fatal(err)
			}
		}
		pid, tids := threadedChild(t, 2, false)
		if err := m.Place(HomeGroup, pid); err != nil {
			t.Fatal(err)
		}
		if err := m.PlaceThread(VHostGroup("a"), pid, tids[0]); err != nil {
			t.Fatal(err)
		}
		if err := m.PlaceThread(site, pid, tids[1]); err != nil {
			t.Fatal(err)
		}
		// The files of the cgroup each thread is in, found from /proc.
		file := func(tid int, ctrl, name string) string {
			t.Helper()
			cg := taskCgroups(t, pid, tid)
			if m.version == 2 {
				return read(t, filepath.Join(m.hier[0].root, cg[""], name))
			}
			i, ok := m.ctrlHier[ctrl]
			if !ok {
				t.Skipf("no v1 %s hierarchy", ctrl)
			}
			return read(t, filepath.Join(m.hier[i].root, cg[ctrl], name))
		}
		type want struct {
			tid              int
			weight, max, pid string
		}
		var wants []want
		if m.version == 2 {
			wants = []want{{tids[0], "400", "50000 100000", "20"}, {tids[1], "200", "80000 100000", "max"}}
		} else {
			// v1 clamps a site's quota to its tenant's (nested.go).
			wants = []want{{tids[0], "4096", "50000", "20"}, {tids[1], "2048", "30000", "max"}}
		}
		check := func(step string) {
			t.Helper()
			for _, w := range wants {
				weightFile, maxFile := "cpu.weight", "cpu.max"
				if m.version == 1 {
					weightFile, maxFile = "cpu.shares", "cpu.cfs_quota_us"
				}
				weight, max := file(w.tid, "cpu", weightFile), file(w.tid, "cpu", maxFile)
				if weight != w.weight || max != w.max {
					t.Errorf("%s: thread %d's cgroup has weight %s, max %s; want %s, %s", step, w.tid, weight, max, w.weight, w.max)
				}
				if p := file(w.tid, "pids", "pids.max"); p != w.pid {
					t.Errorf("%s: thread %d's cgroup has pids.max %s, want %s", step, w.tid, p, w.pid)
				}
			}
		}
		check("set")
		if m.version == 2 {
			for _, g := range []string{VHostGroup("a"), tenant, site} {
				dir := filepath.Join(m.threadRoot, g)
				if typ := read(t, filepath.Join(dir, "cgroup.type")); typ != "threaded" {
					t.Errorf("%s has cgroup.type %q", dir, typ)
				}
			}
			if got := read(t, filepath.Join(m.threadRoot, tenant, "cpu.max")); got != "30000 100000" {
				t.Errorf("the tenant's twin has cpu.max %q", got)
			}
		}
		// A domain controller turned on once threads are placed (here
		// memory, for a memory limit) leaves them where they are, and
		// the twins without it.
		if tl.lay.v2mount == "" || rootHas(t, tl.lay.v2mount, "memory") {
			if err := m.Set(VHostGroup("m"), Resources{MemoryMax: 64 << 20}); err != nil {
				t.Fatal(err)
			}
			if got := read(t, fileOf(t, m, VHostGroup("m"), "memory", map[int]string{1: "memory.limit_in_bytes", 2: "memory.max"}[m.version])); got != strconv.Itoa(64<<20) {
				t.Errorf("memory limit %s", got)
			}
			if err := m.PlaceThread(VHostGroup("m"), pid, tids[0]); err != nil {
				t.Fatal(err)
			}
			if err := m.PlaceThread(VHostGroup("a"), pid, tids[0]); err != nil {
				t.Fatal(err)
			}
			check("memory enabled")
			if m.version == 2 && exists(t, filepath.Join(m.threadRoot, VHostGroup("m"), "memory.max")) {
				t.Errorf("the twin of %s has memory.max", VHostGroup("m"))
			}
		}
		// An attached manager (the supervisor) takes over and drops
		// the limits.
		a := attachThreads(t, m, tl, false)
		wants = []want{{tids[0], "100", "max 100000", "max"}, {tids[1], "100", "max 100000", "max"}}
		if m.version == 1 {
			wants = []want{{tids[0], "1024", "-1", "max"}, {tids[1], "1024", "-1", "max"}}
		}
		for _, s := range steps {
			if err := a.Set(s.group, Resources{}); err != nil {
				t.Fatal(err)
			}
		}
		check("reset by an attached manager")
	})
}

// attachThreads attaches to owner's subtree on tl, as the supervisor does.
func attachThreads(t testing.TB, owner *Manager, tl threadLayout, threads bool) *Manager {
	t.Helper()
	opts := tl.opts
	opts.Name, opts.Attach, opts.Threads = owner.name, true, threads
	m, err := newManager(context.Background(), opts, tl.lay)
	if err != nil {
		t.Fatalf("attaching: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("attached Close: %v", err)
		}
	})
	return m
}

// TestAttachThreads: a supervisor attached to a keeper's subtree makes the
// threaded twins when the keeper did not, places threads there, and
// leaves them for the keeper's Close, which removes everything.
func TestAttachThreads(t *testing.T) {
	forThreadLayouts(t, func(t *testing.T, tl threadLayout) {
		owner := newThreadManager(t, tl, false)
		if err := owner.Set(VHostGroup("a"), Resources{}); err != nil {
			t.Fatal(err)
		}
		pid, tids := threadedChild(t, 2, false)
		if err := owner.Place(HomeGroup, pid); err != nil {
			t.Fatal(err)
		}
		sup := attachThreads(t, owner, tl, true)
		if err := sup.Set(VHostGroup("b"), Resources{}); err != nil {
			t.Fatal(err)
		}
		for i, g := range []string{VHostGroup("a"), VHostGroup("b")} {
			if err := sup.PlaceThread(g, pid, tids[i]); err != nil {
				t.Fatal(err)
			}
			if got, _ := where(t, sup, pid, tids[i]); got != sup.ThreadPath(g) {
				t.Errorf("thread %d in %s, want %s", tids[i], got, sup.ThreadPath(g))
			}
		}
		if err := sup.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		// The next supervisor finds the twins under v2 without asking
		// for them (under v1 there is nothing to find).
		next := attachThreads(t, owner, tl, owner.version == 1)
		if err := next.PlaceThread(VHostGroup("a"), pid, tids[1]); err != nil {
			t.Fatal(err)
		}
		if got, _ := where(t, next, pid, tids[1]); got != next.ThreadPath(VHostGroup("a")) {
			t.Errorf("thread %d in %s, want %s", tids[1], got, next.ThreadPath(VHostGroup("a")))
		}
		if u, err := next.Usage(VHostGroup("a")); err != nil || u.Threads != 2 {
			t.Errorf("Usage = %+v, %v; want 2 threads", u, err)
		}
		if err := next.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got, _ := where(t, owner, pid, tids[0]); got != owner.ThreadPath(VHostGroup("a")) {
			t.Errorf("after the attached Closes thread %d is in %s", tids[0], got)
		}
		closeKills(t, owner, pid)
	})
}

// TestPlaceThreadConcurrent: two threads of a process in a domain group,
// placed at the same moment into two groups, each end where they were
// put: under v2 the first to bring the process into the threaded subtree
// must not undo the other's placement.
func TestPlaceThreadConcurrent(t *testing.T) {
	forThreadLayouts(t, func(t *testing.T, tl threadLayout) {
		m := newThreadManager(t, tl, true)
		groups := []string{VHostGroup("a"), VHostGroup("b"), VHostGroup("c"), VHostGroup("d")}
		for _, g := range groups {
			if err := m.Set(g, Resources{}); err != nil {
				t.Fatal(err)
			}
		}
		pid, tids := threadedChild(t, len(groups), false)
		for round := range 40 {
			if err := m.Place(HomeGroup, pid); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, tid := range tids {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if err := m.PlaceThread(groups[(i+round)%len(groups)], pid, tid); err != nil {
						t.Error(err)
					}
				}()
			}
			close(start)
			wg.Wait()
			for i, tid := range tids {
				want := m.ThreadPath(groups[(i+round)%len(groups)])
				if got, _ := where(t, m, pid, tid); got != want {
					t.Fatalf("round %d: thread %d in %s, want %s", round, tid, got, want)
				}
			}
		}
	})
}

// TestThreadCPUWeight: two spinning threads of one process, on one CPU,
// placed in groups of cpu_weight 400 and 100, get CPU time 4:1, and
// Usage counts each thread's time in its group.
func TestThreadCPUWeight(t *testing.T) {
	forThreadLayouts(t, func(t *testing.T, tl threadLayout) {
		if tl.lay.v2mount != "" && !rootHas(t, tl.lay.v2mount, "cpu") {
			t.Skip(tl.lay.v2mount + " offers no cpu controller (the VM's v2 has it)")
		}
		m := newThreadManager(t, tl, true)
		heavy, light := VHostGroup("heavy"), VHostGroup("light")
		if err := m.Set(heavy, Resources{CPUWeight: 400}); err != nil {
			t.Fatal(err)
		}
		if err := m.Set(light, Resources{CPUWeight: 100}); err != nil {
			t.Fatal(err)
		}
		pid, tids := threadedChild(t, 2, true)
		if err := m.Place(HomeGroup, pid); err != nil {
			t.Fatal(err)
		}
		// Both on the same CPU, so that they compete there.
		var mine, one unix.CPUSet
		if err := unix.SchedGetaffinity(0, &mine); err != nil {
			t.Fatal(err)
		}
		for cpu := 0; ; cpu++ {
			if mine.IsSet(cpu) {
				one.Set(cpu)
				break
			}
		}
		for _, tid := range tids {
			if err := unix.SchedSetaffinity(tid, &one); err != nil {
				t.Fatal(err)
			}
		}
		before := map[string]uint64{}
		for i, g := range []string{heavy, light} {
			if err := m.PlaceThread(g, pid, tids[i]); err != nil {
				t.Fatal(err)
			}
		}
		for _, g := range []string{heavy, light} {
			u, err := m.Usage(g)
			if err != nil {
				t.Fatal(err)
			}
			before[g] = u.CPUUsec
		}
		var h, l uint64
		deadline := time.Now().Add(patience)
		for {
			uh, err := m.Usage(heavy)
			if err != nil {
				t.Fatal(err)
			}
			ul, err := m.Usage(light)
			if err != nil {
				t.Fatal(err)
			}
			h, l = uh.CPUUsec-before[heavy], ul.CPUUsec-before[light]
			if h+l >= 3e6 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		ratio := float64(h) / float64(max(l, 1))
		t.Logf("heavy %d µs, light %d µs: %.2f:1", h, l, ratio)
		if h+l < 3e6 {
			t.Fatalf("the threads used only %d µs of CPU in %v", h+l, patience)
		}
		// Within 25%: on a busy host other tasks share the CPU, and
		// each of their wake-ups costs both threads a slice; 3.5:1
		// was seen there, 4.00:1 in the VM (without placement: 1:1).
		if ratio < 3 || ratio > 5 {
			t.Errorf("CPU split %.2f:1, want 4:1 within 25%%", ratio)
		}
	})
}

// TestThreadsReservedName: the threaded subtree is no group: Set refuses
// its name and an attached manager does not take it for groups.
func TestThreadsReservedName(t *testing.T) {
	forThreadLayouts(t, func(t *testing.T, tl threadLayout) {
		m := newThreadManager(t, tl, true)
		for _, g := range []string{threadsDir, threadsDir + "/x"} {
			if err := m.Set(g, Resources{}); err == nil || !strings.Contains(err.Error(), "threaded subtree") {
				t.Errorf("Set(%q) = %v", g, err)
			}
		}
		if m.version == 2 && !slices.Equal(m.Groups(), []string{HomeGroup}) {
			t.Errorf("Groups() = %v", m.Groups())
		}
		if m.version == 2 {
			a := attachThreads(t, m, tl, false)
			if !slices.Equal(a.Groups(), []string{HomeGroup}) {
				t.Errorf("attached Groups() = %v: the threaded subtree was taken for groups", a.Groups())
			}
			if want := path.Join(m.hier[0].parent, m.name, threadsDir, HomeGroup); a.ThreadPath(HomeGroup) != want {
				t.Errorf("ThreadPath = %q, want %q", a.ThreadPath(HomeGroup), want)
			}
		}
	})
}

func BenchmarkPlaceThread(b *testing.B) {
	host, err := hostLayout()
	if err != nil {
		b.Fatal(err)
	}
	tl := threadLayout{lay: host}
	if v := os.Getenv("VHQOS_BENCH_V2"); v != "" {
		tl = threadLayout{lay: layout{v2mount: v}, opts: Options{Parent: "/"}}
	}
	needRoot(b)
	m := newThreadManager(b, tl, true)
	for _, g := range []string{"a", "b"} {
		if err := m.Set(g, Resources{}); err != nil {
			b.Fatal(err)
		}
	}
	pid, tids := threadedChild(b, 1, false)
	if err := m.Place(HomeGroup, pid); err != nil {
		b.Fatal(err)
	}
	b.Run("Place", func(b *testing.B) {
		groups := [2]string{"a", "b"}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := m.Place(groups[i&1], pid); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("PlaceThread", func(b *testing.B) {
		if err := m.PlaceThread(HomeGroup, pid, tids[0]); err != nil {
			b.Fatal(err) // into the threaded subtree once
		}
		groups := [2]string{"a", "b"}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := m.PlaceThread(groups[i&1], pid, tids[0]); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(len(m.groups["a"].threadFiles)), "writes/op")
	})
	if m.version == 2 {
		// A process placed whole, then one of its threads: the way into
		// the threaded subtree (enterThreaded), Place's cost included.
		b.Run("PlaceThenPlaceThread", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := m.Place(HomeGroup, pid); err != nil {
					b.Fatal(err)
				}
				if err := m.PlaceThread("a", pid, tids[0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestRemoveStaleThreads: the subtree of a dead keeper with placed threads
// in it (under v2 a threaded subtree, whose cgroups list no processes) is
// removed, and its processes are killed.
func TestRemoveStaleThreads(t *testing.T) {
	forThreadLayouts(t, func(t *testing.T, tl threadLayout) {
		parent := "/" + testName()
		t.Cleanup(func() { // after the owner's Close
			for _, pat := range []string{"/sys/fs/cgroup" + parent, "/sys/fs/cgroup/*" + parent} {
				dirs, _ := filepath.Glob(pat)
				for _, d := range dirs {
					if err := unix.Rmdir(d); err != nil {
						t.Errorf("removing %s: %v", d, err)
					}
				}
			}
		})
		opts := Options{Parent: parent, Name: "vhqos." + strconv.Itoa(deadPID(t)), Threads: true}
		m, err := newManager(context.Background(), opts, tl.lay)
		if err != nil {
			t.Fatal(err)
		}
		cleanupManager(t, m)
		if err := m.Set(VHostGroup("a"), Resources{}); err != nil {
			t.Fatal(err)
		}
		pid, tids := threadedChild(t, 2, false)
		if err := m.Place(HomeGroup, pid); err != nil {
			t.Fatal(err)
		}
		if err := m.PlaceThread(VHostGroup("a"), pid, tids[0]); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		removed, err := removeStale(ctx, parent, nil, tl.lay)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(removed, m.subtreeDirs()) {
			t.Errorf("removed %v, want %v", removed, m.subtreeDirs())
		}
		if err := waitExit(pid, patience); err != nil {
			t.Error(err)
		}
		if d := leftovers(m); len(d) > 0 {
			t.Errorf("left behind: %v", d)
		}
	})
}
