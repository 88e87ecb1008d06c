package policy

import (
	"errors"
	"strings"
	"testing"
)

// Rates: tc(8)'s units, case-insensitive but for the B of bytes per
// second; bits are 1000-based, Ki/Mi/Gi/Ti 1024-based.
func TestParseBitRate(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want uint64
		err  string
	}{
		{in: "40Mbit", want: 40_000_000},
		{in: "40mbit", want: 40_000_000},
		{in: "40MBIT", want: 40_000_000},
		{in: "1Gbit", want: 1_000_000_000},
		{in: "500kbit", want: 500_000},
		{in: "500Kbit", want: 500_000},
		{in: "1.5Gbit", want: 1_500_000_000},
		{in: "0.5mbit", want: 500_000},
		{in: "8000bit", want: 8000},
		{in: "8kbit", want: 8000},
		{in: "10Tbit", want: 10_000_000_000_000},
		{in: "1Mibit", want: 1 << 20},
		{in: "8kibit", want: 8192},
		{in: "5MBps", want: 40_000_000},
		{in: "5mBps", want: 40_000_000},
		{in: "1KiBps", want: 8192},
		{in: "1000Bps", want: 8000},
		{in: "100.0005kbit", want: 100_000}, // rounded down to whole bits

		{in: "10M", err: `"10M" is ambiguous; write "10Mbit" for 10 megabits per second or "10MBps" for 10 megabytes per second`},
		{in: "10Mb", err: `"10Mb" is ambiguous; write "10Mbit"`},
		{in: "10MB", err: `"10MB" is a size, not a rate; write "10Mbit" for 10 megabits per second or "10MBps"`},
		{in: "10MiB", err: `"10MiB" is a size, not a rate; write "10Mibit"`},
		{in: "10mbps", err: `"10mbps" is ambiguous: tc reads "mbps" as bytes per second, and it is often meant as bits; write "10Mbit" for 10 megabits per second or "10MBps" for 10 megabytes per second`},
		{in: "10Mbps", err: `"10Mbps" is ambiguous`},
		{in: "10kbps", err: `write "10kbit" for 10 kilobits per second or "10KBps"`},
		{in: "10Mbit/s", err: `write the unit without /s, as tc does: "10Mbit"`},
		{in: "10 Mbit", err: `without a space: "10Mbit"`},
		{in: "10%", err: "a share of the link's speed is not supported"},
		{in: "40000000", err: `"40000000" has no unit; write bits per second with a unit`},
		{in: "10furlongs", err: `unknown unit "furlongs" in "10furlongs"`},
		{in: "Mbit", err: `"Mbit" is not a rate`},
		{in: "1.2.3Mbit", err: "is not a rate"},
		{in: "1,5Gbit", err: `"1,5Gbit" has a comma in its number; write "1.5Gbit": a decimal point, not a comma`},
		{in: "1,2,3Mbit", err: `"1,2,3Mbit" has commas in its number; write a number with digits and at most one decimal point`},
		{in: "0Mbit", err: `"0Mbit" is no rate; to leave the class unlimited, leave egress_rate out`},
		{in: "10bit", err: `"10bit" is 10 bit/s, less than the least, 8kbit (1000 bytes a second); did you mean "10Mbit"?`},
		{in: "7999bit", err: "less than the least"},
		{in: "10.000001Tbit", err: "more than the most, 10Tbit"},
		{in: int64(40000000), err: `40000000 has no unit; write the rate as a string with its unit, e.g. egress_rate = "40Mbit"`},
		{in: 1.5, err: "is a decimal number (1.5); write bits per second"},
		{in: true, err: "is true (true/false)"},
	} {
		got, err := parseBitRate("egress_rate", tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%v: %d, %v; want %d", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v: %d, %v; want an error saying %s", tc.in, got, err, tc.err)
		}
	}
}

func TestFormatBitRate(t *testing.T) {
	for n, want := range map[uint64]string{40_000_000: "40Mbit", 1_500_000: "1500kbit", 8001: "8001bit", 2_000_000_000_000: "2Tbit", 1 << 20: "1048576bit"} {
		if got := FormatBitRate(n); got != want {
			t.Errorf("FormatBitRate(%d) = %q, want %q", n, got, want)
		}
		if back, err := parseBitRate("egress_rate", FormatBitRate(n)); err != nil || back != n {
			t.Errorf("%q reads back as %d, %v; want %d", FormatBitRate(n), back, err, n)
		}
	}
}

const shapeSettings = "[settings]\nshape_devices = [\"eth0\"]\n"

// egress_rate and connection_rate, in [defaults] and a vhost, with the
// line and column of each problem.
func TestKeyRates(t *testing.T) {
	for _, key := range rateKeys() {
		get := func(c Class) any {
			if key == "egress_rate" {
				return c.Rates.Egress
			}
			return c.Rates.Connection
		}
		for _, header := range []string{shapeSettings + "[defaults]\n", shapeSettings + oneVHost} {
			class := func(tab *Table) any {
				if strings.Contains(header, "[[vhost]]") {
					return get(tab.VHosts[0])
				}
				return get(tab.Defaults)
			}
			checkKey(t, header, key, "%s", class, []keyCase{
				{value: "", want: uint64(0)},
				{value: `"40Mbit"`, want: uint64(40_000_000)},
				{value: `"8kbit"`, want: uint64(8000)},
				{value: `"10Tbit"`, want: uint64(10_000_000_000_000)},
				{value: `"1.5Gbit"`, want: uint64(1_500_000_000)},
				{value: `"5MBps"`, want: uint64(40_000_000)},
				{value: `"10MB"`, err: `"10MB" is a size, not a rate`},
				{value: `"10M"`, err: `"10M" is ambiguous`},
				{value: `"7kbit"`, err: "less than the least"},
				{value: "40000000", err: "has no unit"},
			})
		}
	}
}

// shape_devices: a list of interface names; absent or [] is none.
func TestKeyShapeDevices(t *testing.T) {
	get := func(t *Table) any { return strings.Join(t.Settings.ShapeDevices, ",") }
	checkKey(t, "[settings]\n", "shape_devices", "%s", get, []keyCase{
		{value: "", want: ""},
		{value: "[]", want: ""},
		{value: `["eth0"]`, want: "eth0"},
		{value: `["eth0", "bond0.100", "eth0"]`, want: "eth0,bond0.100"},
		{value: `["lo"]`, want: "lo"},
		{value: `["abcdefghijklmno"]`, want: "abcdefghijklmno"},
		{value: `"eth0"`, err: `must be a list, even of one device: shape_devices = ["eth0"]`},
		{value: "true", err: "write a list of network devices"},
	})
	for _, bad := range []string{`""`, `"abcdefghijklmnop"`, `"eth0:1"`, `"a/b"`, `"eth 0"`, `".."`, "1"} {
		_, err := parse(t, "[settings]\nshape_devices = [\"lo\", "+bad+"]\n")
		var ps Problems
		if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Key != "settings.shape_devices[1]" || ps[0].Line != 2 || ps[0].Column != 24 {
			t.Errorf("shape_devices = [\"lo\", %s]: %v; want one problem at 2:24 on shape_devices[1]", bad, err)
		}
	}
}

// An egress_rate needs devices to be shaped on; a connection_rate does
// not (the socket paces itself).
func TestEgressRateNeedsDevices(t *testing.T) {
	src := "[[vhost]]\nname = \"shop\"\nmatch = [\"192.0.2.1\"]\negress_rate = \"40Mbit\"\nconnection_rate = \"8Mbit\"\n"
	_, err := parse(t, src)
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Line != 4 || ps[0].Column != 15 || !strings.Contains(ps[0].Msg, `add shape_devices to [settings], e.g. shape_devices = ["eth0"]`) {
		t.Fatalf("egress_rate without shape_devices: %v; want one problem at 4:15 asking for shape_devices", err)
	}
	if !strings.Contains(ps[0].String(), `vhost "shop" (vhost[0]) egress_rate:`) {
		t.Errorf("problem %q does not name the vhost and key", ps[0])
	}
	tab, err := parse(t, shapeSettings+src)
	if err != nil {
		t.Fatal(err)
	}
	if r := tab.VHosts[0].Rates; r != (Rates{Egress: 40_000_000, Connection: 8_000_000}) {
		t.Errorf("rates %+v", r)
	}
	if _, err := parse(t, "[defaults]\nconnection_rate = \"8Mbit\"\n"); err != nil {
		t.Errorf("connection_rate alone: %v", err)
	}
	// Not a setting, and not a section of its own.
	for _, tc := range []struct{ src, want string }{
		{"[settings]\negress_rate = \"1Mbit\"\n", "is a limit, not a setting"},
		{"egress_rate = \"1Mbit\"\n", "belongs to no section"},
		{"[defaults]\nshape_devices = [\"eth0\"]\n", "belongs in [settings]"},
	} {
		if _, err := parse(t, tc.src); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v; want %q", tc.src, err, tc.want)
		}
	}
}

// With a NetDeviceCheck (vhqos check), a device of shape_devices it
// refuses is an error at its place in the list; without one (run and
// reloads) nothing is looked up.
func TestShapeDevicesChecked(t *testing.T) {
	src := "[settings]\nshape_devices = [\"eth0\", \"gone0\"]\n[[vhost]]\nname = \"shop\"\nmatch = [\"192.0.2.1\"]\negress_rate = \"40Mbit\"\n"
	asked := map[string]bool{}
	check := WithNetDeviceCheck(func(name string) error {
		asked[name] = true
		if name == "gone0" {
			return errors.New(`no network device "gone0" here`)
		}
		return nil
	})
	_, err := Parse("qos.toml", []byte(src), check)
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Key != "settings.shape_devices[1]" || ps[0].Line != 2 || ps[0].Column != 26 || ps[0].Msg != `no network device "gone0" here` {
		t.Errorf("a missing device: %v; want the one problem at 2:26 on shape_devices[1]", err)
	}
	if !asked["eth0"] || !asked["gone0"] {
		t.Errorf("asked about %v, want both devices", asked)
	}
	if _, err := parse(t, src); err != nil {
		t.Errorf("without a NetDeviceCheck: %v", err)
	}
}
