#!/bin/bash
# h2c.sh OUTDIR captures what HTTP/2 clients with prior knowledge send
# first (curl --http2-prior-knowledge, nghttp from Debian's nghttp2-client):
# a listener on 127.0.0.1 (listen.go) that answers nothing saves the first
# bytes of each connection as OUTDIR/<case>.bin. Run as root; it runs itself
# in a network namespace of its own (lib.sh).
. "$(dirname "$0")/lib.sh"
build listen

port=8080
# capture NAME CLIENT ARGS...: URL in ARGS is http://127.0.0.1:PORT/.
capture() {
	local name=$1
	shift
	port=$((port + 1))
	"$dir/listen" "$port" "$out/$name.bin" &
	local listener=$!
	waitport "$port"
	# The listener never answers: the client gives up after its timeout.
	timeout 5 "${@//PORT/$port}" >/dev/null 2>&1 || true
	wait "$listener"
}
capture curl-ip curl -s -m 2 --http2-prior-knowledge http://127.0.0.1:PORT/
capture curl curl -s -m 2 --http2-prior-knowledge --resolve shop.example.com:PORT:127.0.0.1 http://shop.example.com:PORT/
capture nghttp-ip nghttp -t 1 http://127.0.0.1:PORT/
capture nghttp nghttp -t 1 -H ':authority: shop.example.com:PORT' http://127.0.0.1:PORT/
capture nghttp-nodep nghttp -t 1 --no-dep -H ':authority: Shop.Example.com' http://127.0.0.1:PORT/
capture nghttp-padded nghttp -t 1 --no-dep -b 20 -H ':authority: shop.example.com' http://127.0.0.1:PORT/
capture nghttp-continuation nghttp -t 1 --no-dep --continuation -H ':authority: shop.example.com' http://127.0.0.1:PORT/
capture nghttp-tablesize0 nghttp -t 1 --no-dep --encoder-header-table-size=0 -H ':authority: shop.example.com' http://127.0.0.1:PORT/
