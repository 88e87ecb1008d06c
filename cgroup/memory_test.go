package cgroup

import (
	"context"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// held starts script under sh in a process group of its own, stopped at
// its first line until goOn is called (after the test placed it), and
// kills the group when the test ends. exited is closed once the shell
// (which execs the script's last command) has been waited for: its
// ProcessState is then there to read.
func held(t *testing.T, script string) (pid int, goOn func(), exited <-chan *os.ProcessState) {
	t.Helper()
	c := exec.Command("sh", "-c", "read go; "+script)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan *os.ProcessState, 1)
	gone := make(chan struct{})
	go func() { c.Wait(); done <- c.ProcessState; close(gone) }()
	t.Cleanup(func() {
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		<-gone
	})
	return c.Process.Pid, func() { io.WriteString(in, "go\n"); in.Close() }, done
}

// waitUsage polls the group's usage until ok says so or patience runs out.
func waitUsage(t *testing.T, m *Manager, group, what string, ok func(Usage) bool) Usage {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		u, err := m.Usage(group)
		if err != nil {
			t.Fatal(err)
		}
		if ok(u) {
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; usage %+v", what, patience, u)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noSwap skips a test whose process must run out of memory: with swap a
// group over memory_max is swapped out (neither v2's memory.max nor v1's
// memory.limit_in_bytes limits swap), not stopped.
func noSwap(t *testing.T) {
	data, err := os.ReadFile("/proc/swaps")
	if err == nil && strings.Count(strings.TrimSpace(string(data)), "\n") > 0 {
		t.Skip("swap is on: a group over its memory limit is swapped out, not stopped")
	}
}

// The limit files hold what memory_max, memory_high and tasks_max say, are
// rewritten when they change, and go back to the kernel's "no limit" when
// a reload drops them (v1 memory files read that as the largest page-
// aligned number).
func TestMemoryTaskLimitsWritten(t *testing.T) {
	m := newTestManager(t, Options{})
	maxFile, highFile, none := "memory.max", "memory.high", "max"
	if m.Version() == 1 {
		maxFile, highFile = "memory.limit_in_bytes", "memory.soft_limit_in_bytes"
	}
	for _, tc := range []struct {
		name            string
		r               Resources
		max, high, pids string // "" is no limit
	}{
		{"all three", Resources{MemoryMax: 128 << 20, MemoryHigh: 96 << 20, TasksMax: 20}, "134217728", "100663296", "20"},
		{"changed", Resources{MemoryMax: 256 << 20, MemoryHigh: 96 << 20, TasksMax: 64}, "268435456", "100663296", "64"},
		{"high dropped", Resources{MemoryMax: 256 << 20, TasksMax: 64}, "268435456", "", "64"},
		{"all dropped", Resources{CPUWeight: 100}, "", "", ""},
		{"high alone", Resources{MemoryHigh: 1 << 30}, "", "1073741824", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := m.Set("vhost-m", tc.r); err != nil {
				t.Fatal(err)
			}
			for _, f := range []struct{ ctrl, file, want string }{
				{"memory", maxFile, tc.max}, {"memory", highFile, tc.high}, {"pids", "pids.max", tc.pids},
			} {
				got := read(t, fileOf(t, m, "vhost-m", f.ctrl, f.file))
				switch {
				case f.want == "" && f.ctrl == "memory" && m.Version() == 1:
					if !unlimitedV1(got) {
						t.Errorf("%s = %q, want no limit", f.file, got)
					}
				case f.want == "":
					if got != none {
						t.Errorf("%s = %q, want %q", f.file, got, none)
					}
				case got != f.want:
					t.Errorf("%s = %q, want %q", f.file, got, f.want)
				}
			}
		})
	}
}

// A fork bomb in a group with tasks_max 5 stops at 5 tasks: the forks
// beyond fail, the kernel counts them (pids.events), and Usage reports
// both.
func TestTasksMaxStopsForks(t *testing.T) {
	m := newTestManager(t, Options{})
	if err := m.Set("vhost-bomb", Resources{TasksMax: 5}); err != nil {
		t.Fatal(err)
	}
	// 30 children that sleep, each fork tried once; the parent reports
	// how many failed and waits.
	pid, goOn, _ := held(t, `exec perl -e '$f = 0; for (1..30) { my $p = fork(); if (!defined $p) { $f++; next } if (!$p) { sleep 600; exit 0 } } open(my $o, ">", "/dev/null"); sleep 600'`)
	if err := m.Place("vhost-bomb", pid); err != nil {
		t.Fatal(err)
	}
	goOn()
	u := waitUsage(t, m, "vhost-bomb", "forks refused by tasks_max", func(u Usage) bool { return u.TasksMaxEvents >= 25 })
	if !u.Pids || u.Tasks != 5 || u.Processes != 5 {
		t.Errorf("tasks_max 5: usage %+v; want 5 tasks and 5 processes", u)
	}
	t.Logf("tasks_max 5: %d tasks, %d processes, %d forks refused", u.Tasks, u.Processes, u.TasksMaxEvents)
	// A group without the limit forks freely beside it.
	if err := m.Set("vhost-free", Resources{}); err != nil {
		t.Fatal(err)
	}
	pid, goOn, _ = held(t, `exec perl -e 'for (1..10) { my $p = fork(); die "fork: $!" unless defined $p; if (!$p) { sleep 600; exit 0 } } sleep 600'`)
	if err := m.Place("vhost-free", pid); err != nil {
		t.Fatal(err)
	}
	goOn()
	u = waitUsage(t, m, "vhost-free", "11 processes without a limit", func(u Usage) bool { return u.Processes == 11 })
	if u.TasksMaxEvents != 0 {
		t.Errorf("a group without tasks_max counted %d refused forks", u.TasksMaxEvents)
	}
}

// A process that touches 128 MiB in a group with memory_max 32M is killed
// by the kernel's OOM killer; the kernel counts the charges that hit the
// limit ("max") and the kill, and Usage reports them.
func TestMemoryMaxKills(t *testing.T) {
	noSwap(t)
	m := newTestManager(t, Options{})
	if err := m.Set("vhost-mem", Resources{MemoryMax: 32 << 20}); err != nil {
		t.Fatal(err)
	}
	pid, goOn, exited := held(t, `exec perl -e '$x = "a" x (128 << 20); exit 0'`)
	if err := m.Place("vhost-mem", pid); err != nil {
		t.Fatal(err)
	}
	goOn()
	select {
	case st := <-exited:
		if ws := st.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("the process touching 128 MiB under memory_max 32M ended with %v, want killed by SIGKILL (the OOM killer)", st)
		}
	case <-time.After(patience):
		t.Fatalf("the process touching 128 MiB under memory_max 32M still runs after %v", patience)
	}
	u := waitUsage(t, m, "vhost-mem", "an OOM kill counted", func(u Usage) bool { return u.MemoryEvents["oom_kill"] >= 1 })
	if !u.Memory || u.MemoryEvents["max"] == 0 {
		t.Errorf("memory_max 32M, 128 MiB touched: usage %+v; want max events and an OOM kill", u)
	}
	t.Logf("memory_max 32M, 128 MiB touched: events %v, %d bytes charged after the kill", u.MemoryEvents, u.MemoryBytes)
	if _, ok := u.MemoryEvents["high"]; ok != (m.Version() == 2) {
		t.Errorf("events %v: a \"high\" count on cgroup v%d", u.MemoryEvents, m.Version())
	}
}

// memory_high: under v2 a process above it is throttled and reclaimed but
// lives, and the kernel counts "high" events; v1's soft limit has no
// such count (and acts only when the whole machine is short of memory),
// so there the limit is only written.
func TestMemoryHigh(t *testing.T) {
	noSwap(t)
	m := newTestManager(t, Options{})
	if err := m.Set("vhost-high", Resources{MemoryHigh: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	// Anonymous memory cannot be reclaimed without swap: the group stays
	// over memory.high, and v2 counts and throttles its charges (sleeps
	// of up to 2 s each, growing with the excess: the test does not wait
	// for all 48 MiB there).
	pid, goOn, _ := held(t, `exec perl -e '$x = "a" x (48 << 20); sleep 600'`)
	if err := m.Place("vhost-high", pid); err != nil {
		t.Fatal(err)
	}
	goOn()
	u := waitUsage(t, m, "vhost-high", "the group over memory_high", func(u Usage) bool {
		if m.Version() == 1 {
			return u.MemoryBytes >= 48<<20
		}
		return u.MemoryEvents["high"] > 0
	})
	if m.Version() == 1 {
		if _, ok := u.MemoryEvents["high"]; ok || u.MemoryEvents["max"] != 0 {
			t.Errorf("v1 soft limit: events %v; want no \"high\" count and no max events", u.MemoryEvents)
		}
		if got := read(t, fileOf(t, m, "vhost-high", "memory", "memory.soft_limit_in_bytes")); got != "16777216" {
			t.Errorf("memory.soft_limit_in_bytes = %q, want 16777216", got)
		}
		return
	}
	if u.MemoryEvents["high"] == 0 || u.MemoryEvents["max"] != 0 || u.MemoryEvents["oom_kill"] != 0 {
		t.Errorf("memory_high 16M, 48 MiB wanted: events %v; want high events, no max, no OOM kill", u.MemoryEvents)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Errorf("the process over memory_high is gone: %v", err)
	}
	t.Logf("memory_high 16M, 48 MiB wanted: %d bytes charged at the first high event, events %v", u.MemoryBytes, u.MemoryEvents)
}

// A machine without a controller's hierarchy fails the limit that needs it
// with one line naming the table key.
func TestMissingControllerNamesKey(t *testing.T) {
	m := newTestManager(t, Options{})
	if m.Version() != 1 {
		t.Skip("v1: the v2 case is TestV2MissingControllers")
	}
	for _, tc := range []struct {
		ctrl, want string
		r          Resources
	}{
		{"memory", "memory_max and memory_high: the cgroup v1 memory controller, which it needs, is not mounted (no /sys/fs/cgroup/memory)",
			Resources{MemoryMax: 64 << 20, MemoryHigh: 32 << 20}},
		{"pids", "tasks_max: the cgroup v1 pids controller, which it needs, is not mounted (no /sys/fs/cgroup/pids)", Resources{TasksMax: 3}},
	} {
		i, ok := m.ctrlHier[tc.ctrl]
		if !ok {
			t.Fatalf("no %s hierarchy on this machine", tc.ctrl)
		}
		delete(m.ctrlHier, tc.ctrl) // as if it were not mounted
		err := m.Set("vhost-x", tc.r)
		m.ctrlHier[tc.ctrl] = i
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Set(%+v) without the %s hierarchy: %v; want one line saying %q", tc.r, tc.ctrl, err, tc.want)
		}
	}
}

// A supervisor that attaches after a crash or an upgrade resets the memory
// and task limits the table no longer has, reading back what its
// predecessor wrote (v1 memory files read "no limit" as a number).
func TestAttachResetsMemoryTaskLimits(t *testing.T) {
	owner := newTestManager(t, Options{})
	if err := owner.Set("vhost-a", Resources{MemoryMax: 64 << 20, MemoryHigh: 32 << 20, TasksMax: 9}); err != nil {
		t.Fatal(err)
	}
	// A group whose memory limits were never set must not be taken for one.
	if err := owner.Set("vhost-b", Resources{TasksMax: 3}); err != nil {
		t.Fatal(err)
	}
	m := attach(t, owner, "")
	m.placeMu.RLock()
	seeded := m.groups["vhost-b"].applied
	m.placeMu.RUnlock()
	if len(seeded) != 1 || seeded["pids.max"].value != "3" {
		t.Errorf("vhost-b read back as %v, want pids.max 3 only", seeded)
	}
	if err := m.Set("vhost-a", Resources{MemoryMax: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	highFile := "memory.high"
	if m.Version() == 1 {
		highFile = "memory.soft_limit_in_bytes"
	}
	if got := read(t, fileOf(t, m, "vhost-a", "memory", highFile)); got != "max" && !unlimitedV1(got) {
		t.Errorf("%s = %q after the attached Set dropped memory_high", highFile, got)
	}
	if got := read(t, fileOf(t, m, "vhost-a", "pids", "pids.max")); got != "max" {
		t.Errorf("pids.max = %q after the attached Set dropped tasks_max", got)
	}
}

// A keeper from before memory and task limits made its subtree in the cpu,
// cpuacct and blkio hierarchies only: a supervisor attaching to it works
// there, and a memory or task limit fails with a line saying to restart.
func TestAttachToOwnerWithoutMemoryHierarchies(t *testing.T) {
	owner := newTestManager(t, Options{})
	if owner.Version() != 1 {
		t.Skip("cgroup v1 only: v2 has one hierarchy")
	}
	if err := owner.Set("vhost-a", Resources{CPUWeight: 200}); err != nil {
		t.Fatal(err)
	}
	// Make the owner's subtree look like an old keeper's.
	var kept []*hierarchy
	for _, h := range owner.hier {
		if slices.Contains(h.ctrls, "memory") || slices.Contains(h.ctrls, "pids") {
			if err := removeTree(context.Background(), h.dir(owner.name)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		kept = append(kept, h)
	}
	if len(kept) == len(owner.hier) {
		t.Skip("no memory or pids hierarchy here")
	}
	m := attach(t, owner, "")
	if len(m.hier) != len(kept) {
		t.Errorf("attached to %d hierarchies, want the owner's %d", len(m.hier), len(kept))
	}
	if err := m.Set("vhost-a", Resources{CPUWeight: 300}); err != nil {
		t.Fatal(err)
	}
	pid := startSleeper(t)
	if err := m.Place("vhost-a", pid); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Usage("vhost-a"); err != nil {
		t.Error(err)
	}
	err := m.Set("vhost-a", Resources{MemoryMax: 64 << 20})
	if err == nil || !strings.Contains(err.Error(), "memory_max: the running vhqos keeper made no cgroups in the v1 memory hierarchy") || !strings.Contains(err.Error(), "restart vhqos") {
		t.Errorf("memory_max under an old keeper: %v", err)
	}
}

// Lowering memory_max below what a group holds that the kernel cannot
// reclaim (anonymous memory, no swap): cgroup v1 refuses the write (EBUSY),
// and Set says why and keeps the old limit; v2 takes it and OOM-kills.
func TestLoweringMemoryMaxBelowUsage(t *testing.T) {
	noSwap(t)
	m := newTestManager(t, Options{})
	if err := m.Set("vhost-low", Resources{MemoryMax: 256 << 20}); err != nil {
		t.Fatal(err)
	}
	pid, goOn, exited := held(t, `exec perl -e '$x = "a" x (64 << 20); sleep 600'`)
	if err := m.Place("vhost-low", pid); err != nil {
		t.Fatal(err)
	}
	goOn()
	waitUsage(t, m, "vhost-low", "64 MiB charged", func(u Usage) bool { return u.MemoryBytes >= 64<<20 })
	err := m.Set("vhost-low", Resources{MemoryMax: 32 << 20})
	if m.Version() == 2 {
		if err != nil {
			t.Fatalf("v2: %v", err)
		}
		select {
		case <-exited:
		case <-time.After(patience):
			t.Fatal("v2: the process over the lowered memory.max was not killed")
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "the group holds more memory than that, and the kernel could not reclaim enough of it") || !strings.Contains(err.Error(), "memory_max 33554432 bytes") {
		t.Fatalf("v1, memory_max lowered below what the group holds: %v", err)
	}
	t.Logf("v1: %v", err)
	if got := read(t, fileOf(t, m, "vhost-low", "memory", "memory.limit_in_bytes")); got != "268435456" {
		t.Errorf("memory.limit_in_bytes = %q after the refused write, want the old 268435456", got)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Errorf("the process is gone: %v", err)
	}
}
