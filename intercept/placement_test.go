package intercept

import (
	"slices"
	"testing"
)

func TestParsePlacement(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Placement
		err  bool
	}{
		{"", PlaceProcess, false},
		{"process", PlaceProcess, false},
		{"thread", PlaceThread, false},
		{"threads", 0, true},
		{"Thread", 0, true},
	} {
		got, err := ParsePlacement(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("ParsePlacement(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
		if !tc.err && tc.in != "" && got.String() != tc.in {
			t.Errorf("%q parsed and printed is %q", tc.in, got.String())
		}
	}
}

// TestSyscallsWithPlacement: thread placement adds the read family to any
// tracking mode, and nothing else; full tracking has it already.
func TestSyscallsWithPlacement(t *testing.T) {
	reads := []string{"read", "readv", "recvfrom", "recvmsg"}
	for _, tc := range []struct {
		track Track
		want  []string
	}{
		{TrackAccept, append([]string{"accept", "accept4"}, reads...)},
		{TrackFork, append([]string{"accept", "accept4"}, reads...)},
		{TrackFull, TrackFull.Syscalls()},
	} {
		if got := Syscalls(tc.track, PlaceThread); !slices.Equal(got, tc.want) {
			t.Errorf("Syscalls(%v, thread) = %q, want %q", tc.track, got, tc.want)
		}
		if tc.track != TrackFull && slices.Contains(Syscalls(tc.track, PlaceProcess), "read") {
			t.Errorf("Syscalls(%v, process) intercepts reads", tc.track)
		}
	}
}
