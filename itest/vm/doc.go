// Package vm runs a command inside a small qemu VM with Debian's stable
// kernel and unified cgroup v2, so the integration tests, which run on the
// host's cgroup v1 layout, run unchanged on v2 too. The VM has no disk
// image: it mounts the host's root read-only over 9p, gets its own tmpfs
// /tmp and /run, a 256 MiB scratch disk at /dev/vda for IO limits, and only
// loopback networking. Software emulation (KVM hangs when nested here) makes
// it about 20 times slower than the host: fine for correctness, not for
// benchmarks.
package vm
