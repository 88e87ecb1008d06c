package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSelectVariants(t *testing.T) {
	all := []threadsVariant{
		{name: "native", matching: -1},
		{name: "floor (continue)", matching: -1},
		{name: "vhqos placement=process", matching: 1},
		{name: "floor (reads)", matching: -1},
		{name: "vhqos placement=thread", matching: 3},
		{name: "floor (emulate, reads)", matching: -1, optional: true},
	}
	for _, tc := range []struct {
		only string
		want []string
		// matching of each variant kept, by name (-1: none)
		floors map[string]string
	}{
		{"", []string{"native", "floor (continue)", "vhqos placement=process", "floor (reads)", "vhqos placement=thread"},
			map[string]string{"vhqos placement=process": "floor (continue)", "vhqos placement=thread": "floor (reads)"}},
		{"placement=thread", []string{"native", "floor (reads)", "vhqos placement=thread"},
			map[string]string{"vhqos placement=thread": "floor (reads)"}},
		{"thread|emulate", []string{"native", "floor (reads)", "vhqos placement=thread", "floor (emulate, reads)"},
			map[string]string{"vhqos placement=thread": "floor (reads)"}},
		{"floor", []string{"native", "floor (continue)", "floor (reads)", "floor (emulate, reads)"}, nil},
		{"nothing like it", []string{"native"}, nil},
	} {
		got := selectVariants(all, tc.only)
		var names []string
		floors := map[string]string{}
		for _, v := range got {
			names = append(names, v.name)
			if v.matching >= 0 {
				floors[v.name] = got[v.matching].name
			}
		}
		if !reflect.DeepEqual(names, tc.want) {
			t.Errorf("-only %q: variants %q, want %q", tc.only, names, tc.want)
		}
		if tc.floors == nil {
			tc.floors = map[string]string{}
		}
		if !reflect.DeepEqual(floors, tc.floors) {
			t.Errorf("-only %q: measured against %v, want %v", tc.only, floors, tc.floors)
		}
	}
}

func TestFloorCounts(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want []int64
	}{
		{"", nil},
		{"floor: 12 notifications\n[core:notice] AH00094\nfloor: 3456 notifications\n", []int64{12, 3456}},
		{"floor: notifications\n", nil},
	} {
		if got := floorCounts(tc.out); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("floorCounts(%q) = %v, want %v", tc.out, got, tc.want)
		}
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
