package itest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// nsEnv marks the copy of the test binary that runs inside the namespaces.
const nsEnv = "VHQOS_ITEST_NS"

// TestMain re-executes the test binary in a network and mount namespace of
// its own, so the tests can bind any loopback address and port without
// touching the host's. Inside, only lo exists; it is brought up here.
func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("itest: the integration tests need root (namespaces, cgroups, seccomp); skipping all")
		os.Exit(0)
	}
	if os.Getenv(nsEnv) == "" {
		cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
		cmd.Env = append(os.Environ(), nsEnv+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS}
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			fmt.Println("itest: entering a network namespace:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		fmt.Printf("itest: bringing lo up: %v: %s\n", err, out)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// vhqosBinary is the vhqos under test: $VHQOS_BIN, or build/vhqos in the
// repository, built now if missing.
func vhqosBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("VHQOS_BIN"); p != "" {
		return p
	}
	wd, _ := os.Getwd()
	repo := filepath.Dir(wd)
	bin := filepath.Join(repo, "build", "vhqos")
	// Always rebuilt (cheap with the build cache), so a stale binary is
	// never what gets tested.
	build := exec.Command("go", "build", "-o", bin, "./cmd/vhqos")
	build.Dir = repo
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("building vhqos: %v: %s", err, out)
	}
	return bin
}
