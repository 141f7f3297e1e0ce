#!/usr/bin/env bash
# Issue 16: the REST API over HTTP, against the running release daemon (BENCHMARKS.md,
# "Issue 16: REST API under load").
#
#   scripts/bench_web.sh [EVENTS] [DB]
#
# EVENTS (default 1000000) stored events in DB (default /tmp/gatehouse-bench-web/events.db,
# built by `bench_query --build` when it holds none, kept and reused afterwards: the daemon
# adds the simulator's few events to it on every run). Environment: RATE (2000 requests/s),
# SECS (30, the paced load), PAGE_RATE (100/s) and PAGE_SECS (20) for each events page shape,
# RUNS (3 exports).
#
# Builds the release binary and the generator, starts the Net2 simulator and the daemon on
# free loopback ports (`web.rate_limits.per_user` raised: seed 001's 100 a minute would
# refuse the load), takes a viewer token from `gatehouse token`, then with wrk (installed
# with apt-get when missing, the only step that needs root):
#  1. GET /api/access-control/points paced at RATE for SECS s (wrk is a closed-loop tool; the
#     Lua script below spaces the requests of its 32 connections RATE a second, never
#     catching up on a late slot, so the achieved rate is reported as measured), and
#     GET /healthz (no auth, no database) the same way right after it as the reference;
#     then both unpaced for 10 s (the ceiling on this machine, wrk on the same cores);
#  2. filtered events pages, random parameters per request, paced at PAGE_RATE (a page in
#     isolation: the target figure), then back to back on one connection (the daemon busy all
#     the time); /healthz and /points the same way as references;
#  3. the full CSV export with curl, the daemon's VmRSS / VmHWM around it (VmHWM reset
#     through /proc/PID/clear_refs before), beside the sqlite3 CLI writing the same rows.
# Every response's status is counted by the Lua script: any that is not 200 is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
db=${2:-/tmp/gatehouse-bench-web/events.db}
rate=${RATE:-2000}
secs=${SECS:-30}
page_secs=${PAGE_SECS:-20}
page_rate=${PAGE_RATE:-100}
runs=${RUNS:-3}

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian)" >&2
  apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
command -v sqlite3 >/dev/null || apt-get install -y sqlite3 >/dev/null

nice -n 10 cargo build --release --bin gatehouse --example bench_query
bin=$PWD/target/release/gatehouse
mkdir -p "$(dirname "$db")"
nice -n 10 target/release/examples/bench_query --build "$n" "$db"
stored=$(sqlite3 "file:$db?mode=ro" 'SELECT count(*) FROM events')

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$bin" sim net2 --bind "127.0.0.1:$(free_port)" --every 0 >"$dir/sim.out" 2>"$dir/sim.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '^client_id' "$dir/sim.out" 2>/dev/null && break; sleep 0.1; done
field() { sed -n "s/^$1: //p" "$dir/sim.out"; }
port=$(free_port)
cat >"$dir/gatehouse.yaml" <<EOC
version: 1
log: { level: warn }
# retention 0 = keep everything: the default (90 days) would prune most of the year of
# history at start-up, on the writer connection, while the loads run
storage: { path: $db, retention_days: 0 }
sources:
  net2: { url: "$(field url)", username: "$(field username)", password: "$(field password)", client_id: "$(field client_id)" }
web:
  bind: 127.0.0.1:$port
  jwt_secret: bench-web-secret-0123456789
  # seed 001's 100 a minute per user would answer 429 to the load
  rate_limits: { per_user: 100000000 }
EOC
"$bin" run -c "$dir/gatehouse.yaml" 2>"$dir/daemon.log" &
daemon=$!
pids+=("$daemon")
base=http://127.0.0.1:$port
token=$("$bin" token -c "$dir/gatehouse.yaml" --role viewer --name bench --ttl 1d)
auth="Authorization: Bearer $token"
for _ in $(seq 300); do
  curl -sf -H "$auth" "$base/api/access-control/points" 2>/dev/null | grep -q '"net2-' && break
  sleep 0.1
done
curl -sf -H "$auth" "$base/api/access-control/points" | grep -q '"net2-' || {
  echo "the daemon did not list the simulator's doors" >&2; tail -20 "$dir/daemon.log" >&2; exit 1; }

cat >"$dir/load.lua" <<'EOL'
-- RATE > 0: space the requests RATE a second over this thread's connections (one thread);
-- a slot nobody was free for is skipped, not caught up. SHAPE: draw a path per request.
-- Every status is counted; done() prints one line for the script to parse.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_ts;
int clock_gettime(int clk, bench_ts *tp);
]]
local ts = ffi.new("bench_ts")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local rate = tonumber(os.getenv("RATE") or "0")
local shape = os.getenv("SHAPE") or ""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  ok = 0
  other = 0
  math.randomseed(16)
end
if rate > 0 then
  local interval = 1000 / rate
  local next_at = nil
  function delay()
    local now = now_ms()
    if next_at == nil or next_at < now then next_at = now end
    local d = next_at - now
    next_at = next_at + interval
    return math.floor(d)
  end
end
-- 2025-12-01T00:00:00Z, the start of the generated year
local start = 1764547200
local function day(t) return os.date("!%Y-%m-%d", t) end
if shape ~= "" then
  function request()
    local p
    if shape == "user_granted" then
      p = string.format("/api/access-control/events?userId=%d&action=granted", math.random(0, 49))
    elseif shape == "door_30d" then
      local from = start + math.random(0, 334) * 86400
      p = string.format("/api/access-control/events?accessPointId=net2-%d&startDate=%s&endDate=%s",
        math.random(1, 20), day(from), day(from + 29 * 86400))
    elseif shape == "page200" then
      p = "/api/access-control/events?page=200"
    else
      error("unknown SHAPE " .. shape)
    end
    return wrk.format("GET", p)
  end
end
function response(status, headers, body)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local o, b = 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    b = b + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT %d %.3f %.3f %.3f %.3f %.3f %.3f %d %d %d\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000,
    o, b, e.connect + e.read + e.write + e.timeout))
end
EOL

cpu_ticks() { awk '{print $14 + $15}' "/proc/$daemon/stat"; }
hz=$(getconf CLK_TCK)
load() { cut -d' ' -f1 /proc/loadavg; }
rows=()
# run NAME PATH SECONDS CONNECTIONS RATE [SHAPE]: one wrk run; a table row.
run() {
  local name=$1 path=$2 s=$3 c=$4 r=$5 shape=${6:-} hdr=() c0 c1 l0 out
  [[ $path == /healthz ]] || hdr=(-H "$auth")
  c0=$(cpu_ticks); l0=$(load)
  out=$(RATE=$r SHAPE=$shape wrk -t1 -c"$c" -d"${s}s" --timeout 5s "${hdr[@]}" -s "$dir/load.lua" "$base$path")
  c1=$(cpu_ticks)
  if grep -q 'Non-2xx or 3xx' <<<"$out"; then echo "$out" >&2; fi
  read -r _ req dur p50 p90 p99 p999 max ok other err < <(grep '^RESULT' <<<"$out")
  rows+=("$(printf '| %s | %s | %d s | %d | %.0f/s | %.2f / %.2f / %.2f / %.2f / %.2f ms | %d | %d | %.0f µs | %s–%s |' \
    "$name" "${shape:-$path}" "$s" "$c" "$(echo "$req / $dur" | bc -l)" "$p50" "$p90" "$p99" "$p999" "$max" \
    "$ok" "$((other + err))" "$(echo "($c1 - $c0) * 1000000 / $hz / $req" | bc -l)" "$l0" "$(load)")")
  echo "${rows[-1]}" >&2
}
table() {
  echo "| run | path | time | conns | achieved | p50 / p90 / p99 / p99.9 / max | 200 | not 200 / errors | daemon CPU per request | load avg |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  rows=()
}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/^Mem/ {print $2}') GiB; load $(cat /proc/loadavg)"
echo "database: $db, $stored events before the daemon started, $(du -m "$db" | cut -f1) MB"
echo "daemon pid $daemon, $(grep -c '"net2-' <(curl -s -H "$auth" "$base/api/access-control/points" | tr '{' '\n')) Net2 doors listed"

# Warm-up: both paths, a few seconds each.
RATE=0 wrk -t1 -c8 -d3s -H "$auth" "$base/api/access-control/points" >/dev/null
RATE=0 wrk -t1 -c8 -d3s "$base/healthz" >/dev/null

echo; echo "## 1. /points paced at $rate/s for $secs s, /healthz beside it (the reference)"
run points /api/access-control/points "$secs" 32 "$rate"
run "reference" /healthz "$secs" 32 "$rate"
run "points unpaced" /api/access-control/points 10 32 0
run "reference unpaced" /healthz 10 32 0
table

echo; echo "## 2a. events pages paced at $page_rate/s (4 connections), $page_secs s each: the target figure"
for s in user_granted door_30d page200; do
  run "events page" /api/access-control/events "$page_secs" 4 "$page_rate" "$s"
done
run "reference" /healthz "$page_secs" 4 "$page_rate"
run "reference" /api/access-control/points "$page_secs" 4 "$page_rate"
table
echo; echo "## 2b. the same back to back on one connection (the daemon busy all the time), 10 s each"
for s in user_granted door_30d page200; do
  run "events page" /api/access-control/events 10 1 0 "$s"
done
run "reference" /healthz 10 1 0
run "reference" /api/access-control/points 10 1 0
table
echo "one answer of each (pagination):"
for q in "userId=7&action=granted" "accessPointId=net2-3&startDate=2026-03-01&endDate=2026-03-30" "page=200"; do
  echo "  ?$q → $(curl -s -H "$auth" "$base/api/access-control/events?$q" | grep -o '"pagination":{[^}]*}')"
done

echo; echo "## 3. full CSV export"
kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$daemon/status"; }
echo "| run | rows | bytes | time | VmRSS before | VmHWM during | VmRSS after | growth (HWM − before) |"
echo "|---|---|---|---|---|---|---|---|"
for i in $(seq "$runs"); do
  echo 5 >"/proc/$daemon/clear_refs"
  before=$(kb VmRSS)
  read -r code size t < <(curl -s -o "$dir/export.csv" -w '%{http_code} %{size_download} %{time_total}\n' \
    -H "$auth" "$base/api/access-control/events/export?format=csv")
  hwm=$(kb VmHWM); after=$(kb VmRSS)
  [[ $code == 200 ]] || echo "export answered $code" >&2
  printf '| export %d | %d | %.1f MB | %.2f s | %.1f MB | %.1f MB | %.1f MB | **%+.1f MB** |\n' "$i" \
    "$(($(wc -l <"$dir/export.csv") - 1))" "$(echo "$size / 1000000" | bc -l)" "$t" \
    "$(echo "$before / 1024" | bc -l)" "$(echo "$hwm / 1024" | bc -l)" "$(echo "$after / 1024" | bc -l)" \
    "$(echo "($hwm - $before) / 1024" | bc -l)"
done
t0=$(date +%s.%N)
sqlite3 -csv "file:$db?mode=ro" "SELECT seq, id, time, time_ms, kind, code, door_id, door_name, user_id, user_name,
  json_extract(detail, '\$.token'), json_extract(detail, '\$.reason'), via, source, description FROM events
  WHERE (kind IN ('access_granted', 'access_denied') OR (kind = 'other' AND code = 61)) ORDER BY time_ms, seq" >"$dir/ref.csv"
t1=$(date +%s.%N)
printf '| reference: sqlite3 -csv, the same rows and columns, to a file | %d | %.1f MB | %.2f s | | | | |\n' \
  "$(wc -l <"$dir/ref.csv")" "$(echo "$(stat -c %s "$dir/ref.csv") / 1000000" | bc -l)" "$(echo "$t1 - $t0" | bc -l)"
echo
echo "the daemon's own answer times over the whole run (GET /metrics, cumulative buckets):"
curl -s -H "$auth" "$base/metrics" | grep -E 'duration_seconds_(bucket|count).*(access-control/events"|access-control/points"|healthz)' || true
echo "events stored at the end: $(sqlite3 "file:$db?mode=ro" 'SELECT count(*) FROM events')"
echo "daemon at the end: VmRSS $(kb VmRSS) kB, VmHWM $(kb VmHWM) kB; load $(cat /proc/loadavg)"
grep -iE 'error|panic' "$dir/daemon.log" | head -5 || true
