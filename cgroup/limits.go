package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
)

const cfsPeriodUs = 100000

// apply writes r into g's files. Values r leaves unset are written back to
// the kernel's defaults, so that a limit removed from the table goes away.
func (m *Manager) apply(g *group, r Resources) error {
	if g.set && reflect.DeepEqual(g.res, r) {
		return nil
	}
	var err error
	if m.version == 2 {
		err = m.applyV2(g, r)
	} else {
		err = m.applyV1(g, r)
	}
	if err != nil {
		return err
	}
	g.res, g.set = r, true
	return nil
}

func (m *Manager) applyV1(g *group, r Resources) error {
	for _, d := range g.dirs {
		var err error
		switch d.controller {
		case "cpu":
			err = applyV1CPU(d.path, r)
		case "blkio":
			err = applyV1IO(d.path, r, g.res.Devices)
		}
		if err != nil {
			return err
		}
	}
	if !m.hasV1("blkio") && (r.IOWeight != 0 || len(r.Devices) > 0) {
		return errors.New("IO limits need the blkio cgroup hierarchy, which is not mounted")
	}
	return nil
}

func (m *Manager) hasV1(controller string) bool {
	for _, d := range m.dirs {
		if d.controller == controller {
			return true
		}
	}
	return false
}

func applyV1CPU(dir string, r Resources) error {
	shares := uint64(1024)
	if r.CPUWeight != 0 {
		shares = max(r.CPUWeight*1024/100, 2)
	}
	quota := int64(-1)
	if r.CPUQuotaPercent > 0 {
		quota = int64(r.CPUQuotaPercent * cfsPeriodUs / 100)
		quota = max(quota, 1000) // the kernel's minimum
	}
	return writeAll(dir, [][2]string{
		{"cpu.shares", strconv.FormatUint(shares, 10)},
		{"cpu.cfs_period_us", strconv.Itoa(cfsPeriodUs)},
		{"cpu.cfs_quota_us", strconv.FormatInt(quota, 10)},
	})
}

func applyV1IO(dir string, r Resources, before []DeviceLimit) error {
	var writes [][2]string
	if _, err := os.Stat(filepath.Join(dir, "blkio.weight")); err == nil {
		w := uint64(500) // v1's default
		if r.IOWeight != 0 {
			w = min(max(r.IOWeight/10, 10), 1000)
		}
		writes = append(writes, [2]string{"blkio.weight", strconv.FormatUint(w, 10)})
	} else if r.IOWeight != 0 {
		return fmt.Errorf("io_weight: %s has no blkio.weight; on cgroup v1 proportional IO needs the BFQ scheduler", dir)
	}
	for _, d := range withRemoved(r.Devices, before) {
		dev := fmt.Sprintf("%d:%d ", d.Major, d.Minor)
		writes = append(writes,
			[2]string{"blkio.throttle.read_bps_device", dev + strconv.FormatUint(d.ReadBPS, 10)},
			[2]string{"blkio.throttle.write_bps_device", dev + strconv.FormatUint(d.WriteBPS, 10)},
			[2]string{"blkio.throttle.read_iops_device", dev + strconv.FormatUint(d.ReadIOPS, 10)},
			[2]string{"blkio.throttle.write_iops_device", dev + strconv.FormatUint(d.WriteIOPS, 10)},
		)
	}
	return writeAll(dir, writes)
}

// withRemoved adds, for every device that had limits before and has none
// now, an entry with all limits zero (unlimited).
func withRemoved(now, before []DeviceLimit) []DeviceLimit {
	out := append([]DeviceLimit(nil), now...)
	for _, b := range before {
		found := false
		for _, n := range now {
			if n.Major == b.Major && n.Minor == b.Minor {
				found = true
				break
			}
		}
		if !found {
			out = append(out, DeviceLimit{Path: b.Path, Major: b.Major, Minor: b.Minor})
		}
	}
	return out
}

// v2Controllers lists the controllers r needs.
func v2Controllers(r Resources) []string {
	var c []string
	if r.CPUWeight != 0 || r.CPUQuotaPercent != 0 {
		c = append(c, "cpu")
	}
	if r.IOWeight != 0 || len(r.Devices) > 0 {
		c = append(c, "io")
	}
	return c
}

// enableV2 makes the controllers r needs available to the subtree's
// groups, writing cgroup.subtree_control from the mount down to the subtree.
func (m *Manager) enableV2(r Resources) error {
	var want []string
	for _, c := range v2Controllers(r) {
		if !m.enabled[c] {
			want = append(want, c)
		}
	}
	if len(want) == 0 {
		return nil
	}
	base := m.dirs[0].path
	mount := strings.TrimSuffix(base, m.rel)
	mgr, err := cgroup2.Load(filepath.Join(m.rel, "probe"), cgroup2.WithMountpoint(mount))
	if err != nil {
		return fmt.Errorf("loading cgroup %s: %w", base, err)
	}
	toggleErr := mgr.ToggleControllers(want, cgroup2.Enable)
	have, _ := os.ReadFile(filepath.Join(base, "cgroup.subtree_control"))
	for _, c := range want {
		if !containsWord(string(have), c) {
			avail, _ := os.ReadFile(filepath.Join(filepath.Dir(base), "cgroup.controllers"))
			return fmt.Errorf("cgroup v2 controller %q is not available for %s (its parent offers: %q): %v",
				c, base, strings.TrimSpace(string(avail)), toggleErr)
		}
		m.enabled[c] = true
	}
	return nil
}

func (m *Manager) applyV2(g *group, r Resources) error {
	dir := g.dirs[0].path
	var writes [][2]string
	if m.enabled["cpu"] {
		weight := uint64(100)
		if r.CPUWeight != 0 {
			weight = r.CPUWeight
		}
		quota := "max"
		if r.CPUQuotaPercent > 0 {
			quota = strconv.FormatInt(max(int64(r.CPUQuotaPercent*cfsPeriodUs/100), 1000), 10)
		}
		writes = append(writes,
			[2]string{"cpu.weight", strconv.FormatUint(weight, 10)},
			[2]string{"cpu.max", quota + " " + strconv.Itoa(cfsPeriodUs)})
	}
	if m.enabled["io"] {
		w := uint64(100)
		if r.IOWeight != 0 {
			w = r.IOWeight
		}
		if _, err := os.Stat(filepath.Join(dir, "io.weight")); err == nil {
			writes = append(writes, [2]string{"io.weight", "default " + strconv.FormatUint(w, 10)})
		} else if r.IOWeight != 0 {
			return fmt.Errorf("io_weight: %s has no io.weight (the kernel lacks the io cost or BFQ controller)", dir)
		}
		for _, d := range withRemoved(r.Devices, g.res.Devices) {
			writes = append(writes, [2]string{"io.max", fmt.Sprintf("%d:%d rbps=%s wbps=%s riops=%s wiops=%s",
				d.Major, d.Minor, maxIfZero(d.ReadBPS), maxIfZero(d.WriteBPS), maxIfZero(d.ReadIOPS), maxIfZero(d.WriteIOPS))})
		}
	}
	return writeAll(dir, writes)
}

func maxIfZero(v uint64) string {
	if v == 0 {
		return "max"
	}
	return strconv.FormatUint(v, 10)
}

func writeAll(dir string, writes [][2]string) error {
	for _, w := range writes {
		if err := writeFile(filepath.Join(dir, w[0]), w[1]); err != nil {
			return fmt.Errorf("writing %q to %s/%s: %w", w[1], dir, w[0], err)
		}
	}
	return nil
}

func containsWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// Usage is what a group has consumed since it was made.
type Usage struct {
	CPUUsec          uint64 // CPU time used
	ThrottledUsec    uint64 // time its processes were held back by cpu max
	ThrottledPeriods uint64 // how many periods cpu max bit
	IOReadBytes      uint64
	IOWriteBytes     uint64
	Processes        int
}

// Usage reads the group's CPU and IO accounting.
func (m *Manager) Usage(name string) (Usage, error) {
	m.mu.RLock()
	g := m.groups[name]
	m.mu.RUnlock()
	if g == nil {
		return Usage{}, fmt.Errorf("no cgroup group %q", name)
	}
	var u Usage
	for i, d := range g.dirs {
		if i == 0 {
			pids, _ := readPids(filepath.Join(d.path, "cgroup.procs"))
			u.Processes = len(pids)
		}
		switch {
		case m.version == 2:
			kv, err := readKV(filepath.Join(d.path, "cpu.stat"))
			if err != nil {
				return u, err
			}
			u.CPUUsec, u.ThrottledUsec, u.ThrottledPeriods = kv["usage_usec"], kv["throttled_usec"], kv["nr_throttled"]
			u.IOReadBytes, u.IOWriteBytes = readIOStatV2(filepath.Join(d.path, "io.stat"))
		case d.controller == "cpuacct":
			data, err := os.ReadFile(filepath.Join(d.path, "cpuacct.usage"))
			if err != nil {
				return u, fmt.Errorf("reading CPU usage of %s: %w", d.path, err)
			}
			ns, _ := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
			u.CPUUsec = ns / 1000
		case d.controller == "cpu":
			kv, err := readKV(filepath.Join(d.path, "cpu.stat"))
			if err != nil {
				return u, err
			}
			u.ThrottledUsec, u.ThrottledPeriods = kv["throttled_time"]/1000, kv["nr_throttled"]
		}
	}
	return u, nil
}

func readKV(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok {
			out[k], _ = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return out, sc.Err()
}

// readIOStatV2 sums rbytes and wbytes over the devices of an io.stat file.
func readIOStatV2(path string) (r, w uint64) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0
	}
	for _, f := range strings.Fields(string(data)) {
		if v, ok := strings.CutPrefix(f, "rbytes="); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			r += n
		} else if v, ok := strings.CutPrefix(f, "wbytes="); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			w += n
		}
	}
	return r, w
}
