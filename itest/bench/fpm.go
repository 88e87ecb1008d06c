package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/itest"
)

// fpmBench measures php-fpm (Debian's, a static pool on TCP) behind a
// native nginx, with wrk asking nginx for a small PHP script: php-fpm
// native, under the floor (emulating accept) and under vhqos with the two
// name vhosts of nameQoS (read from the FastCGI params), alternating; nginx opens a FastCGI connection per request
// whether wrk's connections to it are closed or kept alive.
func fpmBench(cg *cgroup.Manager, bin string, pairs, conns int, opts measureOptions) error {
	qosFile, removeTable, err := writeTable(nameQoS)
	if err != nil {
		return err
	}
	defer removeTable()
	floorBin, removeFloor, err := buildFloor()
	if err != nil {
		return err
	}
	defer removeFloor()
	fmt.Printf("php-fpm (static pool, %d workers, TCP) behind native nginx, wrk -t2 -c%d -d%v to nginx, %d alternating rounds of native, floor (emulating accept), vhqos (two name vhosts: FastCGI HTTP_HOST); %s\n",
		conns, conns, opts.duration, pairs, kernel())
	for _, close := range []bool{true, false} {
		var toNative, floorToNative, toFloor, cpuPerConn, floorCPUPerConn []float64
		for i := 0; i < pairs; i++ {
			run := func(prefix []string, group string) (result, supervisorCost, error) {
				return measureFPM(cg, prefix, group, close, conns, opts)
			}
			native, _, err := run(nil, "native")
			if err != nil {
				return err
			}
			floor, floorSup, err := run(append(opts.pinServer(), floorBin, "emulate", "--"), "floor")
			if err != nil {
				return err
			}
			wrapped, sup, err := run(append(opts.pinServer(), bin, "run", "--config", qosFile, "--status-socket", filepath.Join(os.TempDir(), fmt.Sprintf("vhqos-bench-fpm-%d.sock", os.Getpid())), "--"), "")
			if err != nil {
				return err
			}
			toNative = append(toNative, wrapped.rps/native.rps)
			floorToNative = append(floorToNative, floor.rps/native.rps)
			toFloor = append(toFloor, wrapped.rps/floor.rps)
			if wrapped.requests > 0 && floor.requests > 0 {
				cpuPerConn = append(cpuPerConn, sup.cpu.Seconds()*1e6/float64(wrapped.requests))
				floorCPUPerConn = append(floorCPUPerConn, floorSup.cpu.Seconds()*1e6/float64(floor.requests))
			}
			fmt.Printf("  %-10s round %d: native %7.0f, floor %7.0f, vhqos %7.0f req/s; vhqos/native %.3f, floor/native %.3f, vhqos/floor %.3f\n",
				label(close), i+1, native.rps, floor.rps, wrapped.rps, wrapped.rps/native.rps, floor.rps/native.rps, wrapped.rps/floor.rps)
		}
		fmt.Printf("  %-10s medians: vhqos/native %.3f, floor/native %.3f, vhqos/floor %.3f; supervisor CPU per FastCGI connection: vhqos %.1f µs, floor %.1f µs\n",
			label(close), median(toNative), median(floorToNative), median(toFloor), median(cpuPerConn), median(floorCPUPerConn))
	}
	return nil
}

// measureFPM runs one php-fpm (under prefix, or natively) and nginx, and
// wrk against nginx for one run. A native or floor php-fpm sits in
// cgroup group, as vhqos puts its server in cgroups of its own; nginx runs
// beside wrk in "client".
func measureFPM(cg *cgroup.Manager, prefix []string, group string, close bool, conns int, opts measureOptions) (result, supervisorCost, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fpm, err := itest.StartPHPFPM(ctx, itest.PHPFPMConfig{Workers: conns, Prefix: prefix})
	if err != nil {
		return result{}, supervisorCost{}, err
	}
	defer fpm.Remove()
	defer fpm.Stop()
	pid := fpm.Cmd.Process.Pid
	wrapped := len(prefix) > 0
	if group != "" {
		pgid := pid
		if wrapped {
			// The floor's child leads the server's process group.
			pgid = childrenOf(pid)[0]
		}
		for _, p := range processGroup(pgid) {
			if err := cg.Place(group, p); err != nil {
				return result{}, supervisorCost{}, err
			}
		}
	}
	dir, err := os.MkdirTemp("", "vhqos-bench-nginx-")
	if err != nil {
		return result{}, supervisorCost{}, err
	}
	defer os.RemoveAll(dir)
	conf := itest.NginxHTTP(dir) + itest.NginxFastCGISite("127.0.0.2:8080", "shop.example blog.example", fpm.WWW, fpm.Pass()) + "}\n"
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return result{}, supervisorCost{}, err
	}
	nginx, err := itest.StartDaemon(ctx, itest.DaemonConfig{
		Name: "nginx", Dir: dir,
		Argv:   []string{"/usr/sbin/nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", filepath.Join(dir, "nginx.conf")},
		Listen: []string{"127.0.0.2:8080"}, Logs: []string{"error.log"},
	})
	if err != nil {
		return result{}, supervisorCost{}, err
	}
	defer nginx.Stop()
	for _, p := range processGroup(nginx.Cmd.Process.Pid) {
		cg.Place("client", p)
	}
	supervisors := []int{pid}
	if wrapped && group == "" {
		supervisors = append(supervisors, vhqosHelpers(pid)...)
	}
	args := []string{"-t2", "-c" + strconv.Itoa(conns), "-d" + opts.duration.String(), "-H", "Host: shop.example"}
	if close {
		args = append(args, "-H", "Connection: close")
	}
	procs := cg.ProcsFiles("client")
	script := `for f in ` + strings.Join(procs, " ") + `; do echo $$ > $f; done; exec wrk "$@"`
	out, err := exec.Command("sh", append([]string{"-c", script, "sh"}, append(args, "http://127.0.0.2:8080/whoami.php")...)...).CombinedOutput()
	var cost supervisorCost
	if wrapped {
		for _, p := range supervisors {
			cost.cpu += processCPU(p)
			cost.switches += processSwitches(p)
		}
	}
	if err != nil {
		return result{}, supervisorCost{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	res, err := wrkResult(out, "php-fpm "+map[bool]string{true: "wrapped", false: "native"}[wrapped])
	return res, cost, err
}
