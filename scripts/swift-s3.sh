#!/usr/bin/env bash
# A throw-away single-node OpenStack Swift with the s3api middleware: the real S3 server the tests run against.
#
#   scripts/swift-s3.sh DIR PORT    start; S3 endpoint http://127.0.0.1:PORT, healthy when this returns 0
#   scripts/swift-s3.sh stop DIR    stop the servers started with DIR
#
# S3 credentials (tempauth): access key "test:tester", secret "testing123"; region us-east-1.
# DIR is wiped and holds config, data, logs and pids. The account/container/object servers listen on free
# loopback ports picked at start, so several instances (parallel test sessions) can run side by side.
# Needs the Debian packages swift-proxy swift-object swift-container swift-account (scripts/system-deps.sh).
set -euo pipefail

stop() {  # a throw-away server: TERM, a short grace, then KILL
  local dir=$1 pids=() pid
  for f in "$dir"/run/*.pid; do [ -f "$f" ] && pids+=("$(cat "$f")") && rm -f "$f"; done
  [ ${#pids[@]} -eq 0 ] && return 0
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 20); do
    alive=0; for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && return 0; sleep 0.1
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
}

if [ "${1:-}" = stop ]; then stop "${2:?usage: swift-s3.sh stop DIR}"; exit 0; fi
S=${1:?usage: swift-s3.sh DIR PORT | swift-s3.sh stop DIR}
PORT=${2:?usage: swift-s3.sh DIR PORT}
for b in swift-proxy-server swift-object-server swift-container-server swift-account-server; do
  command -v "$b" >/dev/null || { echo "swift-s3.sh: $b missing: run scripts/system-deps.sh" >&2; exit 2; }
done

S=$(mkdir -p "$S" && cd "$S" && pwd)
stop "$S"
rm -rf "$S"; mkdir -p "$S"/{etc,srv/d1,run,log}
USER_NAME=$(id -un)
# Debian's swift lives in the system python. In one process (each swift tool start costs seconds): pick three
# free loopback ports for the backend servers (bound then released; the servers take them right after) and
# build their one-device rings.
read -r ACCOUNT_PORT CONTAINER_PORT OBJECT_PORT < <(/usr/bin/python3 - "$S/etc" <<'EOP'
import socket, sys
from swift.common.ring import RingBuilder
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
ports = [s.getsockname()[1] for s in socks]
for s in socks:
    s.close()
for name, port in zip(("account", "container", "object"), ports):
    builder = RingBuilder(8, 1, 1)
    builder.add_dev({"region": 1, "zone": 1, "ip": "127.0.0.1", "port": port, "device": "d1", "weight": 100})
    builder.rebalance()
    builder.get_ring().save(f"{sys.argv[1]}/{name}.ring.gz")
print(*ports)
EOP
)

cat > "$S/etc/swift.conf" <<EOC
[swift-hash]
swift_hash_path_suffix = emotune-test-suffix
swift_hash_path_prefix = emotune-test-prefix
[storage-policy:0]
name = Policy-0
default = yes
EOC

for spec in account:$ACCOUNT_PORT container:$CONTAINER_PORT object:$OBJECT_PORT; do
  name=${spec%%:*}; port=${spec##*:}
  cat > "$S/etc/$name-server.conf" <<EOC
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
devices = $S/srv
mount_check = false
swift_dir = $S/etc
workers = 0
user = $USER_NAME
recon_cache_path = $S/run
# Swift keeps 1% of the disk free by default and answers 507 once below it; on a big, nearly full dev disk that
# turned into 503s mid-suite. A throw-away test server may use the disk up to the last byte.
fallocate_reserve = 0
log_level = WARNING
[pipeline:main]
pipeline = $name-server
[app:$name-server]
use = egg:swift#$name
EOC
done

cat > "$S/etc/proxy-server.conf" <<EOC
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PORT
swift_dir = $S/etc
workers = 0
user = $USER_NAME
log_level = WARNING
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy slo dlo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing123 .admin
EOC
for f in catch_errors gatekeeper healthcheck proxy_logging:proxy-logging memcache:cache listing_formats bulk copy slo dlo; do
  egg=${f%%:*}; name=${f##*:}
  printf '[filter:%s]\nuse = egg:swift#%s\n' "$name" "$egg" >> "$S/etc/proxy-server.conf"
done

for name in account container object proxy; do
  setsid "/usr/bin/swift-$name-server" "$S/etc/$name-server.conf" > "$S/log/$name.log" 2>&1 < /dev/null &
  echo $! > "$S/run/$name.pid"
done
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 600); do
  if curl -sf "http://127.0.0.1:$PORT/healthcheck" >/dev/null \
     && listening "$ACCOUNT_PORT" && listening "$CONTAINER_PORT" && listening "$OBJECT_PORT"; then
    exit 0
  fi
  sleep 0.1
done
echo "swift-s3.sh: servers for 127.0.0.1:$PORT not up after 60 s" >&2
tail -n 5 "$S"/log/*.log >&2
stop "$S"
exit 1
