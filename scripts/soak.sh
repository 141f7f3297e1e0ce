#!/usr/bin/env bash
# Soak, a day compressed (issue 19): the real daemon (`gatehouse run`, by default the packaged
# build) under a day's load and more, each device a simulator in its own process, a real
# Mosquitto, a real SQLite file:
#   - EVENTS Net2 events (`gatehouse sim net2`, `burst 5000 RATE` lines on stdin), live over
#     SignalR, stored, published;
#   - camera alarms from a 16-channel NVR (`gatehouse sim hikvision --nvr --no-rtsp`, bursts
#     at ALARM_RATE/s for as long as the Net2 load lasts);
#   - a camera (`gatehouse sim hikvision`, RTSP) with a door on it (`doors.7242929.camera`:
#     pictures of that door's events), a REST snapshot of it every 10 s
#     (`GET /api/device/camera/channel/1/snapshot`), and every minute a live stream started
#     (`GET …/live`), its playlist and a segment fetched for 30 s, and stopped (`POST …/stop`).
# Every SAMPLE seconds: the daemon's VmRSS, RssAnon, open fds (/proc/PID/fd), threads and
# tokio tasks (`gatehouse_tokio_alive_tasks` on /metrics), with the events stored so far.
# At the end, once everything is stored and published and the last stream has been idle
# longer than `media.idle_close`, the same figures once more, and:
#   - the exact comparison of scripts/chaos.sh (scripts/chaos_compare.py): every Net2 id the
#     simulator produced stored once and published; every camera alarm change stored,
#     in order, and published; no door command;
#   - the verdict: RSS growth from the end of warm-up (the samples while the first WARMUP %
#     of the events to WARMUP+5 % were stored: their median) to the end of the load (the
#     samples of the last 5 %: their median) at most MAX_GROWTH_KB (2048), and again to the
#     idle end; open fds, threads and tasks at the idle end no more than at the warm-up's
#     highest. Exit non-zero if anything fails.
#
# Usage: scripts/soak.sh
#   EVENTS=1000000 RATE=500 (Net2 events/s; DURATION=S instead sets RATE to EVENTS/S)
#   ALARM_RATE=20 SAMPLE=10 WARMUP=10 MAX_GROWTH_KB=2048 SETTLE=900 KEEP=1 (keep the temp dir)
#   BIN: the daemon (default: the dist build, target/dist/gatehouse, else
#   target/release/gatehouse; CARGO_TARGET_DIR is followed). SIM_BIN: the simulators (a build
#   with the `sim` feature; default target/debug/gatehouse).
# Prints the samples as they come and a table and verdict at the end. Needs mosquitto,
# mosquitto_sub, sqlite3, python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
tgt=${CARGO_TARGET_DIR:-target}
bin=${BIN:-}
if [ -z "$bin" ]; then
  bin=$tgt/dist/gatehouse
  [ -x "$bin" ] || bin=$tgt/release/gatehouse
fi
sim=${SIM_BIN:-$tgt/debug/gatehouse}
events=${EVENTS:-1000000}
rate=${RATE:-500}
[ -n "${DURATION:-}" ] && rate=$(((events + DURATION - 1) / DURATION))
alarm_rate=${ALARM_RATE:-20}
sample=${SAMPLE:-10}
warmup=${WARMUP:-10}
max_growth=${MAX_GROWTH_KB:-2048}
settle=${SETTLE:-900}
[ -x "$bin" ] || { echo "no daemon $bin: build it first (cargo build --profile dist --no-default-features)" >&2; exit 2; }
[ -x "$sim" ] || { echo "no simulator build $sim: build it first (cargo build)" >&2; exit 2; }
for t in mosquitto mosquitto_sub sqlite3 python3 curl; do
  command -v "$t" >/dev/null || { echo "$t is not installed" >&2; exit 2; }
done

dir=$(mktemp -d)
bgpids=()
cleanup() {
  local p
  exec 2>/dev/null
  for p in "${bgpids[@]}"; do
    pkill -KILL -P "$p" || true
    kill -KILL "$p" || true
  done
  wait || true
  if [ -n "${KEEP:-}" ]; then echo "kept $dir" >&4; else rm -rf "$dir"; fi
}
exec 4>&2
trap cleanup EXIT

# shellcheck source=scripts/harness.sh
. scripts/harness.sh
db=$dir/d.db
sq() { sqlite3 -cmd '.timeout 5000' "file:$db?mode=ro" "$1" 2>/dev/null || echo '?'; }
# curl straight to 127.0.0.1, whatever proxy the environment names.
c() { curl --noproxy '*' -s --max-time 30 "$@"; }

# The simulators, each its own process, bursts from fifos.
mkfifo "$dir/net2.in" "$dir/nvr.in"
"$sim" sim net2 --every 0 <"$dir/net2.in" >"$dir/net2.out" 2>"$dir/net2.log" &
bgpids+=($!)
exec 3>"$dir/net2.in"
"$sim" sim hikvision --nvr --channels 16 --no-rtsp <"$dir/nvr.in" >"$dir/hik.out" 2>"$dir/hik.log" &
bgpids+=($!)
exec 5>"$dir/nvr.in"
"$sim" sim hikvision </dev/null >"$dir/cam.out" 2>"$dir/cam.log" &
bgpids+=($!)
wait_for "$dir/net2.out" client_id
wait_for "$dir/hik.out" '^rtsp:'
wait_for "$dir/cam.out" '^rtsp:'

port=$(free_port)
mkdir -p "$dir/mosq"
cat >"$dir/mosquitto.conf" <<EOC
listener $port 127.0.0.1
allow_anonymous true
# Run as root, Mosquitto drops to user mosquitto, which cannot write the temp dir.
user $(id -un)
max_queued_messages 0
log_type error
log_type warning
EOC
mosquitto -c "$dir/mosquitto.conf" >>"$dir/mosquitto.log" 2>&1 &
bgpids+=($!)
wait_port "$port"
# The recorder (QoS 1): what chaos_compare.py reads.
mosquitto_sub -h 127.0.0.1 -p "$port" -i soak-recorder -q 1 -v \
  -t 'soak/door/+/event' -t 'soak/+/event' -t 'soak/camera/+/event' \
  -t 'soak/camera/+/+/alarm/#' >>"$dir/mqtt.rec" 2>>"$dir/recorder.log" &
bgpids+=($!)
sleep 1

cat >"$dir/d.yaml" <<EOC
version: 1
log: { level: info }
storage: { path: $db }
sources:
  net2:
    url: $(field "$dir/net2.out" url)
    username: Gate House
    password: sim-password
    client_id: $(field "$dir/net2.out" client_id)
    live: true
    safety_poll_interval: 10s
  hikvision:
    - { id: nvr, url: "$(field "$dir/hik.out" url)", username: admin, password: sim-hik-pass }
    - { id: camera, url: "$(field "$dir/cam.out" url)", username: admin, password: sim-hik-pass }
mqtt: { host: 127.0.0.1, port: $port, client_id: soak-daemon, base_topic: soak }
web: { bind: "127.0.0.1:0", jwt_secret: soak-secret-0123456789abcdef }
doors:
  7242929: { camera: camera/1 }
EOC
"$bin" run -c "$dir/d.yaml" 2>"$dir/d.log" &
daemon=$!
bgpids+=("$daemon")
wait_for "$dir/d.log" 'web server listening'
web=http://$(sed -e 's/\x1b\[[0-9;]*m//g' "$dir/d.log" | grep 'web server listening' |
  grep -oE '127\.0\.0\.1:[0-9]+' | head -1)
token=$("$bin" token -c "$dir/d.yaml" --role operator --ttl 2d | tail -1)
auth=(-H "Authorization: Bearer $token")
sleep 3

# Samples: seconds, events stored (all sources, /metrics), VmRSS kB, RssAnon kB, fds,
# threads, tasks.
metric() { awk -v m="$1" '$1 == m {print $2}' "$dir/metrics"; }
take_sample() {
  c "${auth[@]}" "$web/metrics" >"$dir/metrics" || true
  local stored tasks
  stored=$(awk '/^gatehouse_events_stored_total/ {n += $2} END {print n + 0}' "$dir/metrics")
  tasks=$(metric gatehouse_tokio_alive_tasks)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(($(date +%s) - t0))" "$stored" \
    "$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status")" \
    "$(awk '/^RssAnon/ {print $2}' "/proc/$daemon/status")" \
    "$(find "/proc/$daemon/fd" -mindepth 1 -maxdepth 1 | wc -l)" \
    "$(awk '/^Threads/ {print $2}' "/proc/$daemon/status")" "${tasks:-?}"
}
t0=$(date +%s)
printf 's\tstored\tVmRSS_kB\tRssAnon_kB\tfds\tthreads\ttasks\n' | tee "$dir/samples.tsv"
take_sample | tee -a "$dir/samples.tsv"
(
  while kill -0 "$daemon" 2>/dev/null; do
    sleep "$sample"
    [ -e "$dir/stop-sampling" ] && break
    take_sample
  done
) | tee -a "$dir/samples.tsv" &
sampler=$!
bgpids+=("$sampler")

# The load. Net2: bursts of 5000; the NVR's alarms for as long.
per=5000
bursts=$(((events + per - 1) / per))
(
  left=$events
  while [ "$left" -gt 0 ]; do
    n=$((left < per ? left : per)); left=$((left - n))
    echo "burst $n $rate"
  done
) >&3 &
alarms=$((events * alarm_rate / rate))
(
  left=$alarms
  while [ "$left" -gt 0 ]; do
    n=$((left < 1000 ? left : 1000)); left=$((left - n))
    echo "burst $n $alarm_rate"
  done
) >&5 &
load_done() { [ "$(grep -c 'burst done' "$dir/net2.out")" -ge "$bursts" ]; }
# A snapshot every 10 s.
(
  while ! load_done; do
    code=$(c "${auth[@]}" -o "$dir/snap.jpg" -w '%{http_code}' "$web/api/device/camera/channel/1/snapshot" || echo 000)
    if [ "$code" = 200 ] && [ "$(head -c 2 "$dir/snap.jpg" | od -An -tx1 | tr -d ' ')" = ffd8 ]; then
      echo ok >>"$dir/snaps.log"
    else
      echo "failed $code" >>"$dir/snaps.log"
    fi
    sleep 10
  done
) &
bgpids+=($!)
# A live stream started and stopped every minute: its playlist fetched for 30 s (what keeps
# a stream alive), one segment, then stopped.
(
  while ! load_done; do
    m0=$(date +%s)
    ok=failed
    if c "${auth[@]}" "$web/api/device/camera/channel/1/live" >"$dir/live.json"; then
      hls=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hls_url"])' "$dir/live.json" 2>/dev/null || true)
      [ -n "$hls" ] && case $hls in http*) ;; *) hls=$web$hls ;; esac
      seg=
      for _ in 1 2 3 4 5 6; do
        sleep 5
        [ -n "$hls" ] || break
        c -o "$dir/pl.m3u8" "$hls" || continue
        s=$(grep -v '^#' "$dir/pl.m3u8" | tail -1)
        if [ -n "$s" ] && [ -z "$seg" ]; then
          case $s in http*) u=$s ;; /*) u=$web$s ;; *) u=${hls%/*}/$s ;; esac
          c -o /dev/null -w '%{http_code}' "$u" | grep -q 200 && seg=1
        fi
      done
      [ -n "$seg" ] && ok=ok
    fi
    c "${auth[@]}" -X POST "$web/api/device/camera/channel/1/stop" >/dev/null || ok=failed
    echo "$ok" >>"$dir/streams.log"
    sleep $((60 - ($(date +%s) - m0) > 0 ? 60 - ($(date +%s) - m0) : 1))
  done
) &
bgpids+=($!)

until load_done; do
  kill -0 "$daemon" 2>/dev/null || { echo "the daemon died" >&2; tail -20 "$dir/d.log" >&2; exit 1; }
  sleep 5
done
load_end=$(($(date +%s) - t0))
produced=$(awk '/burst done/ {n += $3} END {print n}' "$dir/net2.out")
echo "load done at ${load_end}s: $produced Net2 events produced"

# Settle: every produced Net2 id stored, the outbox empty, the recorder quiet for 10 s.
deadline=$(($(date +%s) + settle)) last=-1 quiet=0
while [ "$(date +%s)" -lt "$deadline" ]; do
  stored=$(sq 'select count(distinct source_id) from events where source_id is not null')
  outbox=$(sq 'select count(*) from mqtt_outbox')
  recs=$(wc -l <"$dir/mqtt.rec")
  if [ "$stored" = "$produced" ] && [ "$outbox" = 0 ] && [ "$recs" = "$last" ]; then
    quiet=$((quiet + 1))
    [ "$quiet" -ge 5 ] && break
  else
    quiet=0
  fi
  last=$recs
  sleep 2
done
settled=$(($(date +%s) - t0))
# Idle: the last stream's session closes (media.idle_close, 30 s), the blocking pool's idle
# threads go (10 s).
sleep 60
touch "$dir/stop-sampling"
take_sample | tee -a "$dir/samples.tsv" >"$dir/final"
kill "$sampler" 2>/dev/null || true

rc=0
secs=$(($(date +%s) - t0))
python3 scripts/chaos_compare.py "$dir" "$db" net2 soak-net2 0 "$secs" \
  "$(field "$dir/net2.out" url)" "$(field "$dir/net2.out" client_id)" || rc=1
python3 scripts/chaos_compare.py "$dir" "$db" camera soak-alarms 0 "$secs" || rc=1
snaps_ok=$(grep -c '^ok' "$dir/snaps.log" || true)
snaps_bad=$(grep -vc '^ok' "$dir/snaps.log" || true)
streams_ok=$(grep -c '^ok' "$dir/streams.log" || true)
streams_bad=$(grep -vc '^ok' "$dir/streams.log" || true)
pictures=$(ls "$(dirname "$db")/snapshots" 2>/dev/null | wc -l)
echo "soak: snapshots $snaps_ok ok, $snaps_bad failed; live streams $streams_ok started, played and stopped, $streams_bad failed; picture files kept $pictures; database $(du -k "$db" | cut -f1) kB"
[ "$snaps_bad" = 0 ] && [ "$snaps_ok" -gt 0 ] || rc=1
[ "$streams_bad" = 0 ] && [ "$streams_ok" -gt 0 ] || rc=1
python3 - "$dir/samples.tsv" "$events" "$warmup" "$max_growth" "$load_end" "$settled" <<'EOP' || rc=1
import statistics, sys
path, events, warmup, max_growth, load_end, settled = sys.argv[1:]
events, warmup, max_growth, load_end = int(events), int(warmup), int(max_growth), int(load_end)
rows = []
for line in open(path).read().splitlines()[1:]:
    f = line.split("\t")
    rows.append([int(x) if x.lstrip("-").isdigit() else None for x in f])
final = rows[-1]
load = [r for r in rows[:-1] if r[0] <= load_end]
# Progress: Net2 events are most of what is stored (alarms add ALARM_RATE/RATE).
total = max(r[1] for r in load) or 1
warm = [r for r in load if warmup / 100 <= r[1] / total < (warmup + 5) / 100]
end = [r for r in load if r[1] / total >= 0.95]
print("| s | events stored | VmRSS kB | RssAnon kB | fds | threads | tasks |")
print("|---:|---:|---:|---:|---:|---:|---:|")
step = max(1, len(rows) // 16)
for i, r in enumerate(rows):
    if i % step == 0 or r in warm[:1] or r is final:
        note = " (warm-up end)" if r in warm[:1] else " (idle end)" if r is final else ""
        print("| " + " | ".join("?" if x is None else str(x) for x in r) + f" |{note}")
ok = True
if not warm or not end:
    print("soak verdict: too few samples for a warm-up and an end window (SAMPLE smaller?) FAIL")
    sys.exit(1)
med = lambda rs, k: int(statistics.median(r[k] for r in rs))
hi = lambda rs, k: max((r[k] for r in rs if r[k] is not None), default=None)
rss_w, anon_w = med(warm, 2), med(warm, 3)
rss_e, anon_e = med(end, 2), med(end, 3)
growth_load, growth_idle = rss_e - rss_w, final[2] - rss_w
peak = max(r[2] for r in rows)
ok = growth_load <= max_growth and growth_idle <= max_growth
lines = [f"RSS (median) warm-up {rss_w} kB, load end {rss_e} kB (growth {growth_load:+d} kB), "
         f"idle end {final[2]} kB (growth {growth_idle:+d} kB), peak {peak} kB; RssAnon "
         f"{anon_w} -> {anon_e} -> {final[3]} kB; limit {max_growth} kB"]
for name, k in (("fds", 4), ("threads", 5), ("tasks", 6)):
    w = hi(warm, k)
    if final[k] is None or w is None:
        lines.append(f"{name}: not measured")
        continue
    good = final[k] <= w
    ok = ok and good
    lines.append(f"{name} warm-up max {w}, load max {hi(load, k)}, idle end {final[k]}"
                 f"{'' if good else ' (MORE than warm-up)'}")
print("soak verdict: " + "; ".join(lines) + (" OK" if ok else " FAIL"))
sys.exit(0 if ok else 1)
EOP
[ -z "${KEEP:-}" ] || cp "$dir/samples.tsv" "$dir/samples.kept.tsv"
exit $rc
