package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/vhqos/vhqos/itest"
)

// reloadBench measures how long vhqos takes from a change of the QoS table
// file to the change fully applied (its own "took", from the first file
// event, including the 20 ms it lets an editor's writes settle), over 100
// reloads, for tables of 10, 1,000 and 10,000 vhosts, with 500 connections
// open to the server.
func reloadBench(bin string) error {
	fmt.Printf("QoS table reload latency, 100 reloads each, 500 open keep-alive connections; %s\n", kernel())
	for _, n := range []int{10, 1000, 10000} {
		for _, what := range []string{"cpu_max", "dscp"} {
			p50, p99, err := reloadSeries(bin, n, what)
			if err != nil {
				return err
			}
			fmt.Printf("  %6d vhosts, changing one vhost's %-7s  p50 %6.1f ms   p99 %6.1f ms\n", n, what, p50, p99)
		}
	}
	return nil
}

func table(n int, value int, what string) string {
	var b strings.Builder
	b.WriteString("[[vhost]]\nname = \"shop\"\nmatch = [\"127.0.0.2\"]\n")
	if what == "cpu_max" {
		fmt.Fprintf(&b, "cpu_max = \"%d%%\"\ndscp = \"EF\"\n", value)
	} else {
		fmt.Fprintf(&b, "cpu_max = \"50%%\"\ndscp = %d\n", value)
	}
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "\n[[vhost]]\nname = \"v%d\"\nmatch = [\"10.%d.%d.1\"]\ncpu_weight = %d\n", i, i/256, i%256, 100+i%50)
	}
	return b.String()
}

var tookRe = regexp.MustCompile(`msg="reloaded QoS table".* took=([0-9.]+)(µs|ms|s)`)

func reloadSeries(bin string, n int, what string) (p50, p99 float64, err error) {
	dir, err := os.MkdirTemp("", "vhqos-reload-bench-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "qos.toml")
	values := map[string][2]int{"cpu_max": {20, 30}, "dscp": {46, 34}}[what]
	os.WriteFile(path, []byte(table(n, values[0], what)), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := itest.StartApache(ctx, itest.ApacheConfig{
		VHosts:  []itest.VHost{{Name: "shop", Addr: "127.0.0.2:8080"}},
		Prefix:  []string{bin, "run", "--config", path, "--status-socket", filepath.Join(dir, "status.sock"), "--"},
		Servers: 100,
		Extra:   "ServerLimit 600\nMaxRequestWorkers 600\nKeepAliveTimeout 300\n",
	})
	if err != nil {
		return 0, 0, err
	}
	defer a.Remove()
	defer a.Stop()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 500; i++ {
		c, err := net.DialTimeout("tcp", "127.0.0.2:8080", 10*time.Second)
		if err != nil {
			return 0, 0, fmt.Errorf("opening connection %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	var took []float64
	for i := 0; i < 100; i++ {
		before := len(tookRe.FindAllString(a.Output(), -1))
		tmp := path + ".tmp"
		os.WriteFile(tmp, []byte(table(n, values[(i+1)%2], what)), 0o644)
		os.Rename(tmp, path)
		deadline := time.Now().Add(30 * time.Second)
		for {
			m := tookRe.FindAllStringSubmatch(a.Output(), -1)
			if len(m) > before {
				took = append(took, toMillis(m[len(m)-1][1], m[len(m)-1][2]))
				break
			}
			if time.Now().After(deadline) {
				return 0, 0, fmt.Errorf("reload %d of a %d-vhost table not applied in 30 s:\n%s", i, n, tail(a.Output()))
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	sort.Float64s(took)
	return took[len(took)/2], took[len(took)*99/100], nil
}

func toMillis(v, unit string) float64 {
	var f float64
	fmt.Sscanf(v, "%g", &f)
	switch unit {
	case "µs":
		return f / 1000
	case "s":
		return f * 1000
	}
	return f
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}
