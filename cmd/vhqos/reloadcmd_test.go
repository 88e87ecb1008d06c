package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vhqos/vhqos/status"
)

// TestReloadTable: vhqos reload against a status socket whose
// "supervisor" is this test process: it catches the SIGHUP vhqos reload
// sends and counts a reload taken or refused, as the real supervisor's
// reloader does.
func TestReloadTable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the status socket answers root only")
	}
	for _, tc := range []struct {
		name   string
		table  string
		refuse bool   // the fake supervisor counts a refusal
		why    string // and reports why
		says   string // part of the output
		err    string // part of the error; "" for none
	}{
		{name: "taken", table: "[defaults]\ncpu_weight = 100\n", says: "table generation 2"},
		{name: "refused: the problems", table: "[defaults]\ncpu_wieght = 100\n", refuse: true,
			why: `qos.toml:2:1: [defaults] cpu_wieght: unknown key; did you mean "cpu_weight"?`,
			err: `qos.toml:2:1: [defaults] cpu_wieght: unknown key; did you mean "cpu_weight"?`},
		// A table vhqos check takes that the running vhqos cannot: the
		// reason is the supervisor's, not a guess from the file.
		{name: "refused: a setting that cannot change", table: "[settings]\nplacement = \"thread\"\n", refuse: true,
			why: "applying it failed: settings.placement cannot change while vhqos runs",
			err: "settings.placement cannot change while vhqos runs"},
		{name: "refused by a vhqos that does not say why", table: "[defaults]\ncpu_weight = 100\n", refuse: true,
			err: "vhqos run's log says why"},
		{name: "empty", table: "  \n", err: "is empty, which vhqos takes for a write in progress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			config := filepath.Join(dir, "qos.toml")
			if err := os.WriteFile(config, []byte(tc.table), 0o644); err != nil {
				t.Fatal(err)
			}
			socket := filepath.Join(dir, "status.sock")
			l, err := status.Listen(socket)
			if err != nil {
				t.Fatal(err)
			}
			var reloads, refused, generation atomic.Uint64
			var why atomic.Pointer[string]
			generation.Store(1)
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						if tc.refuse {
							why.Store(&tc.why)
							refused.Add(1)
						} else {
							reloads.Add(1)
							generation.Add(1)
						}
					}
				}
			}()
			go status.Serve(ctx, l, slog.New(slog.NewTextHandler(io.Discard, nil)), func() *status.Report {
				rep := &status.Report{Config: config, SupervisorPID: os.Getpid(), Generation: generation.Load(),
					Supervisor: status.Counters{Reloads: reloads.Load(), ReloadsRefused: refused.Load()}}
				if w := why.Load(); w != nil {
					rep.TableRefused, rep.TableRefusedWhy = *w != "", *w
				}
				return rep
			})
			var out bytes.Buffer
			err = reloadTable(socket, 10*time.Second, &out)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				if tc.refuse && !errors.Is(err, errTableRefused) {
					t.Errorf("err = %v, not a refusal", err)
				}
				return
			}
			if err != nil || !strings.Contains(out.String(), tc.says) {
				t.Errorf("said %q, %v; want %q", out.String(), err, tc.says)
			}
		})
	}
}
