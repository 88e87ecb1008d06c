package shim

import (
	"fmt"

	"golang.org/x/sys/unix"

	seccomp "github.com/seccomp/libseccomp-golang"
)

// Syscalls the supervisor may ask to intercept. This list is the one place
// that says what a filter can contain; the supervisor picks a subset by
// tracking mode, and the shim refuses anything else so that a typo cannot
// silently intercept nothing.
var knownSyscalls = map[string]bool{
	"accept": true, "accept4": true,
	// Process creation. clone is sent only when it makes a process, not a
	// thread (CLONE_THREAD clear): thread creation stays free. clone3
	// keeps its flags in memory a filter cannot read, so it fails with
	// ENOSYS and the C library falls back to clone, as container runtimes
	// do for the same reason.
	"fork": true, "vfork": true, "clone": true, "clone3": true,
	// The fd table: fcntl only for F_DUPFD and F_DUPFD_CLOEXEC.
	"dup": true, "dup2": true, "dup3": true, "fcntl": true, "close": true,
	// The read family (recv is recvfrom on x86-64).
	"read": true, "readv": true, "recvfrom": true, "recvmsg": true,
}

// loadFilter installs a filter on the calling thread that sends the named
// syscalls to a user-space supervisor and allows everything else, and returns
// the notification fd. The caller must be locked to its OS thread and exec
// from that same thread: seccomp filters are per thread.
func loadFilter(syscalls []string, noNewPrivs bool) (int, error) {
	filter, err := seccomp.NewFilter(seccomp.ActAllow)
	if err != nil {
		return -1, fmt.Errorf("creating seccomp filter: %w", err)
	}
	defer filter.Release()
	// As root, setuid helpers the server execs (suexec) must keep working, so
	// no_new_privs stays off; the kernel insists on it for everyone else.
	if err := filter.SetNoNewPrivsBit(noNewPrivs); err != nil {
		return -1, fmt.Errorf("setting no_new_privs=%v on the filter: %w", noNewPrivs, err)
	}
	for _, name := range syscalls {
		if !knownSyscalls[name] {
			return -1, fmt.Errorf("syscall %q cannot be intercepted", name)
		}
		nr, err := seccomp.GetSyscallFromName(name)
		if err != nil {
			return -1, fmt.Errorf("looking up syscall %q: %w", name, err)
		}
		if err := addRule(filter, name, nr); err != nil {
			return -1, fmt.Errorf("adding notify rule for %s: %w", name, err)
		}
	}
	if err := filter.Load(); err != nil {
		return -1, fmt.Errorf("loading seccomp filter (the kernel needs CONFIG_SECCOMP_FILTER and user notification, Linux 5.9 or later): %w", err)
	}
	fd, err := filter.GetNotifFd()
	if err != nil {
		return -1, fmt.Errorf("getting the seccomp notification fd: %w", err)
	}
	return int(fd), nil
}

// addRule adds the rule for one syscall, narrowed by its arguments where
// that spares notifications the supervisor has no use for.
func addRule(filter *seccomp.ScmpFilter, name string, nr seccomp.ScmpSyscall) error {
	switch name {
	case "clone":
		notThread, err := seccomp.MakeCondition(0, seccomp.CompareMaskedEqual, unix.CLONE_THREAD, 0)
		if err != nil {
			return err
		}
		return filter.AddRuleConditional(nr, seccomp.ActNotify, []seccomp.ScmpCondition{notThread})
	case "clone3":
		return filter.AddRule(nr, seccomp.ActErrno.SetReturnCode(int16(unix.ENOSYS)))
	case "fcntl":
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
