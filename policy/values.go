package policy

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// parsePercent reads cpu_max: "N%" or "N.N%" of one CPU, like systemd's
// CPUQuota=. The upper bound keeps the number sane, not the machine's CPU
// count: a table is portable between machines.
func parsePercent(v any) (float64, error) {
	const hint = `percent of one CPU, like systemd's CPUQuota=: "50%" is half a CPU, "200%" two`
	str, ok := v.(string)
	if !ok {
		switch n := v.(type) {
		case int64:
			return 0, fmt.Errorf("%d is a number; write it as a string with %%: cpu_max = \"%d%%\" (%s)", n, n, hint)
		case float64:
			return 0, fmt.Errorf("%v is a number; write it as a string with %%: cpu_max = \"%v%%\" (%s)", n, n, hint)
		}
		return 0, fmt.Errorf("is %s; write a percentage string such as \"50%%\" (%s)", typeName(v), hint)
	}
	num, hasPct := strings.CutSuffix(str, "%")
	if msg := commaProblem(str); msg != "" {
		return 0, fmt.Errorf("%s (%s)", msg, hint)
	}
	if !isDecimal(num) {
		return 0, fmt.Errorf("%q is not a percentage; write digits and %%, e.g. \"50%%\" or \"12.5%%\" (%s)", str, hint)
	}
	if !hasPct {
		return 0, fmt.Errorf("%q needs a %%: cpu_max = \"%s%%\" (%s)", str, num, hint)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || f > 100000 {
		return 0, fmt.Errorf("%q is out of range: use more than 0%% and at most 100000%% (%s)", str, hint)
	}
	return f, nil
}

// commaProblem says how to write a number with a comma the way the table
// reads it, for a value s (a size, rate or percentage) whose number has
// one: "1,5G" is "1.5G"; commas that may group thousands ("1,000M",
// "1,000,000") are left out, and a single such comma gets both readings.
// It returns "" when s does not start with digits and a comma between
// digits.
func commaProblem(s string) string {
	end := 0
	for end < len(s) && (s[end] >= '0' && s[end] <= '9' || s[end] == ',') {
		end++
	}
	num, rest := s[:end], s[end:]
	groups := strings.Split(num, ",")
	if len(groups) < 2 || !slices.ContainsFunc(groups[1:], func(g string) bool { return g != "" }) {
		return ""
	}
	for _, g := range groups {
		if !allDigits(g) {
			return ""
		}
	}
	thousands := len(groups[0]) <= 3
	for _, g := range groups[1:] {
		thousands = thousands && len(g) == 3
	}
	plain := strings.Join(groups, "") + rest
	switch {
	case thousands && len(groups) == 2:
		return fmt.Sprintf("%q has a comma in its number; write %q (a decimal point, not a comma) or %q (no thousands separator)", s, groups[0]+"."+groups[1]+rest, plain)
	case thousands:
		return fmt.Sprintf("%q has commas in its number; write %q, without thousands separators", s, plain)
	case len(groups) == 2:
		return fmt.Sprintf("%q has a comma in its number; write %q: a decimal point, not a comma", s, groups[0]+"."+groups[1]+rest)
	}
	return fmt.Sprintf("%q has commas in its number; write a number with digits and at most one decimal point", s)
}

// isDecimal accepts digits with an optional fraction: "50", "12.5".
func isDecimal(s string) bool {
	whole, frac, hasFrac := strings.Cut(s, ".")
	return allDigits(whole) && (!hasFrac || allDigits(frac))
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

const dscpAllowed = "CS0-CS7, AF11-AF43, EF, VOICE-ADMIT or 0..63"

// parseDSCP reads a DSCP: a number 0..63 or a DiffServ name.
func parseDSCP(v any) (int, error) {
	switch d := v.(type) {
	case int64:
		if d >= 0 && d <= 63 {
			return int(d), nil
		}
		if d >= 64 && d <= 255 && d&3 == 0 {
			// People copy TOS bytes from tcpdump (tos 0xb8) and iptables.
			return 0, fmt.Errorf("%d is out of range 0..63; it looks like a whole TOS byte, whose DSCP is %d>>2 = %d (%s)", d, d, d>>2, DSCPName(int(d>>2)))
		}
		return 0, fmt.Errorf("%d is out of range; use %s", d, dscpAllowed)
	case string:
		if n, ok := dscpByName(d); ok {
			return n, nil
		}
		if n, err := strconv.ParseInt(d, 10, 64); err == nil {
			return parseDSCP(n)
		}
		return 0, fmt.Errorf("unknown DSCP name %q; use %s", d, dscpAllowed)
	}
	return 0, fmt.Errorf("is %s; write a DSCP name such as \"AF41\" or a number 0..63", typeName(v))
}

// dscpByName knows the standard names, in any case: CSx (RFC 2474), AFxy
// (RFC 2597), EF (RFC 3246), VOICE-ADMIT (RFC 5865).
func dscpByName(s string) (int, bool) {
	u := strings.ToUpper(s)
	switch {
	case u == "EF":
		return 46, true
	case u == "VOICE-ADMIT":
		return 44, true
	case len(u) == 3 && u[:2] == "CS" && u[2] >= '0' && u[2] <= '7':
		return int(u[2]-'0') << 3, true
	case len(u) == 4 && u[:2] == "AF" && u[2] >= '1' && u[2] <= '4' && u[3] >= '1' && u[3] <= '3':
		return int(u[2]-'0')<<3 | int(u[3]-'0')<<1, true
	}
	return 0, false
}

// DSCPName returns the standard name of a code point ("EF", "AF41",
// "CS1"), or its number when it has none.
func DSCPName(d int) string {
	switch {
	case d == 46:
		return "EF"
	case d == 44:
		return "VOICE-ADMIT"
	case d >= 0 && d <= 56 && d&7 == 0:
		return "CS" + strconv.Itoa(d>>3)
	case d>>3 >= 1 && d>>3 <= 4 && d&1 == 0 && d&6 != 0:
		return "AF" + strconv.Itoa(d>>3) + strconv.Itoa(d>>1&3)
	}
	return strconv.Itoa(d)
}

// sizeUnits are systemd's: 1024-based, one letter.
func sizeUnit(s string) (uint64, bool) {
	switch s {
	case "", "B":
		return 1, true
	case "K":
		return 1 << 10, true
	case "M":
		return 1 << 20, true
	case "G":
		return 1 << 30, true
	case "T":
		return 1 << 40, true
	}
	return 0, false
}

// maxIOPS is the largest operation rate the kernel takes as a limit:
// blk-throttle keeps IOPS limits in 32 bits, where 2^32-1 means no limit
// (v2 io.max shows it as "max"), and v1 cuts larger numbers to their low
// 32 bits, so that 2^32+1 would become a limit of 1.
const maxIOPS = 1<<32 - 2

// parseSize reads a byte rate (or, for IOPS, an operation rate): a whole
// number, or a string with an optional K, M, G or T suffix, 1024-based like
// systemd ("50M", "1.5K"). Zero is refused: an absent entry means no limit.
func parseSize(v any, iops bool) (uint64, error) {
	n, err := parseRate(v, iops)
	if err == nil && iops && n > maxIOPS {
		return 0, fmt.Errorf("%d operations per second is too many: the kernel counts them in 32 bits, the most is %d; to leave the device unlimited, remove it", n, uint64(maxIOPS))
	}
	return n, err
}

func parseRate(v any, iops bool) (uint64, error) {
	what := `bytes per second: a whole number, or a string with K, M, G or T (1024-based, like systemd), e.g. "50M"`
	if iops {
		what = `operations per second: a whole number such as 1000, or a string with K, M, G or T (1024-based), e.g. "2K"`
	}
	switch n := v.(type) {
	case int64:
		if n <= 0 {
			return 0, fmt.Errorf("%d: must be more than 0; to leave the device unlimited, remove it (%s)", n, what)
		}
		return uint64(n), nil
	case float64:
		return 0, fmt.Errorf("%v is not a whole number; write %s", n, what)
	case string:
		return parseSizeString(n, what)
	}
	return 0, fmt.Errorf("is %s; write %s", typeName(v), what)
}

func parseSizeString(s, what string) (uint64, error) {
	if msg := commaProblem(s); msg != "" {
		return 0, errors.New(msg)
	}
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.ToUpper(s[i:])
	if !isDecimal(num) || len(num) > 40 {
		return 0, fmt.Errorf("%q is not a size; write %s", s, what)
	}
	mult, ok := sizeUnit(unit)
	if !ok {
		return 0, fmt.Errorf("unknown unit %q in %q; write %s", s[i:], s, what)
	}
	if strings.Contains(num, ".") && mult == 1 {
		return 0, fmt.Errorf("%q is not a whole number; write %s", s, what)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("%q is not a size; write %s", s, what)
	}
	r.Mul(r, new(big.Rat).SetInt64(int64(mult)))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if n.Sign() <= 0 {
		return 0, fmt.Errorf("%q: must be more than 0; to leave the device unlimited, remove it (%s)", s, what)
	}
	if !n.IsInt64() {
		return 0, fmt.Errorf("%q is too large; the most is %d", s, int64(math.MaxInt64))
	}
	return n.Uint64(), nil
}

// formatSize writes a byte rate the way operators write it, in the largest
// unit that keeps it whole, so that Marshal's output reads like the file.
func formatSize(n uint64) string {
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.Quote(strconv.FormatUint(n/u.mult, 10) + u.suffix)
		}
	}
	return strconv.FormatUint(n, 10)
}

// tomlString quotes s as a TOML basic string. strconv.Quote is not TOML:
// it writes \x.. and \a, which TOML refuses.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		case r == utf8.RuneError:
			b.WriteString(`\uFFFD`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// tomlKey writes a key bare when TOML allows it, quoted otherwise.
func tomlKey(s string) string {
	if s == "" {
		return `""`
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return tomlString(s)
		}
	}
	return s
}
