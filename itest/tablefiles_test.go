package itest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/vhqos/vhqos/itest/loopdisk"
)

// vhqosCheck runs vhqos check on a file.
func vhqosCheck(t *testing.T, file string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(vhqosBinary(t), "check", file)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// logBuffer collects vhqos's stderr for a test that reads it while vhqos
// runs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// records returns the JSON log records with message msg, as maps.
func (b *logBuffer) records(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(b.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// sleeper is vhqos run with a server that serves nothing: what these tests
// look at is what vhqos makes of its table.
type sleeper struct {
	cmd  *exec.Cmd
	log  *logBuffer
	done chan struct{}
	code int
}

// runSleeper starts vhqos run with JSON logs on qosFile and waits until it
// watches the table for changes (its server has started by then) or has
// exited; the test's end stops it.
func runSleeper(t *testing.T, qosFile string) *sleeper {
	t.Helper()
	s := &sleeper{log: &logBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(vhqosBinary(t), "run", "--log-format", "json", "--log-level", "debug", "--stop-timeout", "10s",
		"--config", qosFile, "--status-socket", statusSocket(t), "--", "sleep", "600")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.cmd.Wait()
		s.code = s.cmd.ProcessState.ExitCode()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
		if t.Failed() {
			t.Logf("vhqos said:\n%s", s.log)
		}
	})
	deadline := time.After(time.Minute)
	for len(s.log.records("watching the QoS table for changes")) == 0 {
		select {
		case <-s.done:
			return s
		case <-deadline:
			t.Fatalf("vhqos neither watched its table nor exited within a minute:\n%s", s.log)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return s
}

// exited reports whether vhqos has exited, and its status.
func (s *sleeper) exited() (bool, int) {
	select {
	case <-s.done:
		return true, s.code
	default:
		return false, 0
	}
}

// readBPS is the read limit vhqos set on a device (MAJ:MIN) for a group,
// "" for none.
func readBPS(t *testing.T, vhqosPid int, group, dev string) string {
	t.Helper()
	file := "blkio.throttle.read_bps_device"
	if cgroupV2() {
		file = "io.max"
	}
	data, err := os.ReadFile(filepath.Join(cgroupDir(t, vhqosPid, "blkio", group), file))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != dev {
			continue
		}
		if !cgroupV2() {
			return f[1]
		}
		for _, kv := range f[1:] {
			if v, ok := strings.CutPrefix(kv, "rbps="); ok && v != "max" {
				return v
			}
		}
	}
	return ""
}

// vhqos check and vhqos run give the same verdict on every device rule,
// in the same words: a whole disk, by path or number, is limited; a
// partition is an error that names its disk; a device this machine lacks
// is a warning, and its limit is skipped. A running vhqos's reloads agree.
func TestDeviceVerdicts(t *testing.T) {
	d := loopdisk.New(t)
	for _, tc := range []struct {
		name, dev string
		verdict   string // "limit", "error" or "warning"
		says      string
	}{
		{"whole disk by path", d.Path, "limit", ""},
		{"whole disk by number", d.Num, "limit", ""},
		{"partition by path", d.PartPath, "error", fmt.Sprintf("is partition %s of disk %s (%s); IO limits apply to whole disks: write %q or %q", d.PartName, d.Name, d.Num, d.Path, d.Num)},
		{"partition by number", d.PartNum, "error", fmt.Sprintf("%s is partition %s of disk %s", d.PartNum, d.PartName, d.Name)},
		{"missing by path", "/dev/vhqos-no-such-disk", "warning", `no block device "/dev/vhqos-no-such-disk" on this machine`},
		{"missing by number", "4095:1048575", "warning", "no block device 4095:1048575 on this machine"},
		{"not a block device", "/dev/null", "error", `"/dev/null" is a character device, not a block device`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			qosFile := filepath.Join(t.TempDir(), "qos.toml")
			table := fmt.Sprintf("[defaults]\nio_read_bps = { %q = \"1M\" }\n", tc.dev)
			if err := os.WriteFile(qosFile, []byte(table), 0o644); err != nil {
				t.Fatal(err)
			}
			where := fmt.Sprintf("%s:2:17: ", qosFile)
			stdout, stderr, code := vhqosCheck(t, qosFile)
			s := runSleeper(t, qosFile)
			exited, runCode := s.exited()
			switch tc.verdict {
			case "limit":
				if code != 0 || stderr != "" || stdout != qosFile+": OK, 0 vhost(s)\n" {
					t.Errorf("check: status %d, stdout %q, stderr %q; want OK", code, stdout, stderr)
				}
				if exited {
					t.Fatalf("run exited with %d; want it running", runCode)
				}
				if got := readBPS(t, s.cmd.Process.Pid, "default", d.Num); got != "1048576" {
					t.Errorf("run: read limit on %s = %q, want 1048576", d.Num, got)
				}
			case "error":
				want := where + "[defaults] io_read_bps." + fmt.Sprintf("%q", tc.dev) + ": "
				if code != 2 || !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, tc.says) || strings.Count(stderr, "\n") != 1 {
					t.Errorf("check: status %d, stderr %q; want 2 and one line %q...%q", code, stderr, want, tc.says)
				}
				if !exited || runCode != 2 {
					t.Fatalf("run: exited %v, status %d; want it refusing to start (2)", exited, runCode)
				}
				if got := s.log.String(); got != stderr+"vhqos run: refusing to start with this QoS table\n" {
					t.Errorf("run said %q\ncheck said %q", got, stderr)
				}
			case "warning":
				want := where + "warning: [defaults] io_read_bps." + fmt.Sprintf("%q", tc.dev) + ": "
				if code != 0 || !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, tc.says) || !strings.Contains(stderr, "this io_read_bps is skipped here") ||
					strings.Count(stderr, "\n") != 1 || stdout != qosFile+": OK, 0 vhost(s), 1 warning(s)\n" {
					t.Errorf("check: status %d, stdout %q, stderr %q; want OK with one warning %q...%q", code, stdout, stderr, want, tc.says)
				}
				if exited {
					t.Fatalf("run exited with %d; want it running without the limit", runCode)
				}
				recs := s.log.records("QoS table warning")
				if len(recs) != 1 || recs[0]["warning"] != strings.TrimSuffix(stderr, "\n") || recs[0]["level"] != "WARN" {
					t.Errorf("run logged %v\nwant the warning check printed: %q", recs, stderr)
				}
			}
		})
	}

	// Reloads: from a limit on the disk to a table naming a partition
	// (refused, the limit stays), then to one naming a missing disk (the
	// limit goes, with the warning logged).
	t.Run("reload", func(t *testing.T) {
		qosFile := filepath.Join(t.TempDir(), "qos.toml")
		writeTable := func(dev string) {
			writeByRename(t, qosFile, fmt.Sprintf("[defaults]\nio_read_bps = { %q = \"1M\" }\n", dev))
		}
		writeTable(d.Path)
		s := runSleeper(t, qosFile)
		if exited, code := s.exited(); exited {
			t.Fatalf("run exited with %d", code)
		}
		pid := s.cmd.Process.Pid
		if got := readBPS(t, pid, "default", d.Num); got != "1048576" {
			t.Fatalf("read limit on %s = %q, want 1048576", d.Num, got)
		}
		writeTable(d.PartNum)
		eventually(t, patience, "the partition refused", func() bool {
			return len(s.log.records("refused QoS table; the previous one stays in force")) == 1
		})
		if p := s.log.records("refused QoS table; the previous one stays in force")[0]["problems"]; !strings.Contains(fmt.Sprint(p), fmt.Sprintf("%s is partition %s of disk %s", d.PartNum, d.PartName, d.Name)) {
			t.Errorf("refusal says %q", p)
		}
		if got := readBPS(t, pid, "default", d.Num); got != "1048576" {
			t.Errorf("after the refused table, read limit on %s = %q, want the old 1048576", d.Num, got)
		}
		writeTable("4095:1048575")
		eventually(t, patience, "the table with a missing disk applied", func() bool {
			return len(s.log.records("reloaded QoS table")) == 1
		})
		recs := s.log.records("QoS table warning")
		if len(recs) != 1 || !strings.Contains(fmt.Sprint(recs[0]["warning"]), qosFile+":2:17: warning: [defaults] io_read_bps.\"4095:1048575\": no block device 4095:1048575 on this machine") {
			t.Errorf("warnings logged: %v", recs)
		}
		if got := readBPS(t, pid, "default", d.Num); got != "" {
			t.Errorf("after the reload, read limit on %s = %q, want none", d.Num, got)
		}
	})
}

func utf16LE(s string) []byte {
	b := []byte{0xFF, 0xFE}
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

// Tables as Windows editors save them: with a UTF-8 byte order mark and
// CRLF (Notepad) they are read like any other, by vhqos check, vhqos run
// and a running vhqos's reload; in UTF-16 (PowerShell's "Unicode") or
// Latin-1 all three refuse them, saying which encoding the file is in and
// how to convert it, and a running vhqos keeps its table.
func TestTableEncodings(t *testing.T) {
	const table = "# Größen\n[defaults]\ncpu_max = \"%d%%\"\n"
	crlf := func(pct int) string { return strings.ReplaceAll(fmt.Sprintf(table, pct), "\n", "\r\n") }
	bom := func(pct int) []byte { return append([]byte("\xEF\xBB\xBF"), crlf(pct)...) }
	dir := t.TempDir()
	qosFile := filepath.Join(dir, "qos.toml")

	check := func(name string, data []byte, wantCode int, want string) {
		t.Helper()
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, code := vhqosCheck(t, f)
		if code != wantCode || !strings.Contains(stdout+stderr, strings.ReplaceAll(want, "FILE", f)) {
			t.Errorf("check %s: status %d, stdout %q, stderr %q; want %d and %q", name, code, stdout, stderr, wantCode, want)
		}
	}
	utf16Says := `FILE: the file is UTF-16 (little-endian, with a byte order mark, as Windows Notepad and PowerShell save "Unicode"), not UTF-8 as TOML requires; convert it: iconv -f UTF-16 -t UTF-8 FILE > FILE.new && mv FILE.new FILE, or in vim :set fileencoding=utf-8 nobomb | w`
	latin1Says := "FILE:1:5: byte 0xF6 is not UTF-8, which TOML requires: the file is in an 8-bit encoding, probably Latin-1 (ISO-8859-1) or Windows-1252; convert it: iconv -f WINDOWS-1252 -t UTF-8 FILE > FILE.new"
	check("bom.toml", bom(50), 0, "FILE: OK, 0 vhost(s)\n")
	check("utf16.toml", utf16LE(crlf(50)), 2, utf16Says)
	check("latin1.toml", []byte(strings.ReplaceAll(crlf(50), "ö", "\xF6")), 2, latin1Says)

	// run refuses a UTF-16 table with check's words.
	os.WriteFile(qosFile, utf16LE(crlf(50)), 0o644)
	s := runSleeper(t, qosFile)
	if exited, code := s.exited(); !exited || code != 2 || !strings.Contains(s.log.String(), strings.ReplaceAll(utf16Says, "FILE", qosFile)) {
		t.Fatalf("run on a UTF-16 table: exited %v with %d, said %q", exited, code, s.log)
	}

	// run takes the table with a byte order mark, and reloads keep
	// reading such tables and refusing the others.
	os.WriteFile(qosFile, bom(50), 0o644)
	s = runSleeper(t, qosFile)
	if exited, code := s.exited(); exited {
		t.Fatalf("run on a table with a byte order mark exited with %d", code)
	}
	pid := s.cmd.Process.Pid
	if got := cpuQuota(t, pid, "default"); got != "50000" {
		t.Fatalf("cpu quota = %s, want 50000", got)
	}
	refusals := func() []map[string]any { return s.log.records("refused QoS table; the previous one stays in force") }
	for i, bad := range []struct {
		data []byte
		says string
	}{
		{utf16LE(crlf(20)), utf16Says},
		{[]byte(strings.ReplaceAll(crlf(20), "ö", "\xF6")), latin1Says},
	} {
		writeByRename(t, qosFile, string(bad.data))
		eventually(t, patience, "the refusal logged", func() bool { return len(refusals()) == i+1 })
		if p := fmt.Sprint(refusals()[i]["problems"]); !strings.Contains(p, strings.ReplaceAll(bad.says, "FILE", qosFile)) {
			t.Errorf("refusal %d says %q\nwant %q", i, p, bad.says)
		}
		if got := cpuQuota(t, pid, "default"); got != "50000" {
			t.Errorf("after refusal %d, cpu quota = %s, want the old 50000", i, got)
		}
	}
	writeByRename(t, qosFile, string(bom(20)))
	// The limit is written before the reload is logged: wait for the log.
	eventually(t, patience, "the table with a byte order mark reloaded", func() bool { return len(s.log.records("reloaded QoS table")) >= 1 })
	if got := cpuQuota(t, pid, "default"); got != "20000" {
		t.Errorf("after the reload, cpu quota = %s, want 20000", got)
	}
	if n := len(s.log.records("reloaded QoS table")); n != 1 {
		t.Errorf("%d reloads logged, want 1", n)
	}
	// A byte order mark alone is an empty file, as a truncating editor
	// leaves it half way: the table in force stays.
	writeByRename(t, qosFile, "\xEF\xBB\xBF\r\n")
	eventually(t, patience, "the empty file noticed", func() bool {
		return len(s.log.records("QoS table is empty; keeping the one in force (write a comment into it to really run without vhosts)")) == 1
	})
	if got := cpuQuota(t, pid, "default"); got != "20000" {
		t.Errorf("after an empty file, cpu quota = %s, want 20000", got)
	}
}
