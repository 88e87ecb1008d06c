package policy

import (
	"errors"
	"strings"
	"testing"
)

// memory_max and memory_high: a SIZE string with K, M, G or T (1024-based,
// any case, fractions rounded down), a whole number of bytes, or
// "infinity"; at least 1M, at most 8388607T (2^63-1 bytes as a number).
func TestKeyMemory(t *testing.T) {
	for _, key := range []string{"memory_max", "memory_high"} {
		t.Run(key, func(t *testing.T) {
			get := func(c Class) any {
				if key == "memory_max" {
					return c.Resources.MemoryMax
				}
				return c.Resources.MemoryHigh
			}
			checkLimit(t, key, "%s", get, []keyCase{
				{value: "", want: uint64(0)},
				{value: `"infinity"`, want: uint64(0)},
				{value: `"Infinity"`, want: uint64(0)},
				{value: `"128M"`, want: uint64(128 << 20)},
				{value: `"128m"`, want: uint64(128 << 20)},
				{value: `"1G"`, want: uint64(1 << 30)},
				{value: `"1.5G"`, want: uint64(3 << 29)},
				{value: `"2T"`, want: uint64(2 << 40)},
				{value: `"512K"`, err: `"512K" is 524288 bytes, less than 1M`},
				{value: `"1024K"`, want: uint64(1 << 20)},
				{value: `"1M"`, want: uint64(1 << 20)},
				{value: `"1048576"`, want: uint64(1 << 20)},
				{value: `"1048576B"`, want: uint64(1 << 20)},
				{value: `1048576`, want: uint64(1 << 20)},
				{value: `1048575`, err: "1048575 is 1048575 bytes, less than 1M, too little for any server process"},
				{value: `512`, err: `a number without unit is bytes: did you mean "512M"?`},
				{value: `"8388607T"`, want: uint64(8388607 << 40)},
				{value: `9223372036854775807`, want: uint64(1<<63 - 1)},
				{value: `"8388608T"`, err: `"8388608T" is too large`},
				{value: `"128MB"`, err: `unknown unit "MB" in "128MB"; write "128M": K, M, G and T are 1024-based here`},
				{value: `"128MiB"`, err: `unknown unit "MiB" in "128MiB"; write "128M"`},
				{value: `"2gb"`, err: `unknown unit "gb" in "2gb"; write "2G"`},
				{value: `"1.5GB"`, err: `write "1.5G"`},
				{value: `"1,5G"`, err: `"1,5G" has a comma in its number; write "1.5G": a decimal point, not a comma`},
				{value: `"1,000M"`, err: `"1,000M" has a comma in its number; write "1.000M" (a decimal point, not a comma) or "1000M" (no thousands separator)`},
				{value: `"1,048,576"`, err: `"1,048,576" has commas in its number; write "1048576", without thousands separators`},
				{value: `"128X"`, err: `unknown unit "X" in "128X"`},
				{value: `"50%"`, err: "a share of the machine's memory is not taken here"},
				{value: `"0"`, err: `"0": must be more than 0; for no limit write "infinity" or leave ` + key + " out"},
				{value: `"0M"`, err: "must be more than 0"},
				{value: `0`, err: "0: must be more than 0"},
				{value: `-1`, err: "-1: must be more than 0"},
				{value: `"-128M"`, err: `"-128M": must be more than 0`},
				{value: `1.5`, err: "1.5 is not a whole number of bytes"},
				{value: `"lots"`, err: `"lots" is not a size`},
				{value: `true`, err: "is true (true/false); write a size"},
			})
		})
	}
}

// tasks_max: a whole number 1..4194304 (the kernel's largest pids.max), or
// "infinity".
func TestKeyTasksMax(t *testing.T) {
	checkLimit(t, "tasks_max", "%s", func(c Class) any { return c.Resources.TasksMax }, []keyCase{
		{value: "", want: uint64(0)},
		{value: `"infinity"`, want: uint64(0)},
		{value: `1`, want: uint64(1)},
		{value: `20`, want: uint64(20)},
		{value: `4194304`, want: uint64(4194304)},
		{value: `4194305`, err: "4194305 is more than the kernel takes: pids.max is at most 4194304"},
		{value: `0`, err: "0: must be at least 1"},
		{value: `-5`, err: "-5: must be at least 1"},
		{value: `"20"`, err: `"20" is a string; write the number without quotes: tasks_max = 20`},
		{value: `20.5`, err: "20.5 is not a whole number"},
		{value: `"15%"`, err: "a share of the kernel's pid_max is not taken here"},
		{value: `"many"`, err: `"many" is not a number of tasks`},
		{value: `[20]`, err: "is a list; write a whole number of tasks"},
	})
}

// memory_high above memory_max is one problem, at memory_high, naming
// both, wherever the two are written; equal is fine.
func TestMemoryHighAboveMax(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		line, col int
		err       string
	}{
		{"high after max", "[defaults]\nmemory_max = \"128M\"\nmemory_high = \"256M\"\n", 3, 15,
			`[defaults] memory_high: "256M" is above memory_max ("128M", line 2); memory_high must be at most memory_max`},
		{"high before max", "[[vhost]]\nname = \"v\"\nmatch = [\"192.0.2.1\"]\nmemory_high = \"1G\"\nmemory_max = 536870912\n", 4, 15,
			`vhost "v" (vhost[0]) memory_high: "1G" is above memory_max ("512M", line 5)`},
		{"one byte above", "[defaults]\nmemory_max = 1048576\nmemory_high = 1048577\n", 3, 15, `1048577 is above memory_max ("1M", line 2)`},
		{"equal", "[defaults]\nmemory_max = \"128M\"\nmemory_high = 134217728\n", 0, 0, ""},
		{"high alone", "[defaults]\nmemory_high = \"8T\"\n", 0, 0, ""},
		{"max infinity", "[defaults]\nmemory_max = \"infinity\"\nmemory_high = \"8T\"\n", 0, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.src)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ps Problems
			if !errors.As(err, &ps) || len(ps) != 1 {
				t.Fatalf("err = %v; want one problem", err)
			}
			if p := ps[0]; p.Line != tc.line || p.Column != tc.col || !strings.Contains(p.String(), tc.err) {
				t.Errorf("got %s\nwant line %d, column %d, saying %q", p, tc.line, tc.col, tc.err)
			}
		})
	}
}

// Names from systemd and the cgroup files lead to the keys.
func TestMemoryTaskKeyAliases(t *testing.T) {
	for word, want := range map[string]string{
		"MemoryMax": "memory_max", "memory.max": "memory_max", "memory_limit": "memory_max", "memory_mx": "memory_max",
		"MemoryHigh": "memory_high", "memory.high": "memory_high", "memory_hgih": "memory_high",
		"TasksMax": "tasks_max", "pids.max": "tasks_max", "nproc": "tasks_max", "task_max": "tasks_max",
	} {
		_, err := parse(t, "[defaults]\n"+tomlKey(word)+" = 1\n")
		if err == nil || !strings.Contains(err.Error(), `did you mean "`+want+`"?`) {
			t.Errorf("%s: %v; want a suggestion of %s", word, err, want)
		}
	}
	// A limit in [settings] is sent where it belongs.
	if _, err := parse(t, "[settings]\nmemory_max = \"1G\"\n"); err == nil || !strings.Contains(err.Error(), "is a limit, not a setting") {
		t.Errorf("memory_max in [settings]: %v", err)
	}
}
