package cgroup

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOwnerPID(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"vhqos.1", 1, true},
		{"vhqos.4194304", 4194304, true},
		{"vhqos.", 0, false},
		{"vhqos.0", 0, false},
		{"vhqos.012", 0, false},
		{"vhqos.+12", 0, false},
		{"vhqos.-12", 0, false},
		{"vhqos.12a", 0, false},
		{"vhqos.abc", 0, false},
		{"vhqos.12.supervisor", 0, false},
		{"vhqos.99999999999999999999999", 0, false},
		{"Vhqos.12", 0, false},
		{"xvhqos.12", 0, false},
		{"vhqos-test.12", 0, false},
		{"other", 0, false},
	} {
		pid, ok := ownerPID(tc.name)
		if pid != tc.pid || ok != tc.ok {
			t.Errorf("ownerPID(%q) = %d, %v; want %d, %v", tc.name, pid, ok, tc.pid, tc.ok)
		}
	}
}

// deadPID is the PID of a process that ran and was reaped.
func deadPID(t testing.TB) int {
	t.Helper()
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	return c.Process.Pid
}

// TestRemoveStale: under a parent of its own, the subtree of a vhqos whose
// PID is dead is removed in every hierarchy, with the processes left in
// it killed; the subtree of a live PID, the caller's own and every
// directory not named exactly vhqos.<PID> stay, with their processes.
func TestRemoveStale(t *testing.T) {
	needRoot(t)
	layouts := map[string]func(t *testing.T) layout{
		"host": func(t *testing.T) layout {
			lay, err := hostLayout()
			if err != nil {
				t.Skip(err)
			}
			return lay
		},
		"v2": func(t *testing.T) layout { return layout{v2mount: v2Mount(t)} },
	}
	for _, lname := range []string{"host", "v2"} {
		t.Run(lname, func(t *testing.T) {
			lay := layouts[lname](t)
			parent := "/" + testName()
			t.Cleanup(func() { // after everything below, if the owners' Close did not
				for _, pat := range []string{"/sys/fs/cgroup" + parent, "/sys/fs/cgroup/*" + parent} {
					dirs, _ := filepath.Glob(pat)
					for _, d := range dirs {
						if err := unix.Rmdir(d); err != nil {
							t.Errorf("removing %s: %v", d, err)
						}
					}
				}
			})
			// newOwner makes a subtree as a keeper would, which the test's
			// cleanup removes if RemoveStale does not.
			newOwner := func(name string) *Manager {
				m, err := newManager(context.Background(), Options{Parent: parent, Name: name}, lay)
				if err != nil {
					t.Fatal(err)
				}
				cleanupManager(t, m)
				return m
			}
			dead := deadPID(t)
			gone := newOwner("vhqos." + strconv.Itoa(dead))
			if err := gone.Set("vhost-a", Resources{}); err != nil {
				t.Fatal(err)
			}
			victims := []int{startSleeper(t), startSleeper(t)}
			for i, g := range []string{HomeGroup, "vhost-a"} {
				if err := gone.Place(g, victims[i]); err != nil {
					t.Fatal(err)
				}
			}
			// A keeper that runs: its PID is alive, whatever it is.
			keeper := startSleeper(t)
			live := newOwner("vhqos." + strconv.Itoa(keeper))
			liveServer := startSleeper(t)
			if err := live.Place(HomeGroup, liveServer); err != nil {
				t.Fatal(err)
			}
			self := newOwner("vhqos." + strconv.Itoa(os.Getpid()))
			// Names that are not a vhqos subtree, whatever they hold.
			var others []string
			var bystanders []int
			for _, n := range []string{"vhqos.abc", "other", "vhqos.0" + strconv.Itoa(dead), "vhqos." + strconv.Itoa(dead) + ".supervisor", "vhqos-test." + strconv.Itoa(dead)} {
				var dirs []string
				for _, h := range gone.hier {
					dir := h.dir(n)
					if err := os.Mkdir(dir, 0o755); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { // after the sleeper's cleanup killed it
						ctx, cancel := context.WithTimeout(context.Background(), patience)
						defer cancel()
						if err := removeTree(ctx, dir); err != nil {
							t.Error(err)
						}
					})
					dirs = append(dirs, dir)
				}
				pid := startSleeper(t)
				for _, dir := range dirs {
					if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
						t.Fatal(err)
					}
				}
				others = append(others, dirs...)
				bystanders = append(bystanders, pid)
			}

			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			removed, err := removeStale(ctx, parent, log, lay)
			if err != nil {
				t.Fatal(err)
			}
			if want := gone.subtreeDirs(); !slices.Equal(removed, want) {
				t.Errorf("removed %v, want %v", removed, want)
			}
			for _, d := range gone.subtreeDirs() {
				if exists(t, d) {
					t.Errorf("%s is still there", d)
				}
				if line := fmt.Sprintf("dir=%s pid=%d killed=2", d, dead); !strings.Contains(logs.String(), line) {
					t.Errorf("the log does not say %q:\n%s", line, logs.String())
				}
			}
			for _, pid := range victims {
				if err := waitExit(pid, patience); err != nil {
					t.Error(err)
				}
			}
			kept := append(append(append(live.subtreeDirs(), self.subtreeDirs()...), groupDirs(live, HomeGroup)...), others...)
			for _, d := range kept {
				if !exists(t, d) {
					t.Errorf("%s was removed", d)
				}
			}
			for _, pid := range append([]int{keeper, liveServer}, bystanders...) {
				if err := unix.Kill(pid, 0); err != nil {
					t.Errorf("pid %d was harmed: %v", pid, err)
				}
			}
			if got := cgroupOf(t, liveServer, live.Version()); got != live.Path(HomeGroup) {
				t.Errorf("the live subtree's process moved to %q", got)
			}
			// Nothing stale is left: a second pass removes nothing.
			if again, err := removeStale(ctx, parent, log, lay); err != nil || len(again) > 0 {
				t.Errorf("second pass: removed %v, err %v", again, err)
			}
		})
	}
}

func TestRemoveStaleParents(t *testing.T) {
	needRoot(t)
	lay, err := hostLayout()
	if err != nil {
		t.Skip(err)
	}
	for _, tc := range []struct {
		parent, err string
	}{
		{"/" + testName(), ""}, // nothing there: nothing to do
		{"relative", "must be a clean absolute cgroup path"},
		{"/a/../b", "must be a clean absolute cgroup path"},
	} {
		removed, err := removeStale(context.Background(), tc.parent, nil, lay)
		if tc.err == "" && (err != nil || len(removed) > 0) || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("RemoveStale(%q) = %v, %v; want error %q", tc.parent, removed, err, tc.err)
		}
	}
}
