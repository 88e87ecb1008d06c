// Command vmrun runs one command as root inside a small qemu VM that boots
// Debian's stable kernel with unified cgroup v2 and the host's root file
// system shared read-only, and exits with the command's exit status:
//
//	go run ./itest/vm/cmd/vmrun [flags] -- PROGRAM [ARGS...]
//
// The command's stdout and stderr (one stream, the VM's console) go to
// stdout; vmrun's own progress lines and qemu's messages go to stderr. If
// the VM could not run the command, died before reporting its status, or
// ran out of time, or its own flags are wrong, vmrun says why and exits
// with status 125.
//
// Flags:
//
//	-C DIR        working directory in the VM (default: the current one);
//	              it must be on the host's disk, not under /tmp or /run
//	-env NAME     pass $NAME into the VM (repeatable); NAME=VALUE sets it
//	-timeout D    kill the VM after D (default 20m)
//	-cache DIR    kernel and run files (default: .cache/vm in the repository)
//	-m MiB, -smp N, -disk MiB
//	              VM memory (2048), CPUs (2), scratch disk /dev/vda (256)
//	-systemd      boot the host's systemd as init (PID 1) on a writable
//	              overlay of the host's root, and run the command as a
//	              service once basic.target is reached
//	-v            also show the boot and power-off console
//	-fetch        only fetch the kernel into the cache, print its release
//	-q            no progress lines
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vhqos/vhqos/itest/vm"
)

// failed is the exit status when the command's own status is unknown.
const failed = 125

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("vmrun", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: vmrun [flags] -- PROGRAM [ARGS...]\n\nRuns PROGRAM as root in a qemu VM with Debian's kernel and unified cgroup v2.\nExits with its status, or 125 if the VM could not tell it.")
		fs.PrintDefaults()
	}
	dir := fs.String("C", "", "working directory in the VM (default: the current directory)")
	var env listFlag
	fs.Var(&env, "env", "pass `NAME` (or NAME=VALUE) into the VM's environment; repeatable")
	timeout := fs.Duration("timeout", 20*time.Minute, "kill the VM after this long")
	cache := fs.String("cache", "", "kernel and run files (default: .cache/vm in the repository)")
	mem := fs.Int("m", vm.DefaultMemoryMiB, "VM memory in MiB")
	cpus := fs.Int("smp", vm.DefaultCPUs, "VM CPUs")
	disk := fs.Int("disk", vm.DefaultDiskMiB, "scratch disk (/dev/vda) size in MiB")
	verbose := fs.Bool("v", false, "also show the boot and power-off console")
	fetch := fs.Bool("fetch", false, "only fetch the kernel into the cache and print its release")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	systemd := fs.Bool("systemd", false, "boot the host's systemd as init, on an overlay root, and run the command as a service")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return failed
	}
	if fs.NArg() == 0 && !*fetch {
		fs.Usage()
		return failed
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeoutCause(ctx, *timeout, fmt.Errorf("timeout of %s (-timeout)", *timeout))
	defer cancel()

	var log io.Writer = os.Stderr
	if *quiet {
		log = io.Discard
	}
	if *cache == "" {
		wd, err := os.Getwd()
		if err == nil {
			*cache, err = vm.CacheDir(wd)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmrun: %v; give -cache\n", err)
			return failed
		}
	}
	if *fetch {
		k, err := vm.FetchKernel(ctx, *cache, log)
		if err != nil {
			fmt.Fprintln(os.Stderr, "vmrun:", err)
			return failed
		}
		fmt.Println(k.Release)
		return 0
	}

	cfg := vm.Config{
		Cache: *cache, Dir: *dir, Env: environment(env, log),
		Output: os.Stdout, Log: log, Verbose: *verbose,
		MemoryMiB: *mem, CPUs: *cpus, DiskMiB: *disk, Systemd: *systemd,
	}
	status, err := vm.Run(ctx, cfg, fs.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmrun:", err)
		return failed
	}
	return status
}

// environment turns -env values into NAME=VALUE: a bare NAME takes the
// host's value, and is left out (with a note on log) when the host has
// none, as docker run -e does.
func environment(names []string, log io.Writer) []string {
	var env []string
	for _, e := range names {
		if strings.Contains(e, "=") {
			env = append(env, e)
			continue
		}
		if v, ok := os.LookupEnv(e); ok {
			env = append(env, e+"="+v)
		} else {
			fmt.Fprintf(log, "vmrun: -env %s: not set here, so not set in the VM either\n", e)
		}
	}
	return env
}
