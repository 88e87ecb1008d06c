package supervisor

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDeliverableSignals(t *testing.T) {
	status := func(pnd, shd, blk, ign string) []byte {
		return []byte("Name:\tnginx\nThreads:\t1\nSigQ:\t0/1000\nSigPnd:\t" + pnd + "\nShdPnd:\t" + shd + "\nSigBlk:\t" + blk + "\nSigIgn:\t" + ign + "\nSigCgt:\t0000000000000200\n")
	}
	for _, tc := range []struct {
		label       string
		status      []byte
		own, shared uint64
		ok          bool
	}{
		{"none", status("0000000000000000", "0000000000000000", "0000000000000000", "0000000000001000"), 0, 0, true},
		{"SIGUSR1 at the process", status("0000000000000000", "0000000000000200", "0000000000000000", "0000000000000000"), 0, 0x200, true},
		{"SIGHUP at the thread", status("0000000000000001", "0000000000000000", "0000000000000000", "0000000000000000"), 1, 0, true},
		{"blocked", status("0000000000000001", "0000000000000200", "0000000000000201", "0000000000000000"), 0, 0, true},
		{"ignored", status("0000000000000000", "0000000000001000", "0000000000000000", "0000000000001000"), 0, 0, true},
		{"no ShdPnd line", []byte("SigPnd:\t0000000000000001\nSigBlk:\t0\nSigIgn:\t0\n"), 0, 0, false},
		{"not hex", status("zz", "0", "0", "0"), 0, 0, false},
	} {
		own, shared, ok := deliverableSignals(tc.status)
		if own != tc.own || shared != tc.shared || ok != tc.ok {
			t.Errorf("%s: deliverableSignals = %#x, %#x, %v; want %#x, %#x, %v", tc.label, own, shared, ok, tc.own, tc.shared, tc.ok)
		}
	}
}

func TestAnswerFor(t *testing.T) {
	status := func(threads, pnd, shd string) []byte {
		return []byte("Threads:\t" + threads + "\nSigPnd:\t" + pnd + "\nShdPnd:\t" + shd + "\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\n")
	}
	for _, tc := range []struct {
		label  string
		status []byte
		want   unix.Errno
	}{
		{"nothing pending", status("1", "0000000000000000", "0000000000000000"), 0},
		{"the thread's own", status("4", "0000000000000001", "0000000000000000"), errRestartSys},
		{"the process's, one thread", status("1", "0000000000000000", "0000000000000200"), errRestartSys},
		{"the process's, another thread may take it", status("4", "0000000000000000", "0000000000000200"), unix.EINTR},
		{"only an ignored one", status("1", "0000000000000000", "0000000000001000"), 0},
		{"unreadable", []byte("Name:\tx\n"), 0},
	} {
		if got := answerFor(tc.status); got != tc.want {
			t.Errorf("%s: answerFor = %v, want %v", tc.label, got, tc.want)
		}
	}
}

// threadStatuses reads a real thread's status: nothing pending, a pending
// signal the thread blocks, and a thread that does not exist all say "no
// signal to deliver"; a file kept for a thread not looked at since the
// last prune is closed.
func TestThreadStatuses(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	var st threadStatuses
	defer st.closeAll()
	if got := st.signalAnswer(tid); got != 0 {
		t.Fatalf("signalAnswer with nothing pending = %v, want 0", got)
	}
	var set, old unix.Sigset_t
	set.Val[0] = 1 << (unix.SIGWINCH - 1)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		t.Fatal(err)
	}
	// Unblocked afterwards, the pending SIGWINCH goes to the runtime's
	// handler, which ignores it.
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	if err := unix.Tgkill(os.Getpid(), tid, unix.SIGWINCH); err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Fatal(err)
	}
	if statusField(status, "SigPnd") == "0000000000000000" {
		t.Fatalf("SIGWINCH sent to this thread is not pending on it:\n%s", status)
	}
	// Read again through the kept file, which must show the change.
	if got, kept := st.signalAnswer(tid), len(st.files); got != 0 || kept != 1 {
		t.Errorf("signalAnswer with the pending signal blocked = %v with %d files kept, want 0 with 1", got, kept)
	}
	if statusField(st.buf[:], "SigPnd") == "0000000000000000" {
		t.Errorf("the kept status file, read again, does not show the signal sent since")
	}
	if got := st.signalAnswer(-1); got != 0 {
		t.Errorf("signalAnswer for no thread = %v, want 0", got)
	}
	st.prune() // both looked at: the file stays
	st.prune() // neither since: closed
	if len(st.files) != 0 {
		t.Errorf("after a sweep that did not look at it, %d files kept, want 0", len(st.files))
	}
}
