#!/usr/bin/env bash
# Chaos, scripted and repeatable (issue 19). Each scenario runs the real daemon
# (`gatehouse run`), a simulator driven by `burst N RATE` lines on stdin (Net2:
# `gatehouse sim net2`; alert-drops: `gatehouse sim hikvision --nvr --channels 16`), a real
# Mosquitto with persistence and a QoS 1 recorder with a persistent session
# (`mosquitto_sub -c -q 1`), breaks something while EVENTS events are produced, lets
# everything settle, then compares exactly (scripts/chaos_compare.py):
#   produced  the simulator's own record (Net2: its REST `/api/v1/events`, every id;
#             Hikvision: its `alert` / `delivered` lines, every alert by number);
#   stored    the daemon's SQLite `events` rows (Net2: by Net2 id, live copies carry it once
#             paired with their REST copy; cameras: the alarm state changes, below);
#   published the distinct event ids the recorder received on the event topics (and, for
#             cameras, the ON / OFF sequence on each alarm topic).
# Targets: 0 missing from the store and from MQTT; no duplicate in the store; duplicates in
# MQTT only as the documented redelivery rule allows (every copy after the first carries
# `"redelivered": true`; counted); nothing published that is not stored; no door command.
#
# Scenarios:
#   broker  the broker is SIGKILLed KILLS times at random moments during the bursts and
#           restarted after 0.2-2 s (its persistence file and the recorder's session survive);
#           each kill waits (up to 60 s) for the daemon to be connected again first, and
#           the line ends with how many kills hit a connected daemon.
#   daemon  the daemon is SIGKILLed KILLS times mid-burst and restarted after 0.2-2 s (the REST
#           backfill must bring back everything the live feed missed).
#   net2-errors  the Net2 simulator's faults, one per burst in turn (`fault …` lines on its
#           stdin): REST 500 (IIS page), 502 (nginx page), every token invalid (401s, the
#           refresh token too), the token endpoint 429 with every token invalid, every SignalR
#           socket dropped; each with a SignalR drop at its start, so that the reconnect and its REST
#           backfill run into it. "restarts" counts the faults and drops.
#   alert-drops  a Hikvision NVR simulator (16 channels; it closes its alert stream every
#           20 s, as NVRs do) has its alert stream closed KILLS more times at random moments
#           (SIGUSR1: `fault drop` at once). Alerts pushed while no stream is open reach
#           nobody and are not counted as delivered. The stored camera events must be exactly
#           the state changes the delivered alerts make (ON at the first `active`, OFF at
#           `inactive` or after the 5 s hold-off), in order per channel, each carrying the
#           alert that caused it; all published.
#   clock   the daemon runs under libfaketime (FAKETIME_TIMESTAMP_FILE, re-read at every
#           call; monotonic time not faked); its wall clock steps +1 h, back, -1 h, back, …
#           KILLS times during the bursts. The Net2 simulator's clock is 2 h slow throughout
#           (NET2_SKEW, seconds). Counts the events stored under a clock off by > 30 min.
#   power-loss  KILLS times during the bursts the daemon is frozen (SIGSTOP) and its database
#           (d.db, -wal, -shm) copied, then let go: the files as they are at one instant.
#           Each copy must pass `PRAGMA integrity_check`, and a daemon started from it (no
#           MQTT) must end, against the still-running simulator, with every produced event
#           stored once.
#   disk-full  the database on its own tmpfs (DISK_MB, 64), filled with a ballast file
#           FILLS times (3) during the bursts for HOLD seconds (8), then freed; after the
#           bursts a clean broker restart (what was acknowledged while the outbox could not
#           record it must not go out again). The line also gives the daemon's log lines
#           while full (per second, at most).
#   read-only  the database's tmpfs turns read-only under the daemon FILLS times for HOLD
#           seconds, then writable again: every write, sync, truncate and open for writing of
#           a file there fails with EROFS (LD_PRELOAD scripts/chaos_readonly.c, built with
#           cc; Linux refuses `mount -o remount,ro` with EBUSY while SQLite holds the file
#           open for writing, and an ext4 that remounted itself read-only after an error
#           cannot be made writable again without unmounting it). Then a clean broker
#           restart, as for disk-full.
#
# Usage: scripts/chaos.sh [SCENARIO…]   (default: broker daemon)
#   EVENTS=10000 RATE=200 KILLS=10 BIN=target/debug/gatehouse KEEP=1 (keep the temp dir)
#   SETTLE=600: at most this many seconds for everything to be stored and published.
# Prints one line per scenario and exits non-zero if any target is missed. Needs mosquitto,
# mosquitto_sub (mosquitto-clients), sqlite3, python3, curl; clock: libfaketime
# (apt-get install faketime); disk-full, read-only: root (mount); read-only: cc.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/debug/gatehouse}
events=${EVENTS:-10000}
rate=${RATE:-200}
kills=${KILLS:-10}
settle=${SETTLE:-600}
fills=${FILLS:-3}
hold=${HOLD:-8}
[ -x "$bin" ] || { echo "no $bin: build it first (cargo build)" >&2; exit 2; }
for t in mosquitto mosquitto_sub sqlite3 python3 curl; do
  command -v "$t" >/dev/null || { echo "$t is not installed" >&2; exit 2; }
done
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(broker daemon)
for s in "${scenarios[@]}"; do
  case $s in
    broker | daemon | net2-errors | alert-drops | clock | power-loss | disk-full | read-only) ;;
    *)
      echo "unknown scenario: $s (broker, daemon, net2-errors, alert-drops, clock, power-loss, disk-full, read-only)" >&2
      exit 2
      ;;
  esac
done
faketime_lib=${FAKETIME_LIB:-}
if [[ " ${scenarios[*]} " == *" clock "* ]] && [ -z "$faketime_lib" ]; then
  for f in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1 /usr/local/lib/faketime/libfaketime.so.1; do
    [ -e "$f" ] && faketime_lib=$f && break
  done
  [ -n "$faketime_lib" ] || { echo "libfaketime not found (apt-get install faketime, or FAKETIME_LIB=…)" >&2; exit 2; }
fi

top=$(mktemp -d)
bgpids=()
mounts=()
stop_all() { # every process started here (and a recorder's mosquitto_sub), quietly
  local p
  exec 4>&2 2>/dev/null # bash reports each killed job on stderr as it reaps it
  for p in "${bgpids[@]}"; do
    pkill -KILL -P "$p" || true
    kill -KILL "$p" || true
  done
  wait || true
  exec 2>&4 4>&-
  bgpids=()
}
cleanup() {
  stop_all
  local m
  for m in "${mounts[@]}"; do
    [ -z "${KEEP:-}" ] || cp -a "$m" "$m.kept" # the database, which goes with the tmpfs
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  if [ -n "${KEEP:-}" ]; then echo "kept $top"; else rm -rf "$top"; fi
}
trap cleanup EXIT

# shellcheck source=scripts/harness.sh
. scripts/harness.sh
rand_ms() { echo $((RANDOM % ($2 - $1 + 1) + $1)); } # $1..$2 milliseconds
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
sq() { sqlite3 -cmd '.timeout 5000' "$db" "$1" 2>/dev/null || echo '?'; }
now_ms() { date +%s%3N; }

start_broker() {
  mosquitto -c "$dir/mosquitto.conf" >>"$dir/mosquitto.log" 2>&1 &
  broker=$!
  bgpids+=("$broker")
  wait_port "$port"
}
start_daemon() {
  env "${denv[@]}" "$bin" run -c "$dir/d.yaml" 2>>"$dir/d.log" &
  daemon=$!
  bgpids+=("$daemon")
}
# The daemon's log lines between two line counts, as "N lines, M distinct messages: …".
log_between() { # $1 first line, $2 last line
  sed -n "$(($1 + 1)),$2p" "$dir/d.log" | sed -e 's/\x1b\[[0-9;]*m//g' |
    sed -E -n 's/^[^ ]+ +(ERROR|WARN|INFO) +([^ ]+: )*/\1 /p' | sed -E 's/ [a-z_]+=.*$//' |
    sort | uniq -c | sort -rn | head -5 | sed 's/^ *//' | paste -sd ';' -
}

run_scenario() { # $1 scenario
  local scenario=$1 t0 restarts=0 live_kills=0 src=net2 simpid
  dir="$top/$scenario"
  mkdir -p "$dir/mosq"
  t0=$(date +%s)
  db="$dir/d.db"
  denv=()
  [ "$scenario" = alert-drops ] && src=hik

  case $scenario in
    disk-full | read-only)
      mkdir -p "$dir/disk"
      if ! mount -t tmpfs -o "size=${DISK_MB:-64}m" chaos "$dir/disk" 2>"$dir/mount.err"; then
        echo "chaos $scenario: SKIPPED: cannot mount a tmpfs: $(cat "$dir/mount.err")"
        return 0
      fi
      mounts+=("$dir/disk")
      db="$dir/disk/d.db" ;;
  esac
  case $scenario in
    clock)
      echo "+0" >"$dir/clock"
      denv=(LD_PRELOAD="$faketime_lib" FAKETIME_TIMESTAMP_FILE="$dir/clock" FAKETIME_NO_CACHE=1
        FAKETIME_DONT_FAKE_MONOTONIC=1) ;;
    read-only)
      command -v cc >/dev/null || { echo "chaos read-only: SKIPPED: no C compiler (cc)"; return 0; }
      cc -shared -fPIC -O2 -o "$dir/chaos_readonly.so" scripts/chaos_readonly.c -ldl
      denv=(LD_PRELOAD="$dir/chaos_readonly.so" CHAOS_RO_DIR="$dir/disk" CHAOS_RO_FLAG="$dir/ro.flag") ;;
  esac

  # The simulator: no generator of its own, bursts from a fifo.
  mkfifo "$dir/src.in"
  if [ "$src" = net2 ]; then
    local senv=()
    [ "$scenario" = clock ] && senv=(LD_PRELOAD="$faketime_lib" FAKETIME="${NET2_SKEW:--7200}"
      FAKETIME_DONT_FAKE_MONOTONIC=1)
    env "${senv[@]}" "$bin" sim net2 --every 0 <"$dir/src.in" >"$dir/net2.out" 2>"$dir/net2.log" &
    simpid=$!
    bgpids+=("$simpid")
    exec 3>"$dir/src.in"
    wait_for "$dir/net2.out" client_id
  else
    "$bin" sim hikvision --nvr --channels 16 --no-rtsp <"$dir/src.in" >"$dir/hik.out" 2>"$dir/hik.log" &
    simpid=$!
    bgpids+=("$simpid")
    exec 3>"$dir/src.in"
    wait_for "$dir/hik.out" '^rtsp:'
  fi

  port=$(free_port)
  cat >"$dir/mosquitto.conf" <<EOC
listener $port 127.0.0.1
allow_anonymous true
# Run as root, Mosquitto drops to user mosquitto, which cannot write the temp dir.
user $(id -un)
persistence true
persistence_location $dir/mosq/
autosave_interval 1
max_queued_messages 0
log_type error
log_type warning
EOC
  start_broker

  # The recorder: a persistent QoS 1 session, restarted whenever the broker goes away.
  (
    while :; do
      mosquitto_sub -h 127.0.0.1 -p "$port" -c -i chaos-recorder -q 1 -v \
        -t 'chaos/door/+/event' -t 'chaos/+/event' -t 'chaos/camera/+/event' \
        -t 'chaos/camera/+/+/alarm/#' >>"$dir/mqtt.rec" 2>>"$dir/recorder.log" || true
      sleep 0.2
    done
  ) &
  bgpids+=($!)
  sleep 1

  local source_cfg
  if [ "$src" = net2 ]; then
    source_cfg="  net2:
    url: $(field "$dir/net2.out" url)
    username: Gate House
    password: sim-password
    client_id: $(field "$dir/net2.out" client_id)
    live: true
    safety_poll_interval: 10s"
  else
    source_cfg="  hikvision:
    - { id: nvr, url: \"$(field "$dir/hik.out" url)\", username: admin, password: sim-hik-pass }"
  fi
  cat >"$dir/d.yaml" <<EOC
version: 1
log: { level: info }
storage: { path: $db }
sources:
$source_cfg
mqtt: { host: 127.0.0.1, port: $port, client_id: chaos-daemon, base_topic: chaos }
web: { bind: "127.0.0.1:0", jwt_secret: chaos-secret-0123456789abcdef }
EOC
  start_daemon
  sleep 2

  # The events, in bursts of 500, while the chaos runs. net2-errors: every burst but the
  # first and the last runs under one of the simulator's faults, in turn (the simulator reads
  # its stdin in order, so a fault lasts one burst: 2.5 s at 200/s).
  # shellcheck disable=SC2034  # i and faults are read in the subshell
  local per=500 left=$events faults=("500" "502" "401" "429+401" "drop") i=0
  (
    while [ "$left" -gt 0 ]; do
      n=$((left < per ? left : per))
      left=$((left - n))
      f=
      if [ "$scenario" = net2-errors ] && [ "$i" -gt 0 ] && [ "$left" -gt 0 ]; then
        f=${faults[$((i % ${#faults[@]}))]}
      fi
      # Each fault with a SignalR drop: the reconnect and its REST backfill meet the fault
      # (while live, REST is otherwise only the safety poll).
      case $f in
        500 | 502) echo "fault $f on"; echo "fault drop" ;;
        401 | drop) echo "fault $f"; [ "$f" = drop ] || echo "fault drop" ;;
        429+401) echo "fault 429 on"; echo "fault 401"; echo "fault drop" ;;
      esac
      echo "burst $n $rate"
      case $f in 500 | 502 | 429+401) echo "fault ${f%+*} off" ;; esac
      i=$((i + 1))
    done
  ) >&3 &
  local n_chaos=$kills
  case $scenario in net2-errors) n_chaos=0 ;; disk-full | read-only) n_chaos=$fills ;; esac
  local kill_every=$((events * 1000 / rate / (n_chaos + 1))) k
  local offsets=(+3600 +0 -3600 +0) full_lines=0 full_ms=0 worst_rate=0 full_log=
  for k in $(seq "$n_chaos"); do
    case $scenario in
      disk-full | read-only) sleep_ms "$(rand_ms $((kill_every / 4)) $((kill_every * 3 / 4)))" ;;
      *) sleep_ms "$(rand_ms $((kill_every / 2)) $((kill_every * 3 / 2)))" ;;
    esac
    case $scenario in
      broker)
        # Every kill hits a live connection: the daemon's reconnect backoff grows while
        # connections last under 30 s, and a broker killed while the daemon waits tests only
        # the recorder. Up to 60 s for the daemon's k-th connect, then 0.5-3 s of traffic.
        for _ in $(seq 600); do
          [ "$(grep -c 'MQTT connected' "$dir/d.log")" -ge "$k" ] && break
          sleep 0.1
        done
        [ "$(grep -c 'MQTT connected' "$dir/d.log")" -ge "$k" ] && live_kills=$((live_kills + 1))
        sleep_ms "$(rand_ms 500 3000)"
        kill -KILL "$broker"; wait "$broker" 2>/dev/null || true
        sleep_ms "$(rand_ms 200 2000)"
        start_broker ;;
      daemon)
        kill -KILL "$daemon"; wait "$daemon" 2>/dev/null || true
        sleep_ms "$(rand_ms 200 2000)"
        start_daemon ;;
      alert-drops)
        kill -USR1 "$simpid" ;;
      clock)
        echo "${offsets[$(((k - 1) % 4))]}" >"$dir/clock" ;;
      power-loss)
        # The files as they are at one instant (a copy of a running database is torn:
        # a checkpoint between copying d.db and d.db-wal makes a state no crash can).
        mkdir -p "$dir/copy$k"
        kill -STOP "$daemon"
        for f in d.db d.db-wal d.db-shm; do
          [ -e "$dir/$f" ] && cp "$dir/$f" "$dir/copy$k/"
        done
        kill -CONT "$daemon" ;;
      disk-full | read-only)
        local l0 l1 m0 m1
        l0=$(wc -l <"$dir/d.log")
        m0=$(now_ms)
        if [ "$scenario" = disk-full ]; then
          dd if=/dev/zero of="$dir/disk/ballast" bs=1M 2>/dev/null || true
          dd if=/dev/zero of="$dir/disk/ballast2" bs=4k 2>/dev/null || true
        else
          touch "$dir/ro.flag"
        fi
        sleep "$hold"
        # Space again, for anything freed meanwhile too.
        if [ "$scenario" = disk-full ]; then
          dd if=/dev/zero of="$dir/disk/ballast3" bs=4k 2>/dev/null || true
          rm -f "$dir/disk/ballast" "$dir/disk/ballast2" "$dir/disk/ballast3"
        else
          rm -f "$dir/ro.flag"
        fi
        m1=$(now_ms)
        l1=$(wc -l <"$dir/d.log")
        full_lines=$((full_lines + l1 - l0))
        full_ms=$((full_ms + m1 - m0))
        local r=$(((l1 - l0) * 10000 / (m1 - m0)))
        [ "$r" -gt "$worst_rate" ] && worst_rate=$r
        full_log="$full_log [$k] $(log_between "$l0" "$l1")" ;;
    esac
    restarts=$((restarts + 1))
  done
  # Every burst out (the simulator prints `burst done N` per burst).
  local out=$dir/net2.out
  [ "$src" = hik ] && out=$dir/hik.out
  local bursts=$(((events + per - 1) / per))
  until [ "$(grep -c 'burst done' "$out")" -ge "$bursts" ]; do sleep 1; done
  local produced
  produced=$(awk '/burst done/ {n += $3} END {print n}' "$out")
  [ "$scenario" = net2-errors ] && restarts=$(awk '/^fault done/ && !/ off$/ {n++} END {print n + 0}' "$out")
  [ "$scenario" = clock ] && echo "+0" >"$dir/clock" # NTP puts it right again
  if [ "$scenario" = disk-full ] || [ "$scenario" = read-only ]; then
    # A clean broker restart once the database is writable again: the next connection must
    # not send again what the broker acknowledged while the outbox could not record it.
    sleep 3
    kill -TERM "$broker"; wait "$broker" 2>/dev/null || true
    start_broker
  fi
  # alert-drops: the random drops, the NVR's own periodic closes, and the
  # streams the daemon opened in all (the simulator logs each).
  if [ "$scenario" = alert-drops ]; then
    restarts="$(grep -c 'alert stream dropped' "$dir/hik.log" || true) random drops + $(grep -c 'periodic close' "$dir/hik.log" || true) periodic closes, $(grep -c 'alert stream opened' "$dir/hik.log" || true) streams"
  fi

  # Settle: every produced Net2 id stored (cameras: the stored count steady), the outbox
  # empty and the recorder quiet for 10 s.
  local deadline=$(($(date +%s) + settle)) stored last=-1 quiet=0 last_stored=-1
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if [ "$src" = net2 ]; then
      stored=$(sq 'select count(distinct source_id) from events where source_id is not null')
    else
      stored=$(sq "select count(*) from events where source like 'camera/%'")
    fi
    local outbox recs
    outbox=$(sq 'select count(*) from mqtt_outbox')
    recs=$(wc -l <"$dir/mqtt.rec")
    if { [ "$stored" = "$produced" ] || { [ "$src" = hik ] && [ "$stored" = "$last_stored" ]; }; } &&
      [ "$outbox" = 0 ] && [ "$recs" = "$last" ]; then
      quiet=$((quiet + 1))
      [ "$quiet" -ge 5 ] && break
    else
      quiet=0
    fi
    last=$recs
    last_stored=$stored
    sleep 2
  done

  local rc=0
  [ "$scenario" = broker ] && echo "chaos broker: $live_kills of $restarts kills hit a connected daemon"
  if [ "$scenario" = disk-full ] || [ "$scenario" = read-only ]; then
    echo "chaos $scenario: $restarts times for ${hold} s: the daemon logged $full_lines lines in" \
      "$((full_ms / 1000)) s (at most $((worst_rate / 10)).$((worst_rate % 10)) lines/s):$full_log"
  fi
  if [ "$src" = hik ]; then
    python3 scripts/chaos_compare.py "$dir" "$db" camera "$scenario" "$restarts" \
      "$(($(date +%s) - t0))" || rc=$?
  else
    python3 scripts/chaos_compare.py "$dir" "$db" net2 "$scenario" "$restarts" \
      "$(($(date +%s) - t0))" "$(field "$dir/net2.out" url)" "$(field "$dir/net2.out" client_id)" || rc=$?
  fi

  if [ "$scenario" = power-loss ]; then
    # Each copy: intact, and a daemon started from it (against the still-running simulator)
    # ends with every produced event stored once.
    local c ok=0 whole=0 bad=0 cport
    for k in $(seq "$restarts"); do
      c=$dir/copy$k
      if [ "$(sqlite3 "$c/d.db" 'PRAGMA integrity_check' 2>&1)" = ok ]; then
        ok=$((ok + 1))
      else
        echo "  copy $k: integrity_check: $(sqlite3 "$c/d.db" 'PRAGMA integrity_check' 2>&1 | head -3)" >&2
        bad=$((bad + 1))
        continue
      fi
      local before
      before=$(sqlite3 "$c/d.db" "select count(*) from events where source = 'net2'")
      sed -e "s|path: $db|path: $c/d.db|" -e '/^mqtt:/d' "$dir/d.yaml" >"$c/d.yaml"
      "$bin" run -c "$c/d.yaml" 2>>"$c/d.log" &
      local cd=$!
      bgpids+=("$cd")
      local cdead=$(($(date +%s) + 120)) cstored=0
      while [ "$(date +%s)" -lt "$cdead" ]; do
        cstored=$(sqlite3 -cmd '.timeout 5000' "file:$c/d.db?mode=ro" \
          'select count(distinct source_id) from events where source_id is not null' 2>/dev/null || echo 0)
        [ "$cstored" = "$produced" ] && break
        kill -0 "$cd" 2>/dev/null || break
        sleep 1
      done
      sleep 12 # the safety poll pairs the last live copies
      kill -TERM "$cd" 2>/dev/null || true
      wait "$cd" 2>/dev/null || true
      if python3 scripts/chaos_compare.py "$c" "$c/d.db" store "power-loss copy $k (it held $before Net2 rows)" 0 \
        "$(($(date +%s) - t0))" "$(field "$dir/net2.out" url)" "$(field "$dir/net2.out" client_id)"; then
        whole=$((whole + 1))
      else
        rc=1
      fi
    done
    echo "chaos power-loss: $restarts copies: integrity ok $ok, failed $bad; daemons from them complete $whole"
    [ "$bad" = 0 ] || rc=1
  fi
  exec 3>&-
  return $rc
}

status=0
for s in "${scenarios[@]}"; do
  run_scenario "$s" || status=1
  stop_all # this scenario's processes go before the next one starts
done
exit $status
