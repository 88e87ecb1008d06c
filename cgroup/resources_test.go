package cgroup

import "testing"

func TestResourcesEqual(t *testing.T) {
	base := func() Resources {
		return Resources{CPUWeight: 200, CPUQuotaPercent: 50, IOWeight: 300,
			Devices:   []DeviceLimit{{Path: "/dev/vda", Major: 254, ReadBPS: 1 << 20}},
			MemoryMax: 128 << 20, MemoryHigh: 100 << 20, TasksMax: 20}
	}
	for _, tc := range []struct {
		name   string
		change func(*Resources)
		equal  bool
	}{
		{"same", func(*Resources) {}, true},
		{"cpu weight", func(r *Resources) { r.CPUWeight = 100 }, false},
		{"cpu max", func(r *Resources) { r.CPUQuotaPercent = 20 }, false},
		{"io weight", func(r *Resources) { r.IOWeight = 0 }, false},
		{"a device's cap", func(r *Resources) { r.Devices[0].ReadBPS = 2 << 20 }, false},
		{"another device", func(r *Resources) {
			r.Devices = append(r.Devices, DeviceLimit{Path: "/dev/vdb", Major: 254, Minor: 16})
		}, false},
		{"no devices", func(r *Resources) { r.Devices = nil }, false},
		{"memory max", func(r *Resources) { r.MemoryMax = 256 << 20 }, false},
		{"no memory max", func(r *Resources) { r.MemoryMax = 0 }, false},
		{"memory high", func(r *Resources) { r.MemoryHigh = 64 << 20 }, false},
		{"tasks max", func(r *Resources) { r.TasksMax = 21 }, false},
		{"no tasks max", func(r *Resources) { r.TasksMax = 0 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := base(), base()
			tc.change(&b)
			if got := a.Equal(b); got != tc.equal {
				t.Errorf("Equal = %v, want %v", got, tc.equal)
			}
		})
	}
}
