package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vhqos/vhqos/policy"
	"github.com/vhqos/vhqos/supervisor"
)

func TestSocketActivation(t *testing.T) {
	tests := []struct {
		name                 string
		listenPID, listenFDs string
		inherited            []int
		forUs                bool
		problem              string // a part of it; "" for none
	}{
		{"not activated", "", "", nil, false, ""},
		{"activated", "100", "1", []int{3}, true, ""},
		{"two sockets and an extra fd", "100", "2", []int{3, 4, 9}, true, ""},
		{"no sockets is a count too", "100", "0", nil, true, ""},
		{"meant for another process", "99", "1", []int{3}, false, ""},
		{"LISTEN_PID not a number", "abc", "1", []int{3}, false, ""},
		{"a promised fd is missing", "100", "2", []int{3}, true, "LISTEN_FDS=2 but vhqos inherited only 1 of fds 3..4"},
		{"fds elsewhere", "100", "1", []int{5}, true, "inherited only 0 of fds 3..3"},
		{"a huge count", "100", "2000000000", []int{3}, true, "inherited only 1 of"},
		{"LISTEN_FDS not a count", "100", "x", []int{3}, true, `LISTEN_FDS="x" is not a count`},
		{"LISTEN_FDS negative", "100", "-1", nil, true, `LISTEN_FDS="-1" is not a count`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			forUs, problem := socketActivation(tc.listenPID, tc.listenFDs, 100, tc.inherited)
			if forUs != tc.forUs {
				t.Errorf("for us = %v, want %v", forUs, tc.forUs)
			}
			if tc.problem == "" && problem != "" || !strings.Contains(problem, tc.problem) {
				t.Errorf("problem %q, want %q", problem, tc.problem)
			}
		})
	}
}

// The groups are what an operator finds under vhqos.PID/ (README,
// "Cgroups"), so the expected names are literal.
func TestGroupName(t *testing.T) {
	tab, err := policy.Parse("qos.toml", []byte("[[vhost]]\nname = \"shop\"\nmatch = [\"192.0.2.1\"]\n\n[[vhost]]\nname = \"Default2\"\nmatch = [\"192.0.2.2\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		class *policy.Class
		want  string
	}{
		{&tab.Defaults, "default"},
		{&tab.VHosts[0], "vhost-shop"},
		{&tab.VHosts[1], "vhost-Default2"},
	} {
		if got := groupName(tc.class, tab); got != tc.want {
			t.Errorf("class %q: group %q, want %q", tc.class.Name, got, tc.want)
		}
	}
}

// The classifier the supervisor asks for every connection answers as the
// table does, and allocates nothing doing it.
func TestTableClassifier(t *testing.T) {
	tab, err := policy.Parse("qos.toml", []byte(`
[defaults]
dscp = "CS1"

[[vhost]]
name = "shop"
match = ["192.0.2.1", "shop.example"]
dscp = "EF"

[[vhost]]
name = "blog"
match = ["blog.example"]
cpu_max = "50%"
`))
	if err != nil {
		t.Fatal(err)
	}
	c := newTableClassifier(tab)
	for _, tc := range []struct {
		name  string
		host  string // "" for an address lookup
		local string
		want  supervisor.Decision
	}{
		{"address of a vhost", "", "192.0.2.1:80", supervisor.Decision{Group: "vhost-shop", DSCP: 46}},
		{"address of none", "", "192.0.2.9:80", supervisor.Decision{Group: "default", DSCP: 8}},
		{"name of a vhost with a CPU quota", "blog.example", "192.0.2.9:80", supervisor.Decision{Group: "vhost-blog", DSCP: -1, Quota: true}},
		{"name of none: the address decides", "other.example", "192.0.2.1:80", supervisor.Decision{Group: "vhost-shop", DSCP: 46}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local := netip.MustParseAddrPort(tc.local)
			var got supervisor.Decision
			var allocs float64
			if tc.host == "" {
				got = c.ClassifyAddr(local)
				allocs = testing.AllocsPerRun(100, func() { c.ClassifyAddr(local) })
			} else {
				got = c.ClassifyName(tc.host, local)
				allocs = testing.AllocsPerRun(100, func() { c.ClassifyName(tc.host, local) })
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if allocs != 0 {
				t.Errorf("%v allocations per lookup, want none", allocs)
			}
		})
	}
}

// On a Unix-domain listener the classifier answers by path as the table
// does (ClassifyPath, ClassifyNameOnPath), decides a listener alone only
// where no name applies, and allocates nothing doing it.
func TestTableClassifierPaths(t *testing.T) {
	tab, err := policy.Parse("qos.toml", []byte(`
[defaults]
dscp = "CS1"

[[vhost]]
name = "pool"
match = ["unix:/run/php/pool.sock", "unix:@fpm"]
dscp = "EF"

[[vhost]]
name = "blog"
match = ["blog.example"]
listen = ["unix:/run/php/shared.sock"]
cpu_max = "50%"
`))
	if err != nil {
		t.Fatal(err)
	}
	c := newTableClassifier(tab)
	pool := supervisor.Decision{Group: "vhost-pool", DSCP: 46}
	blog := supervisor.Decision{Group: "vhost-blog", DSCP: -1, Quota: true}
	def := supervisor.Decision{Group: "default", DSCP: 8}
	for _, tc := range []struct {
		host, path string
		want       supervisor.Decision
		names      bool // NamesApplyPath; ListenerDecidesPath decides when false
	}{
		{"", "/run/php/pool.sock", pool, false},
		{"", "@fpm", pool, false},
		{"", "/run/php/other.sock", def, false},
		{"blog.example", "/run/php/shared.sock", blog, true},
		{"other.example", "/run/php/shared.sock", def, true},
		{"blog.example", "/run/php/pool.sock", pool, false}, // listen leaves the pool's socket out
	} {
		var got supervisor.Decision
		var allocs float64
		if tc.host == "" {
			got = c.ClassifyPath(tc.path)
			allocs = testing.AllocsPerRun(100, func() { c.ClassifyPath(tc.path) })
		} else {
			got = c.ClassifyNameOnPath(tc.host, tc.path)
			allocs = testing.AllocsPerRun(100, func() { c.ClassifyNameOnPath(tc.host, tc.path) })
		}
		if got != tc.want || allocs != 0 {
			t.Errorf("%q on %s: %+v (%v allocations), want %+v", tc.host, tc.path, got, allocs, tc.want)
		}
		if names := c.NamesApplyPath(tc.path); names != tc.names {
			t.Errorf("NamesApplyPath(%s) = %v, want %v", tc.path, names, tc.names)
		}
		d, ok := c.ListenerDecidesPath(tc.path)
		if ok == tc.names || ok && d != c.ClassifyPath(tc.path) {
			t.Errorf("ListenerDecidesPath(%s) = %+v %v", tc.path, d, ok)
		}
	}
}

// Each capped class's decision carries its caps, and its over_limit
// class's decision, caps and all, so that the supervisor can follow a
// chain of alternates; a class without a cap carries none.
func TestTableClassifierAdmission(t *testing.T) {
	tab, err := policy.Parse("qos.toml", []byte(`
[defaults]
max_connections = 50
over_limit = "refuse"
refuse_status = 508
retry_after = 9

[[vhost]]
name = "shop"
match = ["192.0.2.1"]
max_connections = 2
max_connections_per_ip = 1
over_limit = "Overflow"
dscp = "EF"

[[vhost]]
name = "overflow"
match = ["192.0.2.2"]
max_connections = 4
over_limit = "default"
dscp = "CS1"

[[vhost]]
name = "blog"
match = ["192.0.2.3"]
`))
	if err != nil {
		t.Fatal(err)
	}
	c := newTableClassifier(tab)
	shop := c.ClassifyAddr(netip.MustParseAddrPort("192.0.2.1:80"))
	var chain []string
	for d, steps := &shop, 0; d != nil && steps < 5; steps++ {
		if d.Admission == nil {
			t.Fatalf("%s has no admission after %v", d.Group, chain)
		}
		chain = append(chain, fmt.Sprintf("%s max %d per-ip %d dscp %d", d.Group, d.Admission.MaxConnections, d.Admission.MaxConnectionsPerIP, d.DSCP))
		if d.Admission.Alternate == nil {
			chain = append(chain, fmt.Sprintf("refuse %d retry %d", d.Admission.RefuseStatus, d.Admission.RetryAfter))
		}
		d = d.Admission.Alternate
	}
	want := []string{"vhost-shop max 2 per-ip 1 dscp 46", "vhost-overflow max 4 per-ip 0 dscp 8", "default max 50 per-ip 0 dscp -1", "refuse 508 retry 9"}
	if !slices.Equal(chain, want) {
		t.Errorf("chain of alternates\n got %q\nwant %q", chain, want)
	}
	if blog := c.ClassifyAddr(netip.MustParseAddrPort("192.0.2.3:80")); blog.Admission != nil {
		t.Errorf("blog has no cap but its decision carries %+v", *blog.Admission)
	}
}
