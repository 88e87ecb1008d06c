// Package intercept is the one list of the system calls vhqos intercepts:
// for each, its name, its number, the step of the supervisor that handles
// it and the lowest tracking mode (Track, the QoS table's [settings] track)
// that needs it. The shim builds the seccomp filter from it, the
// supervisor dispatches each notification by it and labels its latency
// metric with its names, and the policy package reads the tracking mode.
// It imports nothing of vhqos, so each of them can depend on it.
//
// The numbers are those of the native architecture, x86-64, where the
// filter is loaded (golang.org/x/sys/unix SYS_*, the kernel's
// arch/x86/entry/syscalls/syscall_64.tbl).
package intercept
