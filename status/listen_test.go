package status

import "testing"

// README: "--metrics-listen ADDR ... (`:9464` means 127.0.0.1:9464; off by
// default)": a bare port is loopback, never every address; an address
// given is kept as it is.
func TestListenAddr(t *testing.T) {
	for in, want := range map[string]string{
		":9464":          "127.0.0.1:9464",
		":1":             "127.0.0.1:1",
		":65535":         "127.0.0.1:65535",
		"127.0.0.9:9464": "127.0.0.9:9464",
		"0.0.0.0:9464":   "0.0.0.0:9464",
		"[::1]:9464":     "[::1]:9464",
		"[::]:9464":      "[::]:9464",
	} {
		if got := ListenAddr(in); got != want {
			t.Errorf("ListenAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
