package shim

import (
	"fmt"

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
	// As root, setuid helpers the server execs (suexec) must keep working, so
	// no_new_privs stays off; the kernel insists on it for everyone else.
	if err := filter.SetNoNewPrivsBit(noNewPrivs); err != nil {
		return -1, fmt.Errorf("setting no_new_privs=%v on the filter: %w", noNewPrivs, err)
	}
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
