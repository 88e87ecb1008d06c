package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Signals at a held call.
//
// The shim installs the filter with SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
// (Linux 5.19): once the supervisor has received a call, only a fatal
// signal ends it before the supervisor answers. That closes the race in
// which an accept's caller, interrupted after the supervisor checked that
// it still waits, left the call and the supervisor then wrote the peer
// address into memory the caller was using for something else (nginx's
// workers died of SIGSEGV). A call answered at once is answered before the
// signal is taken, as if it had come just after the call. A call the
// supervisor holds for long (a blocking accept with no connection yet, a
// held keep-alive read) would keep the server from its signal handlers
// meanwhile, so the sweep looks at the threads of those calls and answers
// the ones a signal waits for as the kernel would have: -ERESTARTSYS,
// which on the way out of the call runs the handler and then restarts the
// call (SA_RESTART) or fails it with EINTR. A signal therefore reaches a
// thread waiting in a held call within a sweep (sweepEvery).

// errRestartSys is the kernel's ERESTARTSYS (include/linux/errno.h): never
// seen by a process; on the way out of a call with a signal to deliver,
// the kernel turns it into a restart or EINTR by the handler's
// SA_RESTART. Without a signal to deliver on that thread it would reach
// the process as errno 512, so it is only answered where one is.
const errRestartSys = unix.Errno(512)

// signalAnswer returns how to answer a call held for thread tid because a
// signal waits to be delivered to it (answerFor its /proc/TID/status); 0
// when none does or the thread is gone.
func signalAnswer(tid int) unix.Errno {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return 0
	}
	return answerFor(status)
}

// answerFor decides from a thread's /proc/TID/status: errRestartSys when
// a deliverable signal is the thread's own or the process has this one
// thread, so that the kernel delivers it to this thread on the way out of
// the call; EINTR when it is the process's and another thread may be the
// one the kernel picked (EINTR needs no signal to be delivered, and
// servers retry an accept or read that fails with it); 0 when no signal
// waits, or the file cannot be read.
func answerFor(status []byte) unix.Errno {
	own, shared, ok := deliverableSignals(status)
	switch {
	case !ok:
		return 0
	case own != 0:
		return errRestartSys
	case shared != 0 && statusField(status, "Threads") == "1":
		return errRestartSys
	case shared != 0:
		return unix.EINTR
	}
	return 0
}

// deliverableSignals reads a thread's pending signals from its
// /proc/TID/status (proc(5)): own is the thread's own (SigPnd), shared
// the process's (ShdPnd), each without the ones the thread blocks
// (SigBlk) or ignores (SigIgn). ok is false if a field is missing or not
// hex.
func deliverableSignals(status []byte) (own, shared uint64, ok bool) {
	var v [4]uint64
	for i, name := range []string{"SigPnd", "ShdPnd", "SigBlk", "SigIgn"} {
		n, err := strconv.ParseUint(statusField(status, name), 16, 64)
		if err != nil {
			return 0, 0, false
		}
		v[i] = n
	}
	undeliverable := v[2] | v[3]
	return v[0] &^ undeliverable, v[1] &^ undeliverable, true
}

// statusField returns the value of a "Name:\tvalue" line of a /proc
// status file, "" if there is none.
func statusField(status []byte, name string) string {
	for line := range bytes.Lines(status) {
		if rest, ok := bytes.CutPrefix(line, []byte(name+":")); ok {
			return string(bytes.TrimSpace(rest))
		}
	}
	return ""
}
