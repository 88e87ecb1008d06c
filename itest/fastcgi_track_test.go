package itest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vhqos/vhqos/status"
)

// With track = "fork" or "full" (close, dup and reads followed too) a
// php-fpm worker stays in its site's cgroup for the whole of a request,
// on a TCP pool and on a unix socket pool alike: the sweep that sends home
// processes holding no followed connection must see the worker's
// connection as held for as long as it is open, and the reads and closes
// of the PHP script's own files change nothing. A request runs for
// several sweeps (one a second), and the worker is looked at throughout.
func TestFastCGITrackModes(t *testing.T) {
	for _, track := range []string{"fork", "full"} {
		for _, unix := range []bool{false, true} {
			transport := "tcp"
			if unix {
				transport = "unix"
			}
			t.Run(track+"/"+transport, func(t *testing.T) {
				qos := fastcgiQoS + fmt.Sprintf("\n[settings]\ntrack = %q\n", track)
				fpm := runWrappedPHPFPM(t, qos, PHPFPMConfig{Addr: fpmAddr, Unix: unix, Workers: 3})
				runNginxFastCGI(t, fpm)
				vhqosPid := fpm.Cmd.Process.Pid
				groups := map[string]string{"shop.example": "vhost-shop", "blog.example": "vhost-blog"}
				gate := "track-" + track + "-" + transport
				var wg sync.WaitGroup
				t.Cleanup(func() {
					fpm.OpenGate(gate)
					wg.Wait()
				})
				answers := map[string]phpWhoami{}
				var mu sync.Mutex
				for site := range groups {
					wg.Add(1)
					go func() {
						defer wg.Done()
						resp, err := GetWithin(frontAddr, "http://"+site+"/burn.php?gate="+gate, 10*time.Minute)
						if err != nil {
							t.Errorf("burner for %s: %v", site, err)
							return
						}
						w, err := parsePHPWhoami(resp.Body)
						if err != nil {
							t.Errorf("burner for %s: status %d, %v", site, resp.Status, err)
							return
						}
						mu.Lock()
						answers[site] = w
						mu.Unlock()
					}()
				}
				var burners map[string][]int
				eventually(t, patience, "a burner per site", func() bool {
					var err error
					if burners, err = fpm.Burners(gate); err != nil {
						t.Fatal(err)
					}
					return len(burners["shop.example"]) == 1 && len(burners["blog.example"]) == 1
				})
				looks := 0
				for start := time.Now(); time.Since(start) < 3500*time.Millisecond; looks++ {
					if err := burnersPlaced(fpm, vhqosPid, burners, groups); err != nil {
						t.Fatalf("%v into the request (look %d): %v", time.Since(start).Round(time.Millisecond), looks, err)
					}
					time.Sleep(50 * time.Millisecond)
				}
				if err := fpm.OpenGate(gate); err != nil {
					t.Fatal(err)
				}
				wg.Wait()
				for site, group := range groups {
					w, ok := answers[site]
					if want := fmt.Sprintf("/vhqos.%d/%s", vhqosPid, group); ok && !strings.HasSuffix(w.Cgroup(), want) {
						t.Errorf("%s: the request ended in cgroup %q, want …%s", site, w.Cgroup(), want)
					}
				}
				t.Logf("both burners in their sites' cgroups at %d looks over 3.5 s", looks)
			})
		}
	}
}

// nginx keeping its FastCGI connections open (fastcgi_keep_conn on, an
// upstream with keepalive), so one connection to the pool carries
// requests of both sites, and vhqos with track = "full": every request is
// served in its own site's cgroup, the later ones on a connection too, as
// for HTTP keep-alive. vhqos's own counters show the connections were
// kept: far fewer accepted than requests served.
func TestFastCGIKeepConn(t *testing.T) {
	for _, unix := range []bool{false, true} {
		name := "tcp"
		if unix {
			name = "unix"
		}
		t.Run(name, func(t *testing.T) {
			qos := fastcgiQoS + "\n[settings]\ntrack = \"full\"\n"
			fpm := runWrappedPHPFPM(t, qos, PHPFPMConfig{Addr: fpmAddr, Unix: unix, Workers: 2})
			runNginxConf(t, nil, []string{frontAddr}, func(dir string) string {
				var b strings.Builder
				b.WriteString(NginxHTTP(dir))
				fmt.Fprintf(&b, "    upstream fpm {\n        server %s;\n        keepalive 4;\n    }\n    fastcgi_keep_conn on;\n", fpm.Pass())
				for _, site := range []string{"shop.example", "blog.example"} {
					b.WriteString(NginxFastCGISite(frontAddr, site, fpm.WWW, "fpm"))
				}
				b.WriteString("}\n")
				return b.String()
			})
			vhqosPid := fpm.Cmd.Process.Pid
			groups := []struct{ site, group string }{{"shop.example", "vhost-shop"}, {"blog.example", "vhost-blog"}}
			const requests = 20
			workers := map[int]map[string]bool{}
			for i := range requests {
				g := groups[i%2]
				w := phpGet(t, g.site, "/whoami.php")
				if want := fmt.Sprintf("/vhqos.%d/%s", vhqosPid, g.group); !strings.HasSuffix(w.Cgroup(), want) {
					t.Errorf("request %d, for %s: served by pid %d in cgroup %q, want …%s", i, g.site, w.PID, w.Cgroup(), want)
				}
				if workers[w.PID] == nil {
					workers[w.PID] = map[string]bool{}
				}
				workers[w.PID][g.site] = true
			}
			rep, err := status.Fetch(statusSocketIn(fpm.Cmd.Args))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d requests over %d connections accepted; %d reclassified; workers and their sites: %v",
				requests, rep.Supervisor.Accepted, rep.Supervisor.Reclassified, workers)
			if rep.Supervisor.Accepted > requests/4 {
				t.Errorf("vhqos accepted %d connections for %d requests: nginx did not keep them, so this tested nothing", rep.Supervisor.Accepted, requests)
			}
		})
	}
}
