package status

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Fetch returns the report served on the socket, the keeper and
// supervisor figures included, or the refusal the server sent as its
// error.
func TestFetch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the status socket answers root only")
	}
	for _, tc := range []struct {
		name    string
		serve   func(ctx context.Context, l net.Listener)
		want    *Report
		wantErr string
	}{
		{"report", func(ctx context.Context, l net.Listener) {
			Serve(ctx, l, slog.New(slog.DiscardHandler), fullReport)
		}, fullReport(), ""},
		{"refusal", func(ctx context.Context, l net.Listener) {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.Write([]byte(`{"error":"permission denied: vhqos status is for root only"}` + "\n"))
		}, nil, "permission denied: vhqos status is for root only"},
		{"not JSON", func(ctx context.Context, l net.Listener) {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.Write([]byte("hello\n"))
		}, nil, "reading the status from"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "status.sock")
			l, err := Listen(path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go tc.serve(ctx, l)
			got, err := Fetch(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Fetch: report %+v, error %v; want an error saying %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Fetch:\n got %+v\nwant %+v", *got, *tc.want)
			}
		})
	}
}
