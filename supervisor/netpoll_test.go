package supervisor

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Tests of netpoll.go: waits in the Go netpoller for one fd.

// testPipe returns a pipe's read end (its fd) and write end, closed at
// the end of the test (an os.File: closing it twice is harmless).
func testPipe(t *testing.T) (r int, w *os.File) {
	t.Helper()
	rf, wf, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rf.Close(); wf.Close() })
	return int(rf.Fd()), wf
}

func writeByte(w *os.File) { w.Write([]byte{1}) }

// writeAfterPark writes a byte once a wait started now has had time to
// park: only a wait that watches then sees it.
func writeAfterPark(w *os.File) {
	go func() {
		time.Sleep(20 * time.Millisecond)
		writeByte(w)
	}()
}

func TestNetpollWait(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events uint32
		// before runs before the wait, after runs while it is parked.
		before, after func(t *testing.T, w *os.File)
		want          int16 // poll events; 0 for the deadline
	}{
		{"readable before", unix.EPOLLIN, func(t *testing.T, w *os.File) { writeByte(w) }, nil, unix.POLLIN},
		{"readable while parked", unix.EPOLLIN, nil, func(t *testing.T, w *os.File) { writeByte(w) }, unix.POLLIN},
		{"nothing: the deadline", unix.EPOLLIN, nil, nil, 0},
		{"writer gone", unix.EPOLLIN, nil, func(t *testing.T, w *os.File) { w.Close() }, unix.POLLHUP},
		// Waiting for a hang-up only, bytes to read are not an event.
		{"hang-up only: bytes", 0, nil, func(t *testing.T, w *os.File) { writeByte(w) }, 0},
		{"hang-up only: writer gone", 0, nil, func(t *testing.T, w *os.File) { w.Close() }, unix.POLLHUP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w := testPipe(t)
			nw, err := newNetpollWait(r, tc.events, "test pipe")
			if err != nil {
				t.Fatal(err)
			}
			defer nw.close()
			if tc.before != nil {
				tc.before(t, w)
			}
			if tc.after != nil {
				go func() {
					time.Sleep(20 * time.Millisecond)
					tc.after(t, w)
				}()
			}
			// Long enough for "after" on a busy machine; the deadline
			// cases wait it out.
			deadline := time.Now().Add(300 * time.Millisecond)
			if tc.want == 0 {
				deadline = time.Now().Add(50 * time.Millisecond)
			}
			got, err := nw.wait(deadline)
			if err != nil {
				t.Fatal(err)
			}
			if got&tc.want != tc.want || (tc.want == 0 && got != 0) {
				t.Errorf("wait returned poll events %#x, want %#x", got, tc.want)
			}
		})
	}
}

// Disarmed while its owner blocks in the fd's own system call, a wait
// watches again when it is next made.
func TestNetpollWaitRearms(t *testing.T) {
	r, w := testPipe(t)
	nw, err := newNetpollWait(r, unix.EPOLLIN, "test pipe")
	if err != nil {
		t.Fatal(err)
	}
	defer nw.close()
	if err := nw.disarm(); err != nil {
		t.Fatal(err)
	}
	// Only a re-armed wait sees it.
	writeAfterPark(w)
	if got, err := nw.wait(time.Now().Add(5 * time.Second)); err != nil || got&unix.POLLIN == 0 {
		t.Fatalf("wait after disarm: events %#x, %v; want POLLIN", got, err)
	}
}

// Closing a wait ends a wait parked in it, with an error.
func TestNetpollWaitClose(t *testing.T) {
	r, _ := testPipe(t)
	nw, err := newNetpollWait(r, unix.EPOLLIN, "test pipe")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := nw.wait(time.Time{})
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	nw.close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a wait ended by close returned no error")
		}
	case <-time.After(patience):
		t.Fatal("close did not end a parked wait")
	}
}

// waitQuiet returns on a quiet thread again: signals blocked.
func TestNetpollWaitQuiet(t *testing.T) {
	r, w := testPipe(t)
	nw, err := newNetpollWait(r, unix.EPOLLIN, "test pipe")
	if err != nil {
		t.Fatal(err)
	}
	defer nw.close()
	restore, err := quietThread()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { restore() }()
	// Written once the wait has parked and let its thread go.
	writeAfterPark(w)
	if ev, err := nw.waitQuiet(time.Now().Add(5*time.Second), &restore); err != nil || ev&unix.POLLIN == 0 {
		t.Fatalf("waitQuiet: events %#x, %v; want POLLIN", ev, err)
	}
	if blocked := blockedSignals(t, unix.Gettid()); blocked&(1<<(unix.SIGURG-1)) == 0 {
		t.Errorf("after waitQuiet the thread takes SIGURG (blocked %#x)", blocked)
	}
}

func TestPollNow(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(r int, w *os.File) int // returns the fd to poll
		events int16
		want   int16
	}{
		{"empty pipe", func(r int, w *os.File) int { return r }, unix.POLLIN, 0},
		{"bytes waiting", func(r int, w *os.File) int { writeByte(w); return r }, unix.POLLIN, unix.POLLIN},
		{"bytes, not asked for", func(r int, w *os.File) int { writeByte(w); return r }, 0, 0},
		{"writer gone", func(r int, w *os.File) int { w.Close(); return r }, 0, unix.POLLHUP},
		{"not an open fd", func(r int, w *os.File) int { return 1 << 20 }, unix.POLLIN, unix.POLLNVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w := testPipe(t)
			if got := pollNow(tc.setup(r, w), tc.events); got != tc.want {
				t.Errorf("pollNow = %#x, want %#x", got, tc.want)
			}
		})
	}
}
