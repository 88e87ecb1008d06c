package itest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/http2"
)

// h2cQoS has a vhost per name and defaults for the rest.
const h2cQoS = `
[defaults]
dscp = "CS2"

[[vhost]]
name = "shop"
match = ["shop.example"]
dscp = "EF"

[[vhost]]
name = "blog"
match = ["blog.example"]
dscp = "AF21"
`

// nginxH2C serves HTTP/2 with prior knowledge (h2c, no TLS) and says which
// Host it saw and over which protocol.
const nginxH2C = `
    server {
        listen 127.0.0.1:8090 http2;
        location / {
            return 200 "host $host\nprotocol $server_protocol\n";
        }
    }
}
`

// h2cGet sends one HTTP/2 request with prior knowledge to addr, with
// :authority authority, on a connection of its own, and returns the
// answer's body and the connection's client end.
func h2cGet(addr, authority string) (body string, client netip.AddrPort, err error) {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, a string, _ *tls.Config) (net.Conn, error) {
			c, err := (&net.Dialer{Timeout: RequestTimeout}).DialContext(ctx, network, a)
			if err == nil {
				client = c.LocalAddr().(*net.TCPAddr).AddrPort()
			}
			return c, err
		},
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	if err != nil {
		return "", client, err
	}
	req.Host = authority
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", client, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d: %q", resp.StatusCode, b)
	}
	return string(b), client, err
}

// nginx under vhqos serving h2c, as gRPC back-ends are reached: each
// connection is classified by the :authority of its first HEADERS frame
// (HPACK-coded, read with golang.org/x/net's decoder), and nginx's packets
// carry that vhost's DSCP; a name no vhost has gets the defaults.
func TestH2CNginx(t *testing.T) {
	capture, err := StartCapture()
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Stop()
	const addr = "127.0.0.1:8090"
	n := runNginxConf(t, wrapped(t, h2cQoS), []string{addr}, func(dir string) string {
		return NginxHTTP(dir) + nginxH2C
	})
	checkCgroupsGone(t, n)
	server := netip.MustParseAddrPort(addr)
	for _, tc := range []struct {
		authority string
		dscp      int
	}{
		{"shop.example", 46},
		{"blog.example", 18},
		{"other.example", 16},
		{"SHOP.example:8090", 46},
	} {
		t.Run(tc.authority, func(t *testing.T) {
			body, client, err := h2cGet(addr, tc.authority)
			if err != nil {
				t.Fatal(err)
			}
			host := strings.ToLower(strings.Split(tc.authority, ":")[0])
			if want := fmt.Sprintf("host %s\nprotocol HTTP/2.0\n", host); body != want {
				t.Errorf("nginx answered %q, want %q", body, want)
			}
			if m, err := capture.Conn(server, client); err != nil || !m.All(tc.dscp) {
				t.Errorf("nginx's packets to the client %v: %v (%v), want DSCP %d", client, m, err, tc.dscp)
			}
		})
	}
}
