#!/bin/bash
# cgid.sh OUTDIR captures what Debian's Apache (event MPM, mod_cgid) sends
# mod_cgid's daemon over its ScriptSock: once Apache is up, its daemon's
# socket is moved aside and a stand-in (cgidlisten.go) listens at the path
# the Apache children connect to, saving each connection as
# OUTDIR/<case>.bin (the CGI request, then the request for the script's
# pid, kept for the first request only). Run as root; it runs itself in a
# network namespace of its own (lib.sh).
. "$(dirname "$0")/lib.sh"
chmod 755 "$dir"
mkdir -p "$dir/run" "$dir/cgi-bin"
build cgidlisten
printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nhello\\n"\n' >"$dir/cgi-bin/whoami"
chmod 755 "$dir/cgi-bin/whoami"
# Two name-based vhosts on one address (SERVER_NAME is the one that
# serves: blog's for Host blog.example.com), Debian's defaults otherwise
# (UseCanonicalName Off, UseCanonicalPhysicalPort Off: SERVER_PORT is the
# Host header's port, else 80).
cat >"$dir/apache.conf" <<APACHE
ServerRoot /etc/apache2
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule alias_module /usr/lib/apache2/modules/mod_alias.so
LoadModule cgid_module /usr/lib/apache2/modules/mod_cgid.so
ServerName shop.example.com
Listen 127.0.0.1:8081
Listen [::1]:8081
User www-data
Group www-data
DefaultRuntimeDir $dir/run
PidFile $dir/apache.pid
ErrorLog $dir/apache-error.log
ScriptSock $dir/run/cgisock
ScriptAlias /cgi-bin/ $dir/cgi-bin/
<Directory $dir/cgi-bin>
    Require all granted
</Directory>
<VirtualHost *:8081>
    ServerName shop.example.com
</VirtualHost>
<VirtualHost *:8081>
    ServerName blog.example.com
</VirtualHost>
APACHE

ap=
trap 'kill $ap 2>/dev/null; wait; rm -rf "$dir"' EXIT
# A clean environment: Apache passes its PATH on to the CGI.
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin apache2 -DFOREGROUND -f "$dir/apache.conf" &
ap=$!
waitport 8081
for _ in $(seq 1 400); do
	sock=$(ls "$dir"/run/cgisock.* 2>/dev/null || true)
	[ -n "$sock" ] && break
	sleep 0.05
done
echo "ScriptSock: $sock (Apache's pid $ap)"
mv "$sock" "$sock.daemon"

cap() { # name, name of its pid request ("-": not kept), curl arguments...
	local name=$1 getpid=$2 lp
	shift 2
	"$dir/cgidlisten" "$sock" "$out" "$name" "$getpid" &
	lp=$!
	for _ in $(seq 1 400); do [ -S "$sock" ] && break; sleep 0.05; done
	curl -s -o /dev/null -m 10 -A curl/7.88.1 "$@" || true # the stand-in runs no script: 503
	wait $lp
}
R=(--resolve shop.example.com:8081:127.0.0.1 --resolve blog.example.com:8081:127.0.0.1 --resolve shop.example.com:80:127.0.0.1)

cap cgid-get cgid-getpid "${R[@]}" 'http://shop.example.com:8081/cgi-bin/whoami?a=1'
cap cgid-name - "${R[@]}" 'http://blog.example.com:8081/cgi-bin/whoami'
cap cgid-post - "${R[@]}" -d 'name=value&x=1' 'http://shop.example.com:8081/cgi-bin/whoami'
cap cgid-noport - "${R[@]}" -H 'Host: blog.example.com' 'http://127.0.0.1:8081/cgi-bin/whoami'
cap cgid-http10-nohost - -0 -H 'Host:' 'http://127.0.0.1:8081/cgi-bin/whoami'
cap cgid-ip - 'http://127.0.0.1:8081/cgi-bin/whoami'
cap cgid-v6 - -H 'Host: shop.example.com:8081' 'http://[::1]:8081/cgi-bin/whoami'
