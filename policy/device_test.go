package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vhqos/vhqos/cgroup"
	"github.com/vhqos/vhqos/itest/loopdisk"
)

// A device this machine lacks, by path or by number, is a warning at its
// key, and its limit is skipped: the rest of the table stands.
func TestMissingDeviceIsAWarning(t *testing.T) {
	src := `[defaults]
io_read_bps = { "/dev/nope" = "1M", "/dev/vda" = "2M" }

[[vhost]]
name = "shop"
match = ["192.0.2.1"]
io_write_iops = { "259:7" = 100 }
`
	tab, err := parse(t, src)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`qos.toml:2:17: warning: [defaults] io_read_bps."/dev/nope": /dev/nope: no such block device on this machine; this io_read_bps is skipped here`,
		`qos.toml:7:19: warning: vhost "shop" (vhost[0]) io_write_iops."259:7": 259:7: no such block device on this machine; this io_write_iops is skipped here`,
	}
	if len(tab.Warnings) != len(want) {
		t.Fatalf("warnings = %v, want %d", tab.Warnings, len(want))
	}
	for i, w := range want {
		if got := tab.Warnings[i].String(); got != w || !tab.Warnings[i].Warning {
			t.Errorf("warning %d = %q (Warning %v)\nwant %q", i, got, tab.Warnings[i].Warning, w)
		}
	}
	if d := tab.Defaults.Resources.Devices; len(d) != 1 || d[0].Path != "/dev/vda" || d[0].ReadBPS != 2<<20 {
		t.Errorf("defaults' devices = %+v, want /dev/vda alone", d)
	}
	if d := tab.VHosts[0].Resources.Devices; len(d) != 0 {
		t.Errorf("shop's devices = %+v, want none", d)
	}

	// With an error beside it, the table is refused, and the warning is
	// listed with the error, in file order.
	_, err = parse(t, src+"dscp = \"AF44\"\n")
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 3 {
		t.Fatalf("err = %v, want the two warnings and an error", err)
	}
	if !ps[0].Warning || !ps[1].Warning || ps[2].Warning || !strings.HasPrefix(ps[2].String(), `qos.toml:8:8: vhost "shop" (vhost[0]) dscp: unknown DSCP name`) {
		t.Errorf("problems:\n%v", err)
	}
}

// What vhqos check, run and reload see, on this machine's own devices: a
// loop disk made for the test and its partition, and devices no machine
// has.
func TestDevicesOnThisMachine(t *testing.T) {
	d := loopdisk.New(t)
	partition := fmt.Sprintf("is partition %s of disk %s (%s); IO limits apply to whole disks: write %q or %q", d.PartName, d.Name, d.Num, d.Path, d.Num)
	for _, tc := range []struct {
		name, dev string
		// want is "" for a limit that is set, else the message.
		want    string
		warning bool
	}{
		{"whole disk by path", d.Path, "", false},
		{"whole disk by number", d.Num, "", false},
		{"partition by path", d.PartPath, fmt.Sprintf("%q (%s) %s", d.PartPath, d.PartNum, partition), false},
		{"partition by number", d.PartNum, d.PartNum + " " + partition, false},
		{"missing by path", "/dev/vhqos-no-such-disk", `no block device "/dev/vhqos-no-such-disk" on this machine (lsblk -d lists the disks it has); this io_read_bps is skipped here`, true},
		{"missing by number", "4095:1048575", "no block device 4095:1048575 on this machine (lsblk -d lists the disks it has); this io_read_bps is skipped here", true},
		{"not a block device", "/dev/null", `"/dev/null" is a character device, not a block device`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := fmt.Sprintf("[defaults]\nio_read_bps = { %s = \"1M\" }\n", tomlString(tc.dev))
			tab, err := Parse("qos.toml", []byte(src))
			wantPrefix := fmt.Sprintf("qos.toml:2:17: [defaults] io_read_bps.%s: ", tomlString(tc.dev))
			switch {
			case tc.want == "":
				if err != nil || len(tab.Warnings) != 0 {
					t.Fatalf("err = %v, warnings %v", err, tab.Warnings)
				}
				if got := tab.Defaults.Resources.Devices; len(got) != 1 || fmt.Sprintf("%d:%d", got[0].Major, got[0].Minor) != d.Num || got[0].ReadBPS != 1<<20 {
					t.Errorf("devices = %+v, want %s", got, d.Num)
				}
			case tc.warning:
				if err != nil || len(tab.Warnings) != 1 {
					t.Fatalf("err = %v, warnings %v; want one warning", err, tab)
				}
				wantPrefix = strings.Replace(wantPrefix, "qos.toml:2:17: ", "qos.toml:2:17: warning: ", 1)
				if got := tab.Warnings[0].String(); got != wantPrefix+tc.want {
					t.Errorf("warning = %q\nwant      %q", got, wantPrefix+tc.want)
				}
				if len(tab.Defaults.Resources.Devices) != 0 {
					t.Errorf("devices = %+v, want the limit skipped", tab.Defaults.Resources.Devices)
				}
			default:
				if err == nil || !strings.HasPrefix(err.Error(), wantPrefix+tc.want) {
					t.Errorf("err = %v\nwant %q", err, wantPrefix+tc.want)
				}
			}
		})
	}
	// The path and the number of one disk, in two keys, are one device.
	src := fmt.Sprintf("[defaults]\nio_read_bps = { %q = \"1M\" }\nio_write_bps = { %q = \"2M\" }\n", d.Path, d.Num)
	tab, err := Parse("qos.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := tab.Defaults.Resources.Devices; len(got) != 1 || got[0].ReadBPS != 1<<20 || got[0].WriteBPS != 2<<20 {
		t.Errorf("devices = %+v, want one with both limits", got)
	}
}

// The resolver is cgroup.ResolveDevice unless a test replaces it.
func TestDefaultResolver(t *testing.T) {
	src := []byte("[defaults]\nio_read_bps = { \"4095:1048575\" = \"1M\" }\n")
	tab, err := Parse("qos.toml", src)
	if err != nil || len(tab.Warnings) != 1 || len(tab.Defaults.Resources.Devices) != 0 {
		t.Errorf("with the machine's devices: %v, %+v; want the limit skipped with a warning", err, tab)
	}
	var calls []string
	tab, err = Parse("qos.toml", src, WithDeviceResolver(func(spec string) (cgroup.BlockDevice, error) {
		calls = append(calls, spec)
		return cgroup.BlockDevice{Major: 4095, Minor: 1048575}, nil
	}))
	if err != nil || len(tab.Warnings) != 0 || len(tab.Defaults.Resources.Devices) != 1 || len(calls) != 1 {
		t.Errorf("with a resolver that knows it: %v, %+v, calls %q", err, tab, calls)
	}
}
