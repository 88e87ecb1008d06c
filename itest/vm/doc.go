// Package vm runs one command as root inside a small qemu VM that boots
// Debian's stable kernel with unified cgroup v2, and returns its output and
// exit status. The project's machines have the hybrid cgroup layout (v1
// controllers, an empty cgroup2 at /sys/fs/cgroup/unified); with this
// package the same integration-test binary also runs on unified v2:
//
//	go run ./itest/vm/cmd/vmrun [-C DIR] [-env NAME]... [-timeout 20m] -- PROGRAM [ARGS...]
//
// or, from Go, vm.Run(ctx, vm.Config{Cache: cache, Output: w}, argv).
//
// # The VM
//
// qemu-system-x86_64 with software emulation (KVM hangs when nested
// here), 2 CPUs, 2 GiB, no network device, the serial console on qemu's
// stdout. The VM has no disk image: the host's root is shared read-only
// over 9p (-virtfs ... mount_tag=hostroot, readonly=on, multidevs=remap),
// so the VM sees /work and every installed program; programs and files
// it needs must therefore not be under /tmp or /run, which are the VM's
// own tmpfs. A sparse 256 MiB scratch disk, new for every run, is
// /dev/vda (major:minor 254:0) for io.max / io.weight tests.
//
// The kernel is the package Debian's linux-image-amd64 depends on
// (apt-cache depends), fetched with apt-get download into the cache
// (.cache/vm in the repository; CacheDir finds it), unpacked with dpkg -x,
// indexed with depmod, and extracted to an uncompressed vmlinux that qemu
// boots through its PVH entry point. This happens once, automatically,
// under a lock; later runs only stat files (apt's answer is kept until its
// package lists change).
//
// A tiny initramfs is built for every run: busybox-static, the modules
// for virtio-pci, 9p and virtio-blk in modules.dep order (virtio_ring,
// virtio, virtio_pci_modern_dev, virtio_pci_legacy_dev, virtio_pci, 9pnet,
// 9pnet_virtio, netfs, fscache, 9p, virtio_blk on 6.1), and two scripts.
// /init loads the modules, mounts the host root over 9p, puts a tmpfs on
// its /run holding busybox and stage 2, and switch_roots into it, so the
// host root is the VM's real root (not a chroot). Stage 2, PID 1, mounts
// tmpfs on /tmp, devpts, /dev/shm and cgroup2 alone on /sys/fs/cgroup
// (the kernel runs with cgroup_no_v1=all), points the kernel's module
// loader at the cached modules (so veth, bfq, ... load on demand, and
// MODPROBE_OPTIONS lets a plain modprobe find them), brings lo up, runs
// the command and prints a marker with its status before powering off.
// No controller is enabled in cgroup.subtree_control: that is the
// software under test's job.
//
// The command, its arguments, directory and environment are written into
// the initramfs as single-quoted sh words, so any argv survives; it runs
// with exactly PATH, HOME=/root, USER, LOGNAME, TERM=dumb, TMPDIR=/tmp,
// MODPROBE_OPTIONS and what Config.Env adds, stdin from /dev/null, and
// stdout and stderr on the console (one stream; the console's \r\n is
// turned back into \n). The markers carry a random nonce per run, so
// output that looks like one is just output. A VM that powers off, panics
// or is killed without printing the exit marker is an error, never a
// status.
//
// # systemd as init
//
// With Config.Systemd (vmrun -systemd) the VM boots the host's systemd as
// PID 1 instead of stage 2, for tests of vhqos as systemd runs it
// (itest/systemd). /init then loads the overlay module too and makes the
// root an overlay: the host's root over 9p, read-only, under a tmpfs that
// takes every write (gone with the VM, so a test may install packages and
// edit /etc). It mounts tmpfs on /run and /tmp (the host's, seen through
// 9p, are not the VM's: systemd would empty the host's /tmp file by file at
// boot, two minutes in emulation), removes /.dockerenv (on a host that is
// a docker container systemd would take the VM for a container and ignore
// the kernel's command line), links /lib/modules/RELEASE to the cached
// kernel's modules (udev and modprobe then load modules as on any
// system), installs vhqos-vm.target and vhqos-vm.service in
// /etc/systemd/system and switch_roots into /lib/systemd/systemd
// --unit=vhqos-vm.target. systemd mounts cgroup2 alone (cgroup_no_v1=all)
// and starts basic.target and the service only: none of the host's
// enabled services, no getty. The service runs the command between the
// markers, its output on /dev/console, as root in
// /system.slice/vhqos-vm.service, with the same environment as without
// systemd, and powers the VM off.
//
// # Measured (Debian 6.1.0-56-amd64 on the project's 2-core machines)
//
// Boot to power-off of /bin/true takes 2.5 to 4 s (up to 5 s when the
// machine is busy); most of it is the kernel's own start in emulation.
// With systemd as init (6.1.0-57-amd64, systemd 252) it takes 11 to 12 s
// to a shell command, and itest/systemd's whole run 60 to 70 s.
// Booting the compressed bzImage instead of vmlinux would cost 2.5 s more,
// the delay-loop calibration of the second CPU 1 s more without lpj=, and
// asking apt-cache for the kernel package 1 s more without its kept answer. Programs run about 20 times slower than on
// the host: fine for correctness, not for benchmarks.
//
// Inside, /sys/fs/cgroup/cgroup.controllers lists cpuset cpu io memory
// hugetlb pids rdma misc, and cgroup.subtree_control is empty. Seccomp user
// notification works, including SECCOMP_IOCTL_NOTIF_ADDFD with
// SECCOMP_ADDFD_FLAG_SEND (the supervisor's tests pass there). io.max
// throttles /dev/vda (1 MiB/s measured with O_DIRECT reads); io.weight
// exists but needs io.cost.qos enabled for the device, or the bfq
// scheduler (a module, loaded on demand) for io.bfq.weight. Sysctls differ
// from the host's in Debian's defaults: fs.protected_symlinks=1,
// kernel.sched_autogroup_enabled=0, kernel.perf_event_paranoid=3,
// kernel.yama.ptrace_scope=0; kernel.panic=-1 and panic_on_oops=1 come
// from the command line.
package vm
