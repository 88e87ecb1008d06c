package itest

import "strings"

// NginxHTTP returns the start of the configuration of an nginx that keeps
// everything (pid, logs, temporary files) in dir, up to and with "http {":
// the caller adds server blocks (NginxFastCGISite) and the closing "}".
// Tests and the bench run Debian's nginx with it (-p dir -c FILE).
func NginxHTTP(dir string) string { return strings.ReplaceAll(nginxHTTP, "@DIR@", dir) }

// NginxFastCGISite returns a server block for the site name (one name or
// several, space-separated) on listen that passes PHP to the FastCGI
// server fpm ("127.0.0.1:9000" or "unix:/path"), as Debian's
// snippets/fastcgi-php.conf does it: a new FastCGI connection per request
// (fastcgi_keep_conn off, nginx's default). root is the document root.
func NginxFastCGISite(listen, name, root, fpm string) string {
	return strings.NewReplacer("@FRONT@", listen, "@NAME@", name, "@WWW@", root, "@FPM@", fpm).Replace(nginxSite)
}

// nginxHTTP is the start of an nginx configuration, up to and with
// "http {"; @DIR@ is its directory.
const nginxHTTP = `daemon off;
master_process on;
worker_processes 2;
user www-data;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log notice;
events { worker_connections 4096; }
http {
    access_log @DIR@/access.log;
    client_body_temp_path @DIR@/body-temp;
    proxy_temp_path @DIR@/proxy-temp;
    fastcgi_temp_path @DIR@/fastcgi-temp;
    uwsgi_temp_path @DIR@/uwsgi-temp;
    scgi_temp_path @DIR@/scgi-temp;
    default_type text/plain;
`

// nginxSite is one name-based site passing PHP to the pool, as Debian's
// snippets/fastcgi-php.conf does it.
const nginxSite = `
    server {
        listen @FRONT@;
        server_name @NAME@;
        root @WWW@;
        location ~ \.php$ {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass @FPM@;
        }
    }
`
