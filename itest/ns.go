package itest

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nsEnv marks the copy of the test binary that runs inside the namespaces;
// its value is the inode of the network namespace it was started from,
// which the copy checks it has left.
const nsEnv = "VHQOS_ITEST_NS"

// Main is the package's TestMain: it runs the tests in a network and mount
// namespace of their own. The test binary re-executes itself (same
// arguments, so -test.run, -test.v and the rest apply) with CLONE_NEWNET |
// CLONE_NEWNS; the copy makes every mount private (nothing it mounts
// reaches the host), brings lo up (127.0.0.0/8 and ::1 are then local, and
// nothing else exists), checks it is not in the network namespace it came
// from, and runs the tests. The first process forwards SIGINT, SIGTERM,
// SIGQUIT and SIGHUP to it and exits with its status (128+N if it died of
// signal N). Whatever is still running in the namespace then (after a test
// timeout, a panic or a signal, when no test cleanup ran) is stopped:
// SIGTERM, so that a vhqos removes its cgroups, then SIGKILL; if the tests
// had passed, the run fails.
//
// All tests of one run share that namespace; they run one after the other,
// and each stops what it started (RunApache makes sure of it), so a test
// finds the loopback addresses and ports free. Without root, Main prints
// why and runs nothing.
func Main(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("itest: the integration tests need root (namespaces, cgroups, seccomp); skipping all")
		os.Exit(0)
	}
	if os.Getenv(nsEnv) == "" {
		os.Exit(reexecInNamespaces())
	}
	if err := setUpNamespaces(); err != nil {
		fmt.Println("itest:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func netnsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

func reexecInNamespaces() int {
	ino, err := netnsInode("/proc/self/ns/net")
	if err != nil {
		fmt.Println("itest:", err)
		return 1
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), nsEnv+"="+strconv.FormatUint(ino, 10))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGHUP)
	if err := cmd.Start(); err != nil {
		fmt.Println("itest: entering a network and mount namespace:", err)
		return 1
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	netns, nsErr := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
	cmd.Wait()
	leftovers := false
	if nsErr == nil {
		leftovers = reapNamespace(netns)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		return 128 + int(ws.Signal())
	case ws.ExitStatus() == 0 && leftovers:
		fmt.Fprintln(os.Stderr, "itest: FAIL: the tests passed but left processes behind")
		return 1
	}
	return ws.ExitStatus()
}

// reapNamespace ends every process still in the tests' network namespace
// after the test binary's copy exited: after a test timeout, a panic or a
// signal, no cleanup ran and servers (and vhqos) are still running there.
// SIGTERM first, so that vhqos can stop its server and remove its cgroups,
// then SIGKILL after 20 s. It reports whether there were any.
func reapNamespace(netns string) bool {
	left := processesIn(netns)
	if len(left) == 0 {
		return false
	}
	fmt.Fprintf(os.Stderr, "itest: %d processes left in the tests' network namespace; stopping them: %s\n", len(left), strings.Join(left, "; "))
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		for _, l := range left {
			pid, _ := strconv.Atoi(strings.Fields(l)[0])
			syscall.Kill(pid, sig)
		}
		for deadline := time.Now().Add(20 * time.Second); len(left) > 0 && time.Now().Before(deadline); left = processesIn(netns) {
			time.Sleep(50 * time.Millisecond)
		}
		if len(left) == 0 {
			return true
		}
	}
	fmt.Fprintf(os.Stderr, "itest: still alive after SIGKILL: %s\n", strings.Join(left, "; "))
	return true
}

// processesIn lists the live processes in a network namespace (as
// readlink /proc/PID/ns/net names it) as "PID command line".
func processesIn(netns string) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		if ns, err := os.Readlink(d + "/ns/net"); err != nil || ns != netns {
			continue
		}
		cmdline, _ := os.ReadFile(d + "/cmdline")
		if len(cmdline) == 0 {
			continue // a zombie, or a kernel thread
		}
		out = append(out, filepath.Base(d)+" "+strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")))
	}
	return out
}

func setUpNamespaces() error {
	from, err := strconv.ParseUint(os.Getenv(nsEnv), 10, 64)
	if err != nil {
		return fmt.Errorf("%s=%q: not set by Main", nsEnv, os.Getenv(nsEnv))
	}
	if ino, err := netnsInode("/proc/self/ns/net"); err != nil || ino == from {
		return fmt.Errorf("not in a network namespace of its own (%v); refusing to touch the host's network", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	return linkUp("lo")
}

// linkUp sets IFF_UP on an interface (ip link set NAME up, without ip).
func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading %s's flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing %s up: %w", name, err)
	}
	return nil
}
