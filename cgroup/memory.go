package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Memory and task limits (MemoryMax=, MemoryHigh=, TasksMax=) and the
// kernel's own counters of the times a group ran into them.
//
//	                v1                                   v2
//	memory_max      memory.limit_in_bytes = bytes        memory.max = bytes
//	memory_high     memory.soft_limit_in_bytes = bytes   memory.high = bytes
//	tasks_max       pids.max = n (pids hierarchy)        pids.max = n
//
// The kernel rounds memory limits down to whole pages. A v1 soft limit is
// only looked at when the whole machine runs short of memory (reclaim then
// starts with the groups furthest over theirs); it neither throttles nor
// counts anything, unlike v2's memory.high.

// maxTasks is the largest pids.max the kernel takes: PID_MAX_LIMIT (2^22
// on 64-bit kernels); kernel/cgroup/pids.c refuses anything from
// PID_MAX_LIMIT+1 on with EINVAL.
const maxTasks = 1 << 22

// memoryResetV1 is what memory.limit_in_bytes and memory.soft_limit_in_bytes
// take to mean "no limit"; they then read back as the largest page-aligned
// value (9223372036854771712 with 4 KiB pages).
const memoryResetV1 = "-1"

// memorySettings translates the memory and task limits of r into the
// files of a backend (version 1 or 2).
func memorySettings(r Resources, version int) []setting {
	maxFile, highFile, reset := "memory.max", "memory.high", "max"
	if version == 1 {
		maxFile, highFile, reset = "memory.limit_in_bytes", "memory.soft_limit_in_bytes", memoryResetV1
	}
	var out []setting
	if r.MemoryMax != 0 {
		out = append(out, setting{ctrl: "memory", file: maxFile, key: maxFile,
			value: strconv.FormatUint(r.MemoryMax, 10), reset: reset,
			desc: fmt.Sprintf("memory_max %d bytes", r.MemoryMax)})
	}
	if r.MemoryHigh != 0 {
		out = append(out, setting{ctrl: "memory", file: highFile, key: highFile,
			value: strconv.FormatUint(r.MemoryHigh, 10), reset: reset,
			desc: fmt.Sprintf("memory_high %d bytes", r.MemoryHigh)})
	}
	if r.TasksMax != 0 {
		out = append(out, setting{ctrl: "pids", file: "pids.max", key: "pids.max",
			value: strconv.FormatUint(r.TasksMax, 10), reset: "max",
			desc: fmt.Sprintf("tasks_max %d", r.TasksMax)})
	}
	return out
}

// memoryLimitFiles lists the files memorySettings may write, for
// seedApplied.
func memoryLimitFiles(version int) []limitFile {
	if version == 2 {
		return []limitFile{
			{ctrl: "memory", file: "memory.max", reset: "max"},
			{ctrl: "memory", file: "memory.high", reset: "max"},
			{ctrl: "pids", file: "pids.max", reset: "max"},
		}
	}
	return []limitFile{
		{ctrl: "memory", file: "memory.limit_in_bytes", reset: memoryResetV1, unset: unlimitedV1},
		{ctrl: "memory", file: "memory.soft_limit_in_bytes", reset: memoryResetV1, unset: unlimitedV1},
		{ctrl: "pids", file: "pids.max", reset: "max"},
	}
}

// unlimitedV1 says whether a v1 memory limit file reads as no limit: the
// kernel shows PAGE_COUNTER_MAX pages in bytes, LONG_MAX rounded down to
// a page, so anything from 2^62 on is "-1" written back.
func unlimitedV1(v string) bool {
	n, err := strconv.ParseUint(v, 10, 64)
	return err == nil && n >= 1<<62
}

// validateMemory rejects memory and task limits no backend can express.
func (r *Resources) validateMemory() error {
	if r.MemoryHigh != 0 && r.MemoryMax != 0 && r.MemoryHigh > r.MemoryMax {
		return fmt.Errorf("memory_high %d bytes is above memory_max %d bytes", r.MemoryHigh, r.MemoryMax)
	}
	if r.TasksMax > maxTasks {
		return fmt.Errorf("tasks_max %d is more than the kernel's largest pids.max, %d", r.TasksMax, maxTasks)
	}
	return nil
}

// keysNeeding names the QoS table keys set in r that need the controller
// ctrl (either backend's name for it), for messages such as "memory_max:
// the cgroup v1 memory controller is not mounted".
func keysNeeding(r Resources, ctrl string) string {
	var keys []string
	add := func(set bool, key string) {
		if set {
			keys = append(keys, key)
		}
	}
	switch ctrl {
	case "cpu":
		add(r.CPUWeight != 0, "cpu_weight")
		add(r.CPUQuotaPercent != 0, "cpu_max")
	case "io", "blkio":
		add(r.IOWeight != 0, "io_weight")
		var rb, wb, ri, wi bool
		for _, d := range r.Devices {
			rb, wb, ri, wi = rb || d.ReadBPS != 0, wb || d.WriteBPS != 0, ri || d.ReadIOPS != 0, wi || d.WriteIOPS != 0
		}
		add(rb, "io_read_bps")
		add(wb, "io_write_bps")
		add(ri, "io_read_iops")
		add(wi, "io_write_iops")
	case "memory":
		add(r.MemoryMax != 0, "memory_max")
		add(r.MemoryHigh != 0, "memory_high")
	case "pids":
		add(r.TasksMax != 0, "tasks_max")
	}
	if len(keys) == 0 {
		return "the limits"
	}
	return strings.Join(keys, " and ")
}

// memoryUsage adds to u what the memory and pids controllers count for a
// group whose directory for each is memDir and pidsDir ("" where the
// kernel does not account it).
//
// v2: memory.current, and memory.events (the times the group reached
// memory.high and memory.max, went out of memory, and had a process
// killed by the OOM killer); v1: memory.usage_in_bytes, memory.failcnt
// (charges that hit memory.limit_in_bytes, the counterpart of v2's
// "max") and the oom_kill line of memory.oom_control. Both: pids.current
// and the "max" line of pids.events (forks refused by pids.max).
func memoryUsage(u *Usage, version int, memDir, pidsDir string) error {
	if memDir != "" {
		if err := memoryCounters(u, version, memDir); err != nil {
			return err
		}
	}
	if pidsDir == "" {
		return nil
	}
	cur, err := readUint(filepath.Join(pidsDir, "pids.current"))
	if errors.Is(err, os.ErrNotExist) {
		return nil // v2: the pids controller is not enabled for the subtree
	}
	if err != nil {
		return err
	}
	events, err := readKeyed(filepath.Join(pidsDir, "pids.events"))
	if err != nil {
		return err
	}
	u.Pids, u.Tasks, u.TasksMaxEvents = true, cur, events["max"]
	return nil
}

func memoryCounters(u *Usage, version int, dir string) error {
	if version == 2 {
		cur, err := readUint(filepath.Join(dir, "memory.current"))
		if errors.Is(err, os.ErrNotExist) {
			return nil // the memory controller is not enabled for the subtree
		}
		if err != nil {
			return err
		}
		events, err := readKeyed(filepath.Join(dir, "memory.events"))
		if err != nil {
			return err
		}
		u.Memory, u.MemoryBytes = true, cur
		u.MemoryEvents = make(map[string]uint64, 4)
		for _, k := range []string{"high", "max", "oom", "oom_kill"} {
			u.MemoryEvents[k] = events[k]
		}
		return nil
	}
	cur, err := readUint(filepath.Join(dir, "memory.usage_in_bytes"))
	if err != nil {
		return err
	}
	failcnt, err := readUint(filepath.Join(dir, "memory.failcnt"))
	if err != nil {
		return err
	}
	oom, err := readKeyed(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		return err
	}
	u.Memory, u.MemoryBytes = true, cur
	u.MemoryEvents = map[string]uint64{"max": failcnt}
	if k, ok := oom["oom_kill"]; ok { // since Linux 4.13
		u.MemoryEvents["oom_kill"] = k
	}
	return nil
}

// readUint reads a file holding one unsigned number.
func readUint(file string) (uint64, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", file, err)
	}
	return n, nil
}

// readKeyed reads a flat keyed file ("key value" lines: memory.events,
// pids.events, memory.oom_control). Lines whose value is not a number
// are skipped.
func readKeyed(file string) (map[string]uint64, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := make(map[string]uint64)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	return out, nil
}
