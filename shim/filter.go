package shim

import (
	"fmt"

	seccomp "github.com/seccomp/libseccomp-golang"
)

// Syscalls the supervisor may ask to intercept. This list is the one place
// that says what a filter can contain; the supervisor picks a subset by
// tracking mode, and the shim refuses anything else so that a typo cannot
// silently intercept nothing.
var knownSyscalls = map[string]bool{
	"accept": true, "accept4": true,
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
		if err := filter.AddRule(nr, seccomp.ActNotify); err != nil {
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
