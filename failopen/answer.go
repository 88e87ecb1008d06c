package failopen

import (
	"context"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's structures (linux/seccomp.h), as the supervisor uses them.
type notification struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Data  struct {
		Nr                 int32
		Arch               uint32
		InstructionPointer uint64
		Args               [6]uint64
	}
}

type response struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// Continue answers notification id with "continue". It reports whether the
// notification was waiting for an answer; one already answered, never
// received or gone with its thread makes the kernel refuse (ENOENT,
// EINPROGRESS), which is not an error here.
func Continue(notifyFd int, id uint64) bool {
	r := response{ID: id, Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(notifyFd), unix.SECCOMP_IOCTL_NOTIF_SEND, uintptr(unsafe.Pointer(&r)))
	return errno == 0
}

// AnswerLeftovers answers with "continue" every notification a dead
// supervisor left received and unanswered: the ids in t, and, when it
// died abruptly (crashed), for the one it may have received but not yet
// recorded, the few ids after the newest it recorded (ids count up; a
// notification not yet received is refused, so trying one does no harm).
// It returns how many were answered and the connections it held, and
// clears t.
func AnswerLeftovers(notifyFd int, t *Table, crashed bool) (answered int, held int64) {
	ids, last, held := t.Pending()
	for _, id := range ids {
		if Continue(notifyFd, id) {
			answered++
		}
	}
	if crashed && last != 0 {
		for id := last + 1; id <= last+afterLast; id++ {
			if Continue(notifyFd, id) {
				answered++
			}
		}
	}
	t.Clear()
	return answered, held
}

// afterLast is how many ids after the newest recorded one are tried: the
// supervisor records each id right after receiving it, one at a time.
const afterLast = 4

// Serve answers every notification with "continue" until ctx is done,
// calling answered for each. It waits in poll(2), not in
// SECCOMP_IOCTL_NOTIF_RECV, so that it notices ctx within interval: a
// signal does not end a NOTIF_RECV on current kernels. It returns early,
// with nil, when no process is left under the filter.
func Serve(ctx context.Context, notifyFd int, interval time.Duration, answered func()) error {
	fds := []unix.PollFd{{Fd: int32(notifyFd), Events: unix.POLLIN}}
	timeout := int(interval / time.Millisecond)
	for ctx.Err() == nil {
		n, err := unix.Poll(fds, timeout)
		if err == unix.EINTR || n == 0 {
			continue
		}
		if err != nil {
			return err
		}
		if fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
			return nil
		}
		var notif notification
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(notifyFd), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&notif)))
		if errno != 0 {
			// ENOENT: the caller went away between poll and receive.
			continue
		}
		if Continue(notifyFd, notif.ID) && answered != nil {
			answered()
		}
	}
	return nil
}
