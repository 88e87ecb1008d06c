package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// vh writes a [[vhost]] with its own address and the given keys.
func vh(name string, n int, keys ...string) string {
	src := fmt.Sprintf("[[vhost]]\nname = %q\nmatch = [\"192.0.2.%d\"]\n", name, n)
	for _, k := range keys {
		src += k + "\n"
	}
	return src
}

// wantProblem is one problem a table must give: where, about which key,
// saying what.
type wantProblem struct {
	line, col int
	key       string
	msg       string
	warning   bool
}

func checkProblems(t *testing.T, src string, ps Problems, want []wantProblem) {
	t.Helper()
	if len(ps) != len(want) {
		t.Fatalf("want %d problem(s), got %d:\n%v\nin\n%s", len(want), len(ps), ps, src)
	}
	for i, w := range want {
		p := ps[i]
		if p.Line != w.line || p.Column != w.col || p.Key != w.key || p.Warning != w.warning || !strings.Contains(p.Msg, w.msg) {
			t.Errorf("problem %d: got %s\n(line %d col %d key %q warning %v)\nwant line %d col %d key %q warning %v saying %q",
				i, p, p.Line, p.Column, p.Key, p.Warning, w.line, w.col, w.key, w.warning, w.msg)
		}
	}
}

// Problems between classes: over_limit naming no class or its own, set
// without a cap, chains of alternates that loop. Each at its line and
// key, all of them at once.
func TestAdmissionProblems(t *testing.T) {
	const loopEnd = `; a connection over all their caps would have no class left to go to: end the chain with "refuse" or with a class without caps`
	tests := []struct {
		name string
		src  string
		want []wantProblem
	}{
		{
			name: "unknown class, did you mean",
			src:  vh("shop", 1, "max_connections = 2", `over_limit = "blgo"`) + vh("Blog", 2),
			want: []wantProblem{{5, 14, "vhost[0].over_limit", `"blgo" names no class; did you mean "Blog"?`, false}},
		},
		{
			name: "unknown class, a misspelt vhost",
			src:  vh("shop", 1, "max_connections = 2", `over_limit = "overflow-pool"`) + vh("Overflow_Pool", 2),
			want: []wantProblem{{5, 14, "vhost[0].over_limit", `"overflow-pool" names no class; did you mean "Overflow_Pool"?`, false}},
		},
		{
			name: "the vhost itself, another case",
			src:  vh("shop", 1, "max_connections = 2", `over_limit = "SHOP"`) + vh("blog", 2),
			want: []wantProblem{{5, 14, "vhost[0].over_limit", `"SHOP" is this vhost itself`, false}},
		},
		{
			name: "default in [defaults]",
			src:  "[defaults]\nmax_connections = 5\nover_limit = \"default\"\n",
			want: []wantProblem{{3, 14, "defaults.over_limit", `"default" is [defaults] itself`, false}},
		},
		{
			name: "over_limit without a cap",
			src:  vh("shop", 1, `over_limit = "refuse"`),
			want: []wantProblem{{4, 1, "vhost[0].over_limit", "has no effect without max_connections or max_connections_per_ip", false}},
		},
		{
			name: "without a cap and naming no class",
			src:  "[defaults]\nover_limit = \"nobody\"\n",
			want: []wantProblem{
				{2, 1, "defaults.over_limit", "has no effect without max_connections", false},
				{2, 14, "defaults.over_limit", `"nobody" names no class`, false},
			},
		},
		{
			name: "loop of two",
			src:  vh("shop", 1, "max_connections = 2", `over_limit = "blog"`) + vh("blog", 2, "max_connections_per_ip = 1", `over_limit = "Shop"`),
			want: []wantProblem{{5, 14, "vhost[0].over_limit", "the alternates loop: shop -> blog -> shop" + loopEnd, false}},
		},
		{
			name: "loop of two through the defaults, written last",
			src:  vh("shop", 1, "max_connections = 2", `over_limit = "default"`) + "[defaults]\nmax_connections = 9\nover_limit = \"shop\"\n",
			want: []wantProblem{{5, 14, "vhost[0].over_limit", "the alternates loop: shop -> default -> shop;", false}},
		},
		{
			name: "loop of two through the defaults, written first",
			src:  "[defaults]\nmax_connections = 9\nover_limit = \"shop\"\n" + vh("shop", 1, "max_connections = 2", `over_limit = "default"`),
			want: []wantProblem{{3, 14, "defaults.over_limit", "the alternates loop: default -> shop -> default;", false}},
		},
		{
			name: "loop of three, from the first in the file",
			src: vh("a", 1, "max_connections = 1", `over_limit = "c"`) +
				vh("b", 2, "max_connections = 1", `over_limit = "a"`) +
				vh("c", 3, "max_connections = 1", `over_limit = "b"`),
			want: []wantProblem{{5, 14, "vhost[0].over_limit", "the alternates loop: a -> c -> b -> a;", false}},
		},
		{
			name: "a chain into a loop: the loop alone",
			src: vh("x", 1, "max_connections = 1", `over_limit = "c"`) +
				vh("b", 2, "max_connections = 1", `over_limit = "c"`) +
				vh("c", 3, "max_connections = 1", `over_limit = "b"`),
			want: []wantProblem{{10, 14, "vhost[1].over_limit", "the alternates loop: b -> c -> b;", false}},
		},
		{
			name: "two loops",
			src: vh("a", 1, "max_connections = 1", `over_limit = "b"`) +
				vh("c", 2, "max_connections = 1", `over_limit = "d"`) +
				vh("b", 3, "max_connections = 1", `over_limit = "a"`) +
				vh("d", 4, "max_connections = 1", `over_limit = "c"`),
			want: []wantProblem{
				{5, 14, "vhost[0].over_limit", "a -> b -> a;", false},
				{10, 14, "vhost[1].over_limit", "c -> d -> c;", false},
			},
		},
		{
			// b never sends anything on, so there is no loop: only its
			// over_limit without a cap is wrong.
			name: "back to the start from a class without a cap",
			src:  vh("a", 1, "max_connections = 1", `over_limit = "b"`) + vh("b", 2, `over_limit = "a"`),
			want: []wantProblem{{9, 1, "vhost[1].over_limit", "has no effect without", false}},
		},
		{
			// The cap has a problem, not the keys that need one.
			name: "a bad cap alone",
			src:  "[defaults]\nmax_connections_per_ip = \"2\"\nover_limit = \"default\"\nretry_after = 5\n",
			want: []wantProblem{
				{2, 26, "defaults.max_connections_per_ip", "write the number without quotes", false},
				{3, 14, "defaults.over_limit", `"default" is [defaults] itself`, false},
			},
		},
		{
			name: "all at once, in file order",
			src: "[defaults]\nmax_connections = 0\nover_limit = \"default\"\n" +
				vh("a", 1, "max_connections = 1", `over_limit = "b"`, "refuse_status = 600") +
				vh("b", 2, "max_connections_per_ip = 1", `over_limit = "a"`, "retry_after = 5") +
				vh("c", 3, `over_limit = "nowhere"`),
			want: []wantProblem{
				{2, 19, "defaults.max_connections", "0 is out of range: use 1..1000000", false},
				{3, 14, "defaults.over_limit", `"default" is [defaults] itself`, false},
				{8, 14, "vhost[0].over_limit", "a -> b -> a", false},
				{9, 17, "vhost[0].refuse_status", "600 is out of range: use 400..599", false},
				{15, 1, "vhost[1].retry_after", `has no effect: over_limit sends connections over the caps to "a"`, true},
				{19, 1, "vhost[2].over_limit", "has no effect without", false},
				{19, 14, "vhost[2].over_limit", `"nowhere" names no class.`, false},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.src)
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("err = %v, want Problems", err)
			}
			checkProblems(t, tc.src, ps, tc.want)
		})
	}
}

// Tables that are accepted: what each class's Admission holds, and the
// warnings about refusal keys that have no effect (their values are
// ignored, so the table reads back from Marshal without them).
func TestAdmissionAccepted(t *testing.T) {
	const never = "has no effect: this class has no max_connections or max_connections_per_ip, so it never refuses a connection; ignored"
	dflt := Admission{RefuseStatus: 503, RetryAfter: 1}
	tests := []struct {
		name     string
		src      string
		want     map[string]Admission
		warnings []wantProblem
	}{
		{
			name: "a chain ending in a refusal, named before it is written",
			src: "[defaults]\nmax_connections = 100\nrefuse_status = 508\nretry_after = 0\n" +
				vh("shop", 1, "max_connections = 2", `over_limit = "OVERFLOW"`) +
				vh("overflow", 2, "max_connections_per_ip = 4", `over_limit = "Default"`),
			want: map[string]Admission{
				DefaultsName: {MaxConnections: 100, OverLimit: OverLimitRefuse, RefuseStatus: 508, RetryAfter: 0},
				"shop":       {MaxConnections: 2, OverLimit: "overflow", RefuseStatus: 503, RetryAfter: 1},
				"overflow":   {MaxConnectionsPerIP: 4, OverLimit: DefaultsName, RefuseStatus: 503, RetryAfter: 1},
			},
		},
		{
			name: "a chain ending in a class without caps",
			src:  vh("a", 1, "max_connections = 1", `over_limit = "b"`) + vh("b", 2, "max_connections = 1", `over_limit = "c"`) + vh("c", 3),
			want: map[string]Admission{
				"a": {MaxConnections: 1, OverLimit: "b", RefuseStatus: 503, RetryAfter: 1},
				"b": {MaxConnections: 1, OverLimit: "c", RefuseStatus: 503, RetryAfter: 1},
				"c": dflt, DefaultsName: dflt,
			},
		},
		{
			name: "refusal keys without a cap",
			src:  "[defaults]\nrefuse_status = 503\nretry_after = 30\n",
			want: map[string]Admission{DefaultsName: dflt},
			warnings: []wantProblem{
				{2, 1, "defaults.refuse_status", never, true},
				{3, 1, "defaults.retry_after", never, true},
			},
		},
		{
			name: "refusal keys on a class that sends connections on",
			src:  vh("shop", 1, "max_connections = 2", `over_limit = "default"`, "refuse_status = 508", "retry_after = 0"),
			want: map[string]Admission{"shop": {MaxConnections: 2, OverLimit: DefaultsName, RefuseStatus: 503, RetryAfter: 1}},
			warnings: []wantProblem{
				{6, 1, "vhost[0].refuse_status", `has no effect: over_limit sends connections over the caps to "default", so this class never refuses one`, true},
				{7, 1, "vhost[0].retry_after", `has no effect: over_limit sends connections over the caps to "default"`, true},
			},
		},
		{
			name: `"refuse" and a vhost named refuse`,
			src:  vh("Refuse", 1) + vh("shop", 2, "max_connections = 2", `over_limit = "refuse"`),
			want: map[string]Admission{
				"shop":   {MaxConnections: 2, OverLimit: OverLimitRefuse, RefuseStatus: 503, RetryAfter: 1},
				"Refuse": dflt,
			},
			warnings: []wantProblem{{8, 1, "vhost[1].over_limit", `"refuse" refuses connections over the caps; it cannot name vhost "Refuse" (line 2)`, true}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := parse(t, tc.src)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			for name, want := range tc.want {
				c := tab.Class(name)
				if c == nil {
					t.Fatalf("no class %q", name)
				}
				if c.Admission != want {
					t.Errorf("%s: admission %+v, want %+v", name, c.Admission, want)
				}
			}
			checkProblems(t, tc.src, tab.Warnings, tc.warnings)
			again, err := parse(t, string(tab.Marshal()))
			if err != nil {
				t.Fatalf("canonical form refused: %v\n%s", err, tab.Marshal())
			}
			for name, want := range tc.want {
				if got := again.Class(name).Admission; got != want {
					t.Errorf("canonical form\n%s\n%s: admission %+v, want %+v", tab.Marshal(), name, got, want)
				}
			}
			if len(again.Warnings) != 0 {
				t.Errorf("canonical form\n%s\nwarns: %v", tab.Marshal(), again.Warnings)
			}
		})
	}
}

// Table.Class finds a class by the name over_limit uses: "default" (any
// case) for the defaults, a vhost's name in any case; nil for any other,
// in a parsed Table and in one built by hand.
func TestTableClass(t *testing.T) {
	parsed, err := parse(t, vh("Shop", 1)+vh("blog.example", 2))
	if err != nil {
		t.Fatal(err)
	}
	byHand := &Table{Defaults: Class{Name: DefaultsName}, VHosts: []Class{{Name: "Shop"}, {Name: "blog.example"}}}
	for name, tab := range map[string]*Table{"parsed": parsed, "by hand": byHand} {
		t.Run(name, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				want *Class
			}{
				{"default", &tab.Defaults},
				{"DEFAULT", &tab.Defaults},
				{"Shop", &tab.VHosts[0]},
				{"shop", &tab.VHosts[0]},
				{"SHOP", &tab.VHosts[0]},
				{"blog.example", &tab.VHosts[1]},
				{"Blog.Example", &tab.VHosts[1]},
				{"blog", nil},
				{"refuse", nil},
				{"defaults", nil},
				{"", nil},
			} {
				if got := tab.Class(tc.name); got != tc.want {
					t.Errorf("Class(%q) = %p, want %p", tc.name, got, tc.want)
				}
			}
		})
	}
	// The supervisor looks the alternate up for connections over a cap.
	if n := testing.AllocsPerRun(100, func() { parsed.Class("blog.example") }); n != 0 {
		t.Errorf("Class: %v allocations", n)
	}
}
