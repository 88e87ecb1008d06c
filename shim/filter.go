package shim

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	seccomp "github.com/seccomp/libseccomp-golang"

	"github.com/vhqos/vhqos/intercept"
)

// loadFilter installs a filter on the calling thread that sends the named
// syscalls to a user-space supervisor and allows everything else, and returns
// the notification fd. The caller must be locked to its OS thread and exec
// from that same thread: seccomp filters are per thread. The names must be
// in package intercept's table, the one list of what a filter can contain:
// the supervisor picks a subset by tracking mode, and anything else is
// refused so that a typo cannot silently intercept nothing.
func loadFilter(syscalls []string, noNewPrivs bool) (int, error) {
	filter, err := seccomp.NewFilter(seccomp.ActAllow)
	if err != nil {
		return -1, fmt.Errorf("creating seccomp filter: %w", err)
	}
	defer filter.Release()
	for _, name := range syscalls {
		sc, ok := intercept.ByName(name)
		if !ok {
			return -1, fmt.Errorf("syscall %q cannot be intercepted", name)
		}
		// The table's number, not libseccomp's lookup by name: the
		// supervisor dispatches by the same number (TestFilterNumbers
		// checks that libseccomp agrees).
		if err := addRule(filter, sc); err != nil {
			return -1, fmt.Errorf("adding notify rule for %s: %w", name, err)
		}
	}
	prog, err := exportBPF(filter)
	if err != nil {
		return -1, err
	}
	// As root, setuid helpers the server execs (suexec) must keep working, so
	// no_new_privs stays off; the kernel insists on it for everyone else.
	if noNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return -1, fmt.Errorf("setting no_new_privs: %w", err)
		}
	}
	// libseccomp's Load also asked for TSYNC (every thread of the
	// process); the shim installs the filter on the one thread that then
	// execs, and exec keeps only that thread, so it is not needed.
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER)
	if KillableWaits() {
		flags |= unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
	} else {
		// Before Linux 5.19: a signal can end a call while the
		// supervisor answers it (docs/design-notes.md, "writing the peer
		// address could race a signal").
		fmt.Fprintln(os.Stderr, "vhqos shim: this kernel lacks SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19); a signal that arrives while vhqos hands over a connection can end the accept and crash a server whose handlers lack SA_RESTART")
	}
	fd, err := installFilter(prog, flags)
	if err != nil {
		return -1, fmt.Errorf("loading seccomp filter (the kernel needs CONFIG_SECCOMP_FILTER and user notification, Linux 5.9 or later): %w", err)
	}
	return fd, nil
}

// KillableWaits reports whether the kernel knows
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19), with which a call
// the supervisor has received ends only for a fatal signal. seccomp(2)
// checks its flags before it reads the program, so a NULL program gets
// EFAULT from a kernel that knows them and EINVAL from one that does not
// (libseccomp probes its flags the same way).
func KillableWaits() bool {
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER|unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, 0)
	return errno == unix.EFAULT
}

// exportBPF compiles filter into the BPF program the kernel loads.
// libseccomp builds it; the shim loads it itself because the flag it needs
// (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) is settable through libseccomp
// only from 2.6, and Debian 12 ships 2.5.
func exportBPF(filter *seccomp.ScmpFilter) ([]unix.SockFilter, error) {
	mfd, err := unix.MemfdCreate("vhqos-filter", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("making a memfd for the seccomp program: %w", err)
	}
	f := os.NewFile(uintptr(mfd), "vhqos-filter")
	defer f.Close()
	if err := filter.ExportBPF(f); err != nil {
		return nil, fmt.Errorf("compiling the seccomp filter: %w", err)
	}
	raw, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the compiled seccomp filter: %w", err)
	}
	const insnSize = int(unsafe.Sizeof(unix.SockFilter{}))
	if len(raw) == 0 || len(raw)%insnSize != 0 || len(raw)/insnSize > 0xffff {
		return nil, fmt.Errorf("the compiled seccomp filter is %d bytes, not a program of %d-byte instructions", len(raw), insnSize)
	}
	prog := make([]unix.SockFilter, len(raw)/insnSize)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(raw)), raw)
	return prog, nil
}

// installFilter installs prog on the calling thread with seccomp(2)'s
// SECCOMP_SET_MODE_FILTER and flags, and returns the notification fd
// (SECCOMP_FILTER_FLAG_NEW_LISTENER).
//
// With SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19,
// Documentation/userspace-api/seccomp_filter.rst) a call the supervisor
// has received waits for its answer through every signal but a fatal
// one, so nothing the supervisor writes into the caller (an accept's peer
// address) can land after the caller has left the call. The supervisor
// answers calls it holds for a long time itself when a signal waits
// (supervisor/signals.go).
func installFilter(prog []unix.SockFilter, flags uintptr) (int, error) {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	fd, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// addRule adds the rule for one syscall, narrowed by its arguments where
// that spares notifications the supervisor has no use for.
func addRule(filter *seccomp.ScmpFilter, sc intercept.Syscall) error {
	nr := seccomp.ScmpSyscall(sc.Nr)
	if sc.Step == intercept.StepRefused {
		return filter.AddRule(nr, seccomp.ActErrno.SetReturnCode(int16(unix.ENOSYS)))
	}
	switch sc.Name {
	case "clone":
		// Only when it makes a process: thread creation stays free.
		notThread, err := seccomp.MakeCondition(0, seccomp.CompareMaskedEqual, unix.CLONE_THREAD, 0)
		if err != nil {
			return err
		}
		return filter.AddRuleConditional(nr, seccomp.ActNotify, []seccomp.ScmpCondition{notThread})
	case "fcntl":
		// Only the commands that copy an fd (intercept.StepDup).
		for _, cmd := range []uint64{unix.F_DUPFD, unix.F_DUPFD_CLOEXEC} {
			c, err := seccomp.MakeCondition(1, seccomp.CompareEqual, cmd)
			if err != nil {
				return err
			}
			if err := filter.AddRuleConditional(nr, seccomp.ActNotify, []seccomp.ScmpCondition{c}); err != nil {
				return err
			}
		}
		return nil
	}
	return filter.AddRule(nr, seccomp.ActNotify)
}
