package itest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const modulePath = "github.com/vhqos/vhqos"

// RepoRoot finds the repository: the first directory holding vhqos's go.mod
// at or above the working directory, else at or above this source file's
// directory as compiled into the binary (so a test binary built with
// go test -c still finds it when run from elsewhere, unless built with
// -trimpath).
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, start := range starts {
		for d := start; ; d = filepath.Dir(d) {
			if isRepo(d) {
				return d, nil
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return "", fmt.Errorf("no directory with %s's go.mod at or above %s", modulePath, strings.Join(starts, " or "))
}

func isRepo(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == modulePath
		}
	}
	return false
}

var vhqosBuild struct {
	once sync.Once
	path string
	err  error
}

// VhqosBinary returns the vhqos to test:
//
//   - $VHQOS_BIN if set (it must be executable);
//   - else REPO/build/vhqos, built (once per test run) from REPO/cmd/vhqos
//     with go build if a Go toolchain is on PATH (or in /usr/local/go/bin)
//     and REPO is writable, so a stale binary is never what gets tested;
//   - else REPO/build/vhqos as it is: inside the VM, where the repository
//     is read-only and nothing is built.
//
// Tests that need vhqos fail on its error; the others never call it.
func VhqosBinary() (string, error) {
	if p := os.Getenv("VHQOS_BIN"); p != "" {
		if err := unix.Access(p, unix.X_OK); err != nil {
			return "", fmt.Errorf("VHQOS_BIN=%s: %w", p, err)
		}
		return p, nil
	}
	b := &vhqosBuild
	b.once.Do(func() { b.path, b.err = findOrBuildVhqos() })
	return b.path, b.err
}

func findOrBuildVhqos() (string, error) {
	repo, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("locating vhqos (set VHQOS_BIN): %w", err)
	}
	bin := filepath.Join(repo, "build", "vhqos")
	goTool, _ := exec.LookPath("go")
	if goTool == "" {
		if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
			goTool = "/usr/local/go/bin/go"
		}
	}
	_, srcErr := os.Stat(filepath.Join(repo, "cmd", "vhqos"))
	if goTool != "" && srcErr == nil && unix.Access(repo, unix.W_OK) == nil {
		// The build runs in the tests' network namespace: it cannot
		// download modules, the module cache must have them.
		build := exec.Command(goTool, "build", "-o", bin, "./cmd/vhqos")
		build.Dir = repo
		if out, err := build.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building vhqos (go build -o %s ./cmd/vhqos in %s): %v\n%s", bin, repo, err, out)
		}
		return bin, nil
	}
	if err := unix.Access(bin, unix.X_OK); err != nil {
		return "", fmt.Errorf("no vhqos to test: %s: %w (set VHQOS_BIN, or build it with make build)", bin, err)
	}
	return bin, nil
}

// CgroupV2 reports whether the kernel runs unified cgroup v2 only (the VM)
// rather than the v1 or hybrid layout (the project's machines).
func CgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}
