package vm

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
)

// markers are the lines the VM's init prints on the console around the
// command. Each run gets its own random nonce, so nothing the command
// prints (or a file it cats) is taken for one by accident.
type markers struct {
	start string // the command starts after this line
	exit  string // followed by the command's exit status
	fail  string // followed by what went wrong before the command ran
}

func newMarkers() (markers, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return markers{}, fmt.Errorf("making the console markers: %w", err)
	}
	return markersFor(hex.EncodeToString(b[:])), nil
}

func markersFor(nonce string) markers {
	return markers{
		start: "VHQOS-VM-START-" + nonce,
		exit:  "VHQOS-VM-EXIT-" + nonce + "=",
		fail:  "VHQOS-VM-FAIL-" + nonce + ": ",
	}
}

// maxLine bounds how much of a line without a newline is held back while
// looking for a marker; a longer one is passed on in pieces (markers are
// short and start a line of their own).
const maxLine = 64 << 10

// bootTail is how much of the console before the command is kept to
// explain a VM that never got to run it.
const bootTail = 16 << 10

// console is the io.Writer qemu's serial console (stdout) is copied to. It
// splits the stream into three parts: the boot (firmware, kernel, init:
// kept for error messages, or passed on when verbose), the command's output
// (passed on to out, with the serial line's \r\n turned into \n), and
// the power-off after the exit marker (dropped unless verbose).
type console struct {
	m       markers
	out     io.Writer
	verbose bool

	line []byte
	boot []byte // the last bootTail bytes before the start marker
	// blank is an empty line of the command's output held back: the
	// init prints one before the exit marker (the command's last line
	// may lack its newline), which is not the command's.
	blank bool
	// partial says the last piece passed on was a line's beginning
	// (maxLine without a newline).
	partial bool
	started bool
	exited  bool
	status  int
	failure string
	done    chan struct{} // closed when the exit or fail marker is seen
	err     error         // the first error writing to out
}

func newConsole(m markers, out io.Writer, verbose bool) *console {
	return &console{m: m, out: out, verbose: verbose, done: make(chan struct{})}
}

// Write never fails, so qemu's output is always drained (a VM blocked on
// its console would never power off); an error writing to out is kept
// in c.err.
func (c *console) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.line = append(c.line, p...)
			if len(c.line) > maxLine {
				c.emit(c.line, false)
				c.partial = true
				c.line = c.line[:0]
			}
			break
		}
		c.line = append(c.line, p[:i]...)
		c.emit(bytes.TrimSuffix(c.line, []byte("\r")), true)
		c.partial = false
		c.line = c.line[:0]
		p = p[i+1:]
	}
	return n, nil
}

// Close passes on a last line that had no newline.
func (c *console) Close() error {
	if len(c.line) > 0 {
		c.emit(c.line, false)
		c.line = nil
	}
	return nil
}

// emit handles one line (complete says whether it ended with a newline).
func (c *console) emit(line []byte, complete bool) {
	switch {
	case !c.started:
		// The init reports failures only before the command starts.
		// Before it, the firmware may have left half a line.
		if i := bytes.Index(line, []byte(c.m.fail)); i >= 0 && c.failure == "" {
			c.failure = string(line[i+len(c.m.fail):])
			c.finish()
			c.keepBoot(line, complete)
			return
		}
		if bytes.Contains(line, []byte(c.m.start)) {
			c.started = true
			return
		}
		c.keepBoot(line, complete)
		if c.verbose {
			c.pass(line, complete)
		}
	case !c.exited:
		if v, ok := afterMarker(line, c.m.exit); ok {
			if status, err := strconv.Atoi(string(v)); err == nil && status >= 0 && status <= 255 {
				c.exited, c.status = true, status
				c.finish()
				return
			}
		}
		if c.blank {
			c.blank = false
			c.pass(nil, true)
		}
		if len(line) == 0 && complete && !c.partial {
			c.blank = true
			return
		}
		c.pass(line, complete)
	default:
		if c.verbose {
			c.pass(line, complete)
		}
	}
}

// afterMarker returns what follows marker in line, if line starts with it
// (the init prints a newline before the exit marker; what the command
// printed cannot end up on the marker's line).
func afterMarker(line []byte, marker string) ([]byte, bool) {
	return bytes.CutPrefix(line, []byte(marker))
}

func (c *console) finish() {
	select {
	case <-c.done:
	default:
		close(c.done)
	}
}

func (c *console) pass(line []byte, complete bool) {
	if c.err != nil {
		return
	}
	if complete {
		line = append(line, '\n')
	}
	_, c.err = c.out.Write(line)
}

func (c *console) keepBoot(line []byte, complete bool) {
	c.boot = append(c.boot, line...)
	if complete {
		c.boot = append(c.boot, '\n')
	}
	if len(c.boot) > bootTail {
		c.boot = append(c.boot[:0], c.boot[len(c.boot)-bootTail:]...)
	}
}
