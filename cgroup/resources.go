package cgroup

import "slices"

// Resources are the limits of one class of traffic (a vhost or the defaults),
// in the units operators write them in; each backend translates them to its
// own files. A zero field means "not set": the kernel's default applies.
type Resources struct {
	// CPUWeight is systemd's CPUWeight= scale, 1..10000, 100 being the
	// kernel default. v2 writes cpu.weight; v1 writes cpu.shares = weight*1024/100.
	CPUWeight uint64
	// CPUQuotaPercent is systemd's CPUQuota=: percent of one CPU, may exceed
	// 100 on machines with several CPUs. Zero means no cap.
	CPUQuotaPercent float64
	// IOWeight is systemd's IOWeight=, 1..10000 (v2 io.weight; v1
	// blkio.weight, scaled into 10..1000).
	IOWeight uint64
	// Devices holds per-device bandwidth and IOPS caps.
	Devices []DeviceLimit
	// MemoryMax is systemd's MemoryMax=, in bytes: the hard limit of the
	// memory charged to the group (v2 memory.max; v1
	// memory.limit_in_bytes). Zero means no limit.
	MemoryMax uint64
	// MemoryHigh is systemd's MemoryHigh=, in bytes: above it the group's
	// processes are throttled and its memory reclaimed (v2 memory.high);
	// v1 has only a soft limit that acts under memory pressure on the
	// whole machine (memory.soft_limit_in_bytes). Zero means no limit.
	MemoryHigh uint64
	// TasksMax is systemd's TasksMax=: how many tasks (processes and
	// threads) the group may hold; a fork or clone beyond it fails with
	// EAGAIN (pids.max, v1 and v2). Zero means no limit.
	TasksMax uint64
}

// Equal reports whether r and o set the same limits (a reload leaves a
// group alone when they do).
func (r Resources) Equal(o Resources) bool {
	return r.CPUWeight == o.CPUWeight && r.CPUQuotaPercent == o.CPUQuotaPercent &&
		r.IOWeight == o.IOWeight && slices.Equal(r.Devices, o.Devices) &&
		r.MemoryMax == o.MemoryMax && r.MemoryHigh == o.MemoryHigh && r.TasksMax == o.TasksMax
}

// DeviceLimit caps IO on one block device. Zero fields are not capped.
type DeviceLimit struct {
	// Path is the device as the operator wrote it, for messages.
	Path         string
	Major, Minor int64
	ReadBPS      uint64
	WriteBPS     uint64
	ReadIOPS     uint64
	WriteIOPS    uint64
}
