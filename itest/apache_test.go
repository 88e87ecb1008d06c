package itest

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const addressQoS = `
[defaults]
cpu_weight = 100

[[vhost]]
name = "shop"
match = ["127.0.0.2"]
cpu_weight = 800
dscp = "EF"

[[vhost]]
name = "blog"
match = ["127.0.0.3:8080"]
dscp = "AF21"

[[vhost]]
name = "static"
match = ["127.0.0.4/32"]
dscp = "CS1"

[[vhost]]
name = "six"
match = ["::1"]
dscp = "AF41"
`

// Apache prefork with IP-based vhosts: every request is served by a
// process sitting in its vhost's cgroup, the server's packets carry the
// vhost's DSCP on the wire, and an address no vhost matches gets the
// defaults. Run with one listener per address (the listener decides; the
// kernel accepts) and with one wildcard listener (vhqos accepts itself and
// classifies each connection by its local address).
func TestApacheAddressVhosts(t *testing.T) {
	for _, mode := range []struct {
		name, listenAll string
	}{{"listener per address", ""}, {"one wildcard listener", "8080"}} {
		t.Run(mode.name, func(t *testing.T) { testApacheAddressVhosts(t, mode.listenAll) })
	}
}

func testApacheAddressVhosts(t *testing.T, listenAll string) {
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	vhosts := []struct {
		VHost
		group string
		dscp  int
	}{
		{VHost{Name: "shop", Addr: "127.0.0.2:8080"}, "vhost-shop", 46},
		{VHost{Name: "blog", Addr: "127.0.0.3:8080"}, "vhost-blog", 18},
		{VHost{Name: "static", Addr: "127.0.0.4:8080"}, "vhost-static", 8},
		{VHost{Name: "nobody", Addr: "127.0.0.5:8080"}, "default", 0},
		{VHost{Name: "six", Addr: "[::1]:8080"}, "vhost-six", 34},
	}
	var cfg ApacheConfig
	for _, v := range vhosts {
		cfg.VHosts = append(cfg.VHosts, v.VHost)
	}
	cfg.ListenAll = listenAll
	a := startUnderVhqos(t, addressQoS, cfg)
	vhqosPid := a.Cmd.Process.Pid
	const perVhost = 6
	pidsSeen := map[string]map[int]bool{}
	for round := 0; round < perVhost; round++ {
		for _, v := range vhosts {
			s := request(t, v.Addr, "/cgi-bin/whoami")
			want := fmt.Sprintf("/vhqos.%d/%s", vhqosPid, v.group)
			if !strings.HasSuffix(s.cgroup, want) {
				t.Errorf("%s: request served by pid %d in cgroup %q, want …%s", v.Name, s.pid, s.cgroup, want)
			}
			server := addrPort(t, v.Addr)
			client := netip.AddrPortFrom(server.Addr(), s.clientPort)
			if server.Addr().Is4() {
				client = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), s.clientPort)
			}
			dscp := capture.DSCP(server, client)
			if len(dscp) != 1 || dscp[v.dscp] == 0 {
				t.Errorf("%s: server packets to client port %d carried DSCP %v, want only %d", v.Name, s.clientPort, dscp, v.dscp)
			}
			if pidsSeen[v.Name] == nil {
				pidsSeen[v.Name] = map[int]bool{}
			}
			pidsSeen[v.Name][s.pid] = true
		}
	}
	// The PIDs Apache logged (%P) for each vhost are the processes the CGI
	// saw serving it.
	logged := accessLogPids(t, a)
	for _, v := range vhosts {
		if len(logged[v.Name]) == 0 {
			t.Errorf("%s: nothing in the access log", v.Name)
		}
		for pid := range logged[v.Name] {
			if !pidsSeen[v.Name][pid] {
				t.Errorf("%s: access log names pid %d, which no response reported", v.Name, pid)
			}
		}
	}
}

const cpuQoS = `
[[vhost]]
name = "heavy"
match = ["127.0.0.2"]
cpu_weight = 400

[[vhost]]
name = "light"
match = ["127.0.0.3"]
cpu_weight = 100

[[vhost]]
name = "capped"
match = ["127.0.0.4"]
cpu_max = "20%"
`

// CPU-bound requests to two vhosts at once, the server confined to one
// CPU: the cgroups' CPU time follows their weights 4:1; a vhost capped at
// 20% uses at most 25% of a CPU.
func TestCPUWeightsAndCap(t *testing.T) {
	a := startUnderVhqos(t, cpuQoS, ApacheConfig{
		VHosts: []VHost{{Name: "heavy", Addr: "127.0.0.2:8080"}, {Name: "light", Addr: "127.0.0.3:8080"}, {Name: "capped", Addr: "127.0.0.4:8080"}},
		Wrap:   []string{"taskset", "-c", "0"},
	})
	vhqosPid := a.Cmd.Process.Pid
	const burn, window = 12, 5 * time.Second
	done := make(chan struct{})
	go func() {
		defer close(done)
		inParallel(4, func(i int) {
			addr := []string{"127.0.0.2:8080", "127.0.0.3:8080"}[i%2]
			request(t, addr, "/cgi-bin/burn?"+strconv.Itoa(burn))
		})
	}()
	time.Sleep(3 * time.Second) // all four CGIs are running
	h0, l0 := cpuUsage(t, vhqosPid, "vhost-heavy"), cpuUsage(t, vhqosPid, "vhost-light")
	time.Sleep(window)
	h1, l1 := cpuUsage(t, vhqosPid, "vhost-heavy"), cpuUsage(t, vhqosPid, "vhost-light")
	heavy, light := h1-h0, l1-l0
	ratio := heavy / light
	t.Logf("over %v: heavy %.0f ms, light %.0f ms of CPU, ratio %.2f (want 4 ± 20%%)", window, heavy/1000, light/1000, ratio)
	if light <= 0 || ratio < 3.2 || ratio > 4.8 {
		t.Errorf("CPU ratio heavy:light = %.2f, want 3.2..4.8", ratio)
	}
	<-done

	capDone := make(chan struct{})
	go func() {
		defer close(capDone)
		request(t, "127.0.0.4:8080", "/cgi-bin/burn?"+strconv.Itoa(burn/2))
	}()
	time.Sleep(time.Second)
	c0 := cpuUsage(t, vhqosPid, "vhost-capped")
	time.Sleep(window - time.Second)
	c1 := cpuUsage(t, vhqosPid, "vhost-capped")
	share := (c1 - c0) / float64((window - time.Second).Microseconds())
	t.Logf("capped vhost used %.1f%% of a CPU", share*100)
	if share > 0.25 {
		t.Errorf("vhost with cpu_max 20%% used %.1f%% of a CPU, want at most 25%%", share*100)
	}
	if share < 0.05 {
		t.Errorf("vhost with cpu_max 20%% used only %.1f%% of a CPU: the test did not load it", share*100)
	}
	<-capDone
}

// When the server dies, even by SIGKILL, vhqos exits with its status and
// leaves no process and no cgroup (checked in the cleanup).
func TestServerKilled(t *testing.T) {
	a := startUnderVhqos(t, addressQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}})
	request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	data, err := readFileEventually(a.Dir+"/httpd.pid", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	apachePid, _ := strconv.Atoi(strings.TrimSpace(data))
	if err := syscall.Kill(apachePid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("vhqos did not exit after the server was killed")
	}
	if code := a.Cmd.ProcessState.ExitCode(); code != 128+9 {
		t.Errorf("vhqos exited with %d, want 137 (server killed by SIGKILL)", code)
	}
}

// SIGTERM to vhqos stops the server through it; vhqos exits with the
// server's status (0 for Apache) and cleans up.
func TestStopBySIGTERM(t *testing.T) {
	a := startUnderVhqos(t, addressQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}})
	request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	if st := a.Stop(); st.ExitCode() != 0 {
		t.Errorf("vhqos exited with %d after SIGTERM, want Apache's 0", st.ExitCode())
	}
}

// Signals sent to vhqos reach the server: SIGUSR1 makes Apache restart
// gracefully, and it goes on serving under vhqos.
func TestSignalsForwarded(t *testing.T) {
	a := startUnderVhqos(t, addressQoS, ApacheConfig{VHosts: []VHost{{Name: "shop", Addr: "127.0.0.2:8080"}}})
	request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	if err := a.Cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(a.Output(), "Graceful restart requested") {
		if time.Now().After(deadline) {
			t.Fatalf("Apache never saw the forwarded SIGUSR1:\n%s", a.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := request(t, "127.0.0.2:8080", "/cgi-bin/whoami")
	if want := fmt.Sprintf("/vhqos.%d/vhost-shop", a.Cmd.Process.Pid); !strings.HasSuffix(s.cgroup, want) {
		t.Errorf("after the restart, served in %q, want …%s", s.cgroup, want)
	}
}
