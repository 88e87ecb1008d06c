package policy

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
)

// fakeDevices stands in for /dev: the tests must not depend on which block
// devices this machine (or the VM) has. statDevice itself is tested below
// on a device that exists everywhere Linux runs.
func fakeDevices(path string) (int64, int64, error) {
	switch path {
	case "/dev/vda":
		return 254, 0, nil
	case "/dev/sdb":
		return 8, 16, nil
	}
	return 0, 0, os.ErrNotExist
}

const goodTable = `# a full table
[settings]
cgroup_parent = "/vhqos.slice"

[defaults]
cpu_weight = 100
dscp = 0

[[vhost]]
name = "shop"
match = ["192.0.2.10", "[2001:db8::1]:443", "198.51.100.0/24"]
cpu_weight = 800
cpu_max = "150%"
io_weight = 500
io_read_bps = { "/dev/vda" = "50M" }
io_write_bps = { "/dev/vda" = 1048576, "8:16" = "1.5K" }
io_read_iops = { "/dev/sdb" = 2000 }
dscp = "AF41"

[[vhost]]
name = "blog"
match = ["*:8080"]
dscp = 46
`

func TestParseGoodTable(t *testing.T) {
	tab, err := Parse("qos.toml", []byte(goodTable), WithDeviceLookup(fakeDevices))
	if err != nil {
		t.Fatal(err)
	}
	if tab.Settings.CgroupParent != "/vhqos.slice" || len(tab.VHosts) != 2 {
		t.Fatalf("unexpected table: %+v", tab)
	}
	shop := tab.VHosts[0]
	if shop.Name != "shop" || shop.DSCP != 34 || shop.Resources.CPUWeight != 800 || shop.Resources.CPUQuotaPercent != 150 || shop.Resources.IOWeight != 500 {
		t.Errorf("shop = %+v", shop)
	}
	// "8:16" and /dev/sdb are one device: its limits are merged.
	if len(shop.Resources.Devices) != 2 {
		t.Fatalf("devices = %+v", shop.Resources.Devices)
	}
	if d := shop.Resources.Devices[0]; d.Major != 8 || d.Minor != 16 || d.WriteBPS != 1536 || d.ReadIOPS != 2000 {
		t.Errorf("8:16 = /dev/sdb limits = %+v", d)
	}
	vda := shop.Resources.Devices[1]
	if vda.Path != "/dev/vda" || vda.Major != 254 || vda.ReadBPS != 50<<20 || vda.WriteBPS != 1<<20 {
		t.Errorf("/dev/vda limits = %+v", vda)
	}
	if tab.VHosts[1].DSCP != 46 || tab.Defaults.DSCP != 0 || tab.Defaults.Resources.CPUWeight != 100 {
		t.Errorf("blog/defaults = %+v / %+v", tab.VHosts[1], tab.Defaults)
	}
	for _, tc := range []struct {
		local string
		want  string
	}{
		{"192.0.2.10:80", "shop"},
		{"[2001:db8::1]:443", "shop"},
		{"198.51.100.7:443", "shop"},
		{"[::ffff:192.0.2.10]:80", "shop"},
		{"203.0.113.1:8080", "blog"},
		{"203.0.113.1:80", DefaultsName},
	} {
		if got := tab.ClassifyAddr(netip.MustParseAddrPort(tc.local)).Name; got != tc.want {
			t.Errorf("ClassifyAddr(%s) = %s, want %s", tc.local, got, tc.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	tab, err := Parse("qos.toml", []byte(goodTable), WithDeviceLookup(fakeDevices))
	if err != nil {
		t.Fatal(err)
	}
	out := tab.Marshal()
	again, err := Parse("qos.toml", out, WithDeviceLookup(fakeDevices))
	if err != nil {
		t.Fatalf("canonical form does not parse: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(tab, again) {
		t.Errorf("round trip changed the table:\n%s\nbefore %+v\nafter  %+v", out, tab, again)
	}
}

func TestProblems(t *testing.T) {
	tests := []struct {
		name      string
		toml      string
		line      int
		key       string
		msgSubstr string
	}{
		{"bad TOML", "[defaults]\ncpu_weight = = 3\n", 2, "", "TOML syntax"},
		{"unknown key with suggestion", "[defaults]\ncpu_wieght = 3\n", 2, "defaults.cpu_wieght", `did you mean "cpu_weight"`},
		{"unknown section", "[vhosts]\n", 1, "vhosts", `did you mean "vhost"`},
		{"wrong type", "[[vhost]]\nname = \"a\"\nmatch = [\"192.0.2.1\"]\ncpu_weight = \"lots\"\n", 4, "vhost[0].cpu_weight", "whole number from 1 to 10000"},
		{"bad address", "[[vhost]]\nname = \"a\"\nmatch = [\"192.0.2.300\"]\n", 3, "vhost[0].match", "not a valid IP address"},
		{"bad CIDR", "[[vhost]]\nname = \"a\"\nmatch = [\"10.0.0.0/33\"]\n", 3, "vhost[0].match", "prefix length 33"},
		{"duplicate name", "[[vhost]]\nname = \"a\"\nmatch = [\"192.0.2.1\"]\n[[vhost]]\nname = \"a\"\nmatch = [\"192.0.2.2\"]\n", 5, "vhost[1].name", "duplicate vhost name; the first is on line 2"},
		{"pattern in two vhosts", "[[vhost]]\nname = \"a\"\nmatch = [\"192.0.2.1\"]\n[[vhost]]\nname = \"b\"\nmatch = [\"::ffff:192.0.2.1\"]\n", 6, "vhost[1].match", `already matched by vhost "a"`},
		{"out of range", "[[vhost]]\nname = \"a\"\nmatch = [\"192.0.2.1\"]\ncpu_weight = 0\n", 4, "vhost[0].cpu_weight", "0 is out of range: use 1..10000"},
		{"dscp out of range", "[defaults]\ndscp = 64\n", 2, "defaults.dscp", "0..63"},
		{"unknown DSCP name", "[[vhost]]\nname = \"a\"\nmatch = [\"192.0.2.1\"]\ndscp = \"AF44\"\n", 4, "vhost[0].dscp", `unknown DSCP name "AF44"`},
		{"unknown device", "[defaults]\nio_read_bps = { \"/dev/nope\" = \"1M\" }\n", 2, "defaults.io_read_bps./dev/nope", `unknown device "/dev/nope"`},
		{"bad size", "[defaults]\nio_read_bps = { \"/dev/vda\" = \"fast\" }\n", 2, "defaults.io_read_bps./dev/vda", "not a positive size"},
		{"bad cpu_max", "[defaults]\ncpu_max = 50\n", 2, "defaults.cpu_max", "percentage"},
		{"missing name", "[[vhost]]\nmatch = [\"192.0.2.1\"]\n", 1, "vhost[0].name", "needs a name"},
		{"empty match", "[[vhost]]\nname = \"a\"\nmatch = []\n", 3, "vhost[0].match", "is empty"},
		{"reserved name", "[[vhost]]\nname = \"home\"\nmatch = [\"192.0.2.1\"]\n", 2, "vhost[0].name", "reserved"},
		{"name with a slash", "[[vhost]]\nname = \"a/b\"\nmatch = [\"192.0.2.1\"]\n", 2, "vhost[0].name", "names a cgroup"},
		{"relative cgroup_parent", "[settings]\ncgroup_parent = \"vhqos\"\n", 2, "settings.cgroup_parent", "absolute"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("qos.toml", []byte(tc.toml), WithDeviceLookup(fakeDevices))
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("err = %v, want Problems", err)
			}
			p := ps[0]
			if p.Line != tc.line || p.Key != tc.key || !strings.Contains(p.Msg, tc.msgSubstr) {
				t.Errorf("got %q (line %d key %q), want line %d key %q mentioning %q", p.String(), p.Line, p.Key, tc.line, tc.key, tc.msgSubstr)
			}
			if !strings.HasPrefix(p.String(), "qos.toml:") {
				t.Errorf("message %q does not start with the file name", p.String())
			}
		})
	}
}

// Every problem is reported at once, not just the first.
func TestAllProblemsReported(t *testing.T) {
	_, err := Parse("qos.toml", []byte("[defaults]\ncpu_weight = 0\ndscp = \"XX\"\nfoo = 1\n"), WithDeviceLookup(fakeDevices))
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 3 {
		t.Fatalf("want 3 problems, got %v", err)
	}
	if ps[0].Line != 2 || ps[1].Line != 3 || ps[2].Line != 4 {
		t.Errorf("problems not in file order: %v", err)
	}
}

func TestStatDevice(t *testing.T) {
	if _, _, err := statDevice("/dev/null"); err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Errorf("/dev/null: err = %v, want 'not a block device'", err)
	}
	if _, _, err := statDevice("/dev/does-not-exist"); err == nil {
		t.Error("missing device accepted")
	}
	entries, _ := os.ReadDir("/sys/block")
	if len(entries) == 0 {
		t.Skip("this machine has no block devices in /sys/block")
	}
	for _, e := range entries {
		if _, err := os.Stat("/dev/" + e.Name()); err == nil {
			if _, _, err := statDevice("/dev/" + e.Name()); err != nil {
				t.Errorf("/dev/%s: %v", e.Name(), err)
			}
			return
		}
	}
}

func TestExampleTableParses(t *testing.T) {
	for _, f := range []string{"testdata/example.toml", "../demo/qos.toml"} {
		if _, err := Load(f, WithDeviceLookup(fakeDevices)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(goodTable))
	f.Add([]byte("[[vhost]]\nname='x'\nmatch=['1.2.3.4']\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := Parse("fuzz.toml", data, WithDeviceLookup(fakeDevices))
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if _, err := Parse("fuzz.toml", tab.Marshal(), WithDeviceLookup(fakeDevices)); err != nil {
			t.Fatalf("valid table's canonical form does not parse: %v", err)
		}
	})
}
