package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeTable puts the table where vhqos run can read it, in a directory
// nothing else writes to, and remove takes both away.
func TestWriteTable(t *testing.T) {
	for _, table := range []string{"", "[[vhost]]\nname = \"shop\"\naddress = \"127.0.0.2\"\n"} {
		path, remove, err := writeTable(table)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != table {
			t.Errorf("writeTable(%q) wrote %q, %v", table, got, err)
		}
		entries, err := os.ReadDir(filepath.Dir(path))
		if err != nil || len(entries) != 1 {
			t.Errorf("the table's directory holds %v (%v), want only the table", entries, err)
		}
		if filepath.Dir(path) == os.TempDir() {
			t.Errorf("table written straight into %s, want a directory of its own", os.TempDir())
		}
		remove()
		if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after remove, %s: %v; want it gone", filepath.Dir(path), err)
		}
	}
}

// A temporary directory that cannot be made is an error naming what was
// being done, and nothing is left to remove.
func TestWriteTableNoTempDir(t *testing.T) {
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "missing"))
	path, remove, err := writeTable("[[vhost]]\n")
	if err == nil || !strings.Contains(err.Error(), "making a directory for the QoS table") || path != "" || remove != nil {
		t.Errorf("writeTable with no temporary directory = %q, %v, %v; want an error about the table's directory", path, remove != nil, err)
	}
}

// serverOf finds the one server a supervisor started among its children,
// past vhqos's own helpers (started with --keeper-state), and refuses a
// supervisor with two.
func TestServerOf(t *testing.T) {
	for _, tc := range []struct {
		label, script string
		children      int // how many the script starts
		server        string
	}{
		{"a server and a helper", `sh -c 'sleep 60; :' --keeper-state & sleep 61 & wait`, 2, "sleep\x0061\x00"},
		{"two servers", `sleep 60 & sleep 61 & wait`, 2, ""},
	} {
		cmd := exec.Command("sh", "-c", tc.script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid
		t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL); cmd.Wait() })
		// Until it execs, a child shows the shell's command line, whose
		// script names --keeper-state, and in the middle of its exec an
		// empty one: wait for every child's own. The shell's is known
		// rather than read, because Start returns in the middle of the
		// shell's own exec, when its command line can still read empty.
		shell := "sh\x00-c\x00" + tc.script + "\x00"
		started := func() bool {
			kids := childrenOf(pid)
			for _, c := range kids {
				if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c)); len(cmdline) == 0 || string(cmdline) == shell {
					return false
				}
			}
			return len(kids) >= tc.children
		}
		deadline := time.Now().Add(time.Minute)
		for !started() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the shell started only %v", tc.label, childrenOf(pid))
			}
			time.Sleep(10 * time.Millisecond)
		}
		server, err := serverOf(pid)
		if tc.server == "" {
			if err == nil {
				t.Errorf("%s: serverOf = %d, want an error", tc.label, server)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.label, err)
		}
		if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", server)); string(cmdline) != tc.server {
			t.Errorf("%s: serverOf = %d, running %q; want the one running %q", tc.label, server, cmdline, tc.server)
		}
	}
}

// buildFloor compiles the floor (gcc is in .ci/deps), which then knows its
// modes, and remove leaves nothing of it behind.
func TestBuildFloor(t *testing.T) {
	bin, remove, err := buildFloor()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "continue|emulate|reads|emulate-reads") {
		t.Errorf("floor without arguments: %v, %q; want exit status 2 and its usage", err, out)
	}
	remove()
	if _, err := os.Stat(filepath.Dir(bin)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after remove, the floor's directory %s: %v; want it gone", filepath.Dir(bin), err)
	}
}
