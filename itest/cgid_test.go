package itest

import (
	"fmt"
	"strings"
	"testing"
)

// cgidQoS: address vhosts shop and blog, name vhosts www and news on one
// address, each with CPU limits; %s is the placement.
const cgidQoS = `
[settings]
placement = %q

[[vhost]]
name = "shop"
match = ["127.0.0.2"]
cpu_weight = 400

[[vhost]]
name = "blog"
match = ["127.0.0.3:8080"]
cpu_max = "50%%"

[[vhost]]
name = "www"
match = ["www.example"]
cpu_weight = 300

[[vhost]]
name = "news"
match = ["*.news.example"]
cpu_max = "40%%"
`

// Debian's Apache with its default MPM, event, where CGIs are forked by
// mod_cgid's daemon from the request an Apache thread sends it over the
// ScriptSock: every CGI is born in the cgroup of the vhost its request
// came for, by address (127.0.0.2, 127.0.0.3:8080) and by name (two
// name-based vhosts on 127.0.0.5:8080); a request for an address or a
// name no vhost has runs its CGI in default. The requests alternate
// between the vhosts, so the daemon goes from class to class. Whether the
// threads of the Apache children are placed or not (placement), the
// daemon, one thread, is.
func TestCGIDVhosts(t *testing.T) {
	for _, placement := range []string{"process", "thread"} {
		t.Run(placement, func(t *testing.T) { testCGIDVhosts(t, placement) })
	}
}

func testCGIDVhosts(t *testing.T, placement string) {
	a := startUnderVhqos(t, fmt.Sprintf(cgidQoS, placement), ApacheConfig{
		VHosts: []VHost{
			{Name: "shop", Addr: "127.0.0.2:8080"},
			{Name: "blog", Addr: "127.0.0.3:8080"},
			{Name: "other", Addr: "127.0.0.4:8080"},
			{Name: "www.example", Addr: "127.0.0.5:8080"},
			{Name: "news.example", Addr: "127.0.0.5:8080", Aliases: []string{"*.news.example"}},
		},
		MPM: "event", Servers: 2, Threads: 4,
	})
	vhqosPid := a.Cmd.Process.Pid
	requests := []struct {
		name, addr, target, group string
	}{
		{"address shop", "127.0.0.2:8080", "/cgi-bin/whoami", "vhost-shop"},
		{"address blog", "127.0.0.3:8080", "/cgi-bin/whoami", "vhost-blog"},
		{"an address no vhost has", "127.0.0.4:8080", "/cgi-bin/whoami", "default"},
		{"name www", "127.0.0.5:8080", "http://www.example:8080/cgi-bin/whoami", "vhost-www"},
		{"name news", "127.0.0.5:8080", "http://eu.news.example:8080/cgi-bin/whoami", "vhost-news"},
		{"a name no vhost has", "127.0.0.5:8080", "http://nobody.example:8080/cgi-bin/whoami", "default"},
	}
	parents := map[int]bool{}
	for round := range 3 {
		for _, r := range requests {
			resp, err := Get(r.addr, r.target)
			if err != nil {
				t.Fatalf("%s: %v", r.name, err)
			}
			w, err := ParseWhoami(resp.Body)
			if err != nil || w.CGIPID == 0 {
				t.Fatalf("%s: unexpected answer (%v): %q", r.name, err, resp.Body)
			}
			parents[w.PID] = true
			want := fmt.Sprintf("/vhqos.%d/%s", vhqosPid, r.group)
			if got := cpuCgroup(w.CGICgroups); !strings.HasSuffix(got, want) {
				t.Errorf("round %d, %s: CGI %d (forked by %d) ran in %q, want …%s", round, r.name, w.CGIPID, w.PID, got, want)
			}
		}
	}
	// Under mod_cgid every CGI is the child of its one daemon, not of the
	// Apache child that served the request.
	if len(parents) != 1 {
		t.Errorf("CGIs forked by %d processes, want one (mod_cgid's daemon)", len(parents))
	}
}

// Debian's Apache with its default MPM, event: CPU-bound CGIs, forked by
// mod_cgid's daemon, split the CPU 4:1 between two vhosts of weights 400
// and 100, and a vhost capped at 20% uses at most 25% of a CPU, as under
// prefork (TestCPUWeightsAndCap).
func TestCGIDCPUWeightsAndCap(t *testing.T) { testCGIWeightsAndCap(t, "event") }
