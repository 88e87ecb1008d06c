package itest

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vhqos/vhqos/shaper"
	"github.com/vhqos/vhqos/status"
	"github.com/vishvananda/netlink"
)

// Bandwidth limits on a veth pair between the tests' namespace (the
// server's side) and a namespace the test makes for its clients: traffic
// between them crosses the device, where loopback would not.

// bandwidthFile is the size of the file downloaded, as the issue sets it.
const bandwidthFile = 16 << 20

// vethLink is a Veth that downloads from the clients' side.
type vethLink struct{ *Veth }

// newVethLink makes the pair srv/cli with srvIP and cliIP and removes it
// when the test ends.
func newVethLink(t *testing.T, srv, cli, srvIP, cliIP string) *vethLink {
	t.Helper()
	v, err := NewVeth(srv, cli, srvIP, cliIP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return &vethLink{v}
}

// transfer is one download: its body's bytes, and when its first and
// last bytes came.
type transfer struct {
	bytes       int64
	first, last time.Time
}

// mbits is the rate of the body after its first read, in Mbit/s: the
// connection's setup and the request are left out.
func (x transfer) mbits() float64 {
	return float64(x.bytes) * 8 / x.last.Sub(x.first).Seconds() / 1e6
}

// download fetches path from addr (in the server's namespace) with Host:
// host, from the clients' namespace.
func (v *vethLink) download(addr, host, path string) (transfer, error) {
	var c net.Conn
	err := v.InClients(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 10*time.Second)
		return err
	})
	if err != nil {
		return transfer{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host)
	r := bufio.NewReaderSize(c, 64<<10)
	head, err := r.ReadString('\n')
	if err != nil || !strings.Contains(head, " 200 ") {
		return transfer{}, fmt.Errorf("GET %s from %s (%s): %q %v", path, addr, host, head, err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return transfer{}, err
		}
		if line == "\r\n" {
			break
		}
	}
	var x transfer
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			now := time.Now()
			if x.first.IsZero() {
				x.first = now // this read's bytes are not counted
			} else {
				x.bytes += int64(n)
			}
			x.last = now
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return x, err
		}
	}
	return x, nil
}

// downloads runs the downloads of hosts at once, each from addr[i].
func (v *vethLink) downloads(t *testing.T, addrs, hosts []string) []transfer {
	t.Helper()
	out := make([]transfer, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i := range hosts {
		wg.Go(func() { out[i], errs[i] = v.download(addrs[i], hosts[i], "/big") })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("download %d (%s): %v", i, hosts[i], err)
		}
		if out[i].bytes < bandwidthFile-64<<10 {
			t.Fatalf("download %d (%s) got %d bytes", i, hosts[i], out[i].bytes)
		}
	}
	return out
}

// aggregate is the rate of several transfers together, in Mbit/s, from
// the first one's first byte to the last one's last.
func aggregate(xs []transfer) float64 {
	var bytes int64
	first, last := xs[0].first, xs[0].last
	for _, x := range xs {
		bytes += x.bytes
		if x.first.Before(first) {
			first = x.first
		}
		if x.last.After(last) {
			last = x.last
		}
	}
	return float64(bytes) * 8 / last.Sub(first).Seconds() / 1e6
}

// bandwidthNginx serves /big (bandwidthFile bytes) for bulk.example on
// SRV:8081, for paced.example and free.example on SRV:8082 and for
// direct.example on SRV:8083.
func bandwidthNginx(t *testing.T, prefix []string, srvIP string) *Daemon {
	t.Helper()
	// A directory nginx's workers (www-data) can reach.
	www, err := scratchDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(www) })
	big := make([]byte, bandwidthFile)
	for i := range big {
		big[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(www, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	listen := []string{srvIP + ":8081", srvIP + ":8082", srvIP + ":8083"}
	return runNginxConf(t, prefix, listen, func(dir string) string {
		var b strings.Builder
		b.WriteString(NginxHTTP(dir))
		for _, s := range []struct{ listen, names string }{{listen[0], "bulk.example"}, {listen[1], "paced.example free.example"}, {listen[2], "direct.example"}} {
			fmt.Fprintf(&b, "    server {\n        listen %s;\n        server_name %s;\n        root %s;\n    }\n", s.listen, s.names, www)
		}
		b.WriteString("}\n")
		return b.String()
	})
}

// bandwidthQoS shapes bulk.example (decided by its listener's address:
// the kernel accepts, the listener carries the mark) to 40 Mbit/s in all,
// paces each connection of paced.example (decided by its Host: vhqos
// accepts and sets the rate on the connection) and of direct.example (by
// its listener, which carries the rate) to 8 Mbit/s, and leaves
// free.example alone.
func bandwidthQoS(dev, srvIP string) string {
	return fmt.Sprintf(`[settings]
shape_devices = [%q]

[[vhost]]
name = "bulk"
match = ["%[2]s:8081"]
egress_rate = "40Mbit"

[[vhost]]
name = "paced"
match = ["paced.example"]
listen = ["%[2]s:8082"]
connection_rate = "8Mbit"

[[vhost]]
name = "free"
match = ["free.example"]
listen = ["%[2]s:8082"]

[[vhost]]
name = "direct"
match = ["%[2]s:8083"]
connection_rate = "8Mbit"
`, dev, srvIP)
}

// best is the fastest of n downloads of free.example, in Mbit/s.
func (v *vethLink) best(t *testing.T, n int) float64 {
	var rates []float64
	for range n {
		x := v.downloads(t, []string{v.SrvIP + ":8082"}, []string{"free.example"})
		rates = append(rates, x[0].mbits())
	}
	return slices.Max(rates)
}

// egress_rate bounds what a vhost's connections send together,
// connection_rate what each sends, a site without either is not slowed,
// and the device has its own qdisc back once vhqos is gone.
func TestBandwidthLimits(t *testing.T) {
	const dev = "vqb-srv"
	v := newVethLink(t, dev, "vqb-cli", "169.254.77.1", "169.254.77.2")
	before, err := shaper.RootQdisc(dev)
	if err != nil {
		t.Fatal(err)
	}

	native := bandwidthNginx(t, nil, v.SrvIP)
	unshaped := v.best(t, 3)
	native.Stop()

	prefix := wrapped(t, bandwidthQoS(dev, v.SrvIP))
	d := bandwidthNginx(t, prefix, v.SrvIP)
	checkCgroupsGone(t, d)
	if q, _ := shaper.RootQdisc(dev); q != "htb 7668:" {
		t.Fatalf("under vhqos %s's root qdisc is %q, want vhqos's htb 7668:", dev, q)
	}

	// Eight downloads at once: four of the shaped vhost, four paced (two
	// on each accept path).
	var addrs, hosts []string
	for range 4 {
		addrs, hosts = append(addrs, v.SrvIP+":8081"), append(hosts, "bulk.example")
	}
	for range 2 {
		addrs, hosts = append(addrs, v.SrvIP+":8082", v.SrvIP+":8083"), append(hosts, "paced.example", "direct.example")
	}
	xs := v.downloads(t, addrs, hosts)
	bulk := aggregate(xs[:4])
	t.Logf("bulk.example (egress_rate 40Mbit), 4 downloads together: %.2f Mbit/s (each %.2f %.2f %.2f %.2f)", bulk, xs[0].mbits(), xs[1].mbits(), xs[2].mbits(), xs[3].mbits())
	if bulk < 40*0.85 || bulk > 40*1.15 {
		t.Errorf("bulk.example's 4 downloads together got %.2f Mbit/s; want 40 Mbit/s ±15%%", bulk)
	}
	for i, x := range xs[4:] {
		t.Logf("%s (connection_rate 8Mbit), download %d: %.2f Mbit/s", hosts[4+i], i+1, x.mbits())
		if r := x.mbits(); r < 8*0.85 || r > 8*1.15 {
			t.Errorf("%s's download %d got %.2f Mbit/s; want 8 Mbit/s ±15%%", hosts[4+i], i+1, r)
		}
	}
	free := v.best(t, 3)
	t.Logf("free.example, fastest of 3: %.0f Mbit/s under vhqos, %.0f Mbit/s natively", free, unshaped)
	// Loose on purpose: a busy machine (and the VM's emulation) moves
	// this by tens of percent; a limit would put it near 40 Mbit/s.
	if free < unshaped/2 || free < 2*40 {
		t.Errorf("free.example (no rates) got %.0f Mbit/s under vhqos, %.0f natively: slowed", free, unshaped)
	}

	rep, err := status.Fetch(statusSocketIn(d.Cmd.Args))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rep.Classes {
		switch c.Name {
		case "bulk":
			if c.EgressRate != 40e6 || c.Egress == nil || c.Egress.Bytes < 4*bandwidthFile || c.Egress.Overlimits == 0 {
				t.Errorf("status of bulk: rate %d, shaper %+v; want 40 Mbit and at least %d bytes sent, held back at times", c.EgressRate, c.Egress, 4*bandwidthFile)
			}
		case "paced", "direct":
			if c.ConnectionRate != 8e6 || c.Egress != nil {
				t.Errorf("status of %s: connection_rate %d, shaper %+v; want 8 Mbit and no shaper", c.Name, c.ConnectionRate, c.Egress)
			}
		case "free", "default":
			if c.EgressRate != 0 || c.ConnectionRate != 0 || c.Egress != nil {
				t.Errorf("status of %s shows rates: %+v", c.Name, c)
			}
		}
	}

	d.Stop()
	if after, err := shaper.RootQdisc(dev); err != nil || after != before {
		t.Errorf("after vhqos exited %s's root qdisc is %q (%v), want %q as before", dev, after, err, before)
	}
}

// The devices are vhqos's from the keeper's start to its end: a crashed
// supervisor's successor, and one started by vhqos upgrade, adopt the
// qdisc and its classes (no second one), and when the keeper is killed
// outright its reaper gives the device its qdisc back.
func TestBandwidthDevicesGivenBack(t *testing.T) {
	const dev = "vqc-srv"
	newVethLink(t, dev, "vqc-cli", "169.254.78.1", "169.254.78.2")
	before, _ := shaper.RootQdisc(dev)
	qos := filepath.Join(t.TempDir(), "qos.toml")
	os.WriteFile(qos, []byte(fmt.Sprintf("[settings]\nshape_devices = [%q]\n[[vhost]]\nname = \"bulk\"\nmatch = [\"169.254.78.1\"]\negress_rate = \"10Mbit\"\n", dev)), 0o644)
	socket := statusSocket(t)
	cmd := exec.Command(vhqosBinary(t), "run", "--config", qos, "--status-socket", socket, "--", "sleep", "600")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("vhqos said:\n%s", out.String())
		}
	})
	classes := func() int {
		link, err := netlink.LinkByName(dev)
		if err != nil {
			return -1
		}
		cs, _ := netlink.ClassList(link, netlink.MakeHandle(shaper.Major, 0))
		return len(cs)
	}
	eventually(t, 30*time.Second, "vhqos's qdisc and the class of bulk on "+dev, func() bool {
		q, _ := shaper.RootQdisc(dev)
		return q == "htb 7668:" && classes() == 1
	})
	// Killed once it serves: one that dies before it is ready fails
	// vhqos run's start, by design (the class above is made before).
	sup := 0
	eventually(t, 30*time.Second, "the supervisor serving", func() bool {
		rep, err := status.Fetch(socket)
		if err == nil {
			sup = rep.SupervisorPID
		}
		return sup != 0
	})
	syscall.Kill(sup, syscall.SIGKILL)
	eventually(t, 30*time.Second, "a new supervisor", func() bool {
		rep, err := status.Fetch(socket)
		return err == nil && rep.SupervisorRestarts == 1 && rep.SupervisorPID != sup
	})
	if q, _ := shaper.RootQdisc(dev); q != "htb 7668:" || classes() != 1 {
		t.Errorf("after the supervisor's restart %s has %s with %d classes, want htb 7668: with 1", dev, q, classes())
	}
	if out, err := exec.Command(vhqosBinary(t), "upgrade", "--socket", socket).CombinedOutput(); err != nil {
		t.Fatalf("vhqos upgrade: %v\n%s", err, out)
	}
	if rep, err := status.Fetch(socket); err != nil || rep.Upgrades != 1 {
		t.Fatalf("status after the upgrade: %+v, %v; want 1 upgrade", rep, err)
	}
	if q, _ := shaper.RootQdisc(dev); q != "htb 7668:" || classes() != 1 {
		t.Errorf("after vhqos upgrade %s has %s with %d classes, want htb 7668: with 1", dev, q, classes())
	}
	// A reload changes the classes in place.
	os.WriteFile(qos, []byte(fmt.Sprintf("[settings]\nshape_devices = [%q]\n[[vhost]]\nname = \"bulk\"\nmatch = [\"169.254.78.1\"]\negress_rate = \"20Mbit\"\n[[vhost]]\nname = \"more\"\nmatch = [\"169.254.78.3\"]\negress_rate = \"5Mbit\"\n", dev)), 0o644)
	eventually(t, 30*time.Second, "the reloaded classes: 20 and 5 Mbit/s", func() bool {
		link, err := netlink.LinkByName(dev)
		if err != nil {
			return false
		}
		cs, _ := netlink.ClassList(link, netlink.MakeHandle(shaper.Major, 0))
		var rates []uint64
		for _, c := range cs {
			if htb, ok := c.(*netlink.HtbClass); ok {
				rates = append(rates, htb.Rate*8)
			}
		}
		slices.Sort(rates)
		return slices.Equal(rates, []uint64{5_000_000, 20_000_000})
	})
	syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
	eventually(t, 30*time.Second, dev+"'s own qdisc back after the keeper was killed", func() bool {
		q, _ := shaper.RootQdisc(dev)
		return q == before
	})
}

// A device with a qdisc the operator set up is not touched: vhqos run
// refuses to start, in one line naming the device and the qdisc.
func TestBandwidthRefusesOthersQdisc(t *testing.T) {
	const dev = "vqd-srv"
	newVethLink(t, dev, "vqd-cli", "169.254.79.1", "169.254.79.2")
	link, _ := netlink.LinkByName(dev)
	tbf := &netlink.Tbf{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT}, Rate: 1 << 20, Limit: 1 << 16, Buffer: 1 << 14}
	if err := netlink.QdiscAdd(tbf); err != nil {
		t.Fatal(err)
	}
	qos := filepath.Join(t.TempDir(), "qos.toml")
	os.WriteFile(qos, []byte(fmt.Sprintf("[settings]\nshape_devices = [%q]\n", dev)), 0o644)
	// vhqos check, in the same network namespace, says so first.
	_, stderr, code := vhqosCheck(t, qos)
	wantCheck := qos + `:2:18: [settings] shape_devices[0]: ` + dev + ` has a qdisc tbf 1: at its root that vhqos did not make (tc qdisc show dev ` + dev + `); vhqos run does not start while it is there: remove it (tc qdisc del dev ` + dev + ` root) or take ` + dev + ` out of shape_devices`
	if code != 2 || strings.TrimSpace(stderr) != wantCheck {
		t.Errorf("vhqos check over an operator's qdisc: exit %d, said\n%s\nwant exit 2 and\n%s", code, stderr, wantCheck)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	cmd := exec.Command(vhqosBinary(t), "run", "--config", qos, "--status-socket", statusSocket(t), "--", "touch", marker)
	outb, err := cmd.CombinedOutput()
	output := string(outb)
	if err == nil || cmd.ProcessState.ExitCode() != 1 {
		t.Errorf("vhqos run over an operator's qdisc: %v; want exit status 1\n%s", err, output)
	}
	want := "vhqos run: shape_devices: " + dev + " has a root qdisc tbf 1: that vhqos did not make"
	if !strings.Contains(output, want) {
		t.Errorf("vhqos run said:\n%s\nwant a line saying %q", output, want)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("the server ran")
	}
	if q, _ := shaper.RootQdisc(dev); q != "tbf 1:" {
		t.Errorf("%s's root qdisc is %q after vhqos refused it, want the operator's tbf 1:", dev, q)
	}
}

// tenantBandwidthQoS gives tenant acme 40 Mbit/s for its sites together:
// shop (bulk.example's listener, so the kernel accepts and the listener
// carries the mark) when shopInAcme, and blog (paced.example by its Host,
// so vhqos accepts and marks the connection), neither with a rate of its
// own. free.example is of no tenant and has no rate.
func tenantBandwidthQoS(dev, srvIP string, shopInAcme bool) string {
	shopTenant := "tenant = \"acme\"\n"
	if !shopInAcme {
		shopTenant = ""
	}
	return fmt.Sprintf(`[settings]
shape_devices = [%q]

[[tenant]]
name = "acme"
egress_rate = "40Mbit"

[[vhost]]
name = "shop"
match = ["%[2]s:8081"]
%[3]s
[[vhost]]
name = "blog"
match = ["paced.example"]
listen = ["%[2]s:8082"]
tenant = "acme"
`, dev, srvIP, shopTenant)
}

// A tenant's egress_rate bounds what its sites send together: two sites
// without rates of their own, two downloads each, get 40 Mbit/s in all;
// a reload that moves a site out of the tenant frees it and leaves the
// other site the tenant's whole rate; once vhqos is gone the device has
// its old qdisc.
func TestBandwidthTenant(t *testing.T) {
	const dev = "vqt-srv"
	v := newVethLink(t, dev, "vqt-cli", "169.254.80.1", "169.254.80.2")
	before, err := shaper.RootQdisc(dev)
	if err != nil {
		t.Fatal(err)
	}
	qos := filepath.Join(t.TempDir(), "qos.toml")
	if err := os.WriteFile(qos, []byte(tenantBandwidthQoS(dev, v.SrvIP, true)), 0o644); err != nil {
		t.Fatal(err)
	}
	socket := statusSocket(t)
	d := bandwidthNginx(t, []string{vhqosBinary(t), "run", "--stop-timeout", "10s", "--config", qos, "--status-socket", socket, "--"}, v.SrvIP)
	checkCgroupsGone(t, d)

	// The tenant's class holds the classes of both sites.
	link, err := netlink.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	tree := func() map[string]string {
		cs, err := netlink.ClassList(link, netlink.MakeHandle(shaper.Major, 0))
		if err != nil {
			t.Fatalf("listing the classes on %s: %v", dev, err)
		}
		out := map[string]string{}
		for _, c := range cs {
			if htb, ok := c.(*netlink.HtbClass); ok {
				_, minor := netlink.MajorMinor(htb.Handle)
				parent := "root"
				if htb.Parent != netlink.HANDLE_ROOT {
					_, pm := netlink.MajorMinor(htb.Parent)
					parent = fmt.Sprintf("%x", pm)
				}
				out[fmt.Sprintf("%x", minor)] = fmt.Sprintf("%s %d/%d", parent, htb.Rate*8, htb.Ceil*8)
			}
		}
		return out
	}
	classes := tree()
	rootClasses, inner := 0, 0
	for _, c := range classes {
		if strings.HasPrefix(c, "root 40000000/40000000") {
			rootClasses++
		}
		if strings.HasSuffix(c, " 20000000/40000000") && !strings.HasPrefix(c, "root") {
			inner++
		}
	}
	if len(classes) != 3 || rootClasses != 1 || inner != 2 {
		t.Fatalf("classes on %s: %v; want the tenant's at 40 Mbit/s with the two sites' inside it, 20 Mbit/s each and 40 at most", dev, classes)
	}

	addrs := []string{v.SrvIP + ":8081", v.SrvIP + ":8081", v.SrvIP + ":8082", v.SrvIP + ":8082"}
	hosts := []string{"bulk.example", "bulk.example", "paced.example", "paced.example"}
	xs := v.downloads(t, addrs, hosts)
	total := aggregate(xs)
	t.Logf("tenant acme (egress_rate 40Mbit), 2 downloads of shop and 2 of blog together: %.2f Mbit/s (shop %.2f, blog %.2f; each %.2f %.2f %.2f %.2f)",
		total, aggregate(xs[:2]), aggregate(xs[2:]), xs[0].mbits(), xs[1].mbits(), xs[2].mbits(), xs[3].mbits())
	if total < 40*0.85 || total > 40*1.15 {
		t.Errorf("the tenant's 4 downloads together got %.2f Mbit/s; want 40 Mbit/s ±15%%", total)
	}
	rep := statusReport(t, socket)
	if len(rep.Tenants) != 1 || rep.Tenants[0].EgressRate != 40e6 || rep.Tenants[0].Egress == nil || rep.Tenants[0].Egress.Bytes < 4*bandwidthFile {
		t.Errorf("status of the tenants: %+v; want acme at 40 Mbit/s with at least %d bytes sent", rep.Tenants, 4*bandwidthFile)
	}
	for _, name := range []string{"shop", "blog"} {
		if c := classOf(t, rep, name); c.EgressRate != 0 || c.Egress == nil || c.Egress.Bytes < 2*bandwidthFile {
			t.Errorf("status of %s: rate %d, shaper %+v; want no rate of its own and at least %d bytes sent in its class", name, c.EgressRate, c.Egress, 2*bandwidthFile)
		}
	}
	text, err := exec.Command(vhqosBinary(t), "status", "--socket", socket).CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^tenant acme +40Mbit +- +\d`).Match(text) {
		t.Errorf("vhqos status: %v\n%s\nwant a line for tenant acme in the bandwidth table, at 40Mbit, with what it sent", err, text)
	}

	// shop leaves the tenant: its class goes, blog's stays inside acme's.
	gen := rep.Supervisor.Reloads
	writeByRename(t, qos, tenantBandwidthQoS(dev, v.SrvIP, false))
	eventually(t, patience, "vhqos applying the table that moves shop out of acme", func() bool {
		now := statusReport(t, socket).Supervisor
		if now.ReloadsRefused != rep.Supervisor.ReloadsRefused {
			t.Fatalf("vhqos refused the table:\n%s", d.Output())
		}
		return now.Reloads > gen
	})
	// blog, alone in acme, is guaranteed all of acme's rate.
	classes = tree()
	var acme string
	for m, c := range classes {
		if c == "root 40000000/40000000" {
			acme = m
		}
	}
	if len(classes) != 2 || acme == "" || !slices.Contains(slices.Collect(maps.Values(classes)), acme+" 40000000/40000000") {
		t.Errorf("after shop left acme the classes are %v; want acme's at 40 Mbit/s and blog's inside it, 40 Mbit/s", classes)
	}
	blog := v.downloads(t, addrs[2:], hosts[2:])
	t.Logf("blog alone in acme, 2 downloads: %.2f Mbit/s", aggregate(blog))
	if r := aggregate(blog); r < 40*0.85 || r > 40*1.15 {
		t.Errorf("blog's 2 downloads, alone in the tenant, got %.2f Mbit/s; want the tenant's 40 Mbit/s ±15%%", r)
	}
	shop := v.downloads(t, addrs[:1], hosts[:1])
	t.Logf("shop out of the tenant, no rate: %.0f Mbit/s", shop[0].mbits())
	if shop[0].mbits() < 2*40 {
		t.Errorf("shop, moved out of the tenant, got %.2f Mbit/s: still shaped", shop[0].mbits())
	}

	d.Stop()
	if after, err := shaper.RootQdisc(dev); err != nil || after != before {
		t.Errorf("after vhqos exited %s's root qdisc is %q (%v), want %q as before", dev, after, err, before)
	}
}

// vhqos check looks the devices of shape_devices up, as vhqos run does
// when it starts: a missing one is an error naming it, at its place.
func TestCheckShapeDevices(t *testing.T) {
	const dev = "vqe-srv"
	newVethLink(t, dev, "vqe-cli", "169.254.81.1", "169.254.81.2")
	file := filepath.Join(t.TempDir(), "qos.toml")
	write := func(devices string) {
		t.Helper()
		if err := os.WriteFile(file, []byte("[settings]\nshape_devices = "+devices+"\n[[vhost]]\nname = \"shop\"\nmatch = [\"169.254.81.1\"]\negress_rate = \"10Mbit\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`["vqe-srv", "vqe-none"]`)
	_, stderr, code := vhqosCheck(t, file)
	want := file + `:2:29: [settings] shape_devices[1]: no network device "vqe-none" in this network namespace (ip link lists them); vhqos run does not start without it`
	if code != 2 || strings.TrimSpace(stderr) != want {
		t.Errorf("vhqos check with a missing device: exit %d, said\n%s\nwant exit 2 and\n%s", code, stderr, want)
	}
	write(`["vqe-srv"]`)
	if stdout, stderr, code := vhqosCheck(t, file); code != 0 || !strings.Contains(stdout, "OK") {
		t.Errorf("vhqos check with the device there: exit %d\n%s%s", code, stdout, stderr)
	}
	// A device vhqos shapes already (a vhqos runs there) is fine.
	if err := shaper.Claim([]string{dev}); err != nil {
		t.Fatal(err)
	}
	defer shaper.Release([]string{dev})
	if stdout, stderr, code := vhqosCheck(t, file); code != 0 || !strings.Contains(stdout, "OK") {
		t.Errorf("vhqos check with vhqos's own qdisc on the device: exit %d\n%s%s", code, stdout, stderr)
	}
}
