package intercept

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Every syscall the filter can send is found by the number a notification
// carries and by the name the shim is given, with the step that handles it.
func TestSyscallLookup(t *testing.T) {
	for _, tc := range []struct {
		name string
		nr   int32
		step Step
	}{
		{"accept", unix.SYS_ACCEPT, StepAccept},
		{"accept4", unix.SYS_ACCEPT4, StepAccept4},
		{"fork", unix.SYS_FORK, StepFork},
		{"vfork", unix.SYS_VFORK, StepFork},
		{"clone", unix.SYS_CLONE, StepFork},
		{"clone3", unix.SYS_CLONE3, StepRefused},
		{"close", unix.SYS_CLOSE, StepClose},
		{"dup", unix.SYS_DUP, StepDup},
		{"fcntl", unix.SYS_FCNTL, StepDup},
		{"dup2", unix.SYS_DUP2, StepDupTo},
		{"dup3", unix.SYS_DUP3, StepDupTo},
		{"read", unix.SYS_READ, StepRead},
		{"readv", unix.SYS_READV, StepRead},
		{"recvfrom", unix.SYS_RECVFROM, StepRead},
		{"recvmsg", unix.SYS_RECVMSG, StepRead},
	} {
		sc, ok := ByNr(tc.nr)
		if !ok || sc.Name != tc.name || sc.Step != tc.step {
			t.Errorf("ByNr(%d) = %+v, %v; want %s, step %d", tc.nr, sc, ok, tc.name, tc.step)
		}
		sc, ok = ByName(tc.name)
		if !ok || sc.Nr != tc.nr || sc.Step != tc.step {
			t.Errorf("ByName(%q) = %+v, %v; want nr %d, step %d", tc.name, sc, ok, tc.nr, tc.step)
		}
	}
	for _, nr := range []int32{unix.SYS_WRITE, unix.SYS_RECVMMSG, unix.SYS_PREAD64, -1} {
		if sc, ok := ByNr(nr); ok || sc.Step != StepNone {
			t.Errorf("ByNr(%d) = %+v, %v; want not intercepted", nr, sc, ok)
		}
	}
	for _, name := range []string{"acept", "write", "recv", ""} {
		if sc, ok := ByName(name); ok {
			t.Errorf("ByName(%q) = %+v; want not interceptable", name, sc)
		}
	}
}

// The table names each syscall once and each number once, or a lookup
// would hide an entry.
func TestTableUnique(t *testing.T) {
	names := map[string]bool{}
	nrs := map[int32]bool{}
	for _, sc := range table {
		if names[sc.Name] || nrs[sc.Nr] {
			t.Errorf("%s (%d) is in the table twice", sc.Name, sc.Nr)
		}
		names[sc.Name], nrs[sc.Nr] = true, true
		if sc.Step == StepNone {
			t.Errorf("%s has no step", sc.Name)
		}
	}
}

// The supervisor looks up every notification: the lookup must not allocate.
func TestByNrAllocs(t *testing.T) {
	var sink Syscall
	if n := testing.AllocsPerRun(100, func() { sink, _ = ByNr(unix.SYS_RECVMSG) }); n != 0 {
		t.Errorf("ByNr allocates %v times per call", n)
	}
	_ = sink
}
