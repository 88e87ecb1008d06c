package intercept

import "golang.org/x/sys/unix"

// Step is what the supervisor does with a notification of one syscall:
// which handler answers it and which arguments it reads.
type Step uint8

const (
	// StepNone is a syscall not in the table: the supervisor lets it
	// through unchanged.
	StepNone Step = iota
	// StepAccept is accept(fd, addr, addrlen): the supervisor emulates
	// it, or lets the kernel do it where the listener decides the class.
	StepAccept
	// StepAccept4 is accept4, the same with flags in its fourth argument.
	StepAccept4
	// StepFork makes a process born with its caller's fd table and
	// cgroup: fork, vfork, and clone without CLONE_THREAD (the filter
	// lets thread creation through).
	StepFork
	// StepClose is close(fd): the caller may be letting go of its last
	// connection.
	StepClose
	// StepDup copies the fd in the first argument to a number the kernel
	// picks: dup, and fcntl with F_DUPFD or F_DUPFD_CLOEXEC (the filter
	// lets the other fcntl commands through).
	StepDup
	// StepDupTo copies the fd in the first argument onto the one in the
	// second, closing that first: dup2, dup3.
	StepDupTo
	// StepRead reads from the fd in the first argument: read, readv,
	// recvfrom (recv on x86-64), recvmsg.
	StepRead
	// StepRefused is failed by the filter itself with ENOSYS and never
	// reaches the supervisor: clone3 keeps its flags in memory a filter
	// cannot read, and the C library falls back to clone, as container
	// runtimes arrange for the same reason.
	StepRefused
)

// Syscall is one system call the filter can intercept.
type Syscall struct {
	// Name is the syscall's name as libseccomp and the kernel spell it; it
	// is also the supervisor's latency metric label for the call.
	Name string
	// Nr is the syscall's number on x86-64, as seccomp_data.nr carries
	// it in a notification.
	Nr int32
	// Step is what the supervisor does with it.
	Step Step
	// Track is the lowest tracking mode whose filter contains it.
	Track Track
	// Thread says thread placement (PlaceThread) needs it whatever the
	// tracking mode: the serving thread shows itself by reading.
	Thread bool
}

// table is every syscall vhqos can intercept, the only list of them. It is
// never written after initialisation.
var table = [...]Syscall{
	{"accept", unix.SYS_ACCEPT, StepAccept, TrackAccept, false},
	{"accept4", unix.SYS_ACCEPT4, StepAccept4, TrackAccept, false},
	{"fork", unix.SYS_FORK, StepFork, TrackFull, false},
	{"vfork", unix.SYS_VFORK, StepFork, TrackFull, false},
	{"clone", unix.SYS_CLONE, StepFork, TrackFull, false},
	{"clone3", unix.SYS_CLONE3, StepRefused, TrackFull, false},
	{"dup", unix.SYS_DUP, StepDup, TrackFull, false},
	{"dup2", unix.SYS_DUP2, StepDupTo, TrackFull, false},
	{"dup3", unix.SYS_DUP3, StepDupTo, TrackFull, false},
	{"fcntl", unix.SYS_FCNTL, StepDup, TrackFull, false},
	{"close", unix.SYS_CLOSE, StepClose, TrackFull, false},
	{"read", unix.SYS_READ, StepRead, TrackFull, true},
	{"readv", unix.SYS_READV, StepRead, TrackFull, true},
	{"recvfrom", unix.SYS_RECVFROM, StepRead, TrackFull, true},
	{"recvmsg", unix.SYS_RECVMSG, StepRead, TrackFull, true},
}

// ByNr returns the syscall with number nr, as a notification carries it.
// It runs once per notification, so it does not allocate; accept and
// accept4 are found first.
func ByNr(nr int32) (Syscall, bool) {
	for i := range table {
		if table[i].Nr == nr {
			return table[i], true
		}
	}
	return Syscall{}, false
}

// ByName returns the syscall called name; ok is false for a syscall vhqos
// cannot intercept.
func ByName(name string) (Syscall, bool) {
	for i := range table {
		if table[i].Name == name {
			return table[i], true
		}
	}
	return Syscall{}, false
}
