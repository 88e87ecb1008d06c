package cgroup

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A setting is one line vhqos wants in one interface file of a group.
// Both backends turn Resources into settings (v1Settings, v2Settings) and
// write them through the same code (apply), so what the v1 tests prove about
// diffing, resetting and error reporting holds for v2 as well.
type setting struct {
	ctrl  string // the controller owning the file: v1 "cpu"/"blkio", v2 "cpu"/"io"; both "memory", "pids"
	file  string // the interface file, e.g. "cpu.max"
	key   string // identity for diffing: the file, plus " MAJ:MIN" for per-device lines
	value string // what to write
	reset string // what restores the kernel's default once the limit is dropped
	desc  string // the limit, in the operator's words, for messages
	dev   string // "MAJ:MIN" of a per-device line, "" for the others
}

const (
	cfsPeriodUsec = 100000 // cpu.cfs_period_us and the period of cpu.max
	minQuotaUsec  = 1000   // the kernel refuses quotas under 1 ms
	maxWeight     = 10000  // CPUWeight= and IOWeight= range 1..10000
	// minIOMax is the smallest limit v2 io.max takes: blk-throttle's
	// tg_set_limit refuses rbps, wbps, riops and wiops of 1 with EINVAL
	// on many kernels (Debian's 6.x among them); v1 takes 1.
	minIOMax = 2
)

// validate rejects values no backend can express, with the field's name.
func (r *Resources) validate() error {
	if r.CPUWeight > maxWeight {
		return fmt.Errorf("cpu weight %d is out of range 1..%d", r.CPUWeight, maxWeight)
	}
	if r.IOWeight > maxWeight {
		return fmt.Errorf("io weight %d is out of range 1..%d", r.IOWeight, maxWeight)
	}
	if q := r.CPUQuotaPercent; q < 0 || math.IsNaN(q) || math.IsInf(q, 0) || q > 1e9 {
		return fmt.Errorf("cpu quota %v%% is not a usable percentage", q)
	}
	seen := make(map[[2]int64]string, len(r.Devices))
	for _, d := range r.Devices {
		if d.Major < 0 || d.Minor < 0 {
			return fmt.Errorf("device %s has no valid number (%d:%d)", d.Path, d.Major, d.Minor)
		}
		k := [2]int64{d.Major, d.Minor}
		if other, dup := seen[k]; dup {
			return fmt.Errorf("devices %s and %s are the same device (%d:%d): merge their limits", other, d.Path, d.Major, d.Minor)
		}
		seen[k] = d.Path
	}
	return r.validateMemory()
}

// cpuShares maps systemd's CPUWeight= (default 100) to cpu.shares
// (default 1024), keeping the default a default.
func cpuShares(weight uint64) uint64 {
	return max(2, weight*1024/100)
}

// cpuQuotaUsec is the quota per 100 ms period for a percent of one CPU.
func cpuQuotaUsec(percent float64) int64 {
	return max(minQuotaUsec, int64(math.Round(percent*cfsPeriodUsec/100)))
}

// blkioWeight maps IOWeight= (1..10000, default 100) to the legacy CFQ
// blkio.weight (10..1000, default 500) the way systemd does, so a group with
// io_weight 100 weighs the same as a group that sets none.
func blkioWeight(weight uint64) uint64 {
	return min(1000, max(10, weight*500/100))
}

// bfqWeight maps IOWeight= to the bfq scheduler's weight (1..1000, default
// 100) the way systemd does: 1..100 stay as they are, 100..10000 scale
// linearly to 100..1000.
func bfqWeight(weight uint64) uint64 {
	if weight <= 100 {
		return max(1, weight)
	}
	return 100 + (weight-100)*900/9900
}

func devKey(d DeviceLimit) string {
	return strconv.FormatInt(d.Major, 10) + ":" + strconv.FormatInt(d.Minor, 10)
}

// ioWeightFiles says which proportional-IO files a group directory offers.
type ioWeightFiles struct {
	weight bool // blkio.weight (v1, CFQ, gone since Linux 5.0) or io.weight (v2, blk-iocost)
	bfq    bool // blkio.bfq.weight (v1) or io.bfq.weight (v2)
}

func statWeightFiles(dir, weight, bfq string) ioWeightFiles {
	_, errW := os.Stat(filepath.Join(dir, weight))
	_, errB := os.Stat(filepath.Join(dir, bfq))
	return ioWeightFiles{weight: errW == nil, bfq: errB == nil}
}

// v1Settings translates r into cgroup v1 files (cpu and blkio hierarchies).
// Unset fields produce no setting: apply resets what an earlier Set wrote.
func v1Settings(r Resources, io ioWeightFiles, blkioDir string) ([]setting, error) {
	var out []setting
	if r.CPUWeight != 0 {
		out = append(out, setting{ctrl: "cpu", file: "cpu.shares", key: "cpu.shares",
			value: strconv.FormatUint(cpuShares(r.CPUWeight), 10), reset: "1024",
			desc: fmt.Sprintf("cpu weight %d", r.CPUWeight)})
	}
	if r.CPUQuotaPercent != 0 {
		desc := fmt.Sprintf("cpu max %v%%", r.CPUQuotaPercent)
		out = append(out,
			setting{ctrl: "cpu", file: "cpu.cfs_period_us", key: "cpu.cfs_period_us",
				value: strconv.Itoa(cfsPeriodUsec), reset: strconv.Itoa(cfsPeriodUsec), desc: desc},
			setting{ctrl: "cpu", file: "cpu.cfs_quota_us", key: "cpu.cfs_quota_us",
				value: strconv.FormatInt(cpuQuotaUsec(r.CPUQuotaPercent), 10), reset: "-1", desc: desc})
	}
	if r.IOWeight != 0 {
		desc := fmt.Sprintf("io weight %d", r.IOWeight)
		switch {
		case io.weight:
			out = append(out, setting{ctrl: "blkio", file: "blkio.weight", key: "blkio.weight",
				value: strconv.FormatUint(blkioWeight(r.IOWeight), 10), reset: "500", desc: desc})
		case io.bfq:
			out = append(out, setting{ctrl: "blkio", file: "blkio.bfq.weight", key: "blkio.bfq.weight",
				value: strconv.FormatUint(bfqWeight(r.IOWeight), 10), reset: "100", desc: desc})
		default:
			return nil, fmt.Errorf("%s: this kernel's cgroup v1 blkio controller has no proportional IO scheduler (neither blkio.weight nor blkio.bfq.weight in %s: CFQ is gone since Linux 5.0 and bfq is not loaded); load bfq and select it for the device, or drop io_weight", desc, blkioDir)
		}
	}
	for _, d := range r.Devices {
		dev := devKey(d)
		for _, t := range []struct {
			file, what string
			v          uint64
		}{
			{"blkio.throttle.read_bps_device", "io read bps", d.ReadBPS},
			{"blkio.throttle.write_bps_device", "io write bps", d.WriteBPS},
			{"blkio.throttle.read_iops_device", "io read iops", d.ReadIOPS},
			{"blkio.throttle.write_iops_device", "io write iops", d.WriteIOPS},
		} {
			if t.v == 0 {
				continue
			}
			out = append(out, setting{ctrl: "blkio", file: t.file, key: t.file + " " + dev,
				value: dev + " " + strconv.FormatUint(t.v, 10), reset: dev + " 0",
				desc: fmt.Sprintf("%s for %s (%s)", t.what, d.Path, dev), dev: dev})
		}
	}
	return append(out, memorySettings(r, 1)...), nil
}

// v2Settings translates r into unified cgroup v2 files.
func v2Settings(r Resources, io ioWeightFiles, dir string) ([]setting, error) {
	var out []setting
	if r.CPUWeight != 0 {
		out = append(out, setting{ctrl: "cpu", file: "cpu.weight", key: "cpu.weight",
			value: strconv.FormatUint(r.CPUWeight, 10), reset: "100",
			desc: fmt.Sprintf("cpu weight %d", r.CPUWeight)})
	}
	if r.CPUQuotaPercent != 0 {
		out = append(out, setting{ctrl: "cpu", file: "cpu.max", key: "cpu.max",
			value: strconv.FormatInt(cpuQuotaUsec(r.CPUQuotaPercent), 10) + " " + strconv.Itoa(cfsPeriodUsec),
			reset: "max " + strconv.Itoa(cfsPeriodUsec),
			desc:  fmt.Sprintf("cpu max %v%%", r.CPUQuotaPercent)})
	}
	if r.IOWeight != 0 {
		desc := fmt.Sprintf("io weight %d", r.IOWeight)
		if !io.weight && !io.bfq {
			return nil, fmt.Errorf("%s: neither io.weight nor io.bfq.weight exists in %s (the kernel has no blk-iocost and bfq is not loaded); drop io_weight or use a kernel with CONFIG_BLK_CGROUP_IOCOST", desc, dir)
		}
		// Like systemd, write both when both exist: which one acts depends
		// on the device's scheduler.
		if io.weight {
			out = append(out, setting{ctrl: "io", file: "io.weight", key: "io.weight",
				value: "default " + strconv.FormatUint(r.IOWeight, 10), reset: "default 100", desc: desc})
		}
		if io.bfq {
			out = append(out, setting{ctrl: "io", file: "io.bfq.weight", key: "io.bfq.weight",
				value: strconv.FormatUint(bfqWeight(r.IOWeight), 10), reset: "100", desc: desc})
		}
	}
	for _, d := range r.Devices {
		if d.ReadBPS == 0 && d.WriteBPS == 0 && d.ReadIOPS == 0 && d.WriteIOPS == 0 {
			continue
		}
		dev := devKey(d)
		lim := func(v uint64) string {
			if v == 0 {
				return "max"
			}
			return strconv.FormatUint(max(minIOMax, v), 10)
		}
		out = append(out, setting{ctrl: "io", file: "io.max", key: "io.max " + dev,
			value: fmt.Sprintf("%s rbps=%s wbps=%s riops=%s wiops=%s", dev, lim(d.ReadBPS), lim(d.WriteBPS), lim(d.ReadIOPS), lim(d.WriteIOPS)),
			reset: dev + " rbps=max wbps=max riops=max wiops=max",
			desc:  fmt.Sprintf("io limits for %s (%s)", d.Path, dev), dev: dev})
	}
	return append(out, memorySettings(r, 2)...), nil
}

// A write is one line to put in a file: a new value or a reset.
type write struct {
	s     setting
	value string
	reset bool
}

// diff lists the writes that take a group from applied (what vhqos wrote
// before, keyed by setting.key) to desired: resets of dropped limits first,
// then every setting whose value changed. Untouched files are not written.
func diff(applied map[string]setting, desired []setting) []write {
	var out []write
	want := make(map[string]bool, len(desired))
	for _, s := range desired {
		want[s.key] = true
	}
	var dropped []string
	for k := range applied {
		if !want[k] {
			dropped = append(dropped, k)
		}
	}
	slices.Sort(dropped)
	for _, k := range dropped {
		out = append(out, write{s: applied[k], value: applied[k].reset, reset: true})
	}
	for _, s := range desired {
		if a, ok := applied[s.key]; !ok || a.value != s.value {
			out = append(out, write{s: s, value: s.value})
		}
	}
	return out
}

// writeFile writes one value to a cgroup interface file with a single
// write(2), the way the kernel expects it.
func writeFile(path, value string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	for {
		_, err = unix.Write(fd, []byte(value))
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

// apply performs the writes, recording each success in applied, so a
// failure half way leaves applied true to the files. dirOf names the group's
// directory for a controller.
func apply(applied map[string]setting, writes []write, dirOf func(ctrl string) (string, error)) error {
	for _, w := range writes {
		dir, err := dirOf(w.s.ctrl)
		if err != nil {
			return fmt.Errorf("%s: %w", w.s.desc, err)
		}
		path := filepath.Join(dir, w.s.file)
		err = writeFile(path, w.value)
		if err != nil && w.reset && w.s.dev != "" && errors.Is(err, unix.ENODEV) {
			// The device is gone (unplugged, a loop device removed), and
			// its limits went with it: there is nothing left to remove.
			err = nil
		}
		if err != nil {
			what := "setting " + w.s.desc
			if w.reset {
				what = "removing " + w.s.desc
			}
			hint := ""
			switch {
			case errors.Is(err, unix.ENOENT):
				hint = " (the kernel offers no such file here)"
			case errors.Is(err, unix.EBUSY) && w.s.ctrl == "memory":
				// v1 refuses a limit below what the group holds once
				// reclaim cannot bring it down.
				hint = " (the group holds more memory than that, and the kernel could not reclaim enough of it)"
			case errors.Is(err, unix.ENODEV) && w.s.dev != "":
				// Say why, as the QoS table's check does.
				hint = " (the kernel has no such disk)"
				if _, rerr := ResolveDevice(w.s.dev); rerr != nil {
					hint = " (" + rerr.Error() + ")"
				}
			}
			return fmt.Errorf("%s: writing %q to %s: %w%s", what, w.value, path, errors.Unwrap(err), hint)
		}
		if w.reset {
			delete(applied, w.s.key)
		} else {
			applied[w.s.key] = w.s
		}
	}
	return nil
}

// controllersOf lists, without duplicates, the controllers writes touch.
func controllersOf(writes []write) []string {
	var out []string
	for _, w := range writes {
		if !slices.Contains(out, w.s.ctrl) {
			out = append(out, w.s.ctrl)
		}
	}
	return out
}

// wantedControllers lists the controllers r needs in a backend's naming.
func wantedControllers(r Resources, ioName string) []string {
	var out []string
	if r.CPUWeight != 0 || r.CPUQuotaPercent != 0 {
		out = append(out, "cpu")
	}
	hasDev := false
	for _, d := range r.Devices {
		if d.ReadBPS != 0 || d.WriteBPS != 0 || d.ReadIOPS != 0 || d.WriteIOPS != 0 {
			hasDev = true
		}
	}
	if r.IOWeight != 0 || hasDev {
		out = append(out, ioName)
	}
	if r.MemoryMax != 0 || r.MemoryHigh != 0 {
		out = append(out, "memory")
	}
	if r.TasksMax != 0 {
		out = append(out, "pids")
	}
	return out
}

// validName accepts the names the QoS table allows for groups
// ([A-Za-z0-9][A-Za-z0-9_.-]*), which never contain "/" and are never "."
// or "..".
func validName(name string) error {
	if name == "" {
		return errors.New("empty cgroup name")
	}
	if name == "." || name == ".." || strings.Contains(name, "/") {
		return fmt.Errorf("cgroup name %q: must not be a path", name)
	}
	for i, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			i > 0 && (c == '_' || c == '.' || c == '-')
		if !ok {
			return fmt.Errorf("cgroup name %q: use letters, digits, and _ . - after the first character", name)
		}
	}
	return nil
}

// limitFile is an interface file vhqos writes limits to, with the value
// that restores the kernel's default (for per-device files, that of one
// device).
type limitFile struct {
	ctrl, file string
	reset      string
	perDevice  func(dev string) string
	// unset says whether a value read back means no limit, where that is
	// not reset itself (v1 memory limits read back "-1" as a number).
	unset func(v string) bool
}

// limitFiles lists every file v1Settings or v2Settings may write.
func limitFiles(version int) []limitFile {
	if version == 2 {
		return append([]limitFile{
			{ctrl: "cpu", file: "cpu.weight", reset: "100"},
			{ctrl: "cpu", file: "cpu.max", reset: "max " + strconv.Itoa(cfsPeriodUsec)},
			{ctrl: "io", file: "io.weight", reset: "default 100"},
			{ctrl: "io", file: "io.bfq.weight", reset: "100"},
			{ctrl: "io", file: "io.max", perDevice: func(dev string) string { return dev + " rbps=max wbps=max riops=max wiops=max" }},
		}, memoryLimitFiles(2)...)
	}
	zero := func(dev string) string { return dev + " 0" }
	return append([]limitFile{
		{ctrl: "cpu", file: "cpu.shares", reset: "1024"},
		{ctrl: "cpu", file: "cpu.cfs_period_us", reset: strconv.Itoa(cfsPeriodUsec)},
		{ctrl: "cpu", file: "cpu.cfs_quota_us", reset: "-1"},
		{ctrl: "blkio", file: "blkio.weight", reset: "500"},
		{ctrl: "blkio", file: "blkio.bfq.weight", reset: "100"},
		{ctrl: "blkio", file: "blkio.throttle.read_bps_device", perDevice: zero},
		{ctrl: "blkio", file: "blkio.throttle.write_bps_device", perDevice: zero},
		{ctrl: "blkio", file: "blkio.throttle.read_iops_device", perDevice: zero},
		{ctrl: "blkio", file: "blkio.throttle.write_iops_device", perDevice: zero},
	}, memoryLimitFiles(1)...)
}

// seedApplied reads back into g.applied the limits of a group an attached
// manager adopts: every value in a limit file that is not the kernel's
// default was written by the vhqos that had the group before, so the next
// Set resets those the caller no longer wants, as it does for its own.
// Files the kernel does not offer here (a controller not enabled, or not
// mounted) hold no limit and are skipped.
func (m *Manager) seedApplied(g *group) error {
	err := seedFiles(g.applied, &g.quota, limitFiles(m.version), func(ctrl string) (string, bool) {
		if m.version == 1 {
			i, ok := m.ctrlHier[ctrl]
			if !ok {
				return "", false
			}
			return g.dirs[i], true
		}
		return g.dirs[0], true
	})
	if err == nil && g.twin != nil {
		// The twin's cpu and pids limits, which the group's own files
		// repeat: the twin may have been made after them, by a later
		// attached manager.
		var files []limitFile
		for _, f := range limitFiles(2) {
			if slices.Contains(threadedControllers(), f.ctrl) {
				files = append(files, f)
			}
		}
		var quota float64
		err = seedFiles(g.twin.applied, &quota, files, func(string) (string, bool) { return g.twin.dir, true })
	}
	if err != nil {
		return fmt.Errorf("cgroups: reading the limits of %s: %w", g.name, err)
	}
	return nil
}

// seedFiles reads back into applied the values that are not the kernel's
// defaults in files, found by dirOf (false: not mounted), and the v1 CPU
// quota in force into quota.
func seedFiles(applied map[string]setting, quota *float64, files []limitFile, dirOf func(ctrl string) (string, bool)) error {
	for _, f := range files {
		dir, ok := dirOf(f.ctrl)
		if !ok {
			continue
		}
		file := filepath.Join(dir, f.file)
		data, err := os.ReadFile(file)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if f.perDevice == nil {
			v := strings.TrimSpace(lines[0])
			if !strings.HasPrefix(f.reset, "default ") {
				v = strings.TrimPrefix(v, "default ") // io.bfq.weight reads "default N" on newer kernels
			}
			if v != f.reset && (f.unset == nil || !f.unset(v)) {
				applied[f.file] = setting{ctrl: f.ctrl, file: f.file, key: f.file, value: v, reset: f.reset,
					desc: fmt.Sprintf("%s %q, set before this process attached", f.file, v)}
				if f.file == "cpu.cfs_quota_us" {
					// The quota in force, for nested.go's order of writes.
					if us, err := strconv.ParseInt(v, 10, 64); err == nil && us > 0 {
						*quota = float64(us) / 1000
					}
				}
			}
			continue
		}
		for _, line := range lines {
			dev, _, ok := strings.Cut(strings.TrimSpace(line), " ")
			if !ok || !strings.Contains(dev, ":") {
				continue
			}
			line = strings.TrimSpace(line)
			if reset := f.perDevice(dev); line != reset {
				applied[f.file+" "+dev] = setting{ctrl: f.ctrl, file: f.file, key: f.file + " " + dev, value: line, reset: reset,
					desc: fmt.Sprintf("%s %q, set before this process attached", f.file, line), dev: dev}
			}
		}
	}
	return nil
}
