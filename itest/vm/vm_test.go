package vm

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// --- the console and its markers ---

func TestConsoleMarkers(t *testing.T) {
	m := markersFor("0123456789abcdef")
	stream := "\x1bc\x1b[?7l\x1b[2JSeaBIOS (version 1.16)\r\n" +
		"Booting from ROM..\x1bc[    0.000000] Linux version 6.1.0\r\n" +
		"Booting from ROM.." + m.start + "\r\n" + // PVH boot and a quiet kernel
		"hello\r\n" +
		"\r\n" + // a blank line of the command's own
		"VHQOS-VM-EXIT-ffffffffffffffff=3\r\n" + // another run's marker: output
		m.exit + "$s\r\n" + // not a status: output
		"\techo \"" + m.fail + "$*\"\r\n" + // the init script, catted: output
		"no newline at the end" +
		"\r\n" + m.exit + "42\r\n" +
		"[    5.1] reboot: Power down\r\n"
	for _, chunk := range []int{1, 3, 7, len(stream)} {
		var out bytes.Buffer
		c := newConsole(m, &out, false)
		for s := stream; len(s) > 0; {
			n := min(chunk, len(s))
			c.Write([]byte(s[:n]))
			s = s[n:]
		}
		c.Close()
		want := "hello\n\nVHQOS-VM-EXIT-ffffffffffffffff=3\n" + m.exit + "$s\n\techo \"" + m.fail + "$*\"\nno newline at the end\n"
		if got := out.String(); got != want {
			t.Errorf("chunks of %d: output\n%q\nwant\n%q", chunk, got, want)
		}
		if !c.started || !c.exited || c.status != 42 || c.failure != "" {
			t.Errorf("chunks of %d: started %v exited %v status %d failure %q", chunk, c.started, c.exited, c.status, c.failure)
		}
		if !strings.Contains(string(c.boot), "SeaBIOS") || strings.Contains(string(c.boot), "hello") {
			t.Errorf("boot console kept: %q", c.boot)
		}
		select {
		case <-c.done:
		default:
			t.Error("done not closed after the exit marker")
		}
	}
}

// The blank line the init prints before the marker is dropped, but only
// that one.
func TestConsoleBlankLines(t *testing.T) {
	m := markersFor("n")
	for _, tc := range []struct{ cmd, want string }{
		{"", ""},
		{"a\n", "a\n"},
		{"a\n\n", "a\n\n"},
		{"\n\n\n", "\n\n\n"},
		{"a", "a\n"},
	} {
		var out bytes.Buffer
		c := newConsole(m, &out, false)
		c.Write([]byte(m.start + "\n" + tc.cmd + "\n" + m.exit + "0\n"))
		if out.String() != tc.want || !c.exited {
			t.Errorf("command printed %q: got %q (exited %v), want %q", tc.cmd, out.String(), c.exited, tc.want)
		}
	}
}

func TestConsoleVerboseAndFailure(t *testing.T) {
	m := markersFor("n")
	var out bytes.Buffer
	c := newConsole(m, &out, true)
	c.Write([]byte("kernel says hi\r\n\n" + m.fail + "mounting the host root over 9p\r\nreboot: Power down\r\n"))
	c.Close()
	if c.started || c.exited || c.failure != "mounting the host root over 9p" {
		t.Errorf("started %v exited %v failure %q", c.started, c.exited, c.failure)
	}
	if !strings.Contains(out.String(), "kernel says hi\n") {
		t.Errorf("verbose console lacks the boot: %q", out.String())
	}
	if !strings.Contains(string(c.boot), "kernel says hi") {
		t.Errorf("boot console not kept: %q", c.boot)
	}
}

func TestConsoleNoMarker(t *testing.T) {
	m := markersFor("n")
	var out bytes.Buffer
	c := newConsole(m, &out, false)
	c.Write([]byte(m.start + "\nhalf a line"))
	c.Close()
	if c.exited || out.String() != "half a line" {
		t.Errorf("exited %v, output %q", c.exited, out.String())
	}
}

func TestConsoleLongLine(t *testing.T) {
	m := markersFor("n")
	var out bytes.Buffer
	c := newConsole(m, &out, false)
	long := strings.Repeat("x", 3*maxLine)
	c.Write([]byte(m.start + "\n" + long))
	if len(c.line) > maxLine {
		t.Errorf("holding %d bytes of a line", len(c.line))
	}
	c.Write([]byte("\n" + m.exit + "1\n"))
	if out.String() != long+"\n" || c.status != 1 {
		t.Errorf("long line came out as %d bytes, status %d", out.Len(), c.status)
	}
}

func TestIndentStripsEscapes(t *testing.T) {
	got := indent([]byte("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\nBooting\x1bc [0.0] Linux\n\n"))
	if want := "\tSeaBIOS\n\tBooting [0.0] Linux\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestMarkersDiffer(t *testing.T) {
	a, err := newMarkers()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := newMarkers()
	if a == b || !strings.HasPrefix(a.exit, "VHQOS-VM-EXIT-") {
		t.Errorf("markers %+v and %+v", a, b)
	}
}

// --- the init scripts ---

func testGuest() *guest {
	return &guest{
		markers:    markersFor("0123456789abcdef"),
		modules:    []string{"/lib/modules/00-virtio_ring.ko", "/lib/modules/01-virtio.ko"},
		dir:        "/work/it's here",
		env:        []string{"X=it's $HOME `x`", "HOME=/elsewhere"},
		argv:       []string{"/bin/true"},
		modprobe:   "/usr/sbin/modprobe",
		kernelRoot: "/work/main/.cache/vm/linux-image-6.1.0-56-amd64",
	}
}

func TestInitScripts(t *testing.T) {
	g := testGuest()
	init, stage2 := initScript(g), stage2Script(g)
	for name, script := range map[string]string{"init": init, "stage2": stage2, "modprobe": modprobeScript(g)} {
		if out, err := exec.Command("/bin/sh", "-n", "-c", script).CombinedOutput(); err != nil {
			t.Errorf("%s is not valid sh: %v: %s\n%s", name, err, out, script)
		}
	}
	if !strings.HasPrefix(init, "#!/bin/busybox sh\n") {
		t.Errorf("init does not start with its interpreter:\n%s", init)
	}
	// Modules in the given order, before the 9p mount.
	i0 := strings.Index(init, "insmod '/lib/modules/00-virtio_ring.ko'")
	i1 := strings.Index(init, "insmod '/lib/modules/01-virtio.ko'")
	i9 := strings.Index(init, "mount -t 9p")
	if i0 < 0 || i1 < i0 || i9 < i1 {
		t.Errorf("modules not loaded in order before the 9p mount:\n%s", init)
	}
	for _, want := range []string{
		"trans=virtio", "version=9p2000.L", ",ro,", "hostroot",
		"switch_root $r " + guestBusybox + " sh " + guestDir + "/stage2",
	} {
		if !strings.Contains(init, want) {
			t.Errorf("init lacks %q:\n%s", want, init)
		}
	}
	for _, want := range []string{
		"-t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp",
		"-t cgroup2 ", " /sys/fs/cgroup",
		"ip link set lo up",
		"cd '/work/it'\\''s here' || fail",
		"echo " + guestDir + "/modprobe >/proc/sys/kernel/modprobe",
		`echo "` + g.markers.start + `"`,
		`echo "` + g.markers.exit + `$s"`,
		"poweroff -f",
	} {
		if !strings.Contains(stage2, want) {
			t.Errorf("stage2 lacks %q:\n%s", want, stage2)
		}
	}
	// The controllers are left as the kernel has them.
	if strings.Contains(init+stage2, "subtree_control") {
		t.Error("the init touches cgroup.subtree_control")
	}
	// cgroup v1 is never mounted.
	if strings.Contains(init+stage2, "-t cgroup ") {
		t.Error("the init mounts cgroup v1")
	}
}

// The line of stage 2 that starts the command, run here: every argument
// and variable arrives as it was given, whatever it holds.
func TestCommandLineQuoting(t *testing.T) {
	g := testGuest()
	g.argv = []string{"/bin/sh", "-c", `printf '[%s]' "$0" "$@"; echo; echo "X=$X HOME=$HOME PATH=$PATH"`,
		"zero", "a'b", `$HOME`, "", "two\nlines", `\`, "-n", "*", "a=b"}
	var line string
	for _, l := range strings.Split(stage2Script(g), "\n") {
		if strings.HasPrefix(l, "$B env -i ") {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no command line in stage2:\n%s", stage2Script(g))
	}
	// Split lines show up as several script lines; run the script's
	// command from its start up to the status line.
	script := stage2Script(g)
	start := strings.Index(script, "$B env -i ")
	end := strings.Index(script, "\ns=$?")
	cmd := exec.Command("/bin/sh", "-c", "B=/bin/busybox\n"+script[start:end])
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := "[zero][a'b][$HOME][][two\nlines][\\][-n][*][a=b]\n" +
		"X=it's $HOME `x` HOME=/elsewhere PATH=" + defaultPath + "\n"
	if string(out) != want {
		t.Errorf("got\n%q\nwant\n%q", out, want)
	}
}

// The command gets the defaults, then what it is given; nothing of the
// host's (or init's) environment leaks in.
func TestCommandEnvironment(t *testing.T) {
	g := testGuest()
	env := commandEnv(g)
	if env[0] != "PATH="+defaultPath || env[len(env)-1] != "HOME=/elsewhere" {
		t.Errorf("environment %q", env)
	}
	if !strings.Contains(strings.Join(env, "\n"), "MODPROBE_OPTIONS=-d "+g.kernelRoot) {
		t.Errorf("no MODPROBE_OPTIONS in %q", env)
	}
}

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"", "a", "it's", "'", "''", "$(x)", "a\nb", `\'"`} {
		out, err := exec.Command("/bin/sh", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("%q came back as %q (%v)", s, out, err)
		}
	}
}

// --- the initramfs ---

func TestCpioIsReadable(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Fatal("cpio is needed to check the initramfs format: apt-get install cpio")
	}
	var buf bytes.Buffer
	c := &cpioWriter{w: &buf}
	c.dir("d")
	c.node("d/console", 0o020600, 5, 1)
	c.file("d/f", 0o755, []byte("hello"))
	c.file("d/odd", 0o644, []byte("abcdefg"))
	c.trailer()
	if c.err != nil {
		t.Fatal(c.err)
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--no-absolute-filenames", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	for name, want := range map[string]string{"d/f": "hello", "d/odd": "abcdefg"} {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != want {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "d/f")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("d/f mode: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "d/console")); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Errorf("d/console is not a character device: %v", err)
	}
}

func TestBusyboxMustBeStatic(t *testing.T) {
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Skip(err)
	}
	if err := checkStatic("/bin/sh", sh); err == nil || !strings.Contains(err.Error(), "busybox-static") {
		t.Errorf("a dynamic /bin/sh passed as static busybox: %v", err)
	}
}

// --- the kernel ---

func TestParseDepends(t *testing.T) {
	out := "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n"
	if pkg, err := parseDepends(out); err != nil || pkg != "linux-image-6.1.0-56-amd64" {
		t.Errorf("got %q %v", pkg, err)
	}
	if _, err := parseDepends("linux-image-amd64\n"); err == nil {
		t.Error("no dependency accepted")
	}
}

func TestLoadOrder(t *testing.T) {
	// As in Debian 6.1's modules.dep: every module lists all it needs,
	// what to load last first.
	dep := map[string][]string{
		"kernel/fs/netfs/netfs.ko":                       nil,
		"kernel/fs/fscache/fscache.ko":                   {"kernel/fs/netfs/netfs.ko"},
		"kernel/net/9p/9pnet.ko":                         nil,
		"kernel/net/9p/9pnet_virtio.ko":                  {"kernel/net/9p/9pnet.ko", "kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_ring.ko"},
		"kernel/fs/9p/9p.ko":                             {"kernel/net/9p/9pnet.ko", "kernel/fs/fscache/fscache.ko", "kernel/fs/netfs/netfs.ko"},
		"kernel/drivers/virtio/virtio.ko":                {"kernel/drivers/virtio/virtio_ring.ko"},
		"kernel/drivers/virtio/virtio_ring.ko":           nil,
		"kernel/drivers/virtio/virtio_pci_legacy_dev.ko": nil,
		"kernel/drivers/virtio/virtio_pci_modern_dev.ko": nil,
		"kernel/drivers/virtio/virtio_pci.ko": {"kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
			"kernel/drivers/virtio/virtio_pci_modern_dev.ko", "kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_ring.ko"},
		"kernel/drivers/block/virtio_blk.ko": {"kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_ring.ko"},
	}
	var order []string
	for m := range dep {
		order = append(order, m)
	}
	got, err := loadOrder(dep, order, map[string]bool{"af_packet": true}, append(modulesNeeded(), "af_packet"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got {
		names = append(names, moduleName(p))
	}
	want := "virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci 9pnet 9pnet_virtio netfs fscache 9p virtio_blk"
	if strings.Join(names, " ") != want {
		t.Errorf("load order\n%s\nwant\n%s", strings.Join(names, " "), want)
	}
	if _, err := loadOrder(dep, order, nil, []string{"nosuch"}); err == nil {
		t.Error("a missing module accepted")
	}
	cyc := map[string][]string{"a.ko": {"b.ko"}, "b.ko": {"a.ko"}}
	if _, err := loadOrder(cyc, []string{"a.ko", "b.ko"}, nil, []string{"a"}); err == nil {
		t.Error("a dependency cycle accepted")
	}
}

func TestVersionLess(t *testing.T) {
	for _, tc := range [][2]string{{"6.1.0-9-amd64", "6.1.0-56-amd64"}, {"6.1.0-56-amd64", "6.12.0-1-amd64"}} {
		if !versionLess(tc[0], tc[1]) || versionLess(tc[1], tc[0]) {
			t.Errorf("%s < %s wrong", tc[0], tc[1])
		}
	}
}

// A bzImage built here: the payload is found from the header and its size
// checked against the trailer.
func TestBzPayload(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte("vmlinux"))
	zw.Close()
	payload := binary.LittleEndian.AppendUint32(z.Bytes(), 7)
	img := make([]byte, 5*512) // setup_sects 4 (0 means 4), plus the boot sector
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(img[0x248:], 100)
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	img = append(img, make([]byte, 100)...)
	img = append(img, payload...)
	got, err := bzPayload(img)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("payload %q %v", got, err)
	}
	out, err := decompress(got)
	if err != nil || string(out) != "vmlinux" {
		t.Errorf("decompressed %q %v", out, err)
	}
	if _, err := bzPayload(img[:0x300]); err == nil {
		t.Error("a truncated bzImage accepted")
	}
	if err := checkPVH(out); err == nil {
		t.Error("a non-ELF kernel passed as PVH")
	}
}

func TestHasNote(t *testing.T) {
	note := func(name string, typ uint32, desc []byte) []byte {
		b := binary.LittleEndian.AppendUint32(nil, uint32(len(name)+1))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(desc)))
		b = binary.LittleEndian.AppendUint32(b, typ)
		b = append(b, name+"\x00"...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		b = append(b, desc...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	notes := append(note("GNU", 3, []byte{1, 2, 3}), note("Xen", xenElfnotePhys32Entry, []byte{0, 0, 0, 1})...)
	if !hasNote(notes, "Xen", xenElfnotePhys32Entry) || hasNote(notes, "Xen", 5) || hasNote(notes[:20], "Xen", xenElfnotePhys32Entry) {
		t.Error("hasNote wrong")
	}
}

func TestLoopsPerJiffy(t *testing.T) {
	if got := parseCPUMHz("processor\t: 0\ncpu MHz\t\t: 2596.120\n"); got != 2596120 {
		t.Errorf("cpu MHz parsed as %d kHz", got)
	}
	if got := parseCPUMHz("processor: 0\n"); got != 0 {
		t.Errorf("no cpu MHz parsed as %d", got)
	}
	if !strings.Contains(kernelCommandLine(10384540), " lpj=10384540") || strings.Contains(kernelCommandLine(0), "lpj") {
		t.Error("lpj on the command line wrong")
	}
}

// --- checks before booting ---

func TestCheckCommand(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		env  []string
		argv []string
		ok   bool
	}{
		{"/", nil, []string{"true"}, true},
		{"/", []string{"A_1=x=y"}, []string{"/bin/true"}, true},
		{"/", nil, nil, false},
		{"/tmp", nil, []string{"true"}, false},
		{"/run/x", nil, []string{"true"}, false},
		{"/", nil, []string{"/tmp/prog"}, false},
		{"/tmp/..", nil, []string{"true"}, true},
		{"/nonexistent-dir", nil, []string{"true"}, false},
		{"/", []string{"1A=x"}, []string{"true"}, false},
		{"/", []string{"NOVALUE"}, []string{"true"}, false},
		{"/", nil, []string{"./no-such-program"}, false},
	} {
		err := checkCommand(filepath.Clean(tc.dir), tc.env, tc.argv)
		if (err == nil) != tc.ok {
			t.Errorf("dir %s env %q argv %q: %v", tc.dir, tc.env, tc.argv, err)
		}
	}
}

func TestCacheDir(t *testing.T) {
	wd, _ := os.Getwd()
	got, err := CacheDir(wd)
	if err != nil || !strings.HasSuffix(got, "/.cache/vm") || filepath.Dir(filepath.Dir(got)) != filepath.Dir(filepath.Dir(wd)) {
		t.Errorf("CacheDir(%s) = %s, %v", wd, got, err)
	}
	if _, err := CacheDir("/"); err == nil {
		t.Error("CacheDir(/) found a repository")
	}
}

func TestConfigRefusesTmpCache(t *testing.T) {
	cfg := Config{Cache: "/tmp/vm-cache"}
	if err := cfg.complete(); err == nil {
		t.Error("a cache under /tmp accepted")
	}
}

// --- the VM itself ---

func bootConfig(t *testing.T, out *bytes.Buffer) Config {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a qemu VM (about 5 s, more on a busy machine); skipped with -short")
	}
	wd, _ := os.Getwd()
	cache, err := CacheDir(wd)
	if err != nil {
		t.Fatal(err)
	}
	// Fetched before any test's deadline starts: on a fresh machine this
	// downloads the kernel.
	if _, err := FetchKernel(context.Background(), cache, testLog{t}); err != nil {
		t.Fatal(err)
	}
	return Config{Cache: cache, Output: out, Log: testLog{t}}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The VM boots Debian's kernel with unified cgroup v2 alone, runs the
// command in the given directory with the given environment and argv, as
// root, on the host's root read-only, and reports the command's own exit
// status.
func TestVM(t *testing.T) {
	var out bytes.Buffer
	cfg := bootConfig(t, &out)
	wd, _ := os.Getwd()
	cfg.Dir = wd
	cfg.Env = []string{"VHQOS_VM_TEST=it's set"}
	script := `
echo "fs=$(stat -fc %T /sys/fs/cgroup)"
echo "controllers=$(cat /sys/fs/cgroup/cgroup.controllers)"
echo "subtree=$(cat /sys/fs/cgroup/cgroup.subtree_control)"
test -b /dev/vda && echo "disk=$(cat /sys/block/vda/size)"
echo "pwd=$(pwd)"
echo "uid=$(id -u)"
echo "env=$VHQOS_VM_TEST"
echo "args=$#:$1:$2"
touch /etc/vhqos-vm-test 2>/dev/null || echo "root=read-only"
touch /tmp/x && echo "tmp=writable"
ip -o link show lo | grep -q UP && echo "lo=up"
ip link add vhqos0 type veth peer name vhqos1 && echo "veth=ok"
grep -c cgroup /proc/self/mountinfo | sed 's/^/cgroupmounts=/'
exit 7
`
	start := time.Now()
	status, err := Run(context.Background(), cfg, []string{"/bin/sh", "-c", script, "sh", "a b", "it's"})
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out.String())
	}
	t.Logf("boot to power-off: %s", time.Since(start).Round(100*time.Millisecond))
	if status != 7 {
		t.Errorf("exit status %d, want 7", status)
	}
	got := out.String()
	for _, want := range []string{
		"fs=cgroup2fs\n",
		"subtree=\n", // nothing enabled for the children
		"disk=524288\n",
		"pwd=" + wd + "\n",
		"uid=0\n",
		"env=it's set\n",
		"args=2:a b:it's\n",
		"root=read-only\n",
		"tmp=writable\n",
		"lo=up\n",
		"veth=ok\n", // a module loaded on demand
		"cgroupmounts=1\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("VM output lacks %q", want)
		}
	}
	var controllers string
	for _, l := range strings.Split(got, "\n") {
		if c, ok := strings.CutPrefix(l, "controllers="); ok {
			controllers = " " + c + " "
		}
	}
	for _, c := range []string{"cpu", "io", "memory", "pids"} {
		if !strings.Contains(controllers, " "+c+" ") {
			t.Errorf("cgroup.controllers %q lacks %s", controllers, c)
		}
	}
	if t.Failed() {
		t.Logf("VM output:\n%s", got)
	}
}

// A VM that stops without the exit marker (here: the command crashes the
// kernel, which with panic=-1 and -no-reboot ends qemu) is an error, not a
// status.
func TestVMDiesWithoutStatus(t *testing.T) {
	var out bytes.Buffer
	cfg := bootConfig(t, &out)
	_, err := Run(context.Background(), cfg, []string{"/bin/sh", "-c", "echo c >/proc/sysrq-trigger; sleep 60"})
	if err == nil || !strings.Contains(err.Error(), "without reporting its exit status") {
		t.Errorf("got %v, want an error about the missing status\n%s", err, out.String())
	}
}

// The context's end kills qemu.
func TestVMTimeout(t *testing.T) {
	var out bytes.Buffer
	cfg := bootConfig(t, &out)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := Run(ctx, cfg, []string{"/bin/sleep", "600"})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the deadline", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Run returned %s after the deadline", d)
	}
}
