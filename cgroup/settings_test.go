package cgroup

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// lines renders settings as "file=value" for compact expectations.
func lines(ss []setting) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.file+"="+s.value)
	}
	return out
}

var vda = DeviceLimit{Path: "/dev/vda", Major: 254, Minor: 0}

func withLimits(d DeviceLimit, rbps, wbps, riops, wiops uint64) DeviceLimit {
	d.ReadBPS, d.WriteBPS, d.ReadIOPS, d.WriteIOPS = rbps, wbps, riops, wiops
	return d
}

func TestV1Settings(t *testing.T) {
	tests := []struct {
		name string
		r    Resources
		io   ioWeightFiles
		want []string
		err  string
	}{
		{"nothing set writes nothing", Resources{}, ioWeightFiles{}, nil, ""},
		{"weight", Resources{CPUWeight: 800}, ioWeightFiles{}, []string{"cpu.shares=8192"}, ""},
		{"default weight is the default shares", Resources{CPUWeight: 100}, ioWeightFiles{}, []string{"cpu.shares=1024"}, ""},
		{"tiny weight keeps the minimum", Resources{CPUWeight: 1}, ioWeightFiles{}, []string{"cpu.shares=10"}, ""},
		{"quota", Resources{CPUQuotaPercent: 150}, ioWeightFiles{},
			[]string{"cpu.cfs_period_us=100000", "cpu.cfs_quota_us=150000"}, ""},
		{"quota under a millisecond is raised to the kernel's minimum", Resources{CPUQuotaPercent: 0.2}, ioWeightFiles{},
			[]string{"cpu.cfs_period_us=100000", "cpu.cfs_quota_us=1000"}, ""},
		{"io weight, CFQ", Resources{IOWeight: 100}, ioWeightFiles{weight: true, bfq: true}, []string{"blkio.weight=500"}, ""},
		{"io weight, CFQ, clamped", Resources{IOWeight: 10000}, ioWeightFiles{weight: true}, []string{"blkio.weight=1000"}, ""},
		{"io weight, bfq", Resources{IOWeight: 500}, ioWeightFiles{bfq: true}, []string{"blkio.bfq.weight=136"}, ""},
		{"io weight without a proportional scheduler", Resources{IOWeight: 500}, ioWeightFiles{}, nil,
			"no proportional IO scheduler"},
		{"device limits", Resources{Devices: []DeviceLimit{withLimits(vda, 1<<20, 0, 0, 50)}}, ioWeightFiles{},
			[]string{"blkio.throttle.read_bps_device=254:0 1048576", "blkio.throttle.write_iops_device=254:0 50"}, ""},
		{"memory and tasks", Resources{MemoryMax: 128 << 20, MemoryHigh: 100 << 20, TasksMax: 20}, ioWeightFiles{},
			[]string{"memory.limit_in_bytes=134217728", "memory.soft_limit_in_bytes=104857600", "pids.max=20"}, ""},
		{"memory high alone", Resources{MemoryHigh: 64 << 20}, ioWeightFiles{}, []string{"memory.soft_limit_in_bytes=67108864"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v1Settings(tc.r, tc.io, "/sys/fs/cgroup/blkio/x")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l := lines(got); !reflect.DeepEqual(l, tc.want) {
				t.Errorf("settings = %q, want %q", l, tc.want)
			}
		})
	}
}

func TestV2Settings(t *testing.T) {
	tests := []struct {
		name string
		r    Resources
		io   ioWeightFiles
		want []string
		err  string
	}{
		{"nothing set writes nothing", Resources{}, ioWeightFiles{}, nil, ""},
		{"weight and cap", Resources{CPUWeight: 400, CPUQuotaPercent: 20}, ioWeightFiles{},
			[]string{"cpu.weight=400", "cpu.max=20000 100000"}, ""},
		{"cap above one CPU", Resources{CPUQuotaPercent: 250}, ioWeightFiles{}, []string{"cpu.max=250000 100000"}, ""},
		{"io weight, iocost only", Resources{IOWeight: 500}, ioWeightFiles{weight: true}, []string{"io.weight=default 500"}, ""},
		{"io weight, both like systemd", Resources{IOWeight: 10000}, ioWeightFiles{weight: true, bfq: true},
			[]string{"io.weight=default 10000", "io.bfq.weight=1000"}, ""},
		{"io weight, no file", Resources{IOWeight: 500}, ioWeightFiles{}, nil, "neither io.weight nor io.bfq.weight"},
		{"io.max names every key", Resources{Devices: []DeviceLimit{withLimits(vda, 50<<20, 0, 0, 100)}}, ioWeightFiles{},
			[]string{"io.max=254:0 rbps=52428800 wbps=max riops=max wiops=100"}, ""},
		{"a device without limits writes nothing", Resources{Devices: []DeviceLimit{vda}}, ioWeightFiles{}, nil, ""},
		{"memory and tasks", Resources{MemoryMax: 128 << 20, MemoryHigh: 100 << 20, TasksMax: 20}, ioWeightFiles{},
			[]string{"memory.max=134217728", "memory.high=104857600", "pids.max=20"}, ""},
		{"tasks alone", Resources{TasksMax: 1}, ioWeightFiles{}, []string{"pids.max=1"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v2Settings(tc.r, tc.io, "/sys/fs/cgroup/x")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l := lines(got); !reflect.DeepEqual(l, tc.want) {
				t.Errorf("settings = %q, want %q", l, tc.want)
			}
		})
	}
}

func TestWeightMappings(t *testing.T) {
	for _, tc := range []struct{ w, bfq, cfq uint64 }{
		{1, 1, 10}, {50, 50, 250}, {100, 100, 500}, {200, 109, 1000}, {1000, 181, 1000}, {10000, 1000, 1000},
	} {
		if got := bfqWeight(tc.w); got != tc.bfq {
			t.Errorf("bfqWeight(%d) = %d, want %d", tc.w, got, tc.bfq)
		}
		if got := blkioWeight(tc.w); got != tc.cfq {
			t.Errorf("blkioWeight(%d) = %d, want %d", tc.w, got, tc.cfq)
		}
	}
}

// TestDiff walks one group through a sequence of Sets, as hot reloads do,
// and checks that each writes exactly what changed, resets included.
func TestDiff(t *testing.T) {
	steps := []struct {
		name string
		r    Resources
		want []string // "file=value", resets included, in write order
	}{
		{"first limits", Resources{CPUWeight: 200, CPUQuotaPercent: 50, Devices: []DeviceLimit{withLimits(vda, 100, 0, 0, 0)}},
			[]string{"cpu.weight=200", "cpu.max=50000 100000", "io.max=254:0 rbps=100 wbps=max riops=max wiops=max"}},
		{"same again writes nothing", Resources{CPUWeight: 200, CPUQuotaPercent: 50, Devices: []DeviceLimit{withLimits(vda, 100, 0, 0, 0)}},
			nil},
		{"one value changes", Resources{CPUWeight: 300, CPUQuotaPercent: 50, Devices: []DeviceLimit{withLimits(vda, 100, 0, 0, 0)}},
			[]string{"cpu.weight=300"}},
		{"dropped limits are reset", Resources{CPUWeight: 300},
			[]string{"cpu.max=max 100000", "io.max=254:0 rbps=max wbps=max riops=max wiops=max"}},
		{"memory and tasks limits", Resources{CPUWeight: 300, MemoryMax: 128 << 20, MemoryHigh: 96 << 20, TasksMax: 20},
			[]string{"memory.max=134217728", "memory.high=100663296", "pids.max=20"}},
		{"one memory limit changes", Resources{CPUWeight: 300, MemoryMax: 256 << 20, MemoryHigh: 96 << 20, TasksMax: 20},
			[]string{"memory.max=268435456"}},
		{"memory and tasks limits dropped", Resources{CPUWeight: 300},
			[]string{"memory.high=max", "memory.max=max", "pids.max=max"}},
		{"all dropped", Resources{}, []string{"cpu.weight=100"}},
		{"nothing left to reset", Resources{}, nil},
	}
	applied := map[string]setting{}
	for _, st := range steps {
		desired, err := v2Settings(st.r, ioWeightFiles{}, "/x")
		if err != nil {
			t.Fatal(err)
		}
		ws := diff(applied, desired)
		var got []string
		for _, w := range ws {
			got = append(got, w.s.file+"="+w.value)
		}
		if !reflect.DeepEqual(got, st.want) {
			t.Errorf("%s: writes = %q, want %q", st.name, got, st.want)
		}
		// Pretend every write succeeded.
		for _, w := range ws {
			if w.reset {
				delete(applied, w.s.key)
			} else {
				applied[w.s.key] = w.s
			}
		}
	}
}

// TestApplyKeepsStateOnFailure: a failed write is not recorded, so the
// next Set tries it again; the error names the limit, value and file.
func TestApplyKeepsStateOnFailure(t *testing.T) {
	dir := t.TempDir()
	applied := map[string]setting{}
	desired, _ := v2Settings(Resources{CPUWeight: 200, CPUQuotaPercent: 10}, ioWeightFiles{}, dir)
	// cpu.weight exists (a plain file stands in for it), cpu.max does not.
	if err := os.WriteFile(filepath.Join(dir, "cpu.weight"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := apply(applied, diff(applied, desired), func(string) (string, error) { return dir, nil })
	if err == nil {
		t.Fatal("writing a missing file succeeded")
	}
	for _, want := range []string{"cpu max 10%", `"10000 100000"`, filepath.Join(dir, "cpu.max"), "no such file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, ok := applied["cpu.weight"]; !ok {
		t.Error("the successful write was not recorded")
	}
	if _, ok := applied["cpu.max"]; ok {
		t.Error("the failed write was recorded")
	}
	if ws := diff(applied, desired); len(ws) != 1 || ws[0].s.file != "cpu.max" {
		t.Errorf("next diff = %+v, want just cpu.max", ws)
	}
}

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"home", true}, {"vhost-shop.example.com", true}, {"vhqos.1234", true}, {"A_b-c.d", true},
		{"", false}, {".", false}, {"..", false}, {"a/b", false}, {"/a", false}, {"-a", false},
		{".hidden", false}, {"a b", false}, {"a\x00", false}, {"ä", false},
	} {
		if err := validName(tc.name); (err == nil) != tc.ok {
			t.Errorf("validName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		r   Resources
		err string
	}{
		{Resources{CPUWeight: 10000, IOWeight: 1, CPUQuotaPercent: 400}, ""},
		{Resources{CPUWeight: 10001}, "cpu weight"},
		{Resources{IOWeight: 20000}, "io weight"},
		{Resources{CPUQuotaPercent: -1}, "cpu quota"},
		{Resources{Devices: []DeviceLimit{vda, {Path: "/dev/disk/by-id/x", Major: 254}}}, "same device"},
		{Resources{Devices: []DeviceLimit{{Path: "/dev/x", Major: -1}}}, "no valid number"},
		{Resources{MemoryMax: 128 << 20, MemoryHigh: 128 << 20, TasksMax: 1 << 22}, ""},
		{Resources{MemoryHigh: 1 << 40}, ""},
		{Resources{MemoryMax: 128 << 20, MemoryHigh: 128<<20 + 1}, "memory_high 134217729 bytes is above memory_max 134217728 bytes"},
		{Resources{TasksMax: 1<<22 + 1}, "tasks_max 4194305 is more than the kernel's largest pids.max, 4194304"},
	} {
		err := tc.r.validate()
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("validate(%+v) = %v, want %q", tc.r, err, tc.err)
		}
	}
}

// The controller messages name the QoS table keys that need it, only those
// the limits set.
func TestKeysNeeding(t *testing.T) {
	for _, tc := range []struct {
		r    Resources
		ctrl string
		want string
	}{
		{Resources{CPUWeight: 1, CPUQuotaPercent: 5}, "cpu", "cpu_weight and cpu_max"},
		{Resources{CPUQuotaPercent: 5}, "cpu", "cpu_max"},
		{Resources{IOWeight: 5, Devices: []DeviceLimit{withLimits(vda, 0, 1, 0, 0)}}, "io", "io_weight and io_write_bps"},
		{Resources{Devices: []DeviceLimit{withLimits(vda, 1, 0, 1, 1)}}, "blkio", "io_read_bps and io_read_iops and io_write_iops"},
		{Resources{MemoryMax: 1 << 20, MemoryHigh: 1 << 20}, "memory", "memory_max and memory_high"},
		{Resources{MemoryHigh: 1 << 20}, "memory", "memory_high"},
		{Resources{TasksMax: 3}, "pids", "tasks_max"},
		{Resources{}, "pids", "the limits"},
	} {
		if got := keysNeeding(tc.r, tc.ctrl); got != tc.want {
			t.Errorf("keysNeeding(%+v, %s) = %q, want %q", tc.r, tc.ctrl, got, tc.want)
		}
	}
}

// A v1 memory limit that was reset reads back as the largest page-aligned
// number, which an attached manager must take for no limit.
func TestUnlimitedV1(t *testing.T) {
	for v, want := range map[string]bool{
		"9223372036854771712": true, // 4 KiB pages
		"9223372036854710272": true, // 64 KiB pages
		"4611686018427387904": true,
		"134217728":           false,
		"-1":                  false, // never read back, and not a limit vhqos wrote either
		"":                    false,
	} {
		if got := unlimitedV1(v); got != want {
			t.Errorf("unlimitedV1(%q) = %v, want %v", v, got, want)
		}
	}
}
