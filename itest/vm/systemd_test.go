package vm

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func testSystemdGuest() *guest {
	g := testGuest()
	g.modprobe = ""
	g.systemd, g.release, g.modulesDir = true, "6.1.0-56-amd64", "/work/main/.cache/vm/linux-image-6.1.0-56-amd64/lib/modules/6.1.0-56-amd64"
	return g
}

// With Config.Systemd the initramfs's /init puts an overlay over the host
// root and hands over to systemd; the service's script runs the command
// between the markers.
func TestSystemdInitScripts(t *testing.T) {
	g := testSystemdGuest()
	init, command := initScript(g), commandScript(g)
	for name, script := range map[string]string{"init": init, "command": command} {
		if out, err := exec.Command("/bin/sh", "-n", "-c", script).CombinedOutput(); err != nil {
			t.Errorf("%s is not valid sh: %v: %s\n%s", name, err, out, script)
		}
	}
	order := []string{
		"mount -t 9p -o trans=virtio,version=9p2000.L,ro,",
		"mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay $r",
		"mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs $r/run",
		"mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs $r/tmp",
		"rm -f $r/.dockerenv",
		"cp /" + systemdService + " /" + systemdTarget + " $r/etc/systemd/system/",
		"ln -s '" + g.modulesDir + "' $r/lib/modules/'6.1.0-56-amd64'",
		"exec switch_root $r /lib/systemd/systemd --unit=" + systemdTarget + " --show-status=false",
	}
	at := 0
	for _, want := range order {
		i := strings.Index(init[at:], want)
		if i < 0 {
			t.Fatalf("init lacks %q after byte %d:\n%s", want, at, init)
		}
		at += i
	}
	if strings.Contains(init, "stage2") {
		t.Errorf("init still runs stage 2:\n%s", init)
	}
	for _, want := range []string{"B=" + systemdDir + "/busybox", g.markers.start, g.markers.exit + "$s", "$B poweroff -f", "cd '/work/it'\\''s here'"} {
		if !strings.Contains(command, want) {
			t.Errorf("the command's script lacks %q:\n%s", want, command)
		}
	}
	target, service := systemdUnits()
	for _, want := range []string{"Requires=basic.target " + systemdService, "After=basic.target " + systemdService} {
		if !strings.Contains(target, want) {
			t.Errorf("%s lacks %q:\n%s", systemdTarget, want, target)
		}
	}
	for _, want := range []string{"Type=oneshot", "ExecStart=" + systemdDir + "/busybox sh " + systemdDir + "/command", "StandardOutput=tty", "TTYPath=/dev/console"} {
		if !strings.Contains(service, want) {
			t.Errorf("%s lacks %q:\n%s", systemdService, want, service)
		}
	}
	if got := systemdCommandLine(true); !strings.Contains(got, " systemd.unit="+systemdTarget) || !strings.Contains(got, "systemd.firstboot=off") {
		t.Errorf("kernel command line for systemd: %q", got)
	}
	if got := systemdCommandLine(false); got != "" {
		t.Errorf("kernel command line without systemd: %q", got)
	}
}

// The VM boots the host's systemd as PID 1 with unified cgroup v2, runs
// the command as vhqos-vm.service with nothing else of the host's
// started, on a root it can write (gone with the VM), and reports its
// exit status.
func TestVMSystemd(t *testing.T) {
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		t.Fatal("no /lib/systemd/systemd: apt-get install systemd (.ci/deps installs it)")
	}
	var out bytes.Buffer
	cfg := bootConfig(t, &out)
	cfg.Systemd = true
	wd, _ := os.Getwd()
	cfg.Dir = wd
	cfg.Env = []string{"VHQOS_VM_TEST=it's set"}
	script := `
echo "init=$(cat /proc/1/comm)"
echo "cgroup=$(cat /proc/self/cgroup)"
echo "fs=$(stat -fc %T /sys/fs/cgroup)"
echo "env=$VHQOS_VM_TEST"
echo "pwd=$(pwd)"
touch /etc/vhqos-vm-test && echo "root=writable"
echo "multi-user=$(systemctl is-active multi-user.target) getty=$(systemctl is-active getty.target)"
modprobe veth && echo "modules=ok"
exit 5
`
	start := time.Now()
	status, err := Run(context.Background(), cfg, []string{"/bin/sh", "-c", script})
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	t.Logf("boot to power-off with systemd: %s", time.Since(start).Round(100*time.Millisecond))
	if status != 5 {
		t.Errorf("exit status %d, want 5", status)
	}
	got := out.String()
	for _, want := range []string{
		"init=systemd\n",
		"cgroup=0::/system.slice/" + systemdService + "\n",
		"fs=cgroup2fs\n",
		"env=it's set\n",
		"pwd=" + wd + "\n",
		"root=writable\n",
		"multi-user=inactive getty=inactive\n", // none of the host's enabled services
		"modules=ok\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("VM output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("VM output:\n%s", got)
	}
	if _, err := os.Stat("/etc/vhqos-vm-test"); err == nil {
		t.Error("the VM's write reached the host")
		os.Remove("/etc/vhqos-vm-test")
	}
}
