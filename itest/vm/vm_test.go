package vm

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCommandScriptQuoting(t *testing.T) {
	script := commandScript("/work/a b", []string{"X=it's"}, []string{"/bin/echo", "a'b", "$HOME"})
	out, err := exec.Command("/bin/sh", "-c", strings.Replace(script, "cd '/work/a b' || exit 126\n", "", 1)).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out); got != "a'b $HOME\n" {
		t.Errorf("argv came out as %q", got)
	}
}

func TestCpioIsReadable(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Fatal("cpio is needed to check the initramfs format: apt-get install cpio")
	}
	var buf bytes.Buffer
	c := &cpioWriter{w: &buf}
	c.dir("d")
	c.file("d/f", 0o644, []byte("hello"))
	c.trailer()
	cmd := exec.Command("cpio", "-t")
	cmd.Stdin = &buf
	out, err := cmd.Output()
	if err != nil || string(out) != "d\nd/f\n" {
		t.Errorf("cpio -t: %q %v", out, err)
	}
}

func repoCache(t *testing.T) string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..", ".cache", "vm")
}

// The VM boots Debian's kernel with unified cgroup v2 and reports the
// command's own exit status.
func TestBootCgroupV2(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM (about 10 s); skipped with -short")
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	status, err := Run(ctx, Config{Cache: repoCache(t), Dir: "/", Output: &out, Log: os.Stderr},
		[]string{"/bin/sh", "-c", "stat -fc %T /sys/fs/cgroup; cat /sys/fs/cgroup/cgroup.controllers; test -b /dev/vda && echo disk; exit 7"})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if status != 7 {
		t.Errorf("exit status %d, want 7", status)
	}
	got := out.String()
	for _, want := range []string{"cgroup2fs", "cpu", "io", "disk"} {
		if !strings.Contains(got, want) {
			t.Errorf("VM output lacks %q:\n%s", want, got)
		}
	}
}
