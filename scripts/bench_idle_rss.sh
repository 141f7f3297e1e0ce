#!/usr/bin/env bash
# Idle memory: RSS of `gatehouse run` with 8 doors after SECONDS (default 600) of idle live
# events (the simulator generates an event every 30 s), beside the same daemon with live off.
# Usage: scripts/bench_idle_rss.sh [SECONDS]   (needs target/release/gatehouse)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
bin=target/release/gatehouse
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" sim net2 --every 30 >"$dir/sim.out" 2>/dev/null &
for _ in $(seq 50); do grep -q client_id "$dir/sim.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^url: //p' "$dir/sim.out")
conf() { # $1 name, $2 live
  cat >"$dir/$1.yaml" <<EOC
version: 1
log: { level: warn }
storage: { path: $dir/$1.db }
sources:
  net2: { url: $url, username: Gate House, password: sim-password, client_id: 00000000-0000-4000-8000-000000000000, live: $2 }
doors:
  6626578: {}
  6612642: {}
  7319051: {}
  6203980: {}
  7242929: { mode: momentary }
  1265688: {}
  3962494: {}
  1000001: { mode: disabled }
EOC
}
conf live true; conf rest false
"$bin" run -c "$dir/live.yaml" 2>"$dir/live.log" & live=$!
"$bin" run -c "$dir/rest.yaml" 2>"$dir/rest.log" & rest=$!
sleep "$secs"
rss() { awk '/^(VmRSS|VmHWM)/ {printf "%s %s kB  ", $1, $2}' "/proc/$1/status"; }
echo "after ${secs}s: live=true:  $(rss $live)"
echo "after ${secs}s: live=false: $(rss $rest)"
echo "events stored (live): $(sqlite3 "$dir/live.db" 'select count(*) from events' 2>/dev/null || echo '?')"
