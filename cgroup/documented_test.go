package cgroup

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// What README.md and policy/REFERENCE.md say each limit writes, at the
// edges of the values a QoS table takes:
//
//   - cpu_weight 1..10000: v2 cpu.weight as is; v1 cpu.shares = weight × 1024 / 100
//   - cpu_max more than 0% up to 100000%: quota per 100 ms period in cpu.max
//     (v2) or cpu.cfs_quota_us (v1); "the kernel's smallest quota is 1 ms per
//     period, so caps under 1% act as 1%"
//   - io_weight 1..10000: v2 io.weight as is, io.bfq.weight scaled to 1..1000;
//     v1 blkio.bfq.weight scaled to 1..1000, or CFQ's blkio.weight to 10..1000
//   - io_{read,write}_{bps,iops}: v2 io.max, v1 blkio.throttle.*; SIZE from 1
//     to 2^63-1, COUNT from 1 to 2^32-2 (what the table takes); "io.max
//     takes no limit under 2, so 1 acts as 2 under cgroup v2"
//   - memory_max, memory_high from 1M to 8388607T (what the table takes):
//     v2 memory.max and memory.high, v1 memory.limit_in_bytes and
//     memory.soft_limit_in_bytes, in bytes
//   - tasks_max 1..4194304: pids.max on both

// Largest values a QoS table takes (policy: parseSize, maxIOPS,
// parseMemorySize, tasks_max), and the smallest memory limit.
const (
	largestSize   = 1<<63 - 1
	largestCount  = 1<<32 - 2
	smallestMem   = 1 << 20
	largestMem    = 8388607 << 40 // "8388607T"
	largestTasks  = 1 << 22
	largestMemStr = "9223370937343148032"
)

func TestDocumentedLimitFiles(t *testing.T) {
	both := ioWeightFiles{weight: true, bfq: true}
	bfqOnly := ioWeightFiles{bfq: true}
	cfqOnly := ioWeightFiles{weight: true}
	tests := []struct {
		name   string
		r      Resources
		v1io   ioWeightFiles
		v1, v2 []string
	}{
		{"cpu_weight smallest", Resources{CPUWeight: 1}, ioWeightFiles{}, []string{"cpu.shares=10"}, []string{"cpu.weight=1"}},
		{"cpu_weight kernel default", Resources{CPUWeight: 100}, ioWeightFiles{}, []string{"cpu.shares=1024"}, []string{"cpu.weight=100"}},
		{"cpu_weight largest", Resources{CPUWeight: 10000}, ioWeightFiles{}, []string{"cpu.shares=102400"}, []string{"cpu.weight=10000"}},
		{"cpu_max smallest", Resources{CPUQuotaPercent: 0.001}, ioWeightFiles{},
			[]string{"cpu.cfs_period_us=100000", "cpu.cfs_quota_us=1000"}, []string{"cpu.max=1000 100000"}},
		{"cpu_max just under 1% acts as 1%", Resources{CPUQuotaPercent: 0.999}, ioWeightFiles{},
			[]string{"cpu.cfs_period_us=100000", "cpu.cfs_quota_us=1000"}, []string{"cpu.max=1000 100000"}},
		{"cpu_max 1%", Resources{CPUQuotaPercent: 1}, ioWeightFiles{},
			[]string{"cpu.cfs_period_us=100000", "cpu.cfs_quota_us=1000"}, []string{"cpu.max=1000 100000"}},
		{"cpu_max just over 1%", Resources{CPUQuotaPercent: 1.001}, ioWeightFiles{},
			[]string{"cpu.cfs_period_us=100000", "cpu.cfs_quota_us=1001"}, []string{"cpu.max=1001 100000"}},
		{"cpu_max one CPU", Resources{CPUQuotaPercent: 100}, ioWeightFiles{},
			[]string{"cpu.cfs_period_us=100000", "cpu.cfs_quota_us=100000"}, []string{"cpu.max=100000 100000"}},
		{"cpu_max largest", Resources{CPUQuotaPercent: 100000}, ioWeightFiles{},
			[]string{"cpu.cfs_period_us=100000", "cpu.cfs_quota_us=100000000"}, []string{"cpu.max=100000000 100000"}},
		{"io_weight smallest, bfq", Resources{IOWeight: 1}, bfqOnly, []string{"blkio.bfq.weight=1"}, []string{"io.weight=default 1", "io.bfq.weight=1"}},
		{"io_weight kernel default, bfq", Resources{IOWeight: 100}, bfqOnly, []string{"blkio.bfq.weight=100"}, []string{"io.weight=default 100", "io.bfq.weight=100"}},
		{"io_weight largest, bfq", Resources{IOWeight: 10000}, bfqOnly, []string{"blkio.bfq.weight=1000"}, []string{"io.weight=default 10000", "io.bfq.weight=1000"}},
		{"io_weight smallest, CFQ", Resources{IOWeight: 1}, cfqOnly, []string{"blkio.weight=10"}, []string{"io.weight=default 1", "io.bfq.weight=1"}},
		{"io_weight kernel default, CFQ", Resources{IOWeight: 100}, both, []string{"blkio.weight=500"}, []string{"io.weight=default 100", "io.bfq.weight=100"}},
		{"io_weight largest, CFQ", Resources{IOWeight: 10000}, cfqOnly, []string{"blkio.weight=1000"}, []string{"io.weight=default 10000", "io.bfq.weight=1000"}},
		{"io limits smallest: 1 acts as 2 under v2", Resources{Devices: []DeviceLimit{withLimits(vda, 1, 1, 1, 1)}}, ioWeightFiles{},
			[]string{"blkio.throttle.read_bps_device=254:0 1", "blkio.throttle.write_bps_device=254:0 1",
				"blkio.throttle.read_iops_device=254:0 1", "blkio.throttle.write_iops_device=254:0 1"},
			[]string{"io.max=254:0 rbps=2 wbps=2 riops=2 wiops=2"}},
		{"io limits 2", Resources{Devices: []DeviceLimit{withLimits(vda, 2, 0, 2, 0)}}, ioWeightFiles{},
			[]string{"blkio.throttle.read_bps_device=254:0 2", "blkio.throttle.read_iops_device=254:0 2"},
			[]string{"io.max=254:0 rbps=2 wbps=max riops=2 wiops=max"}},
		{"io limits largest", Resources{Devices: []DeviceLimit{withLimits(vda, largestSize, largestSize, largestCount, largestCount)}}, ioWeightFiles{},
			[]string{"blkio.throttle.read_bps_device=254:0 9223372036854775807", "blkio.throttle.write_bps_device=254:0 9223372036854775807",
				"blkio.throttle.read_iops_device=254:0 4294967294", "blkio.throttle.write_iops_device=254:0 4294967294"},
			[]string{"io.max=254:0 rbps=9223372036854775807 wbps=9223372036854775807 riops=4294967294 wiops=4294967294"}},
		{"memory smallest, tasks smallest", Resources{MemoryMax: smallestMem, MemoryHigh: smallestMem, TasksMax: 1}, ioWeightFiles{},
			[]string{"memory.limit_in_bytes=1048576", "memory.soft_limit_in_bytes=1048576", "pids.max=1"},
			[]string{"memory.max=1048576", "memory.high=1048576", "pids.max=1"}},
		{"memory largest, tasks largest", Resources{MemoryMax: largestMem, MemoryHigh: largestMem, TasksMax: largestTasks}, ioWeightFiles{},
			[]string{"memory.limit_in_bytes=" + largestMemStr, "memory.soft_limit_in_bytes=" + largestMemStr, "pids.max=4194304"},
			[]string{"memory.max=" + largestMemStr, "memory.high=" + largestMemStr, "pids.max=4194304"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v1, err := v1Settings(tc.r, tc.v1io, "/sys/fs/cgroup/blkio/x")
			if err != nil {
				t.Fatal(err)
			}
			if l := lines(v1); !reflect.DeepEqual(l, tc.v1) {
				t.Errorf("v1 writes %q, want %q", l, tc.v1)
			}
			v2, err := v2Settings(tc.r, both, "/sys/fs/cgroup/x")
			if err != nil {
				t.Fatal(err)
			}
			if l := lines(v2); !reflect.DeepEqual(l, tc.v2) {
				t.Errorf("v2 writes %q, want %q", l, tc.v2)
			}
		})
	}
}

// The kernel takes the values at the edges as the limits they are: what is
// read back is what was meant. IOPS: 2^32-1 is the kernel's "no limit",
// which is why the largest COUNT a table takes is 2^32-2. A limit of 1 is
// refused by v2 io.max on Debian's kernel (EINVAL), and so is written as 2
// there.
func TestDocumentedLimitsKernelTakes(t *testing.T) {
	m := newTestManager(t, Options{})
	type file struct{ ctrl, name, want string }
	cpu := func(v1, v2 []file) []file {
		if m.Version() == 2 {
			return v2
		}
		return v1
	}
	tests := []struct {
		name  string
		r     Resources
		files []file
	}{
		{"cpu_weight smallest, cpu_max smallest", Resources{CPUWeight: 1, CPUQuotaPercent: 0.001}, cpu(
			[]file{{"cpu", "cpu.shares", "10"}, {"cpu", "cpu.cfs_quota_us", "1000"}},
			[]file{{"cpu", "cpu.weight", "1"}, {"cpu", "cpu.max", "1000 100000"}})},
		{"cpu_weight largest, cpu_max largest", Resources{CPUWeight: 10000, CPUQuotaPercent: 100000}, cpu(
			[]file{{"cpu", "cpu.shares", "102400"}, {"cpu", "cpu.cfs_quota_us", "100000000"}},
			[]file{{"cpu", "cpu.weight", "10000"}, {"cpu", "cpu.max", "100000000 100000"}})},
	}
	mem := func(v1, v2 []file) []file {
		if m.Version() == 2 {
			return v2
		}
		return v1
	}
	tests = append(tests, []struct {
		name  string
		r     Resources
		files []file
	}{
		{"memory smallest, tasks smallest", Resources{MemoryMax: smallestMem, MemoryHigh: smallestMem, TasksMax: 1}, mem(
			[]file{{"memory", "memory.limit_in_bytes", "1048576"}, {"memory", "memory.soft_limit_in_bytes", "1048576"}, {"pids", "pids.max", "1"}},
			[]file{{"memory", "memory.max", "1048576"}, {"memory", "memory.high", "1048576"}, {"pids", "pids.max", "1"}})},
		{"memory largest, tasks largest", Resources{MemoryMax: largestMem, MemoryHigh: largestMem, TasksMax: largestTasks}, mem(
			[]file{{"memory", "memory.limit_in_bytes", largestMemStr}, {"memory", "memory.soft_limit_in_bytes", largestMemStr}, {"pids", "pids.max", "4194304"}},
			[]file{{"memory", "memory.max", largestMemStr}, {"memory", "memory.high", largestMemStr}, {"pids", "pids.max", "4194304"}})},
		// The kernel keeps memory limits in pages.
		{"memory not a whole number of pages", Resources{MemoryMax: 2*smallestMem + 1, MemoryHigh: smallestMem + 4097}, mem(
			[]file{{"memory", "memory.limit_in_bytes", "2097152"}, {"memory", "memory.soft_limit_in_bytes", "1052672"}},
			[]file{{"memory", "memory.max", "2097152"}, {"memory", "memory.high", "1052672"}})},
	}...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := m.Set("vhost-edge", tc.r); err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.files {
				if got := read(t, fileOf(t, m, "vhost-edge", f.ctrl, f.name)); got != f.want {
					t.Errorf("%s = %q, want %q", f.name, got, f.want)
				}
			}
		})
	}

	t.Run("io limits", func(t *testing.T) {
		dev := blockDevice(t)
		key := fmt.Sprintf("%d:%d", dev.Major, dev.Minor)
		for _, tc := range []struct {
			name       string
			bps, iops  uint64
			v1bps      string // blkio.throttle.read_bps_device
			v1iops     string // blkio.throttle.read_iops_device
			v2contains string // in io.max
		}{
			{"smallest", 1, 1, key + " 1", key + " 1", key + " rbps=2 wbps=max riops=2 wiops=max"},
			{"2", 2, 2, key + " 2", key + " 2", key + " rbps=2 wbps=max riops=2 wiops=max"},
			{"largest", largestSize, largestCount, key + " 9223372036854775807", key + " 4294967294",
				key + " rbps=9223372036854775807 wbps=max riops=4294967294 wiops=max"},
			{"2^32-1 operations is no limit", 2, 1<<32 - 1, key + " 2", "", key + " rbps=2 wbps=max riops=max wiops=max"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := m.Set("vhost-io-edge", Resources{Devices: []DeviceLimit{withLimits(dev, tc.bps, 0, tc.iops, 0)}})
				if m.Version() == 2 && err != nil && strings.Contains(err.Error(), "controller is not available") {
					t.Skipf("no io controller: %v", err)
				}
				if err != nil {
					t.Fatal(err)
				}
				if m.Version() == 1 {
					if got := read(t, fileOf(t, m, "vhost-io-edge", "blkio", "blkio.throttle.read_bps_device")); got != tc.v1bps {
						t.Errorf("read_bps_device = %q, want %q", got, tc.v1bps)
					}
					if got := read(t, fileOf(t, m, "vhost-io-edge", "blkio", "blkio.throttle.read_iops_device")); got != tc.v1iops {
						t.Errorf("read_iops_device = %q, want %q", got, tc.v1iops)
					}
				} else if got := read(t, fileOf(t, m, "vhost-io-edge", "io", "io.max")); !strings.Contains(got, tc.v2contains) {
					t.Errorf("io.max = %q, want %q", got, tc.v2contains)
				}
			})
		}
	})

	t.Run("io_weight", func(t *testing.T) {
		for _, w := range []uint64{1, 10000} {
			err := m.Set("vhost-w-edge", Resources{IOWeight: w})
			if err != nil {
				for _, why := range []string{"no proportional IO scheduler", "neither io.weight nor io.bfq.weight", "controller is not available"} {
					if strings.Contains(err.Error(), why) {
						t.Skipf("kernel has no IO weight here: %v", err)
					}
				}
				t.Fatal(err)
			}
			m.placeMu.RLock()
			applied := m.groups["vhost-w-edge"].applied
			m.placeMu.RUnlock()
			if len(applied) == 0 {
				t.Fatalf("io_weight %d wrote nothing", w)
			}
			for _, s := range applied {
				if got := read(t, fileOf(t, m, "vhost-w-edge", s.ctrl, s.file)); !strings.HasSuffix(got, strings.TrimPrefix(s.value, "default ")) {
					t.Errorf("io_weight %d: %s = %q, want %q", w, s.file, got, s.value)
				}
			}
		}
	})
}
