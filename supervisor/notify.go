package supervisor

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's seccomp user-notification structures (linux/seccomp.h). They
// are used directly rather than through libseccomp-golang's cgo wrappers
// because every accepted connection passes through them: no allocation, no
// cgo transition.
type seccompData struct {
	Nr                 int32
	Arch               uint32
	InstructionPointer uint64
	Args               [6]uint64
}

type notification struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Data  seccompData
}

type notifResponse struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

type notifAddfd struct {
	ID         uint64
	Flags      uint32
	Srcfd      uint32
	Newfd      uint32
	NewfdFlags uint32
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

// recvNotification reads one pending notification. The kernel insists that the
// buffer is zeroed.
func recvNotification(notifyFd int, n *notification) error {
	*n = notification{}
	return ioctl(notifyFd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n))
}

// respondContinue lets the kernel run the syscall as the process asked.
func respondContinue(notifyFd int, id uint64) error {
	r := notifResponse{ID: id, Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
	return ioctl(notifyFd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r))
}

// respondErrno makes the syscall fail with errno, or succeed with val when
// errno is 0.
func respondErrno(notifyFd int, id uint64, val int64, errno unix.Errno) error {
	r := notifResponse{ID: id, Val: val, Error: -int32(errno)}
	return ioctl(notifyFd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r))
}

// sendFd installs srcfd in the notifying process and makes it the syscall's
// return value in one step (SECCOMP_ADDFD_FLAG_SEND), so there is no moment
// in which the process owns the fd but has not been answered. On failure
// nothing was installed and the notification, if it still exists, is
// unanswered.
//
// Call it only on a quiet thread (quietThread). The ioctl waits for the
// target to take the fd; a signal ending that wait (the Go runtime
// preempts with SIGURG all the time) would withdraw the fd after the
// kernel already marked the notification answered, and the restarted
// ioctl then finds it answered (EINPROGRESS): the target's syscall
// returns 0 with no fd installed (seen as accept returning fd 0 that is
// not open, in a forking server under load).
func sendFd(notifyFd int, id uint64, srcfd int, cloexec bool) (newfd int, err error) {
	a := notifAddfd{ID: id, Flags: unix.SECCOMP_ADDFD_FLAG_SEND, Srcfd: uint32(srcfd)}
	if cloexec {
		a.NewfdFlags = unix.O_CLOEXEC
	}
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(notifyFd), unix.SECCOMP_IOCTL_NOTIF_ADDFD, uintptr(unsafe.Pointer(&a)))
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// quietThread locks the calling goroutine to its thread and blocks every
// signal on that thread until restore is called; the process's other
// threads take its signals meanwhile. The goroutines that hand connections
// over (the receiver, the event loop, a hand-over of its own) run on quiet
// threads, so that no signal can end an ADDFD wait (see sendFd): blocking
// once per goroutine rather than around each ioctl saves two system calls
// per connection, and the signals that used to arrive on unblocking.
// (Blocking glibc's SIGSETXID this way would hang a setuid of the process;
// vhqos never changes its credentials.)
func quietThread() (restore func(), err error) {
	runtime.LockOSThread()
	var all, old unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &all, &old); err != nil {
		runtime.UnlockOSThread()
		return func() {}, fmt.Errorf("blocking signals on the thread: %w", err)
	}
	return func() {
		unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
		runtime.UnlockOSThread()
	}, nil
}

// NotificationsWaiting reports whether a notification waits on notifyFd
// to be received. It never blocks, and wakes none of the Go runtime's
// threads (pollNow): the keeper's watchdog asks every second.
func NotificationsWaiting(notifyFd int) bool {
	return pollNow(notifyFd, unix.POLLIN)&unix.POLLIN != 0
}

// idValid reports whether the notifying thread is still blocked in the
// syscall of notification id. Whatever was read from /proc or the target's
// memory before a true answer refers to that very thread.
func idValid(notifyFd int, id uint64) bool {
	return ioctl(notifyFd, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id)) == nil
}

// notificationGone reports whether err from an ioctl means the notification
// no longer exists: the thread was interrupted by a signal or died.
func notificationGone(err error) bool {
	return err == unix.ENOENT || err == unix.ESRCH || err == unix.EINPROGRESS
}

// syncWakeUp asks the kernel (6.6 and later) to switch directly between a
// notifying thread and the supervisor thread on the same CPU instead of
// waking a thread elsewhere: on these machines it cut the supervisor's CPU
// time per notification by about 3.5 times. Older kernels refuse it, which
// only costs speed.
func syncWakeUp(notifyFd int) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(notifyFd), unix.SECCOMP_IOCTL_NOTIF_SET_FLAGS, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
	if errno != 0 {
		return errno
	}
	return nil
}
