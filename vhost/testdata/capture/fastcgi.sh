#!/bin/bash
# fastcgi.sh OUTDIR captures what Debian's nginx and Apache (mod_proxy_fcgi)
# send to a FastCGI backend: a listener on 127.0.0.1:9000 (listen.go) saves
# the first bytes of each backend connection as OUTDIR/<case>.bin. Run as
# root; it runs itself in a network namespace of its own (lib.sh).
. "$(dirname "$0")/lib.sh"
mkdir -p "$dir/run"
build listen

# Upstream nginx's fastcgi_params has no HTTP_HOST line (Debian's sets
# HTTP_HOST $host): the Host header is passed as it came, or not at all.
grep -v -e HTTP_HOST -e '^#' /etc/nginx/fastcgi_params >"$dir/fastcgi_params_upstream"
cat >"$dir/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
error_log $dir/nginx-error.log;
pid $dir/nginx.pid;
events {}
http {
    access_log off;
    server {
        listen 127.0.0.1:8080;
        server_name shop.example.com;
        root /var/www/html;
        location ~ \.php\$ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            fastcgi_pass 127.0.0.1:9000;
        }
        location ^~ /upstream/ {
            include $dir/fastcgi_params_upstream;
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            fastcgi_pass 127.0.0.1:9000;
        }
        location ^~ /keep/ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            fastcgi_keep_conn on;
            fastcgi_pass 127.0.0.1:9000;
        }
    }
}
NGINX
cat >"$dir/apache.conf" <<APACHE
ServerRoot /etc/apache2
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so
LoadModule proxy_fcgi_module /usr/lib/apache2/modules/mod_proxy_fcgi.so
ServerName shop.example.com
Listen 127.0.0.1:8081
User www-data
Group www-data
DefaultRuntimeDir $dir/run
PidFile $dir/apache.pid
ErrorLog $dir/apache-error.log
DocumentRoot /var/www/html
ProxyPass "/x.php" "fcgi://127.0.0.1:9000/"
APACHE

np= ap=
trap 'kill $np $ap 2>/dev/null; wait; rm -rf "$dir"' EXIT
/usr/sbin/nginx -c "$dir/nginx.conf" &
np=$!
# A clean environment: Apache passes its PATH on as a parameter.
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin apache2 -DFOREGROUND -f "$dir/apache.conf" &
ap=$!
waitport 8080
waitport 8081

cap() { # name, curl arguments...
	local name=$1 lp
	shift
	"$dir/listen" 9000 "$out/$name.bin" &
	lp=$!
	waitport 9000
	curl -s -o /dev/null -m 5 -A curl/7.88.1 "$@" || true # the listener answers nothing
	wait $lp
	echo "$name.bin: $(stat -c %s "$out/$name.bin") bytes"
}
fill() { head -c "$1" /dev/zero | tr '\0' "$2"; }
R=(--resolve shop.example.com:8080:127.0.0.1 --resolve shop.example.com:8081:127.0.0.1)
BIG=()
for i in 1 2 3; do BIG+=(-H "X-Big-$i: $(fill 7900 $i)"); done

cap nginx-get "${R[@]}" 'http://shop.example.com:8080/x.php?a=1'
cap nginx-post-keepconn "${R[@]}" -d 'name=value&x=1' 'http://shop.example.com:8080/keep/x.php'
cap nginx-http10-nohost -0 -H 'Host:' 'http://127.0.0.1:8080/x.php'
cap nginx-ip 'http://127.0.0.1:8080/x.php'
cap nginx-upstream-port "${R[@]}" 'http://shop.example.com:8080/upstream/x.php'
cap nginx-upstream-http10-nohost -0 -H 'Host:' 'http://127.0.0.1:8080/upstream/x.php'
cap apache-get "${R[@]}" 'http://shop.example.com:8081/x.php?a=1'
cap apache-post "${R[@]}" -d 'name=value&x=1' 'http://shop.example.com:8081/x.php'
cap apache-http10-nohost -0 -H 'Host:' 'http://127.0.0.1:8081/x.php'
cap apache-ip 'http://127.0.0.1:8081/x.php'
cap apache-multirecord-http10-nohost -0 -H 'Host:' "${BIG[@]}" 'http://127.0.0.1:8081/x.php'
