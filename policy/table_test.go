package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vhqos/vhqos/cgroup"
)

// fakeDevices stands in for /dev and /sys: the tests must not depend on
// which block devices this machine (or the VM) has. cgroup.ResolveDevice
// itself is tested in package cgroup, on what the machine has.
func fakeDevices(spec string) (cgroup.BlockDevice, error) {
	switch spec {
	case "/dev/vda", "254:0":
		return cgroup.BlockDevice{Major: 254, Minor: 0, Name: "vda"}, nil
	case "/dev/sdb", "/dev/disk/by-id/ata-TEST", "8:16":
		return cgroup.BlockDevice{Major: 8, Minor: 16, Name: "sdb"}, nil
	case "/dev/vda1", "254:1":
		return cgroup.BlockDevice{}, errors.New(`254:1 is partition vda1 of disk vda (254:0); IO limits apply to whole disks: write "/dev/vda" or "254:0"`)
	case "/dev/null":
		return cgroup.BlockDevice{}, errors.New(`"/dev/null" is a character device, not a block device (lsblk -d lists block devices)`)
	case "/dev/nope", "259:7":
		return cgroup.BlockDevice{}, fmt.Errorf("%s: %w", spec, cgroup.ErrNoDevice)
	}
	// Syntax: what the real resolver says before it looks at the machine.
	if _, err := cgroup.ResolveDevice(spec); err != nil && !errors.Is(err, cgroup.ErrNoDevice) {
		return cgroup.BlockDevice{}, err
	}
	return cgroup.BlockDevice{}, fmt.Errorf("fakeDevices: no %q: %w", spec, cgroup.ErrNoDevice)
}

func parse(t *testing.T, src string) (*Table, error) {
	t.Helper()
	return Parse("qos.toml", []byte(src), WithDeviceResolver(fakeDevices))
}

// fullTable uses every key and every kind of pattern.
const fullTable = `# a full table
[settings]
cgroup_parent = "/vhqos.slice"
track = "fork"
sniff_timeout = "750ms"
sniff_bytes = 8192
proxy_protocol = ["127.0.0.1:8080", "*:8443", "10.0.0.0/8", "[::1]:8080"]

[defaults]
cpu_weight = 100
cpu_max = "400%"
io_weight = 100
io_write_iops = { "/dev/vda" = 100 }
dscp = 0
max_connections_per_ip = 50
retry_after = 30

[[vhost]]
name = "shop"
match = ["shop.example.com", "*.shop.example.com", "192.0.2.10:443", "192.0.2.10", "[2001:db8::1]:443", "198.51.100.0/24"]
cpu_weight = 800
cpu_max = "150.5%"
io_weight = 500
io_read_bps = { "/dev/vda" = "50M" }
io_write_bps = { "/dev/vda" = 1048576, "8:16" = "1.5K" }
io_read_iops = { "/dev/sdb" = 2000 }
io_write_iops = { "/dev/sdb" = "2k" }
dscp = "af41"
max_connections = 200
max_connections_per_ip = 20
over_limit = "BLOG"

[[vhost]]
name = "blog"
match = ["*:8080", "blog.example.com:8443", "::ffff:203.0.113.0/120"]
listen = ["203.0.113.0/24", "*:8443"]
dscp = 46
max_connections = 100
refuse_status = 508
retry_after = 0

[[vhost]]
name = "odd-mark"
match = ["2001:db8:1::/48"]
dscp = "5"
`

func TestParseFullTable(t *testing.T) {
	tab, err := parse(t, fullTable)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Source != "qos.toml" || tab.Settings.CgroupParent != "/vhqos.slice" || len(tab.VHosts) != 3 {
		t.Fatalf("unexpected table: %+v", tab)
	}
	if timeout, bytes := tab.Settings.SniffLimits(); timeout != 750*time.Millisecond || bytes != 8192 {
		t.Errorf("sniff limits = %v, %d; want 750ms, 8192", timeout, bytes)
	}
	// blog's names count only where it listens.
	for local, want := range map[string]string{"203.0.113.9:8443": "blog", "192.0.2.99:8443": "blog", "192.0.2.99:80": "default"} {
		if got := tab.ClassifyName("blog.example.com", netip.MustParseAddrPort(local)).Name; got != want {
			t.Errorf("blog.example.com at %s: %s, want %s", local, got, want)
		}
	}
	d := tab.Defaults
	if d.Name != DefaultsName || d.Match != nil || d.DSCP != 0 || d.Resources.CPUWeight != 100 || d.Resources.CPUQuotaPercent != 400 || d.Resources.IOWeight != 100 {
		t.Errorf("defaults = %+v", d)
	}
	shop := tab.VHosts[0]
	if shop.Name != "shop" || shop.DSCP != 34 || shop.Resources.CPUWeight != 800 || shop.Resources.CPUQuotaPercent != 150.5 || shop.Resources.IOWeight != 500 || len(shop.Match) != 6 {
		t.Errorf("shop = %+v", shop)
	}
	// "8:16" and /dev/sdb are one device: their limits are merged, under
	// the spelling met first (keys are read in sorted order).
	if len(shop.Resources.Devices) != 2 {
		t.Fatalf("devices = %+v", shop.Resources.Devices)
	}
	if d := shop.Resources.Devices[0]; d.Path != "/dev/sdb" || d.Major != 8 || d.Minor != 16 || d.WriteBPS != 1536 || d.ReadIOPS != 2000 || d.WriteIOPS != 2048 {
		t.Errorf("/dev/sdb = 8:16 limits = %+v", d)
	}
	if d := shop.Resources.Devices[1]; d.Path != "/dev/vda" || d.Major != 254 || d.ReadBPS != 50<<20 || d.WriteBPS != 1<<20 {
		t.Errorf("/dev/vda limits = %+v", d)
	}
	for _, tc := range []struct {
		class string
		want  Admission
	}{
		{DefaultsName, Admission{MaxConnectionsPerIP: 50, OverLimit: OverLimitRefuse, RefuseStatus: 503, RetryAfter: 30}},
		{"shop", Admission{MaxConnections: 200, MaxConnectionsPerIP: 20, OverLimit: "blog", RefuseStatus: 503, RetryAfter: 1}},
		{"blog", Admission{MaxConnections: 100, OverLimit: OverLimitRefuse, RefuseStatus: 508, RetryAfter: 0}},
		{"odd-mark", Admission{RefuseStatus: 503, RetryAfter: 1}},
	} {
		if got := tab.Class(tc.class).Admission; got != tc.want {
			t.Errorf("%s: admission %+v, want %+v", tc.class, got, tc.want)
		}
	}
	if tab.VHosts[1].DSCP != 46 || tab.VHosts[2].DSCP != 5 {
		t.Errorf("DSCPs = %d, %d", tab.VHosts[1].DSCP, tab.VHosts[2].DSCP)
	}
	for _, tc := range []struct {
		local string
		want  string
	}{
		{"192.0.2.10:80", "shop"},
		{"192.0.2.10:443", "shop"},
		{"[2001:db8::1]:443", "shop"},
		{"198.51.100.7:443", "shop"},
		{"[::ffff:192.0.2.10]:80", "shop"},
		{"203.0.113.1:8080", "blog"},
		{"203.0.113.1:80", "blog"},
		{"[2001:db8:1::5]:80", "odd-mark"},
		{"192.0.2.99:80", DefaultsName},
	} {
		if got := tab.ClassifyAddr(netip.MustParseAddrPort(tc.local)).Name; got != tc.want {
			t.Errorf("ClassifyAddr(%s) = %s, want %s", tc.local, got, tc.want)
		}
	}
	for _, tc := range []struct {
		host, local string
		want        string
	}{
		{"www.shop.example.com", "192.0.2.99:80", "shop"},
		{"SHOP.example.com.:80", "192.0.2.99:80", "shop"},
		{"blog.example.com", "192.0.2.99:8443", "blog"},
		{"blog.example.com", "192.0.2.99:80", DefaultsName}, // the name is bound to port 8443
		{"unknown.example.com", "192.0.2.10:80", "shop"},    // falls back to the address
		{"", "203.0.113.9:80", "blog"},
	} {
		if got := tab.ClassifyName(tc.host, netip.MustParseAddrPort(tc.local)).Name; got != tc.want {
			t.Errorf("ClassifyName(%q, %s) = %s, want %s", tc.host, tc.local, got, tc.want)
		}
	}
}

func TestEmptyTable(t *testing.T) {
	tab, err := parse(t, "# nothing yet\n")
	if err != nil {
		t.Fatal(err)
	}
	if tab.Defaults.Name != DefaultsName || tab.Defaults.DSCP != -1 || len(tab.VHosts) != 0 {
		t.Errorf("empty table = %+v", tab)
	}
	if c := tab.ClassifyAddr(netip.MustParseAddrPort("192.0.2.1:80")); c != &tab.Defaults {
		t.Errorf("ClassifyAddr = %+v, want the defaults", c)
	}
}

func TestRoundTrip(t *testing.T) {
	example, err := os.ReadFile("testdata/example.toml")
	if err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"full": fullTable, "example": string(example), "empty": ""} {
		t.Run(name, func(t *testing.T) {
			tab, err := parse(t, src)
			if err != nil {
				t.Fatal(err)
			}
			out := tab.Marshal()
			again, err := parse(t, string(out))
			if err != nil {
				t.Fatalf("canonical form does not parse: %v\n%s", err, out)
			}
			if !reflect.DeepEqual(tab, again) {
				t.Errorf("round trip changed the table:\n%s\nbefore %+v\nafter  %+v", out, tab, again)
			}
			if out2 := again.Marshal(); string(out2) != string(out) {
				t.Errorf("canonical form is not stable:\n%s\nthen\n%s", out, out2)
			}
		})
	}
}

func TestMarshalCanonical(t *testing.T) {
	tab, err := parse(t, fullTable)
	if err != nil {
		t.Fatal(err)
	}
	want := `[settings]
cgroup_parent = "/vhqos.slice"
track = "fork"
sniff_timeout = "750ms"
sniff_bytes = 8192
proxy_protocol = ["127.0.0.1:8080", "*:8443", "10.0.0.0/8", "[::1]:8080"]

[defaults]
cpu_weight = 100
cpu_max = "400%"
io_weight = 100
io_write_iops = { "/dev/vda" = 100 }
dscp = "CS0"
max_connections_per_ip = 50
retry_after = 30

[[vhost]]
name = "shop"
match = ["shop.example.com", "*.shop.example.com", "192.0.2.10:443", "192.0.2.10", "[2001:db8::1]:443", "198.51.100.0/24"]
cpu_weight = 800
cpu_max = "150.5%"
io_weight = 500
io_read_bps = { "/dev/vda" = "50M" }
io_write_bps = { "/dev/sdb" = 1536, "/dev/vda" = "1M" }
io_read_iops = { "/dev/sdb" = 2000 }
io_write_iops = { "/dev/sdb" = 2048 }
dscp = "AF41"
max_connections = 200
max_connections_per_ip = 20
over_limit = "blog"

[[vhost]]
name = "blog"
match = ["*:8080", "blog.example.com:8443", "::ffff:203.0.113.0/120"]
listen = ["203.0.113.0/24", "*:8443"]
dscp = "EF"
max_connections = 100
refuse_status = 508
retry_after = 0

[[vhost]]
name = "odd-mark"
match = ["2001:db8:1::/48"]
dscp = 5
`
	if got := string(tab.Marshal()); got != want {
		t.Errorf("Marshal() =\n%s\nwant\n%s", got, want)
	}
}

// Each kind of mistake is reported at its line and column, with its key
// and a message that says what is allowed.
func TestProblems(t *testing.T) {
	const vh = "[[vhost]]\nname = \"shop\"\nmatch = [\"192.0.2.1\"]\n" // lines 1-3
	tests := []struct {
		name      string
		toml      string
		line, col int
		key       string
		msg       string
	}{
		{"bad TOML", "[defaults]\ncpu_weight = = 3\n", 2, 14, "", "TOML syntax: unexpected character"},
		{"TOML key defined twice", "[defaults]\ndscp = 1\ndscp = 2\n", 3, 1, "dscp", "TOML syntax: key dscp is already defined"},
		{"single-bracket vhost", vh + "[vhost]\n", 4, 2, "vhost", "TOML syntax: table vhost already exists as an array of tables"},
		{"unknown key with suggestion", "[defaults]\ncpu_wieght = 3\n", 2, 1, "defaults.cpu_wieght", `unknown key; did you mean "cpu_weight"?`},
		{"unknown key, systemd name", vh + "CPUQuota = \"50%\"\n", 4, 1, "vhost[0].CPUQuota", `did you mean "cpu_max"?`},
		{"unknown key, no suggestion", vh + "colour = 3\n", 4, 1, "vhost[0].colour", "unknown key. Known keys here: name, match, listen, cpu_weight"},
		{"unknown section", "[vhosts]\n", 1, 1, "vhosts", `unknown section; did you mean "vhost"?`},
		{"unknown section, no suggestion", "[limits]\n", 1, 1, "limits", "unknown section. Sections are [settings], [defaults], [[tenant]] and [[vhost]]"},
		{"key above the sections", "cpu_weight = 5\n[defaults]\n", 1, 1, "cpu_weight", "belongs to no section"},
		{"name in defaults", "[defaults]\nname = \"x\"\n", 2, 1, "defaults.name", "not allowed here: [defaults] is the class of every connection no vhost matches"},
		{"limit in settings", "[settings]\ndscp = 1\n", 2, 1, "settings.dscp", "is a limit, not a setting"},
		{"defaults as a list", "[[defaults]]\n", 1, 1, "defaults", "write [defaults] (single brackets)"},
		{"listen without names", vh + "listen = [\"192.0.2.1\"]\n", 4, 10, "vhost[0].listen", "match lists no host name"},
		{"listen with a name", "[[vhost]]\nname = \"shop\"\nmatch = [\"shop.example.com\"]\nlisten = [\"blog.example.com\"]\n", 4, 11, "vhost[0].listen[0]", "is a host name; listen lists local addresses"},
		{"listen not a list", "[[vhost]]\nname = \"shop\"\nmatch = [\"shop.example.com\"]\nlisten = \"192.0.2.1\"\n", 4, 10, "vhost[0].listen", `must be a list, even of one address: listen = ["192.0.2.1"]`},
		{"listen in defaults", "[defaults]\nlisten = []\n", 2, 1, "defaults.listen", "not allowed here"},
		{"sniff_timeout not a duration", "[settings]\nsniff_timeout = \"2 seconds\"\n", 2, 17, "settings.sniff_timeout", `"2 seconds" is not a duration`},
		{"sniff_timeout a number", "[settings]\nsniff_timeout = 2\n", 2, 17, "settings.sniff_timeout", "write a duration as a string"},
		{"sniff_timeout too long", "[settings]\nsniff_timeout = \"5m\"\n", 2, 17, "settings.sniff_timeout", "out of range: from 10ms to 1m0s"},
		{"unknown track mode", "[settings]\ntrack = \"forks\"\n", 2, 9, "settings.track", `"forks" is not a tracking mode`},
		{"sniff_bytes too small", "[settings]\nsniff_bytes = 10\n", 2, 15, "settings.sniff_bytes", "out of range: use 512..65536"},
		{"wrong type", vh + "cpu_weight = \"lots\"\n", 4, 14, "vhost[0].cpu_weight", `is a string ("lots"); write a whole number from 1 to 10000`},
		{"number in quotes", vh + "cpu_weight = \"800\"\n", 4, 14, "vhost[0].cpu_weight", "write the number without quotes"},
		{"decimal weight", vh + "io_weight = 1.5\n", 4, 13, "vhost[0].io_weight", "is a decimal number (1.5); write a whole number"},
		{"bad address", "[[vhost]]\nname = \"a\"\nmatch = [\"192.0.2.1\", \"192.0.2.300\"]\n", 3, 23, "vhost[0].match[1]", `"192.0.2.300": not a valid IP address`},
		{"bad CIDR", "[[vhost]]\nname = \"a\"\nmatch = [\n  \"10.0.0.0/33\",\n]\n", 4, 3, "vhost[0].match[0]", `"10.0.0.0/33": prefix length 33 out of range for IPv4`},
		{"bad name", "[[vhost]]\nname = \"a\"\nmatch = [\"shop!.example.com\"]\n", 3, 10, "vhost[0].match[0]", `'!' cannot be in a host name`},
		{"pattern not a string", "[[vhost]]\nname = \"a\"\nmatch = [443]\n", 3, 10, "vhost[0].match[0]", "is a number (443); each pattern is a string"},
		{"match not a list", "[[vhost]]\nname = \"a\"\nmatch = \"192.0.2.1\"\n", 3, 9, "vhost[0].match", `must be a list, even of one pattern: match = ["192.0.2.1"]`},
		{"empty match", "[[vhost]]\nname = \"a\"\nmatch = []\n", 3, 9, "vhost[0].match", "is empty"},
		{"missing match", "[[vhost]]\nname = \"a\"\n", 1, 1, "vhost[0].match", "missing: list what this vhost serves"},
		{"missing name", "\n[[vhost]]\nmatch = [\"192.0.2.1\"]\n", 2, 1, "vhost[0].name", "missing: every vhost needs a name"},
		{"duplicate name", vh + "[[vhost]]\nname = \"Shop\"\nmatch = [\"192.0.2.2\"]\n", 5, 8, "vhost[1].name", `"shop" is already the name of vhost[0] (line 2)`},
		{"pattern in two vhosts", vh + "[[vhost]]\nname = \"b\"\nmatch = [\"192.0.2.9\", \"::ffff:192.0.2.1\"]\n", 6, 23, "vhost[1].match[1]", `"::ffff:192.0.2.1" is already matched by vhost "shop" (as "192.0.2.1") on line 3`},
		{"name in two vhosts", "[[vhost]]\nname = \"a\"\nmatch = [\"Shop.example.com\"]\n[[vhost]]\nname = \"b\"\nmatch = [\"shop.example.com.\"]\n", 6, 10, "vhost[1].match[0]", `already matched by vhost "a"`},
		{"/32 is the address", vh + "[[vhost]]\nname = \"b\"\nmatch = [\"192.0.2.1/32\"]\n", 6, 10, "vhost[1].match[0]", `already matched by vhost "shop"`},
		{"out of range", vh + "cpu_weight = 0\n", 4, 14, "vhost[0].cpu_weight", "0 is out of range: use 1..10000"},
		{"io_weight out of range", vh + "io_weight = 10001\n", 4, 13, "vhost[0].io_weight", "10001 is out of range: use 1..10000"},
		{"dscp out of range", "[defaults]\ndscp = 64\n", 2, 8, "defaults.dscp", "64 is out of range 0..63; it looks like a whole TOS byte, whose DSCP is 64>>2 = 16 (CS2)"},
		{"dscp negative", "[defaults]\ndscp = -1\n", 2, 8, "defaults.dscp", "-1 is out of range; use CS0-CS7"},
		{"unknown DSCP name", vh + "dscp = \"AF44\"\n", 4, 8, "vhost[0].dscp", `unknown DSCP name "AF44"; use CS0-CS7, AF11-AF43, EF, VOICE-ADMIT or 0..63`},
		{"dscp wrong type", vh + "dscp = true\n", 4, 8, "vhost[0].dscp", `is true (true/false); write a DSCP name such as "AF41"`},
		{"cpu_max without %", "[defaults]\ncpu_max = \"50\"\n", 2, 11, "defaults.cpu_max", `"50" needs a %: cpu_max = "50%"`},
		{"cpu_max as number", "[defaults]\ncpu_max = 50\n", 2, 11, "defaults.cpu_max", `write it as a string with %: cpu_max = "50%"`},
		{"cpu_max zero", "[defaults]\ncpu_max = \"0%\"\n", 2, 11, "defaults.cpu_max", `"0%" is out of range`},
		{"cpu_max too big", "[defaults]\ncpu_max = \"100001%\"\n", 2, 11, "defaults.cpu_max", "at most 100000%"},
		{"cpu_max garbage", "[defaults]\ncpu_max = \"1e3%\"\n", 2, 11, "defaults.cpu_max", `"1e3%" is not a percentage`},
		{"partition", "[defaults]\nio_read_bps = { \"/dev/vda1\" = \"1M\" }\n", 2, 17, `defaults.io_read_bps."/dev/vda1"`, `254:1 is partition vda1 of disk vda (254:0); IO limits apply to whole disks: write "/dev/vda" or "254:0"`},
		{"partition by number", "[defaults]\nio_read_bps = { \"254:1\" = \"1M\" }\n", 2, 17, `defaults.io_read_bps."254:1"`, `254:1 is partition vda1 of disk vda (254:0)`},
		{"not a block device", "[defaults]\nio_read_bps = { \"/dev/null\" = \"1M\" }\n", 2, 17, `defaults.io_read_bps."/dev/null"`, `"/dev/null" is a character device, not a block device`},
		{"relative device", "[defaults]\nio_read_bps = { vda = \"1M\" }\n", 2, 17, "defaults.io_read_bps.vda", `"vda" is not a device; write the block device's path`},
		{"bad MAJ:MIN", "[defaults]\nio_read_bps = { \"8:x\" = \"1M\" }\n", 2, 17, `defaults.io_read_bps."8:x"`, "is not MAJOR:MINOR"},
		{"same device twice", "[defaults]\nio_read_bps = { \"/dev/sdb\" = \"1M\", \"8:16\" = \"2M\" }\n", 2, 36, `defaults.io_read_bps."8:16"`, `is the same device (8:16) as "/dev/sdb"; give each device one io_read_bps`},
		{"bad size string", "[defaults]\nio_read_bps = { \"/dev/vda\" = \"fast\" }\n", 2, 30, `defaults.io_read_bps."/dev/vda"`, `"fast" is not a size; write bytes per second`},
		{"size unit", "[defaults]\nio_write_bps = { \"/dev/vda\" = \"50MB\" }\n", 2, 31, `defaults.io_write_bps."/dev/vda"`, `unknown unit "MB" in "50MB"`},
		{"size zero", "[defaults]\nio_read_iops = { \"/dev/vda\" = 0 }\n", 2, 31, `defaults.io_read_iops."/dev/vda"`, "must be more than 0; to leave the device unlimited, remove it"},
		{"size fraction", "[defaults]\nio_read_iops = { \"/dev/vda\" = \"1.5\" }\n", 2, 31, `defaults.io_read_iops."/dev/vda"`, "not a whole number"},
		{"device limits not a table", "[defaults]\nio_read_bps = \"50M\"\n", 2, 15, "defaults.io_read_bps", `map block devices to limits, e.g. io_read_bps = { "/dev/vda" = "50M" }`},
		{"dotted device key", vh + "io_read_bps.\"/dev/vda\" = \"x\"\n", 4, 26, `vhost[0].io_read_bps."/dev/vda"`, `"x" is not a size`},
		{"subtable of a vhost", vh + "[vhost.io_read_bps]\n\"/dev/vda\" = -5\n", 5, 14, `vhost[0].io_read_bps."/dev/vda"`, "-5: must be more than 0"},
		{"reserved name", "[[vhost]]\nname = \"Supervisor\"\nmatch = [\"192.0.2.1\"]\n", 2, 8, "vhost[0].name", "reserved for vhqos's own cgroups"},
		{"name with a slash", "[[vhost]]\nname = \"a/b\"\nmatch = [\"192.0.2.1\"]\n", 2, 8, "vhost[0].name", "becomes a cgroup directory"},
		{"name not a string", "[[vhost]]\nname = 7\nmatch = [\"192.0.2.1\"]\n", 2, 8, "vhost[0].name", "is a number (7); write the name as a string"},
		{"relative cgroup_parent", "[settings]\ncgroup_parent = \"vhqos\"\n", 2, 17, "settings.cgroup_parent", `"vhqos" is relative; write an absolute cgroup path such as "/vhqos"`},
		{"relative cgroup_parent, trailing slash", "[settings]\ncgroup_parent = \"a.slice/\"\n", 2, 17, "settings.cgroup_parent", `such as "/a.slice"`},
		{"unclean cgroup_parent", "[settings]\ncgroup_parent = \"/a/../b/\"\n", 2, 17, "settings.cgroup_parent", `is not a clean path; write "/b"`},
		{"unknown setting", "[settings]\ncgroup = \"/x\"\n", 2, 1, "settings.cgroup", `did you mean "cgroup_parent"?`},
		{"cgroup_parent in defaults", "[defaults]\ncgroup_parent = \"/x\"\n", 2, 1, "defaults.cgroup_parent", "belongs in [settings]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.toml)
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("err = %v, want Problems", err)
			}
			if len(ps) != 1 {
				t.Errorf("want one problem, got %d:\n%v", len(ps), err)
			}
			p := ps[0]
			if p.Line != tc.line || p.Column != tc.col || p.Key != tc.key || !strings.Contains(p.Msg, tc.msg) {
				t.Errorf("got  %s\n(line %d col %d key %q)\nwant line %d col %d key %q mentioning %q", p, p.Line, p.Column, p.Key, tc.line, tc.col, tc.key, tc.msg)
			}
			if want := fmt.Sprintf("qos.toml:%d:%d: ", tc.line, tc.col); !strings.HasPrefix(p.String(), want) {
				t.Errorf("message %q does not start with %q", p.String(), want)
			}
		})
	}
}

// The message format is what an editor's quickfix list reads.
func TestProblemString(t *testing.T) {
	src := "[[vhost]]\nname = \"x\"\nmatch = [\"192.0.2.1\"]\n\n[[vhost]]\nname = \"shop\"\nmatch = [\"192.0.2.2\"]\n\n\n\n\ndscp = \"AF44\"\n"
	_, err := parse(t, src)
	want := `qos.toml:12:8: vhost "shop" (vhost[1]) dscp: unknown DSCP name "AF44"; use CS0-CS7, AF11-AF43, EF, VOICE-ADMIT or 0..63`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
	for _, tc := range []struct {
		p    Problem
		want string
	}{
		{Problem{File: "q", Line: 1, Column: 2, Key: "vhost[0].match[1]", Where: "vhost[0]", Msg: "m"}, "q:1:2: vhost[0] match[1]: m"},
		{Problem{File: "q", Line: 3, Column: 1, Key: "defaults.cpu_weight", Where: "[defaults]", Msg: "m"}, "q:3:1: [defaults] cpu_weight: m"},
		{Problem{File: "q", Line: 3, Column: 1, Key: `defaults.io_read_bps."/dev/x.y"`, Where: "[defaults]", Msg: "m"}, `q:3:1: [defaults] io_read_bps."/dev/x.y": m`},
		{Problem{File: "q", Line: 1, Column: 1, Key: "vhosts", Msg: "m"}, "q:1:1: vhosts: m"},
		{Problem{File: "q", Line: 1, Column: 1, Key: "vhost[2]", Where: "vhost[2]", Msg: "m"}, "q:1:1: vhost[2]: m"},
		{Problem{File: "q", Msg: "m"}, "q: m"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

// Every problem is reported at once, in file order, not just the first.
func TestAllProblemsReported(t *testing.T) {
	src := `[defaults]
cpu_weight = 0
dscp = "XX"
foo = 1

[[vhost]]
name = "a"
match = ["192.0.2.300", "10.0.0.0/8"]
cpu_max = "fast"

[[vhost]]
name = "a"
match = ["10.0.0.0/8"]
io_read_bps = { "/dev/nope" = "1Q" }
`
	_, err := parse(t, src)
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("err = %v, want Problems", err)
	}
	want := []struct {
		line int
		key  string
	}{
		{2, "defaults.cpu_weight"},
		{3, "defaults.dscp"},
		{4, "defaults.foo"},
		{8, "vhost[0].match[0]"},
		{9, "vhost[0].cpu_max"},
		{12, "vhost[1].name"},
		{13, "vhost[1].match[0]"},
		{14, `vhost[1].io_read_bps."/dev/nope"`}, // the size
		{14, `vhost[1].io_read_bps."/dev/nope"`}, // the device
	}
	if len(ps) != len(want) {
		t.Fatalf("want %d problems, got %d:\n%v", len(want), len(ps), err)
	}
	for i, w := range want {
		if ps[i].Line != w.line || ps[i].Key != w.key {
			t.Errorf("problem %d: %s; want line %d key %s", i, ps[i], w.line, w.key)
		}
	}
}

func TestParseDSCP(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want int
	}{
		{int64(0), 0}, {int64(63), 63}, {"EF", 46}, {"ef", 46}, {"VOICE-ADMIT", 44}, {"voice-admit", 44},
		{"CS0", 0}, {"CS1", 8}, {"cs7", 56}, {"AF11", 10}, {"AF12", 12}, {"AF13", 14}, {"AF21", 18},
		{"AF31", 26}, {"AF41", 34}, {"AF42", 36}, {"AF43", 38}, {"46", 46},
	} {
		got, err := parseDSCP(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseDSCP(%v) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []any{"CS8", "AF44", "AF51", "AF10", "BE", "", "E F", int64(64), int64(-1), "64", 46.0} {
		if _, err := parseDSCP(in); err == nil {
			t.Errorf("parseDSCP(%v) accepted", in)
		}
	}
	// Every code point survives DSCPName and back.
	for d := range 64 {
		got, err := parseDSCP(DSCPName(d))
		if err != nil || got != d {
			t.Errorf("DSCPName(%d) = %q reads back as %d, %v", d, DSCPName(d), got, err)
		}
	}
	for d, want := range map[int]string{0: "CS0", 8: "CS1", 10: "AF11", 34: "AF41", 38: "AF43", 44: "VOICE-ADMIT", 46: "EF", 56: "CS7", 5: "5", 40: "CS5", 42: "42"} {
		if got := DSCPName(d); got != want {
			t.Errorf("DSCPName(%d) = %q, want %q", d, got, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   any
		iops bool
		want uint64
	}{
		{int64(1), false, 1},
		{"1", false, 1},
		{"50M", false, 50 << 20},
		{"50m", false, 50 << 20},
		{"1.5K", false, 1536},
		{"0.5G", false, 512 << 20},
		{"2T", false, 2 << 40},
		{"100B", false, 100},
		{"1.0001K", false, 1024},
		{"2K", true, 2048},
		{int64(9223372036854775807), false, 9223372036854775807},
		{"8388607T", false, 8388607 << 40},
	} {
		got, err := parseSize(tc.in, tc.iops)
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%v) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []any{"", "M", "0", "0K", "0.0001K", "-1M", "1.5", "1,5M", "1e6", "50MB", "50 M", " 5", "8388608T", int64(0), int64(-3), 1.5, true} {
		if got, err := parseSize(in, false); err == nil {
			t.Errorf("parseSize(%v) = %d, want an error", in, got)
		}
	}
	for _, n := range []uint64{1, 1023, 1024, 1536, 50 << 20, 3 << 40, 1<<63 - 1} {
		s := formatSize(n)
		var v any = strings.Trim(s, `"`)
		if got, err := parseSize(v, false); err != nil || got != n {
			t.Errorf("formatSize(%d) = %s reads back as %d, %v", n, s, got, err)
		}
	}
}

func TestExampleTablesParse(t *testing.T) {
	for _, f := range []string{"testdata/example.toml", "../demo/qos.toml"} {
		if _, err := Load(f, WithDeviceResolver(fakeDevices)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := Load("testdata/no-such-file.toml"); err == nil || !strings.Contains(err.Error(), "reading the QoS table") {
		t.Errorf("missing file: %v", err)
	}
}

// ClassifyAddr runs for every accepted connection.
func TestClassifyAddrDoesNotAllocate(t *testing.T) {
	tab, err := parse(t, fullTable)
	if err != nil {
		t.Fatal(err)
	}
	for _, local := range []string{"192.0.2.10:443", "198.51.100.7:80", "[2001:db8::1]:443", "192.0.2.99:80"} {
		ap := netip.MustParseAddrPort(local)
		if n := testing.AllocsPerRun(100, func() { tab.ClassifyAddr(ap) }); n != 0 {
			t.Errorf("ClassifyAddr(%s): %v allocations", local, n)
		}
	}
}

func BenchmarkClassifyAddr(b *testing.B) {
	tab, err := Parse("qos.toml", []byte(fullTable), WithDeviceResolver(fakeDevices))
	if err != nil {
		b.Fatal(err)
	}
	local := netip.MustParseAddrPort("198.51.100.7:443")
	b.ReportAllocs()
	for b.Loop() {
		if tab.ClassifyAddr(local).Name != "shop" {
			b.Fatal("wrong class")
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(fullTable))
	if example, err := os.ReadFile("testdata/example.toml"); err == nil {
		f.Add(example)
	}
	f.Add([]byte("[[vhost]]\nname='x'\nmatch=['1.2.3.4']\n"))
	f.Add([]byte("[defaults]\nio_read_bps.\"/dev/vda\" = \"1.5K\"\n[[vhost]]\nname='y'\nmatch=['*:80']\n[vhost.io_write_bps]\n'8:0' = 1\n"))
	f.Add([]byte("[defaults]\nmax_connections=1\nover_limit='Y'\n[[vhost]]\nname='y'\nmatch=['*:80']\nmax_connections_per_ip=1\nretry_after=0\nrefuse_status=599\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := Parse("fuzz.toml", data, WithDeviceResolver(fakeDevices))
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("error of type %T: %v", err, err)
			}
			for _, p := range ps {
				if p.Msg == "" || p.File != "fuzz.toml" {
					t.Fatalf("empty problem: %+v", p)
				}
			}
			return
		}
		out := tab.Marshal()
		again, err := Parse("fuzz.toml", out, WithDeviceResolver(fakeDevices))
		if err != nil {
			t.Fatalf("valid table's canonical form does not parse: %v\n%s", err, out)
		}
		// Skipped limits are not written back, so their warnings are
		// not read back either.
		tab.Warnings = nil
		if !reflect.DeepEqual(tab, again) {
			t.Fatalf("round trip changed the table:\n%s", out)
		}
	})
}

// proxy_protocol trusts the listeners it names, by the connection's own
// local address (ProxyTrusted) and, before any connection, by the address
// a listening socket is bound to (ProxyMayApply); both run on hot paths
// and allocate nothing. A table built by hand gives the same answers.
func TestProxyTrusted(t *testing.T) {
	type check struct {
		addr string
		// ProxyTrusted(addr), not asked of a wildcard, which is never
		// the local address of a connection; ProxyMayApply(addr).
		trusted, bound bool
	}
	tests := []struct {
		name   string
		list   string // TOML list; "" leaves the key out
		checks []check
	}{
		{"specific and port", `["127.0.0.1:8080", "*:8443", "[2001:db8::1]:443"]`, []check{
			{"127.0.0.1:8080", true, true},
			{"127.0.0.1:80", false, false},
			{"127.0.0.2:8080", false, false},
			{"[::ffff:127.0.0.1]:8080", true, true}, // v4-mapped is IPv4
			{"192.0.2.1:8443", true, true},
			{"[2001:db8::9]:8443", true, true},
			{"192.0.2.1:443", false, false},
			{"[2001:db8::1]:443", true, true},
			{"[2001:db8::1%eth0]:443", true, true},
			{"[2001:db8::1]:80", false, false},
			// Wildcard sockets: what a client could reach on that port.
			{"0.0.0.0:8080", false, true},
			{"0.0.0.0:80", false, false},
			{"0.0.0.0:8443", false, true},
			{"0.0.0.0:443", false, false}, // the IPv6 rule cannot reach an IPv4 socket
			{"[::]:443", false, true},
			{"[::]:8080", false, true},
			{"[::]:8443", false, true},
			{"[::]:80", false, false},
			{"[::ffff:0.0.0.0]:443", false, false},
		}},
		{"IPv4 CIDR", `["10.0.0.0/8"]`, []check{
			{"10.1.2.3:80", true, true},
			{"[::ffff:10.1.2.3]:80", true, true},
			{"11.0.0.1:80", false, false},
			{"[::a01:203]:80", false, false}, // not v4-mapped
			{"0.0.0.0:80", false, true},
			{"[::]:80", false, true},
		}},
		{"IPv6 CIDR", `["2001:db8:5::/48"]`, []check{
			{"[2001:db8:5::7]:80", true, true},
			{"[2001:db8:6::7]:80", false, false},
			{"0.0.0.0:80", false, false},
			{"[::]:80", false, true},
		}},
		{"IPv4 address, any port", `["192.0.2.10"]`, []check{
			{"192.0.2.10:1", true, true},
			{"[::ffff:192.0.2.10]:65535", true, true},
			{"192.0.2.11:1", false, false},
			{"0.0.0.0:1", false, true},
			{"[::]:1", false, true},
		}},
		{"absent", "", []check{
			{"127.0.0.1:8080", false, false},
			{"0.0.0.0:8080", false, false},
			{"[::]:8080", false, false},
		}},
		{"empty", "[]", []check{
			{"127.0.0.1:8080", false, false},
			{"[::]:8080", false, false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := "[settings]\n"
			if tc.list != "" {
				src += "proxy_protocol = " + tc.list + "\n"
			}
			tab, err := parse(t, src)
			if err != nil {
				t.Fatal(err)
			}
			byHand := &Table{Settings: Settings{ProxyProtocol: tab.Settings.ProxyProtocol}}
			for _, c := range tc.checks {
				ap := netip.MustParseAddrPort(c.addr)
				wildcard := ap.Addr().Unmap().IsUnspecified()
				for name, tab := range map[string]*Table{"parsed": tab, "by hand": byHand} {
					if got := tab.ProxyTrusted(ap); got != c.trusted && !wildcard {
						t.Errorf("%s: ProxyTrusted(%s) = %v, want %v", name, c.addr, got, c.trusted)
					}
					if got := tab.ProxyMayApply(ap); got != c.bound {
						t.Errorf("%s: ProxyMayApply(%s) = %v, want %v", name, c.addr, got, c.bound)
					}
				}
				if n := testing.AllocsPerRun(100, func() { tab.ProxyTrusted(ap) }); n != 0 {
					t.Errorf("ProxyTrusted(%s): %v allocations", c.addr, n)
				}
				if n := testing.AllocsPerRun(100, func() { tab.ProxyMayApply(ap) }); n != 0 {
					t.Errorf("ProxyMayApply(%s): %v allocations", c.addr, n)
				}
			}
		})
	}
}
