package cgroup

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// newTestManager makes a real subtree under the root cgroup (or this
// process's own, on v2) and removes it when the test ends.
func newTestManager(t testing.TB) *Manager {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	name := fmt.Sprintf("vhqos-test.%d.%d", os.Getpid(), time.Now().UnixNano())
	m, err := New(context.Background(), Options{Name: name})
	if err != nil {
		t.Fatalf("creating the cgroup subtree: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("closing: %v", err)
		}
		for _, d := range m.dirs {
			if _, err := os.Stat(d.path); err == nil {
				t.Errorf("%s left behind", d.path)
			}
		}
	})
	return m
}

func startSleeper(t testing.TB) *exec.Cmd {
	t.Helper()
	c := exec.Command("sleep", "60")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	return c
}

// cgroupOf returns the path of pid's cgroup as /proc shows it: the cpu
// hierarchy on v1, the unified one on v2.
func cgroupOf(t testing.TB, pid int, version int) string {
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
		if version == 1 {
			for _, c := range strings.Split(parts[1], ",") {
				if c == "cpu" {
					return parts[2]
				}
			}
		}
	}
	t.Fatalf("no cgroup line for pid %d in %q", pid, data)
	return ""
}

func readValue(t testing.TB, dir, file string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

func (m *Manager) dirOf(group, controller string) string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, d := range m.groups[group].dirs {
		if d.controller == controller {
			return d.path
		}
	}
	return ""
}

func TestLimitsAreWritten(t *testing.T) {
	m := newTestManager(t)
	tests := []struct {
		name string
		r    Resources
		v1   map[string]string // cpu hierarchy files
		v2   map[string]string
	}{
		{"weight and cap", Resources{CPUWeight: 400, CPUQuotaPercent: 20},
			map[string]string{"cpu.shares": "4096", "cpu.cfs_quota_us": "20000", "cpu.cfs_period_us": "100000"},
			map[string]string{"cpu.weight": "400", "cpu.max": "20000 100000"}},
		{"more than one CPU", Resources{CPUWeight: 100, CPUQuotaPercent: 150},
			map[string]string{"cpu.shares": "1024", "cpu.cfs_quota_us": "150000"},
			map[string]string{"cpu.max": "150000 100000"}},
		{"limits removed go back to defaults", Resources{CPUWeight: 100},
			map[string]string{"cpu.shares": "1024", "cpu.cfs_quota_us": "-1"},
			map[string]string{"cpu.weight": "100", "cpu.max": "max 100000"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := m.Set("vhost-a", tc.r); err != nil {
				t.Fatal(err)
			}
			want, dir := tc.v1, m.dirOf("vhost-a", "cpu")
			if m.Version() == 2 {
				want, dir = tc.v2, m.dirOf("vhost-a", "")
			}
			for file, v := range want {
				if got := readValue(t, dir, file); got != v {
					t.Errorf("%s = %q, want %q", file, got, v)
				}
			}
		})
	}
}

func TestPlaceRemoveClose(t *testing.T) {
	m := newTestManager(t)
	if err := m.Set("vhost-a", Resources{CPUWeight: 200}); err != nil {
		t.Fatal(err)
	}
	sleeper := startSleeper(t)
	pid := sleeper.Process.Pid
	if err := m.Place("vhost-a", pid); err != nil {
		t.Fatal(err)
	}
	if got, want := cgroupOf(t, pid, m.Version()), m.Path("vhost-a"); got != want {
		t.Errorf("pid %d is in %q, want %q", pid, got, want)
	}
	if err := m.Place("nope", pid); err == nil || !strings.Contains(err.Error(), `no cgroup group "nope"`) {
		t.Errorf("placing into an unknown group: err = %v", err)
	}
	// Removing a vhost's group sends its processes home.
	if err := m.Remove("vhost-a"); err != nil {
		t.Fatal(err)
	}
	if got, want := cgroupOf(t, pid, m.Version()), m.Path(HomeGroup); got != want {
		t.Errorf("after Remove pid %d is in %q, want %q", pid, got, want)
	}
	// Close kills what is left and removes everything (checked in cleanup).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the process left in the subtree survived Close")
	}
}

func TestCPUUsage(t *testing.T) {
	m := newTestManager(t)
	if err := m.Set("busy", Resources{}); err != nil {
		t.Fatal(err)
	}
	c := exec.Command("sh", "-c", "end=$(($(date +%s)+1)); while [ $(date +%s) -lt $end ]; do :; done")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if err := m.Place("busy", c.Process.Pid); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	u, err := m.Usage("busy")
	if err != nil {
		t.Fatal(err)
	}
	if u.CPUUsec < 100000 {
		t.Errorf("a busy process for ~1 s shows %d µs of CPU", u.CPUUsec)
	}
}

func TestConcurrentPlace(t *testing.T) {
	m := newTestManager(t)
	for _, g := range []string{"a", "b"} {
		if err := m.Set(g, Resources{}); err != nil {
			t.Fatal(err)
		}
	}
	var pids []int
	for i := 0; i < 8; i++ {
		pids = append(pids, startSleeper(t).Process.Pid)
	}
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				g := []string{"a", "b"}[(i+j)%2]
				if err := m.Place(g, pids[(i+j)%len(pids)]); err != nil {
					t.Error(err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	for _, pid := range pids {
		got := cgroupOf(t, pid, m.Version())
		if got != m.Path("a") && got != m.Path("b") {
			t.Errorf("pid %d ended in %q", pid, got)
		}
	}
}

func TestBadNames(t *testing.T) {
	m := newTestManager(t)
	for _, name := range []string{"", "..", "a/b", "."} {
		if err := m.Set(name, Resources{}); err == nil {
			t.Errorf("group name %q accepted", name)
		}
	}
}

func BenchmarkPlace(b *testing.B) {
	m := newTestManager(b)
	m.Set("a", Resources{})
	m.Set("b", Resources{})
	pid := startSleeper(b).Process.Pid
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := m.Place([]string{"a", "b"}[i%2], pid); err != nil {
			b.Fatal(err)
		}
	}
}
