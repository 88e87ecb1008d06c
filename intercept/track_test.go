package intercept

import (
	"slices"
	"testing"
)

func TestParseTrack(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Track
		err  string
	}{
		{in: "", want: TrackAccept},
		{in: "accept", want: TrackAccept},
		{in: "fork", want: TrackFork},
		{in: "full", want: TrackFull},
		{in: "Full", err: `unknown tracking mode "Full": use accept, fork or full`},
		{in: "read", err: `unknown tracking mode "read": use accept, fork or full`},
	} {
		got, err := ParseTrack(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseTrack(%q) = %v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseTrack(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		// The table writes a mode back as String says it (policy.Marshal).
		if back, err := ParseTrack(got.String()); err != nil || back != got {
			t.Errorf("ParseTrack(%q.String() = %q) = %v, %v", tc.in, got.String(), back, err)
		}
	}
}

// What each mode's filter sends to the supervisor: fork tracking learns
// what processes hold from /proc, so it intercepts no more than accept
// tracking does.
func TestTrackSyscalls(t *testing.T) {
	accepts := []string{"accept", "accept4"}
	for _, tc := range []struct {
		track Track
		want  []string
	}{
		{TrackAccept, accepts},
		{TrackFork, accepts},
		{TrackFull, []string{"accept", "accept4", "fork", "vfork", "clone", "clone3",
			"dup", "dup2", "dup3", "fcntl", "close", "read", "readv", "recvfrom", "recvmsg"}},
	} {
		if got := tc.track.Syscalls(); !slices.Equal(got, tc.want) {
			t.Errorf("%v.Syscalls() = %q, want %q", tc.track, got, tc.want)
		}
	}
}
