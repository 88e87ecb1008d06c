package policy

import (
	"fmt"
	"strings"

	"github.com/vhqos/vhqos/cgroup"
)

// Memory and task limits: memory_max, memory_high and tasks_max, like
// systemd's MemoryMax=, MemoryHigh= and TasksMax=.

// isMemoryTaskKey says whether k is one of the limit keys read here.
func isMemoryTaskKey(k string) bool {
	return k == "memory_max" || k == "memory_high" || k == "tasks_max"
}

const (
	// minMemory is the smallest memory limit taken: less cannot hold even
	// one server process, and a bare number that small is far more likely
	// a size written without its unit (memory_max = 512, meant as 512M)
	// than a limit anyone wants; the kernel would OOM-kill every request.
	minMemory = 1 << 20
	// maxTasks is the largest pids.max the kernel takes (PID_MAX_LIMIT,
	// 2^22 on 64-bit kernels).
	maxTasks = 1 << 22
)

// noLimit is the value that writes no limit, as systemd spells it.
const noLimit = "infinity"

// memoryTaskKey reads memory_max, memory_high or tasks_max (k) into r.
func (p *parser) memoryTaskKey(s scope, key, k string, v any, r *cgroup.Resources) {
	switch k {
	case "memory_max", "memory_high":
		n, err := parseMemory(k, v)
		if err != nil {
			p.valueProblem(s, key, "%v", err)
			return
		}
		if k == "memory_max" {
			r.MemoryMax = n
		} else {
			r.MemoryHigh = n
		}
		// Reported once, by whichever of the two is read second, at
		// memory_high: that is the one to lower.
		if r.MemoryHigh != 0 && r.MemoryMax != 0 && r.MemoryHigh > r.MemoryMax {
			p.valueProblem(s, s.key("memory_high"), "%s is above memory_max (%s, line %d); memory_high must be at most memory_max: it is there to slow the class down before memory_max stops it",
				formatSize(r.MemoryHigh), formatSize(r.MemoryMax), p.line(s.key("memory_max")))
		}
	case "tasks_max":
		if n, err := parseTasks(v); err != nil {
			p.valueProblem(s, key, "%v", err)
		} else {
			r.TasksMax = n
		}
	}
}

// parseMemory reads a memory_max or memory_high: a whole number of bytes,
// or a string with a K, M, G or T suffix, 1024-based like systemd ("128M",
// "1.5G"); "infinity" is no limit (0).
func parseMemory(key string, v any) (uint64, error) {
	what := fmt.Sprintf(`a size: a string with K, M, G or T (1024-based, like systemd's %s), e.g. "512M" or "2G", a whole number of bytes, or "infinity" for no limit`, systemdName(key))
	switch n := v.(type) {
	case int64:
		switch {
		case n <= 0:
			return 0, fmt.Errorf("%d: must be more than 0; for no limit write \"infinity\" or leave %s out", n, key)
		case n < minMemory:
			return 0, fmt.Errorf("%d is %d bytes, less than 1M, too little for any server process; a number without unit is bytes: did you mean \"%dM\"?", n, n, n)
		}
		return uint64(n), nil
	case float64:
		return 0, fmt.Errorf("%v is not a whole number of bytes; write %s", n, what)
	case string:
		s := strings.TrimSpace(n)
		if strings.EqualFold(s, noLimit) {
			return 0, nil
		}
		i := 0
		for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
			i++
		}
		num, unit := s[:i], strings.ToUpper(strings.TrimSpace(s[i:]))
		switch {
		case strings.HasPrefix(s, "-"):
			return 0, fmt.Errorf("%q: must be more than 0; for no limit write \"infinity\" or leave %s out", n, key)
		case strings.HasSuffix(s, "%"):
			// systemd takes a share of the machine's RAM; a table is
			// read on machines of every size.
			return 0, fmt.Errorf("%q: a share of the machine's memory is not taken here (the same table serves machines of every size); write %s", n, what)
		case isDecimal(num) && strings.Trim(num, "0.") == "":
			return 0, fmt.Errorf("%q: must be more than 0; for no limit write \"infinity\" or leave %s out", n, key)
		}
		if isDecimal(num) {
			if letter, ok := decimalUnit(unit); ok {
				return 0, fmt.Errorf("unknown unit %q in %q; write %q: K, M, G and T are 1024-based here, as in systemd's %s, and written without B", s[i:], n, num+letter, systemdName(key))
			}
		}
		size, err := parseSizeString(s, what)
		if err != nil {
			return 0, err
		}
		if size < minMemory {
			return 0, fmt.Errorf("%q is %d bytes, less than 1M, too little for any server process; write %s", n, size, what)
		}
		return size, nil
	}
	return 0, fmt.Errorf("is %s; write %s", typeName(v), what)
}

// decimalUnit recognises the unit spellings people bring from elsewhere
// ("MB", "MiB", "GB") and returns the letter this table wants instead.
func decimalUnit(unit string) (string, bool) {
	switch unit {
	case "KB", "KIB", "MB", "MIB", "GB", "GIB", "TB", "TIB":
		return unit[:1], true
	}
	return "", false
}

func systemdName(key string) string {
	if key == "memory_high" {
		return "MemoryHigh="
	}
	return "MemoryMax="
}

// parseTasks reads tasks_max: a whole number 1..maxTasks, or "infinity"
// for no limit (0).
func parseTasks(v any) (uint64, error) {
	const what = `a whole number of tasks (processes and threads) from 1 to 4194304, like systemd's TasksMax=, or "infinity" for no limit`
	switch n := v.(type) {
	case int64:
		switch {
		case n <= 0:
			return 0, fmt.Errorf("%d: must be at least 1; for no limit write \"infinity\" or leave tasks_max out", n)
		case n > maxTasks:
			return 0, fmt.Errorf("%d is more than the kernel takes: pids.max is at most %d (PID_MAX_LIMIT); for no limit write \"infinity\"", n, maxTasks)
		}
		return uint64(n), nil
	case float64:
		return 0, fmt.Errorf("%v is not a whole number; write %s", n, what)
	case string:
		s := strings.TrimSpace(n)
		switch {
		case strings.EqualFold(s, noLimit):
			return 0, nil
		case allDigits(s):
			return 0, fmt.Errorf("%q is a string; write the number without quotes: tasks_max = %s", n, s)
		case strings.HasSuffix(s, "%"):
			return 0, fmt.Errorf("%q: a share of the kernel's pid_max is not taken here (the same table serves machines of every size); write %s", n, what)
		}
		return 0, fmt.Errorf("%q is not a number of tasks; write %s", n, what)
	}
	return 0, fmt.Errorf("is %s; write %s", typeName(v), what)
}

// writeMemoryTasks writes the memory and task limits for Marshal; no
// limit is no key.
func writeMemoryTasks(b *strings.Builder, r *cgroup.Resources) {
	if r.MemoryMax != 0 {
		fmt.Fprintf(b, "memory_max = %s\n", formatSize(r.MemoryMax))
	}
	if r.MemoryHigh != 0 {
		fmt.Fprintf(b, "memory_high = %s\n", formatSize(r.MemoryHigh))
	}
	if r.TasksMax != 0 {
		fmt.Fprintf(b, "tasks_max = %d\n", r.TasksMax)
	}
}
