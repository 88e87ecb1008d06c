package itest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Daemon is a server started for one test from a configuration the test
// wrote into a scratch directory of its own (php-fpm, nginx, HAProxy, an
// Apache with another MPM), natively or under vhqos. Like Apache it runs in
// the foreground, in a process group of its own.
type Daemon struct {
	Name string    // what messages call it: "php-fpm", "nginx", "haproxy"
	Dir  string    // scratch directory: configuration, logs
	Cmd  *exec.Cmd // the command: vhqos when it is the prefix, else the server
	// tag is in the command line of every process of the server, or of
	// one of its ancestors while the server runs (Leftovers).
	tag      string
	logs     []string
	out      *os.File
	exited   chan struct{}
	stopOnce sync.Once
}

// DaemonConfig says how to start a Daemon.
type DaemonConfig struct {
	Name string
	// Dir is a scratch directory (scratchDir) that already holds the
	// configuration; the Daemon owns it from then on (Remove deletes it).
	Dir string
	// Prefix goes before Argv: nil runs the server natively,
	// {vhqos, "run", "--config", FILE, "--"} under vhqos.
	Prefix []string
	Argv   []string // the server's command line
	// ReadyLog and ReadyText: the start waits until the file ReadyLog (in
	// Dir) contains ReadyText, the line the server logs once it is up and
	// handles signals. Both "" to skip.
	ReadyLog, ReadyText string
	// Listen are the IPv4 "address:port"s the server listens on: the start
	// waits until the kernel lists each as a listening socket. No
	// connection is made to find out, so a server under vhqos sees none
	// but the test's.
	Listen []string
	// Logs are files in Dir that Output shows after the command's own
	// output.
	Logs []string
	// Tag is a string in the command line of each of the server's
	// processes or of an ancestor (php-fpm renames its workers "php-fpm:
	// pool NAME"); "" means Dir.
	Tag string
}

// StartDaemon starts the command of cfg with its output in Dir/out and
// returns once it is up (ReadyText logged, every Listen address
// listening). On error the directory is removed and nothing is left
// running. Tests use RunDaemon.
func StartDaemon(ctx context.Context, cfg DaemonConfig) (_ *Daemon, err error) {
	d := &Daemon{Name: cfg.Name, Dir: cfg.Dir, tag: cfg.Tag, logs: cfg.Logs, exited: make(chan struct{})}
	if d.tag == "" {
		d.tag = cfg.Dir
	}
	defer func() {
		if err != nil {
			os.RemoveAll(cfg.Dir)
		}
	}()
	argv := append(append([]string{}, cfg.Prefix...), cfg.Argv...)
	if d.out, err = os.Create(filepath.Join(cfg.Dir, "out")); err != nil {
		return nil, err
	}
	d.Cmd = exec.Command(argv[0], argv[1:]...)
	d.Cmd.Stdout, d.Cmd.Stderr = d.out, d.out
	d.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.Cmd.Start(); err != nil {
		d.out.Close()
		return nil, fmt.Errorf("starting %s (%v): %w", cfg.Name, argv, err)
	}
	go func() { d.Cmd.Wait(); close(d.exited) }()
	if err := d.waitUp(ctx, cfg); err != nil {
		d.Stop()
		d.KillLeftovers()
		out := d.Output()
		d.out.Close()
		return nil, fmt.Errorf("%s: %w; output:\n%s", cfg.Name, err, out)
	}
	return d, nil
}

func (d *Daemon) waitUp(ctx context.Context, cfg DaemonConfig) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		up, why := true, ""
		if cfg.ReadyLog != "" {
			if data, _ := os.ReadFile(filepath.Join(cfg.Dir, cfg.ReadyLog)); !bytes.Contains(data, []byte(cfg.ReadyText)) {
				up, why = false, fmt.Sprintf("%q not in %s", cfg.ReadyText, cfg.ReadyLog)
			}
		}
		for _, addr := range cfg.Listen {
			if !up {
				break
			}
			ok, err := Listening(addr)
			if err != nil {
				return err
			}
			if !ok {
				up, why = false, "nothing listens on "+addr
			}
		}
		if up {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not up after 60 s: %s", why)
		}
		select {
		case <-d.exited:
			return fmt.Errorf("exited before it was up (%s): %v", why, d.Cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Listening reports whether a TCP socket listens on the IPv4 address addr
// ("127.0.0.1:9000") in this network namespace, from /proc/net/tcp.
func Listening(addr string) (bool, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return false, fmt.Errorf("listening on %q: want an IPv4 address:port (%v)", addr, err)
	}
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false, err
	}
	b := ap.Addr().As4()
	// The address as the kernel stores it, printed as a host-order
	// (little-endian) word; the port in plain hex.
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", b[3], b[2], b[1], b[0], ap.Port())
	for _, line := range strings.Split(string(data), "\n")[1:] {
		// sl local_address rem_address st ...; st 0A is LISTEN.
		if f := strings.Fields(line); len(f) > 3 && f[1] == want && f[3] == "0A" {
			return true, nil
		}
	}
	return false, nil
}

// RunDaemon is StartDaemon for a test: it fails the test if the server
// does not come up and, when the test ends, stops it, fails the test if any
// of its processes is still alive (and kills those), logs its output if
// the test failed and removes the directory.
func RunDaemon(t testing.TB, cfg DaemonConfig) *Daemon {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := StartDaemon(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.stopAtEnd(t)
	return d
}

// stopAtEnd does RunDaemon's checks when the test ends.
func (d *Daemon) stopAtEnd(t testing.TB) {
	t.Cleanup(func() {
		d.Stop()
		if left := d.KillLeftovers(); len(left) > 0 {
			t.Errorf("%s: processes left behind after it stopped (now killed): %s", d.Name, strings.Join(left, "; "))
		}
		if t.Failed() {
			out := d.Output()
			if len(out) > 16<<10 {
				out = "…" + out[len(out)-16<<10:]
			}
			t.Logf("%s said:\n%s", d.Name, out)
		}
		d.Remove()
	})
}

// Stop sends SIGTERM to the command (vhqos forwards it to the server) and
// waits for it; after 30 s it kills the command's process group. It
// returns the exit state; calling it again only returns the state.
func (d *Daemon) Stop() *os.ProcessState {
	d.stopOnce.Do(func() {
		d.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(30 * time.Second):
			syscall.Kill(-d.Cmd.Process.Pid, syscall.SIGKILL)
			<-d.exited
		}
	})
	<-d.exited
	return d.Cmd.ProcessState
}

// Exited is closed when the command has exited.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// Output is what the command printed (vhqos's log too, when it is the
// prefix), then each of the configured log files.
func (d *Daemon) Output() string {
	var b strings.Builder
	for _, name := range append([]string{"out"}, d.logs...) {
		data, err := os.ReadFile(filepath.Join(d.Dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		fmt.Fprintf(&b, "--- %s:\n%s", name, data)
	}
	return b.String()
}

// Leftovers lists the live processes of this server (their command line,
// or an ancestor's, holds its tag: its directory, or its php-fpm pool's
// name) as "PID command line". After Stop there should be none.
func (d *Daemon) Leftovers() []string { return processesNaming(d.tag) }

// KillLeftovers kills what Leftovers lists with SIGKILL, waits (up to 10
// s) until they are gone, so their ports are free, and returns the list.
func (d *Daemon) KillLeftovers() []string { return killProcessesNaming(d.tag) }

// Remove deletes the scratch directory.
func (d *Daemon) Remove() {
	d.out.Close()
	os.RemoveAll(d.Dir)
}
