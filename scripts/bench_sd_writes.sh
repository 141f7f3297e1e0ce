#!/usr/bin/env bash
# SD-card wear: bytes the daemon writes to storage (/proc/PID/io write_bytes: what reaches the
# block layer, page-cache writeback included) while idle and per 1,000 events, beside another
# binary in the same run. Four daemons at once, 8 Net2 doors each: {BEFORE, AFTER} × {idle
# (simulator generates nothing), busy (an event a second)}; start-up is left out (the
# counters are read after WARMUP seconds). Logs go to /dev/null (under systemd they go to
# journald, another process). The database must be on a real disk: tmpfs counts nothing.
# Usage: scripts/bench_sd_writes.sh [SECONDS] [BEFORE_BIN] [AFTER_BIN] [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
before=${2:-}
after=${3:-target/release/gatehouse}
dir=$(mktemp -d "${4:-/var/tmp}/gatehouse-sd.XXXXXX")
warmup=15
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 1; rm -rf "$dir"' EXIT
sim() { # $1 name, $2 --every
  "$after" sim net2 --every "$2" >"$dir/$1.out" 2>/dev/null &
  for _ in $(seq 50); do grep -q client_id "$dir/$1.out" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/^url: //p' "$dir/$1.out"
}
idle_url=$(sim idle 0)
busy_url=$(sim busy 1)
conf() { # $1 name, $2 url
  mkdir -p "$dir/$1"
  cat >"$dir/$1/c.yaml" <<EOC
version: 1
log: { level: warn }
storage: { path: $dir/$1/g.db }
sources:
  net2: { url: $2, username: Gate House, password: sim-password, client_id: 00000000-0000-4000-8000-000000000000 }
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
declare -A pid bin
names=()
for which in before after; do
  b=$before; [ "$which" = after ] && b=$after
  [ -n "$b" ] || continue
  for load in idle busy; do
    n="$which-$load"; names+=("$n")
    url=$idle_url; [ "$load" = busy ] && url=$busy_url
    conf "$n" "$url"
    "$b" run -c "$dir/$n/c.yaml" 2>/dev/null & pid[$n]=$!; bin[$n]=$b
  done
done
wb() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }
ev() { sqlite3 "file:$1?mode=ro" 'select count(*) from events' 2>/dev/null || echo 0; }
sleep "$warmup"
declare -A w0 e0
for n in "${names[@]}"; do w0[$n]=$(wb "${pid[$n]}"); e0[$n]=$(ev "$dir/$n/g.db"); done
sleep "$secs"
printf '%-12s %14s %8s %16s %16s %10s %10s\n' daemon bytes_written events bytes/1000ev bytes/idle_hour db_bytes wal_bytes
for n in "${names[@]}"; do
  w=$(( $(wb "${pid[$n]}") - w0[$n] )); e=$(( $(ev "$dir/$n/g.db") - e0[$n] ))
  per=-; [ "$e" -gt 0 ] && per=$(( w * 1000 / e ))
  hour=-; [ "$e" -eq 0 ] && hour=$(( w * 3600 / secs ))
  db=$(stat -c %s "$dir/$n/g.db"); wal=$(stat -c %s "$dir/$n/g.db-wal" 2>/dev/null || echo 0)
  printf '%-12s %14s %8s %16s %16s %10s %10s\n' "$n" "$w" "$e" "$per" "$hour" "$db" "$wal"
done
