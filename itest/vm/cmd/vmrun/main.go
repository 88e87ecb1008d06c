// Command vmrun runs one command as root inside a small qemu VM booting
// Debian's stable kernel with unified cgroup v2, the host's root file system
// shared read-only, and exits with the command's status:
//
//	go run ./itest/vm/cmd/vmrun [-C DIR] [-env NAME]... [-timeout 20m] -- PROGRAM [ARGS...]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vhqos/vhqos/itest/vm"
)

type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, ",") }
func (e *envFlag) Set(v string) error {
	*e = append(*e, v)
	return nil
}

func main() {
	wd, _ := os.Getwd()
	dir := flag.String("C", wd, "working directory inside the VM")
	cache := flag.String("cache", "", "where the kernel and initramfs are kept (default: .cache/vm in the repository)")
	timeout := flag.Duration("timeout", 20*time.Minute, "kill the VM after this long")
	var env envFlag
	flag.Var(&env, "env", "NAME or NAME=VALUE to pass into the VM (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: vmrun [-C DIR] [-env NAME]... -- PROGRAM [ARGS...]")
		os.Exit(2)
	}
	if *cache == "" {
		*cache = filepath.Join(repoRoot(wd), ".cache", "vm")
	}
	var pass []string
	for _, e := range env {
		if strings.Contains(e, "=") {
			pass = append(pass, e)
		} else if v, ok := os.LookupEnv(e); ok {
			pass = append(pass, e+"="+v)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	status, err := vm.Run(ctx, vm.Config{Cache: *cache, Dir: *dir, Env: pass, Output: os.Stdout, Log: os.Stderr}, flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmrun:", err)
		os.Exit(125)
	}
	os.Exit(status)
}

// repoRoot finds the directory holding go.mod above dir.
func repoRoot(dir string) string {
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return dir
}
