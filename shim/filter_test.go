package shim

import (
	"testing"

	seccomp "github.com/seccomp/libseccomp-golang"

	"github.com/vhqos/vhqos/intercept"
)

// The filter is built from intercept's numbers and the supervisor
// dispatches by them: they must be the numbers libseccomp knows the calls
// by on this architecture, or a rule would catch one call and the
// supervisor handle it as another.
func TestFilterNumbers(t *testing.T) {
	names := intercept.TrackFull.Syscalls()
	if len(names) == 0 {
		t.Fatal("full tracking intercepts nothing")
	}
	for _, name := range names {
		sc, ok := intercept.ByName(name)
		if !ok {
			t.Errorf("%s is listed for full tracking but not in the table", name)
			continue
		}
		nr, err := seccomp.GetSyscallFromName(name)
		if err != nil {
			t.Errorf("libseccomp does not know %s: %v", name, err)
			continue
		}
		if int32(nr) != sc.Nr {
			t.Errorf("%s is %d in intercept's table, %d for libseccomp", name, sc.Nr, nr)
		}
	}
}
