// Package cgroup gives each class of traffic (every vhost and the defaults) a
// cgroup of its own under one vhqos subtree, sets its CPU and IO limits and
// moves the processes serving it there. It hides the difference between the
// cgroup v1 (and hybrid) layout and unified cgroup v2 behind one Manager,
// built on github.com/containerd/cgroups/v3.
//
// # Layout
//
// A Manager owns Parent/Name (Parent defaults to the supervisor's own
// cgroup): one child per group, named in names.go. New creates HomeGroup,
// for the server's processes that serve no connection; Set creates the
// others: DefaultGroup for connections matching no vhost, VHostGroup(name)
// for each vhost. cgroups.Mode decides the backend: unified v2 at
// /sys/fs/cgroup, otherwise v1 (a hybrid layout counts as v1, since its
// controllers are bound to v1), where the subtree exists once in each
// hierarchy carrying cpu, cpuacct, blkio, memory or pids (co-mounted
// controllers share one); a process is placed in all of them. Path reports
// a group as /proc/PID/cgroup shows it: the "0::" line under v2, the cpu
// line under v1.
//
// # Limits
//
// Set translates Resources into interface files (v1Settings, v2Settings)
// and writes only what changed since the last Set; a limit that disappears
// is written back to the kernel's default. Both backends share the diffing
// and writing code.
//
//	                 v1                                   v2
//	cpu weight w     cpu.shares = max(2, w*1024/100)      cpu.weight = w
//	cpu max p%       cpu.cfs_quota_us = p*1000            cpu.max = "p*1000 100000"
//	                 (cfs_period_us = 100000)
//	io weight w      blkio.weight = clamp(5w, 10, 1000)   io.weight = "default w"
//	                 or blkio.bfq.weight = bfq(w)         and/or io.bfq.weight = bfq(w)
//	device limits    blkio.throttle.{read,write}_         io.max = "MAJ:MIN rbps=.. wbps=..
//	                 {bps,iops}_device = "MAJ:MIN n"        riops=.. wiops=.." (max = none)
//	memory max b     memory.limit_in_bytes = b (-1)       memory.max = b (max)
//	memory high b    memory.soft_limit_in_bytes = b (-1)  memory.high = b (max)
//	tasks max n      pids.max = n (max)                   pids.max = n (max)
//
// (In parentheses: what a dropped limit is reset to.) The kernel keeps
// memory limits in whole pages, rounding down. A v1 soft limit only
// steers reclaim when the whole machine is short of memory; it neither
// throttles nor counts anything, unlike v2's memory.high. v1 refuses to
// lower memory.limit_in_bytes below what the group holds when reclaim
// cannot make room (EBUSY); v2 reclaims and, failing that, OOM-kills.
// Moving a process moves none of its memory charge on either layout:
// v1's memory.move_charge_at_immigrate, which vhqos never sets, is
// deprecated (Linux 6.18 refuses to set it, EINVAL).
//
// A controller the limits need that the machine lacks (a v1 hierarchy not
// mounted, a v2 controller the parent does not offer) fails Set with one
// line naming the QoS table keys that need it (keysNeeding).
//
// Usage reads what the kernel counted: CPU time and throttling, IO bytes,
// memory charged and memory events (v2 memory.events high, max, oom,
// oom_kill; v1 memory.failcnt as "max" and memory.oom_control's
// oom_kill), tasks and the forks pids.max refused (pids.events max).
//
// Device limits go by MAJ:MIN and apply to whole disks only.
// ResolveDevice turns a path or MAJ:MIN into a disk by /sys/dev/block, and
// tells a partition (an error naming its disk) from a device this machine
// lacks (ErrNoDevice); the QoS table's reader uses it, so that a limit it
// accepts is one the kernel takes. Removing the limits of a disk that has
// gone succeeds: the kernel dropped them with the disk.
//
// The IO weight mappings are systemd's: a group with io weight 100 weighs
// the same as a group that sets none (CFQ's default 500, bfq's 100); bfq(w)
// is w up to 100, then linear to 1000 at 10000. Quotas under 1 ms are raised
// to 1 ms, the kernel's minimum.
//
// # Unified cgroup v2
//
// A cgroup that hands controllers to its children may hold no processes
// (the root excepted). Controllers are enabled when a group's limits first
// need them, in cgroup.subtree_control of every level from base (Parent, or
// its deepest existing ancestor when New had to create Parent) down to
// Parent/Name; a controller base does not offer is a one-line error naming
// the controller and base's cgroup.controllers. When the supervisor sits in
// base and base is not the root (the Delegate=yes case: Parent ""), New
// moves the supervisor into the leaf base/<Name>.supervisor, beside its
// subtree rather than inside it, so that everything in Parent/Name is the
// server's (cgroup.kill there can never hit the supervisor) and the
// supervisor competes with the server as a whole, not with each vhost.
// Processes other than the supervisor's in base make New fail with advice
// (systemd Delegate=yes, systemd-run --scope -p Delegate=yes, or
// settings.cgroup_parent). Close gives back the controllers it enabled and
// moves the supervisor back.
//
// # Owner and attached managers
//
// The subtree has one owner, the New without Options.Attach (vhqos's
// long-lived keeper), which makes it and, in Close, kills what is left and
// removes it. Another process the owner started (the supervisor, restarted
// after a crash) works on the same subtree through a New with Attach: it
// opens the groups that are there, reads back the limits in them so that
// its first Set of a group drops what the table no longer has, creates
// missing groups and enables controllers along the owner's chain (which it
// learns from the xattr user.vhqos.base on Parent/Name when the owner had
// to create Parent), but moves no process of its own and its Close only
// closes files. The owner's Close gives back the controllers an attached
// manager enabled as well, since under v2 it could not move back into base
// otherwise. RemoveStale removes the subtrees of owners that died without
// Close (SIGKILL): vhqos.<PID> directories whose PID is no running process.
//
// # Threads
//
// With Options.Threads, PlaceThread moves one thread of a process and
// leaves the others where they are (threads.go). Under v1 the thread goes
// into tasks of the group in the cpu, cpuacct, blkio and pids hierarchies,
// which all account per thread; memory charges the process (its mm), so
// the memory hierarchy keeps the whole process where Place put it.
//
// Under v2 the threads of a process may only be spread within one threaded
// subtree, over the threaded controllers (cpu, pids; io and memory are
// domain controllers): Documentation/admin-guide/cgroup-v2.rst, "Threads".
// So Parent/Name/threads is a domain (it becomes "domain threaded") whose
// children are threaded twins of the groups: threads/home, threads/default,
// threads/vhost-x, threads/tenant-t and threads/tenant-t/vhost-x, each of
// cgroup.type "threaded", with cpu and pids handed down in their
// cgroup.subtree_control as they are enabled for the subtree. Set writes a
// group's cpu weight, cpu max and tasks max to its twin as well; Remove
// moves the twin's threads into the target's twin and deletes it; Usage adds
// the twin's CPU time, throttling and tasks to the group's; an attached
// manager opens the twins it finds. The domain groups are unchanged, for
// processes Place moves whole with every controller.
//
//	Parent/Name/                 io, memory, cpu, pids handed down
//	├── home, default, vhost-x   domain groups: Place (whole processes)
//	├── tenant-t/vhost-x
//	└── threads/                 domain threaded: io and memory of every
//	    │                        process in the threaded subtree; no limits
//	    ├── home, default, vhost-x      threaded: PlaceThread (cpu, pids)
//	    └── tenant-t/vhost-x
//
// A thread gets into a twin only when its process is in the threaded
// subtree (else the kernel says EOPNOTSUPP): PlaceThread then first moves
// the whole process into threads/home through its cgroup.procs. From then
// on the process's io and memory are charged to threads, which carries no
// limit: the io and memory limits of the groups reach processes Place put
// in them (single-threaded ones: CGIs, prefork children), not placed
// threads. threads competes with the domain groups as one group of the
// default cpu weight, and a group's cpu max bounds the group and its twin
// each.
//
// # Hot path
//
// Place runs per accepted connection: it writes the pid, with one write(2)
// per hierarchy, to cgroup.procs files kept open from the group's creation,
// under a read lock, without allocating. Writing a thread id to cgroup.procs
// moves its whole process. PlaceThread does the same with cgroup.threads
// (v2) or tasks (v1) files: one write under v2, one per hierarchy but
// memory's under v1.
package cgroup
