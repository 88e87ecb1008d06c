package cgroup

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The v2 backend, forced onto a real cgroup2 hierarchy whatever the host's
// mode: on a hybrid host /sys/fs/cgroup/unified, where every controller is
// bound to v1, so what needs no controller (creating groups, cgroup.procs,
// cgroup.kill, the supervisor's leaf, refusing a shared Parent, the errors
// for missing controllers) is tested for real; on a unified host (the
// project's VM) /sys/fs/cgroup, where the same tests also enable
// controllers. Limits under v2 are proven by manager_test.go in the VM.

// v2Mount finds a cgroup2 hierarchy to test on.
func v2Mount(t testing.TB) string {
	t.Helper()
	needRoot(t)
	for _, p := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p
		}
	}
	t.Skip("no cgroup2 hierarchy mounted")
	return ""
}

// rootHas says whether the hierarchy's root offers a controller.
func rootHas(t testing.TB, mount, ctrl string) bool {
	words, err := readWords(filepath.Join(mount, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	return contains(words, ctrl)
}

func newV2(t testing.TB, opts Options) (*Manager, error) {
	t.Helper()
	mount := v2Mount(t)
	if opts.Name == "" {
		opts.Name = testName()
	}
	m, err := newManager(context.Background(), opts, layout{v2mount: mount})
	if err == nil {
		cleanupManager(t, m)
	}
	return m, err
}

// v2Line is pid's "0::" cgroup.
func v2Line(t testing.TB, pid int) string { return cgroupOf(t, pid, 2) }

func TestV2PlaceRemoveClose(t *testing.T) {
	m, err := newV2(t, Options{Parent: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Version() != 2 {
		t.Fatalf("Version = %d", m.Version())
	}
	if err := m.Set("vhost-a", Resources{}); err != nil {
		t.Fatal(err)
	}
	keep := start(t, "sleep", "600")
	left := start(t, "sh", "-c", "sleep 600 & sleep 600")
	for _, p := range []struct {
		group string
		pid   int
	}{{"vhost-a", keep.Process.Pid}, {HomeGroup, left.Process.Pid}, {"vhost-a", left.Process.Pid}} {
		if err := m.Place(p.group, p.pid); err != nil {
			t.Fatal(err)
		}
		if got, want := v2Line(t, p.pid), "/"+m.name+"/"+p.group; got != want || m.Path(p.group) != want {
			t.Errorf("pid %d in %q, Path %q, want %q", p.pid, got, m.Path(p.group), want)
		}
	}
	if err := m.Remove("vhost-a"); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{keep.Process.Pid, left.Process.Pid} {
		if got := v2Line(t, pid); got != m.Path(HomeGroup) {
			t.Errorf("after Remove pid %d is in %q", pid, got)
		}
	}
	u, err := m.Usage(HomeGroup)
	if err != nil {
		t.Fatal(err)
	}
	if u.Processes < 2 || u.IO && !rootHas(t, m.hier[0].root, "io") {
		t.Errorf("Usage = %+v, want at least 2 processes (and no IO accounting without an io controller)", u)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*os.Process{keep.Process, left.Process} {
		if err := waitExit(c.Pid, patience); err != nil {
			t.Error(err)
		}
	}
	if d := leftovers(m); len(d) > 0 {
		t.Errorf("left behind: %v", d)
	}
}

func TestV2MissingControllers(t *testing.T) {
	if mount := v2Mount(t); rootHas(t, mount, "cpu") || rootHas(t, mount, "io") || rootHas(t, mount, "memory") || rootHas(t, mount, "pids") {
		t.Skip(mount + " offers controllers (TestV2EnableChain covers the error)")
	}
	m, err := newV2(t, Options{Parent: "/"})
	if err != nil {
		t.Fatal(err)
	}
	dev := DeviceLimit{Path: "/dev/vda", Major: 254, ReadBPS: 1}
	for _, tc := range []struct {
		r    Resources
		ctrl string
	}{
		{Resources{CPUWeight: 200}, "cpu"},
		{Resources{CPUQuotaPercent: 50}, "cpu"},
		{Resources{IOWeight: 300}, "io"},
		{Resources{Devices: []DeviceLimit{dev}}, "io"},
		{Resources{MemoryMax: 64 << 20}, "memory"},
		{Resources{MemoryHigh: 64 << 20}, "memory"},
		{Resources{TasksMax: 5}, "pids"},
	} {
		err := m.Set("vhost-a", tc.r)
		if err == nil {
			t.Errorf("Set(%+v) succeeded without the %s controller", tc.r, tc.ctrl)
			continue
		}
		msg := err.Error()
		// The table key that needs it comes first.
		for _, want := range []string{keysNeeding(tc.r, tc.ctrl) + ": the cgroup v2 " + tc.ctrl + " controller is not available", filepath.Join(m.hier[0].root, "cgroup.controllers")} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not say %q", msg, want)
			}
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("error is not one line: %q", msg)
		}
	}
	// Nothing half-done: the group exists, limits-free, and works.
	pid := startSleeper(t)
	if err := m.Place("vhost-a", pid); err != nil {
		t.Error(err)
	}
}

// moveTo puts this test process into a fresh cgroup of the v2 hierarchy,
// and back (removing it) when the test ends.
func moveTo(t testing.TB, mount, rel string) string {
	t.Helper()
	was := filepath.Join(mount, v2Line(t, os.Getpid()))
	dir := filepath.Join(mount, rel)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := writeFile(filepath.Join(was, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
			t.Errorf("moving back to %s: %v", was, err)
		}
		if err := removeTree(context.Background(), dir); err != nil {
			t.Error(err)
		}
	})
	if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestV2SupervisorLeaf: with Parent "" in a non-root cgroup, the supervisor
// moves into <Name>.supervisor next to its subtree, controllers are enabled
// from its old cgroup down (where the host has them), and Close gives them
// back and moves the supervisor back.
func TestV2SupervisorLeaf(t *testing.T) {
	mount := v2Mount(t)
	withCPU := rootHas(t, mount, "cpu")
	if withCPU {
		// Stand in for systemd delegating cpu to our cgroup.
		rootCtl := filepath.Join(mount, "cgroup.subtree_control")
		if on, _ := readWords(rootCtl); !contains(on, "cpu") {
			if err := writeFile(rootCtl, "+cpu"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { writeFile(rootCtl, "-cpu") })
		}
	}
	own := "/" + testName()
	ownDir := moveTo(t, mount, own)
	name := testName()
	m, err := newV2(t, Options{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	leaf := filepath.Join(ownDir, name+".supervisor")
	if m.v2.leaf != leaf {
		t.Errorf("leaf = %q, want %q", m.v2.leaf, leaf)
	}
	if got := v2Line(t, os.Getpid()); got != own+"/"+name+".supervisor" {
		t.Errorf("supervisor is in %q", got)
	}
	// Every thread moved, not only the one that wrote.
	threads, _ := os.ReadDir("/proc/self/task")
	for _, th := range threads {
		data, _ := os.ReadFile("/proc/self/task/" + th.Name() + "/cgroup")
		if !strings.Contains(string(data), "0::"+own+"/"+name+".supervisor\n") {
			t.Errorf("thread %s is in %q", th.Name(), data)
		}
	}
	pid := startSleeper(t)
	if err := m.Place(HomeGroup, pid); err != nil {
		t.Fatal(err)
	}
	if got, want := v2Line(t, pid), own+"/"+name+"/"+HomeGroup; got != want || m.Path(HomeGroup) != want {
		t.Errorf("server process in %q, Path %q, want %q", got, m.Path(HomeGroup), want)
	}
	if want := []string{ownDir, filepath.Join(ownDir, name)}; !reflect.DeepEqual(m.v2.chain, want) {
		t.Errorf("chain = %q, want %q", m.v2.chain, want)
	}
	err = m.Set("vhost-a", Resources{CPUWeight: 300})
	if withCPU {
		if err != nil {
			t.Fatal(err)
		}
		if got := read(t, filepath.Join(ownDir, name, "vhost-a", "cpu.weight")); got != "300" {
			t.Errorf("cpu.weight = %q", got)
		}
		if got := read(t, filepath.Join(ownDir, "cgroup.subtree_control")); got != "cpu" {
			t.Errorf("%s/cgroup.subtree_control = %q", ownDir, got)
		}
		if err := m.Place("vhost-a", pid); err != nil {
			t.Fatal(err)
		}
	} else if err == nil || !strings.Contains(err.Error(), filepath.Join(ownDir, "cgroup.controllers")) {
		t.Errorf("missing cpu controller: err = %v", err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := v2Line(t, os.Getpid()); got != own {
		t.Errorf("after Close the supervisor is in %q, want %q", got, own)
	}
	if got := read(t, filepath.Join(ownDir, "cgroup.subtree_control")); got != "" {
		t.Errorf("after Close %s/cgroup.subtree_control = %q", ownDir, got)
	}
	for _, d := range []string{leaf, filepath.Join(ownDir, name)} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s left behind", d)
		}
	}
}

// TestV2SharedParent: a Parent holding processes that are not vhqos's is
// refused with advice, and nothing is touched.
func TestV2SharedParent(t *testing.T) {
	mount := v2Mount(t)
	own := "/" + testName()
	ownDir := filepath.Join(mount, own)
	if err := os.Mkdir(ownDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(context.Background(), ownDir) })
	other := startSleeper(t)
	if err := writeFile(filepath.Join(ownDir, "cgroup.procs"), strconv.Itoa(other)); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, opts Options, selfIn string) {
		_, err := newV2(t, opts)
		if err == nil {
			t.Fatal("New accepted a Parent shared with other processes")
		}
		for _, want := range []string{ownDir, "processes other than vhqos", strconv.Itoa(other), "Delegate=yes", "systemd-run --scope -p Delegate=yes", "settings.cgroup_parent"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
		if got := v2Line(t, other); got != own {
			t.Errorf("the other process moved to %q", got)
		}
		if got := v2Line(t, os.Getpid()); got != selfIn {
			t.Errorf("the supervisor moved to %q", got)
		}
		entries, _ := os.ReadDir(ownDir)
		for _, e := range entries {
			if e.IsDir() {
				t.Errorf("%s/%s created", ownDir, e.Name())
			}
		}
	}
	self := v2Line(t, os.Getpid())
	t.Run("explicit parent", func(t *testing.T) { check(t, Options{Parent: own}, self) })
	t.Run("own cgroup", func(t *testing.T) {
		if err := writeFile(filepath.Join(ownDir, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
			t.Fatal(err)
		}
		defer writeFile(filepath.Join(mount, self, "cgroup.procs"), strconv.Itoa(os.Getpid()))
		check(t, Options{}, own)
	})
}

// TestV2CreatedParent: missing Parent directories are made and removed, and
// the controllers would be enabled from the deepest existing one down.
func TestV2CreatedParent(t *testing.T) {
	top := "/" + testName()
	m, err := newV2(t, Options{Parent: top + "/a/b"})
	if err != nil {
		t.Fatal(err)
	}
	mount := m.hier[0].root
	want := []string{mount, filepath.Join(mount, top), filepath.Join(mount, top, "a"), filepath.Join(mount, top, "a/b"), filepath.Join(mount, top, "a/b", m.name)}
	if !reflect.DeepEqual(m.v2.chain, want) {
		t.Errorf("chain = %q, want %q", m.v2.chain, want)
	}
	pid := startSleeper(t)
	if err := m.Place(HomeGroup, pid); err != nil {
		t.Fatal(err)
	}
	if got := v2Line(t, pid); got != top+"/a/b/"+m.name+"/home" {
		t.Errorf("pid in %q", got)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mount, top)); err == nil {
		t.Errorf("%s left behind", filepath.Join(mount, top))
	}
}

// TestV2EnableChain runs the subtree_control logic against plain files
// standing in for a cgroup2 hierarchy that has the controllers, which this
// host cannot offer: what is written where, what is skipped, and what Close
// gives back.
func TestV2EnableChain(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "svc")
	name := filepath.Join(base, "vhqos.1")
	for _, d := range []string{base, name} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	put := func(file, s string) {
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put(filepath.Join(base, "cgroup.controllers"), "cpuset cpu io memory pids\n")
	put(filepath.Join(base, "cgroup.subtree_control"), "cpu\n") // someone enabled cpu already
	put(filepath.Join(name, "cgroup.subtree_control"), "")
	m := &Manager{log: slog.New(slog.DiscardHandler), version: 2}
	m.v2 = v2state{base: base, chain: []string{base, name}, enabled: map[string]bool{}}

	if err := m.enableControllers([]string{"cpu", "io"}); err != nil {
		t.Fatal(err)
	}
	want := []subtreeEdit{{name, "cpu"}, {base, "io"}, {name, "io"}}
	if !reflect.DeepEqual(m.v2.undo, want) {
		t.Errorf("enabled %v, want %v", m.v2.undo, want)
	}
	// Each write is "+ctrl" (the fake file is overwritten, not truncated).
	if got := read(t, filepath.Join(name, "cgroup.subtree_control")); !strings.HasPrefix(got, "+io") {
		t.Errorf("last write to %s = %q", name, got)
	}
	// Enabled once, never again.
	put(filepath.Join(base, "cgroup.subtree_control"), "cpu\n")
	if err := m.enableControllers([]string{"io", "cpu"}); err != nil || len(m.v2.undo) != 3 {
		t.Errorf("second enable: err %v, undo %v", err, m.v2.undo)
	}
	// A controller the base does not have is a one-line error naming both.
	err := m.enableControllers([]string{"rdma"})
	if err == nil || !strings.Contains(err.Error(), `rdma controller is not available`) || !strings.Contains(err.Error(), filepath.Join(base, "cgroup.controllers")) {
		t.Errorf("missing controller: %v", err)
	}
	// Close gives back what vhqos enabled, deepest first, and nothing else.
	if err := m.restoreV2(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(base, "cgroup.subtree_control")); !strings.HasPrefix(got, "-io") {
		t.Errorf("base after restore: %q (cpu was not vhqos's to disable)", got)
	}
	if got := read(t, filepath.Join(name, "cgroup.subtree_control")); !strings.HasPrefix(got, "-cpu") {
		t.Errorf("subtree after restore: %q", got)
	}
}

// BenchmarkPlaceV2 is BenchmarkPlace on a cgroup2 hierarchy (on a hybrid
// host: one write per Place instead of one per v1 hierarchy).
func BenchmarkPlaceV2(b *testing.B) {
	m, err := newV2(b, Options{Parent: "/"})
	if err != nil {
		b.Fatal(err)
	}
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
}
