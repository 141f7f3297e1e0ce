#!/usr/bin/env bash
# Footprint of the full config (issue 18): `gatehouse run` with Net2 (8 doors, live events), a
# Hikvision NVR (16 channels) and a camera, MQTT to a real Mosquitto, the web server on.
# Every daemon binary given is run side by side against the same simulators and broker (so a
# before/after comparison sees the same load in the same run). Each simulator is its own
# process (`gatehouse sim …`): a daemon's RSS is its own.
#
#  1. idle IDLE seconds (the Net2 simulator logs an event every EVERY s, default 30; EVERY=0:
#     none, nothing happens but the devices' own keep-alives), then VmRSS, RssAnon,
#     RssFile, VmHWM and threads of each daemon, and its wake-ups: voluntary context switches
#     summed over its threads (/proc/PID/task/*/status) across the next 60 s;
#  2. EVENTS events driven through the simulators (half Net2 random scenarios, half NVR
#     alerts across its 16 channels, RATE per second each), then the same figures once the
#     daemons have stored them, and again after 60 s more idle.
#
# Usage: scripts/bench_idle_rss.sh [IDLE=600] [EVENTS=100000] [BIN…]
#   BIN default target/release/gatehouse; the simulators run from SIM_BIN (default: the first
#   BIN; it needs `gatehouse sim hikvision`, i.e. a build with the `sim` feature). RATE=500.
#   WRAP: a profiler to run the daemons under (e.g. WRAP="heaptrack -o /tmp/ht"; the figures
#   are then the profiler's process). KEEP=1 keeps the temporary directory (logs, databases).
#   LATER=S: the figures once more S seconds after the last report.
set -euo pipefail
cd "$(dirname "$0")/.."
idle=${1:-600}
events=${2:-100000}
shift 2 2>/dev/null || shift $#
bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(target/release/gatehouse)
sim=${SIM_BIN:-${bins[0]}}
rate=${RATE:-500}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; [ -n "${KEEP:-}" ] && echo "kept $dir" || rm -rf "$dir"' EXIT

wait_for() { # $1 file, $2 pattern
  for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for $2 in $1" >&2; cat "$1" >&2; exit 1
}
field() { sed -n "s/^$2: //p" "$1"; }

# Simulators, each reading `burst N RATE` lines from a fifo.
mkfifo "$dir/net2.in" "$dir/nvr.in"
"$sim" sim net2 --every "${EVERY:-30}" <"$dir/net2.in" >"$dir/net2.out" 2>/dev/null &
exec 3>"$dir/net2.in"
"$sim" sim hikvision --nvr --channels 16 <"$dir/nvr.in" >"$dir/nvr.out" 2>/dev/null &
exec 4>"$dir/nvr.in"
"$sim" sim hikvision </dev/null >"$dir/cam.out" 2>/dev/null &
wait_for "$dir/net2.out" client_id
wait_for "$dir/nvr.out" rtsp
wait_for "$dir/cam.out" rtsp
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mosquitto -p "$port" >"$dir/mosquitto.log" 2>&1 &
for _ in $(seq 50); do (exec 5<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

pids=()
for i in "${!bins[@]}"; do
  cat >"$dir/d$i.yaml" <<EOC
version: 1
log: { level: warn }
storage: { path: $dir/d$i.db }
sources:
  net2: { url: $(field "$dir/net2.out" url), username: Gate House, password: sim-password, client_id: $(field "$dir/net2.out" client_id), live: true }
  hikvision:
    - { id: nvr, url: "$(field "$dir/nvr.out" url)", username: admin, password: sim-hik-pass }
    - { id: camera, url: "$(field "$dir/cam.out" url)", username: admin, password: sim-hik-pass }
mqtt: { host: 127.0.0.1, port: $port, client_id: bench-$i, base_topic: bench$i }
web: { bind: "127.0.0.1:0", jwt_secret: bench-secret-0123456789abcdef }
doors:
  6626578: {}
  6612642: { camera: nvr/2 }
  7319051: {}
  6203980: {}
  7242929: { mode: momentary, camera: camera/1 }
  1265688: {}
  3962494: {}
  1000001: { mode: disabled }
EOC
  # shellcheck disable=SC2086  # WRAP is a command line (e.g. "heaptrack -o /tmp/ht")
  ${WRAP:-} "${bins[$i]}" run -c "$dir/d$i.yaml" 2>"$dir/d$i.log" &
  pids+=($!)
done

status() { awk '/^(VmRSS|RssAnon|RssFile|VmHWM|Threads)/ {printf "%s %s  ", $1, $2}' "/proc/$1/status"; }
# Wake-ups: voluntary context switches (a thread blocked and was woken); preemptions by other
# processes on a busy machine are not the daemon waking up.
ctxt() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {n += $2} END {print n}'; }
stored() { sqlite3 "$dir/d$1.db" 'select count(*) from events' 2>/dev/null || echo '?'; }
threads() { awk '/^Threads/ {print $2}' "/proc/$1/status"; }
report() { # $1 label
  local before=() nt=() i
  # A thread's switches leave the sum when it exits: let the blocking pool's idle threads go
  # (tokio keeps them 10 s) before counting; a count across a thread exit is marked.
  sleep 15
  for i in "${!pids[@]}"; do before+=("$(ctxt "${pids[$i]}")"); nt+=("$(threads "${pids[$i]}")"); done
  sleep 60
  for i in "${!pids[@]}"; do
    [ "$(threads "${pids[$i]}")" = "${nt[$i]}" ] || echo "(threads came or went while counting: the next wake-ups figure is not one)"
    echo "$1: ${bins[$i]}: $(status "${pids[$i]}") wake-ups/s $(( ($(ctxt "${pids[$i]}") - ${before[$i]}) / 60 )).$(( ($(ctxt "${pids[$i]}") - ${before[$i]}) % 60 * 10 / 60 ))  events stored $(stored "$i")"
  done
}

sleep "$idle"
report "idle ${idle}s"

[ "$events" -gt 0 ] || exit 0
echo "burst $((events / 2)) $rate" >&3
echo "burst $((events / 2)) $rate" >&4
for f in net2 nvr; do
  until grep -q "burst done" "$dir/$f.out"; do sleep 1; done
done
# Until every daemon has stored what it received (the count stops moving for 5 s).
for i in "${!pids[@]}"; do
  last=-1
  while n=$(stored "$i"); [ "$n" != "$last" ]; do last=$n; sleep 5; done
done
for i in "${!pids[@]}"; do
  echo "after $events events: ${bins[$i]}: $(status "${pids[$i]}") events stored $(stored "$i")"
done
report "after $events events + 60 s"
# LATER: once more, LATER seconds on (the Net2 safety poll, every 300 s, pairs the live events'
# REST copies: the dedupe state of a burst is released then).
if [ -n "${LATER:-}" ]; then
  sleep "$LATER"
  report "after $events events + $((LATER + 135)) s"
fi
