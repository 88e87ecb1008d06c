package cgroup

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// attach adopts owner's subtree as another vhqos process would (the
// supervisor the keeper started), on the same layout, and closes it when
// the test ends.
func attach(t testing.TB, owner *Manager, parent string) *Manager {
	t.Helper()
	lay := layout{}
	if owner.version == 2 {
		lay.v2mount = owner.hier[0].root
	}
	m, err := newManager(context.Background(), Options{Parent: parent, Name: owner.name, Attach: true}, lay)
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

// exists says whether every one of dirs is there.
func exists(t testing.TB, dirs ...string) bool {
	t.Helper()
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			return false
		}
	}
	return true
}

func groupDirs(m *Manager, group string) []string {
	var out []string
	for _, d := range m.subtreeDirs() {
		out = append(out, filepath.Join(d, group))
	}
	return out
}

// TestAttach: a second manager adopts a running subtree with a process in
// a vhost group, works on it like the owner, and its Close leaves the
// subtree and its processes alone; the owner's Close still removes it all.
func TestAttach(t *testing.T) {
	owner := newTestManager(t, Options{})
	if err := owner.Set("vhost-a", Resources{}); err != nil {
		t.Fatal(err)
	}
	a := start(t, "sleep", "600")
	if err := owner.Place("vhost-a", a.Process.Pid); err != nil {
		t.Fatal(err)
	}

	m := attach(t, owner, "")
	if !m.Attached() || owner.Attached() {
		t.Errorf("Attached: attached manager %v, owner %v", m.Attached(), owner.Attached())
	}
	if !reflect.DeepEqual(m.subtreeDirs(), owner.subtreeDirs()) {
		t.Errorf("attached to %v, owner has %v", m.subtreeDirs(), owner.subtreeDirs())
	}
	// The groups already there are open: no Set needed to see or use them.
	if got, want := m.Groups(), []string{HomeGroup, "vhost-a"}; !slices.Equal(got, want) {
		t.Errorf("Groups() = %v, want %v", got, want)
	}
	if pids, err := m.Pids("vhost-a"); err != nil || !slices.Equal(pids, []int{a.Process.Pid}) {
		t.Errorf("Pids(vhost-a) = %v, %v; want [%d]", pids, err, a.Process.Pid)
	}
	if u, err := m.Usage("vhost-a"); err != nil || u.Processes != 1 {
		t.Errorf("Usage(vhost-a) = %+v, %v; want 1 process", u, err)
	}
	b := start(t, "sleep", "600")
	if err := m.Place(HomeGroup, b.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// A group that does not exist yet is created by Set, in the owner's subtree.
	if err := m.Set("vhost-b", Resources{CPUWeight: 300}); err != nil {
		t.Fatal(err)
	}
	if err := m.Place("vhost-b", b.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if got, want := cgroupOf(t, b.Process.Pid, m.Version()), owner.Path("vhost-b"); got != want || m.Path("vhost-b") != want {
		t.Errorf("pid %d in %q, attached Path %q, want %q", b.Process.Pid, got, m.Path("vhost-b"), want)
	}
	// Removing a group the owner made sends its process home.
	if err := m.Remove("vhost-a"); err != nil {
		t.Fatal(err)
	}
	if got, want := cgroupOf(t, a.Process.Pid, m.Version()), owner.Path(HomeGroup); got != want {
		t.Errorf("after Remove pid %d is in %q, want %q", a.Process.Pid, got, want)
	}
	for _, d := range groupDirs(owner, "vhost-a") {
		if exists(t, d) {
			t.Errorf("%s still exists after Remove", d)
		}
	}

	self := cgroupOf(t, os.Getpid(), m.Version())
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		pid   int
		group string
	}{{a.Process.Pid, HomeGroup}, {b.Process.Pid, "vhost-b"}} {
		if got, want := cgroupOf(t, p.pid, m.Version()), owner.Path(p.group); got != want {
			t.Errorf("after the attached Close pid %d is in %q, want %q", p.pid, got, want)
		}
	}
	if got := cgroupOf(t, os.Getpid(), m.Version()); got != self {
		t.Errorf("the attached Close moved its own process from %q to %q", self, got)
	}
	if !exists(t, append(groupDirs(owner, HomeGroup), groupDirs(owner, "vhost-b")...)...) {
		t.Errorf("the attached Close removed groups: %v", leftovers(owner))
	}
	if err := m.Place(HomeGroup, a.Process.Pid); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Place after the attached Close: err = %v", err)
	}
	// The owner's subtree works on, and its Close removes it all.
	if err := owner.Place(HomeGroup, b.Process.Pid); err != nil {
		t.Errorf("owner's Place after the attached Close: %v", err)
	}
	if err := owner.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []int{a.Process.Pid, b.Process.Pid} {
		if err := waitExit(pid, patience); err != nil {
			t.Error(err)
		}
	}
	if d := leftovers(owner); len(d) > 0 {
		t.Errorf("left behind: %v", d)
	}
}

// TestAttachResetsEarlierLimits: limits an earlier process set in a group
// are known to the manager that adopts it, so that a Set without them puts
// the kernel's defaults back, as it would for limits it set itself.
func TestAttachResetsEarlierLimits(t *testing.T) {
	owner := newTestManager(t, Options{})
	tests := []struct {
		name          string
		before, after Resources
		v1, v2        map[string]string // file → content after
	}{
		{"dropped cap", Resources{CPUWeight: 400, CPUQuotaPercent: 20}, Resources{CPUWeight: 400},
			map[string]string{"cpu.shares": "4096", "cpu.cfs_quota_us": "-1"},
			map[string]string{"cpu.weight": "400", "cpu.max": "max 100000"}},
		{"dropped weight", Resources{CPUWeight: 400}, Resources{},
			map[string]string{"cpu.shares": "1024", "cpu.cfs_quota_us": "-1"},
			map[string]string{"cpu.weight": "100", "cpu.max": "max 100000"}},
		{"changed cap", Resources{CPUQuotaPercent: 20}, Resources{CPUQuotaPercent: 50},
			map[string]string{"cpu.shares": "1024", "cpu.cfs_quota_us": "50000"},
			map[string]string{"cpu.weight": "100", "cpu.max": "50000 100000"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			group := VHostGroup(string(rune('a' + i)))
			if err := owner.Set(group, tc.before); err != nil {
				t.Fatal(err)
			}
			m := attach(t, owner, "")
			if err := m.Set(group, tc.after); err != nil {
				t.Fatal(err)
			}
			want := tc.v1
			if m.Version() == 2 {
				want = tc.v2
			}
			for file, v := range want {
				if got := read(t, fileOf(t, m, group, "cpu", file)); got != v {
					t.Errorf("%s = %q, want %q", file, got, v)
				}
			}
		})
	}
	t.Run("dropped device limit", func(t *testing.T) {
		dev := blockDevice(t)
		d := withLimits(dev, 1<<20, 0, 0, 300)
		err := owner.Set("vhost-io", Resources{Devices: []DeviceLimit{d}})
		if owner.Version() == 2 && err != nil && strings.Contains(err.Error(), "controller is not available") {
			t.Skipf("no io controller: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		m := attach(t, owner, "")
		if err := m.Set("vhost-io", Resources{}); err != nil {
			t.Fatal(err)
		}
		key := devKey(dev)
		files := []string{"blkio.throttle.read_bps_device", "blkio.throttle.write_iops_device"}
		if m.Version() == 2 {
			files = []string{"io.max"}
		}
		for _, f := range files {
			if got := read(t, fileOf(t, m, "vhost-io", "blkio", f)); strings.Contains(got, key) {
				t.Errorf("%s still limits %s: %q", f, key, got)
			}
		}
	})
}

// TestAttachMissing: attaching to a subtree nobody made fails with an
// error naming it, and creates nothing.
func TestAttachMissing(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct{ name, parent string }{
		{"own cgroup", ""},
		{"missing parent", "/" + testName() + "/inner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := testName()
			m, err := New(context.Background(), Options{Parent: tc.parent, Name: name, Attach: true})
			if err == nil {
				m.Close(context.Background())
				t.Fatal("attached to a subtree that does not exist")
			}
			want := filepath.Join(tc.parent, name)
			if !strings.Contains(err.Error(), "/sys/fs/cgroup/") || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "no such file") {
				t.Errorf("error %q does not name the missing %s", err, want)
			}
			found, _ := filepath.Glob("/sys/fs/cgroup/*" + want)
			top, _ := filepath.Glob("/sys/fs/cgroup" + want)
			if tc.parent != "" {
				parents, _ := filepath.Glob("/sys/fs/cgroup/*" + filepath.Dir(filepath.Dir(want)))
				found = append(found, parents...)
			}
			if found = append(found, top...); len(found) > 0 {
				t.Errorf("a failed attach created %v", found)
			}
		})
	}
}

// TestV2AttachFromLeaf: the owner moved into its leaf <Name>.supervisor;
// a process it starts there attaches with Parent "" to the owner's
// subtree, moves nowhere, and the controllers it enables are given back by
// the owner's Close, which must then be able to move back.
func TestV2AttachFromLeaf(t *testing.T) {
	mount := v2Mount(t)
	withCPU := rootHas(t, mount, "cpu")
	if withCPU {
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
	owner, err := newV2(t, Options{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	leaf := own + "/" + name + ".supervisor"
	if got := v2Line(t, os.Getpid()); got != leaf {
		t.Fatalf("owner is in %q, want its leaf %q", got, leaf)
	}
	m := attach(t, owner, "")
	if !reflect.DeepEqual(m.v2.chain, owner.v2.chain) {
		t.Errorf("attached chain %q, owner's %q", m.v2.chain, owner.v2.chain)
	}
	if m.v2.leaf != "" {
		t.Errorf("the attached manager took a leaf: %q", m.v2.leaf)
	}
	if got := v2Line(t, os.Getpid()); got != leaf {
		t.Errorf("attaching moved the process to %q", got)
	}
	pid := startSleeper(t)
	err = m.Set("vhost-a", Resources{CPUWeight: 300})
	if withCPU {
		if err != nil {
			t.Fatal(err)
		}
		if got := read(t, filepath.Join(ownDir, name, "vhost-a", "cpu.weight")); got != "300" {
			t.Errorf("cpu.weight = %q", got)
		}
	} else if err == nil || !strings.Contains(err.Error(), filepath.Join(ownDir, "cgroup.controllers")) {
		t.Errorf("missing cpu controller: err = %v", err)
	}
	if err := m.Place("vhost-a", pid); err != nil {
		t.Fatal(err)
	}
	subtreeCtl := read(t, filepath.Join(ownDir, "cgroup.subtree_control"))
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := v2Line(t, os.Getpid()); got != leaf {
		t.Errorf("the attached Close moved the process to %q", got)
	}
	if got := read(t, filepath.Join(ownDir, "cgroup.subtree_control")); got != subtreeCtl {
		t.Errorf("the attached Close changed %s/cgroup.subtree_control from %q to %q", ownDir, subtreeCtl, got)
	}
	if got := v2Line(t, pid); got != own+"/"+name+"/vhost-a" {
		t.Errorf("the attached Close moved pid %d to %q", pid, got)
	}
	if err := owner.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := v2Line(t, os.Getpid()); got != own {
		t.Errorf("after the owner's Close the process is in %q, want %q", got, own)
	}
	if got := read(t, filepath.Join(ownDir, "cgroup.subtree_control")); got != "" {
		t.Errorf("after the owner's Close %s/cgroup.subtree_control = %q", ownDir, got)
	}
	if err := waitExit(pid, patience); err != nil {
		t.Error(err)
	}
}

// TestV2AttachCreatedParent: when the owner had to create Parent, the
// attached manager enables controllers from the owner's base, which it
// cannot see from the directories alone.
func TestV2AttachCreatedParent(t *testing.T) {
	top := "/" + testName()
	parent := top + "/a/b"
	owner, err := newV2(t, Options{Parent: parent})
	if err != nil {
		t.Fatal(err)
	}
	mount := owner.hier[0].root
	m := attach(t, owner, parent)
	if !reflect.DeepEqual(m.v2.chain, owner.v2.chain) {
		t.Errorf("attached chain %q, owner's %q", m.v2.chain, owner.v2.chain)
	}
	initial := read(t, filepath.Join(mount, "cgroup.subtree_control"))
	if rootHas(t, mount, "cpu") {
		if err := m.Set("vhost-a", Resources{CPUWeight: 300}); err != nil {
			t.Fatal(err)
		}
		if got := read(t, filepath.Join(mount, parent, owner.name, "vhost-a", "cpu.weight")); got != "300" {
			t.Errorf("cpu.weight = %q", got)
		}
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := owner.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(mount, "cgroup.subtree_control")); got != initial {
		t.Errorf("after the owner's Close %s/cgroup.subtree_control = %q, want %q as before", mount, got, initial)
	}
	if exists(t, filepath.Join(mount, top)) {
		t.Errorf("%s left behind", filepath.Join(mount, top))
	}
}

// TestV2AdoptEnabled runs the owner's Close bookkeeping against plain
// files: controllers the subtree hands down that an attached manager
// enabled are given back on every directory above it, except where base
// had them before New.
func TestV2AdoptEnabled(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "svc")
	made := filepath.Join(base, "made")
	sub := filepath.Join(made, "vhqos.1")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(dir, s string) {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put(base, "cpu io")
	put(made, "cpu io")
	put(sub, "cpu io")
	m := &Manager{log: slog.New(slog.DiscardHandler), version: 2, name: "vhqos.1", hier: []*hierarchy{{root: root, parent: "/svc/made"}}}
	m.v2 = v2state{base: base, initial: []string{"cpu"}, chain: []string{base, made, sub}, enabled: map[string]bool{}}
	m.adoptEnabled()
	want := []subtreeEdit{{made, "cpu"}, {base, "io"}, {made, "io"}}
	if !reflect.DeepEqual(m.v2.undo, want) {
		t.Errorf("undo = %v, want %v", m.v2.undo, want)
	}
	m.adoptEnabled()
	if len(m.v2.undo) != len(want) {
		t.Errorf("a second Close added %v", m.v2.undo[len(want):])
	}
	if err := m.restoreV2(); err != nil {
		t.Fatal(err)
	}
	// The fake files keep the last write: "-io" on base, cpu kept there.
	if got := read(t, filepath.Join(base, "cgroup.subtree_control")); !strings.HasPrefix(got, "-io") {
		t.Errorf("base after Close: %q", got)
	}
}
