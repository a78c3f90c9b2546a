# Sourced by bench/run-fanout-tls and bench/run-fanout-memory: a local TLS
# nginx (127.0.0.1, HTTP/1.1, certificates made by
# test/e2e-fanout/gen-certs.sh) serving one file, and the list of URLs to
# fetch from it.
#
# tls_nginx DIR BYTES: DIR/ca.pem (the CA to verify with), DIR/www/f.txt of
# BYTES bytes, nginx on a free port logging each request's connection
# number to DIR/access.log (what the callers count connections with);
# sets port, and ngx to nginx's pid (the caller kills it).  Returns once
# the file is served.
tls_nginx() {
  local dir=$1 bytes=$2
  sh test/e2e-fanout/gen-certs.sh "$dir"
  mkdir -p "$dir/www"
  head -c "$bytes" /dev/zero | tr '\0' 'a' > "$dir/www/f.txt"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$dir/nginx.conf" <<EOF
daemon off;
master_process off;
worker_rlimit_nofile 4096;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 2048; }
http {
  # One line per request naming its connection: the check runs count
  # how many each tool opened (the write costs both tools the same).
  log_format conns '\$connection';
  access_log $dir/access.log conns;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 100000;
  keepalive_timeout 60s;
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $dir/good.pem;
    ssl_certificate_key $dir/good.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $dir/www;
  }
}
EOF
  /usr/sbin/nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" &
  ngx=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null --cacert "$dir/ca.pem" "https://127.0.0.1:$port/f.txt" && return 0
    sleep 0.05
  done
  echo "nginx did not serve https://127.0.0.1:$port/f.txt"
  return 1
}

# tls_urls N: N distinct URLs of the file, one a line.
tls_urls() {
  for i in $(seq "$1"); do
    echo "https://127.0.0.1:$port/f.txt?i=$i"
  done
}
