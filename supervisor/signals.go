package supervisor

import (
	"bytes"
	"fmt"
	"io"
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

// threadStatuses tells the sweep which held calls a signal waits for.
// The sweep looks at the same idle threads second after second (an idle
// prefork server holds one call per child), so it keeps each thread's
// /proc/TID/status open and reads it again in place, a fifth of the cost
// of opening, reading and closing it (6.6 against 33.6 µs on this
// project's machines). The zero value is ready; only the event loop's
// sweep uses it.
type threadStatuses struct {
	files map[int]*os.File
	seen  map[int]bool // looked at since the last prune
	buf   [4096]byte
}

// signalAnswer returns how to answer a call held for thread tid because a
// signal waits to be delivered to it (answerFor its /proc/TID/status); 0
// when none does or the thread is gone.
func (t *threadStatuses) signalAnswer(tid int) unix.Errno {
	if t.files == nil {
		t.files, t.seen = map[int]*os.File{}, map[int]bool{}
	}
	t.seen[tid] = true
	for range 2 {
		f := t.files[tid]
		if f == nil {
			var err error
			if f, err = os.Open(fmt.Sprintf("/proc/%d/status", tid)); err != nil {
				return 0
			}
			t.files[tid] = f
		}
		n, err := f.ReadAt(t.buf[:], 0)
		if n > 0 && (err == nil || err == io.EOF) {
			return answerFor(t.buf[:n])
		}
		// The thread is gone (ESRCH), and its id may name another
		// thread now: open afresh.
		f.Close()
		delete(t.files, tid)
	}
	return 0
}

// prune closes the files of threads not looked at since the last prune:
// the sweep prunes once it has looked at every held call.
func (t *threadStatuses) prune() {
	for tid, f := range t.files {
		if !t.seen[tid] {
			f.Close()
			delete(t.files, tid)
		}
	}
	clear(t.seen)
}

// closeAll closes every kept file (the supervisor is done).
func (t *threadStatuses) closeAll() {
	clear(t.seen)
	t.prune()
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
