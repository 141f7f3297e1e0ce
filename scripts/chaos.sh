#!/usr/bin/env bash
# Chaos, scripted and repeatable (issue 19). Each scenario runs the real daemon
# (`gatehouse run`), the Net2 simulator (`gatehouse sim net2`, driven by `burst N RATE` lines
# on stdin), a real Mosquitto with persistence and a QoS 1 recorder with a persistent session
# (`mosquitto_sub -c -q 1`), breaks something while EVENTS Net2 events are produced, lets
# everything settle, then compares exactly:
#   produced  the simulator's own record (its REST `/api/v1/events`, every id);
#   stored    the daemon's SQLite `events` rows for Net2 (by Net2 id; live copies carry it once
#             paired with their REST copy);
#   published the distinct event ids the recorder received on the event topics.
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
#
# Usage: scripts/chaos.sh [SCENARIO…]   (default: broker daemon)
#   EVENTS=10000 RATE=200 KILLS=10 BIN=target/debug/gatehouse KEEP=1 (keep the temp dir)
#   SETTLE=600: at most this many seconds for everything to be stored and published.
# Prints one line per scenario and exits non-zero if any target is missed. Needs mosquitto,
# mosquitto_sub (mosquitto-clients), sqlite3, python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/debug/gatehouse}
events=${EVENTS:-10000}
rate=${RATE:-200}
kills=${KILLS:-10}
settle=${SETTLE:-600}
[ -x "$bin" ] || { echo "no $bin: build it first (cargo build)" >&2; exit 2; }
for t in mosquitto mosquitto_sub sqlite3 python3 curl; do
  command -v "$t" >/dev/null || { echo "$t is not installed" >&2; exit 2; }
done
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(broker daemon)
for s in "${scenarios[@]}"; do
  case $s in
    broker | daemon | net2-errors) ;;
    *) echo "unknown scenario: $s (broker, daemon, net2-errors)" >&2; exit 2 ;;
  esac
done

top=$(mktemp -d)
bgpids=()
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
  if [ -n "${KEEP:-}" ]; then echo "kept $top"; else rm -rf "$top"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # $1 file, $2 pattern
  for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for $2 in $1" >&2; cat "$1" >&2; exit 1
}
wait_port() { # $1 port
  for _ in $(seq 100); do (exec 5<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; exit 1
}
field() { sed -n "s/^$2: //p" "$1"; }
rand_ms() { echo $((RANDOM % ($2 - $1 + 1) + $1)); } # $1..$2 milliseconds
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
sq() { sqlite3 -cmd '.timeout 5000' "$dir/d.db" "$1" 2>/dev/null || echo '?'; }

start_broker() {
  mosquitto -c "$dir/mosquitto.conf" >>"$dir/mosquitto.log" 2>&1 &
  broker=$!
  bgpids+=("$broker")
  wait_port "$port"
}
start_daemon() {
  "$bin" run -c "$dir/d.yaml" 2>>"$dir/d.log" &
  daemon=$!
  bgpids+=("$daemon")
}

run_scenario() { # $1 scenario
  local scenario=$1 t0 restarts=0 live_kills=0
  dir="$top/$scenario"
  mkdir -p "$dir/mosq"
  t0=$(date +%s)

  # The Net2 simulator: no generator of its own, bursts from a fifo.
  mkfifo "$dir/net2.in"
  "$bin" sim net2 --every 0 <"$dir/net2.in" >"$dir/net2.out" 2>"$dir/net2.log" &
  bgpids+=($!)
  exec 3>"$dir/net2.in"
  wait_for "$dir/net2.out" client_id

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
        -t 'chaos/door/+/event' -t 'chaos/+/event' >>"$dir/mqtt.rec" 2>>"$dir/recorder.log" || true
      sleep 0.2
    done
  ) &
  bgpids+=($!)
  sleep 1

  cat >"$dir/d.yaml" <<EOC
version: 1
log: { level: info }
storage: { path: $dir/d.db }
sources:
  net2:
    url: $(field "$dir/net2.out" url)
    username: Gate House
    password: sim-password
    client_id: $(field "$dir/net2.out" client_id)
    live: true
    safety_poll_interval: 10s
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
  local kill_every=$((events * 1000 / rate / (kills + 1))) k
  [ "$scenario" = net2-errors ] && kill_every=0
  for k in $(seq "$kills"); do
    [ "$scenario" = net2-errors ] && break
    sleep_ms "$(rand_ms $((kill_every / 2)) $((kill_every * 3 / 2)))"
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
    esac
    restarts=$((restarts + 1))
  done
  # Every burst out (the simulator prints `burst done N` per burst).
  local bursts=$(((events + per - 1) / per))
  until [ "$(grep -c 'burst done' "$dir/net2.out")" -ge "$bursts" ]; do sleep 1; done
  local produced
  produced=$(awk '/burst done/ {n += $3} END {print n}' "$dir/net2.out")
  [ "$scenario" = net2-errors ] && restarts=$(awk '/^fault done/ && !/ off$/ {n++} END {print n + 0}' "$dir/net2.out")

  # Settle: every produced Net2 id stored, the outbox empty and the recorder quiet for 10 s.
  local deadline=$(($(date +%s) + settle)) stored last=-1 quiet=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    stored=$(sq 'select count(distinct source_id) from events where source_id is not null')
    local outbox recs
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

  local rc=0
  [ "$scenario" = broker ] && echo "chaos broker: $live_kills of $restarts kills hit a connected daemon"
  python3 - "$dir" "$(field "$dir/net2.out" url)" "$(field "$dir/net2.out" client_id)" \
    "$scenario" "$restarts" "$(($(date +%s) - t0))" <<'EOP' || rc=$?
import json, sqlite3, sys, urllib.parse, urllib.request
d, url, client_id, scenario, restarts, secs = sys.argv[1:]
url = url.rstrip("/")
# Straight to the simulator, whatever proxy the environment names.
urlopen = urllib.request.build_opener(urllib.request.ProxyHandler({})).open
body = urllib.parse.urlencode({"grant_type": "password", "username": "Gate House",
                               "password": "sim-password", "client_id": client_id}).encode()
tok = json.load(urlopen(urllib.request.Request(
    url + "/api/v1/authorization/tokens", body,
    {"Content-Type": "application/x-www-form-urlencoded"})))["access_token"]
sim, last = [], 0
while True:
    q = urllib.parse.urlencode({"where": f"id > {last}", "orderBy": "id asc", "rowCount": 1000},
                         quote_via=urllib.parse.quote)
    raw = urlopen(urllib.request.Request(
        f"{url}/api/v1/events?{q}", headers={"Authorization": "Bearer " + tok})).read()
    # Like Net2, an empty body when nothing matches.
    page = json.loads(raw) if raw.strip() else []
    if not page:
        break
    sim += [e["id"] for e in page]
    last = page[-1]["id"]
produced = set(sim)

db = sqlite3.connect(f"file:{d}/d.db?mode=ro", uri=True)
rows = db.execute("select id, source_id from events where source = 'net2'").fetchall()
derived = {i for i, s in rows if i.startswith("net2:derived:")}
by_net2 = {}
for i, s in rows:
    if s is not None:
        by_net2.setdefault(s, []).append(i)
unpaired = [i for i, s in rows if s is None and i not in derived]
store_missing = sorted(produced - set(by_net2))
store_dups = sum(len(v) - 1 for v in by_net2.values()) + len(unpaired)
store_extra = sorted(set(by_net2) - produced)
want = {i for v in by_net2.values() for i in v} | set(unpaired)
commands = db.execute("select count(*) from audit").fetchone()[0]

# A copy byte for byte the same as one received before is the broker's own QoS 1 redelivery
# to the recorder (its session restored from a persistence file older than the recorder's
# PUBACK); gatehouse's own copies carry "redelivered": true. Any other copy breaks the rule.
seen, texts, mqtt_dups, broker_copies, unflagged = set(), set(), 0, 0, 0
with open(f"{d}/mqtt.rec", errors="replace") as f:
    for line in f:
        topic, _, payload = line.rstrip("\n").partition(" ")
        try:
            m = json.loads(payload)
        except ValueError:
            print(f"unreadable MQTT message on {topic}: {payload[:200]}", file=sys.stderr)
            unflagged += 1
            continue
        if m.get("id") in seen:
            mqtt_dups += 1
            if payload in texts:
                broker_copies += 1
            elif not m.get("redelivered"):
                unflagged += 1
        seen.add(m.get("id"))
        texts.add(payload)
mqtt_missing = sorted(want - seen)
mqtt_extra = sorted(seen - want - derived)
missing = len(store_missing) + len(mqtt_missing)
ok = not (missing or store_dups or store_extra or unflagged or mqtt_extra or commands)
print(f"chaos {scenario}: produced {len(produced)} stored {len(by_net2)} "
      f"published {len(seen & want)} missing {missing} (store {len(store_missing)}, "
      f"mqtt {len(mqtt_missing)}) duplicates store {store_dups} mqtt {mqtt_dups} "
      f"(broker copies {broker_copies}, unflagged {unflagged}) extra {len(store_extra) + len(mqtt_extra)} "
      f"commands {commands} restarts {restarts} time {secs}s {'OK' if ok else 'FAIL'}")
for name, v in [("missing from the store (Net2 ids)", store_missing),
                ("missing from MQTT (event ids)", mqtt_missing),
                ("unpaired live rows in the store", unpaired),
                ("stored but never produced", store_extra),
                ("published but not stored", mqtt_extra)]:
    if v:
        print(f"  {name}: {len(v)}: {v[:20]}", file=sys.stderr)
sys.exit(0 if ok else 1)
EOP
  exec 3>&-
  return $rc
}

status=0
for s in "${scenarios[@]}"; do
  run_scenario "$s" || status=1
  stop_all # this scenario's processes go before the next one starts
done
exit $status
