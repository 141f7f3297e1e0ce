import json, re, sqlite3, sys, urllib.parse, urllib.request
from collections import defaultdict
# argv: dir db mode scenario restarts secs [url client_id]
#   mode net2: Net2 ids from the simulator's REST record against the store and MQTT;
#   mode store: the same against the store only (a daemon started from a copy, no MQTT);
#   mode camera: the Hikvision simulator's delivery record (hik.out) against the camera
#   events stored, the event topic and the alarm state topics.
d, db_path, mode, scenario, restarts, secs = sys.argv[1:7]
HOLDOFF_MS = 5000  # sources.hikvision[].holdoff, the default

db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
commands = db.execute("select count(*) from audit").fetchone()[0]

def mqtt_messages():
    """(topic, payload) as the recorder received them, in order, read as they are used (a
    soak's recording is a million lines)."""
    try:
        f = open(f"{d}/mqtt.rec", errors="replace")
    except FileNotFoundError:
        return
    with f:
        for l in f:
            yield tuple(l.rstrip("\n").partition(" ")[::2])

def mqtt_events(want_topic):
    """Event messages: the distinct ids seen, and copies checked against the delivery rule.
    A copy byte for byte the same as one received before is the broker's own QoS 1
    redelivery to the recorder (its session restored from a persistence file older than
    the recorder's PUBACK); gatehouse's own copies carry "redelivered": true. Any other copy
    breaks the rule."""
    seen, texts, dups, broker_copies, unflagged = set(), set(), 0, 0, 0
    for topic, payload in mqtt_messages():
        if not topic.endswith("/event") or not want_topic(topic):
            continue
        try:
            m = json.loads(payload)
        except ValueError:
            print(f"unreadable MQTT message on {topic}: {payload[:200]}", file=sys.stderr)
            unflagged += 1
            continue
        if m.get("id") in seen:
            dups += 1
            if hash(payload) in texts:
                broker_copies += 1
            elif not m.get("redelivered"):
                unflagged += 1
        seen.add(m.get("id"))
        texts.add(hash(payload))  # hashes: a soak's million texts would take a gigabyte
    return seen, dups, broker_copies, unflagged

def report(ok, line, lists):
    print(f"{line} commands {commands} restarts {restarts} time {secs}s {'OK' if ok else 'FAIL'}")
    for name, v in lists:
        if v:
            print(f"  {name}: {len(v)}: {v[:20]}", file=sys.stderr)
    sys.exit(0 if ok else 1)

if mode in ("net2", "store"):
    url, client_id = sys.argv[7:9]
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
    # The daemon's wall clock against the simulator's (clock scenario): events by the hours
    # between when the daemon received them and the Net2 time they carry.
    hours = db.execute(
        "select cast(round((strftime('%s', received) - time_ms / 1000) / 3600.0) as int) h, "
        "count(*) from events where source = 'net2' group by h order by h").fetchall()
    extra_line = (" received - Net2 time: " + ", ".join(f"{h:+d} h {n}" for h, n in hours)
                  if scenario == "clock" else "")
    if mode == "store":
        missing = len(store_missing)
        ok = not (missing or store_dups or store_extra or commands)
        report(ok, f"chaos {scenario}: produced {len(produced)} stored {len(by_net2)} "
               f"missing {missing} duplicates store {store_dups} extra {len(store_extra)}",
               [("missing from the store (Net2 ids)", store_missing),
                ("unpaired live rows in the store", unpaired),
                ("stored but never produced", store_extra)])
    seen, mqtt_dups, broker_copies, unflagged = mqtt_events(lambda t: "/camera/" not in t)
    mqtt_missing = sorted(want - seen)
    mqtt_extra = sorted(seen - want - derived)
    missing = len(store_missing) + len(mqtt_missing)
    ok = not (missing or store_dups or store_extra or unflagged or mqtt_extra or commands)
    report(ok, f"chaos {scenario}: produced {len(produced)} stored {len(by_net2)} "
           f"published {len(seen & want)} missing {missing} (store {len(store_missing)}, "
           f"mqtt {len(mqtt_missing)}) duplicates store {store_dups} mqtt {mqtt_dups} "
           f"(broker copies {broker_copies}, unflagged {unflagged}) extra "
           f"{len(store_extra) + len(mqtt_extra)}{extra_line}",
           [("missing from the store (Net2 ids)", store_missing),
            ("missing from MQTT (event ids)", mqtt_missing),
            ("unpaired live rows in the store", unpaired),
            ("stored but never produced", store_extra),
            ("published but not stored", mqtt_extra)])

# mode camera. What the design promises (src/sources/hikvision/state.rs): an alarm per
# (channel, event type) is ON at the first `active` and OFF at `inactive` or after the
# hold-off since the last `active`; only changes are stored (one event each, the alert that
# caused it kept raw; a hold-off's OFF has no alert) and published (the event topic, and
# the retained ON / OFF on the alarm topic: its newest state). So the rule compared by:
# replay the alerts the simulator delivered, in order, through that state machine; the
# changes it yields, each with the number of the alert that caused it, must be exactly the
# stored camera events, channel by channel and in order; every stored one on the event topic
# (copies only as the delivery rule allows), and each alarm topic left at the last change.
alerts, delivered = {}, {}
with open(f"{d}/hik.out") as f:
    for line in f:
        w = line.split()
        if w[:1] == ["alert"]:
            alerts[int(w[1])] = (int(w[2]), w[3])
        elif w[:1] == ["delivered"]:
            delivered.setdefault(int(w[1]), int(w[3]))
order = sorted(s for s in delivered if s in alerts)
expected = defaultdict(list)  # channel -> [(on, alert number or None for a hold-off)]
last_active, near_holdoff = {}, 0
for s in order:
    ch, state = alerts[s]
    t = delivered[s]
    if last_active.get(ch) is not None:
        gap = t - last_active[ch]
        if abs(gap - HOLDOFF_MS) < 1000:
            near_holdoff += 1  # receive times could order it either way
        if gap > HOLDOFF_MS:
            expected[ch].append((False, None))
            last_active[ch] = None
    if state == "active":
        if last_active.get(ch) is None:
            expected[ch].append((True, s))
        last_active[ch] = t
    elif last_active.get(ch) is not None:
        expected[ch].append((False, s))
        last_active[ch] = None
for ch, t in last_active.items():
    if t is not None:
        expected[ch].append((False, None))

stored = defaultdict(list)
ids, bad_rows = set(), []
for i, raw in db.execute("select id, raw from events where source like 'camera/%' order by seq"):
    m = re.match(r"camera/[^:]+:(\d*):([^:]*):[^:]*:(on|off|history)@", i)
    if not m or m.group(3) == "history" or m.group(2) != "vmd":
        bad_rows.append(i)
        continue
    n = re.search(r"<activePostCount>(\d+)<", raw)
    stored[int(m.group(1))].append((m.group(3) == "on", int(n.group(1)) if n else None))
    ids.add(i)
exp_n = sum(len(v) for v in expected.values())
st_n = sum(len(v) for v in stored.values())
mismatch = []
for ch in sorted(set(expected) | set(stored)):
    if expected[ch] != stored[ch]:
        e, s_ = expected[ch], stored[ch]
        k = next((k for k in range(min(len(e), len(s_))) if e[k] != s_[k]), min(len(e), len(s_)))
        mismatch.append(f"ch{ch} at change {k}: expected {e[k:k + 3]} stored {s_[k:k + 3]}")
# Multiset view for the figures.
exp_all = defaultdict(int)
for ch, v in expected.items():
    for x in v:
        exp_all[(ch,) + x] += 1
st_all = defaultdict(int)
for ch, v in stored.items():
    for x in v:
        st_all[(ch,) + x] += 1
store_missing = sum(max(0, n - st_all[k]) for k, n in exp_all.items())
store_extra = sum(max(0, n - exp_all[k]) for k, n in st_all.items()) + len(bad_rows)
seen, mqtt_dups, broker_copies, unflagged = mqtt_events(lambda t: "/camera/" in t)
mqtt_missing = sorted(ids - seen)
mqtt_extra = sorted(seen - ids)
# Alarm topics are retained states: the sink publishes each topic's newest payload of what
# it has queued (a burst of changes is one publish, `coalesce` in src/sinks/mqtt/mod.rs), so
# they promise the current state, not every change (that is the event topic). Checked: each
# channel's last ON / OFF is its last stored change; the messages are counted.
alarm, alarm_msgs = {}, 0
for topic, payload in mqtt_messages():
    m = re.match(r".*/camera/[^/]+/ch(\d+)/alarm/vmd$", topic)
    if m:
        alarm[int(m.group(1))] = payload == "ON"
        alarm_msgs += 1
alarm_bad = [ch for ch in sorted(set(stored) | set(alarm))
             if stored[ch] and alarm.get(ch) != stored[ch][-1][0]]
missing = store_missing + len(mqtt_missing)
ok = not (missing or store_extra or mismatch or unflagged or mqtt_extra or alarm_bad or commands)
report(ok, f"chaos {scenario}: alerts produced {len(alerts)} delivered {len(order)} (not "
       f"delivered, no stream open {len(alerts) - len(order)}) state changes expected {exp_n} "
       f"stored {st_n} published {len(seen & ids)} missing {missing} (store {store_missing}, "
       f"mqtt {len(mqtt_missing)}) extra {store_extra + len(mqtt_extra)} out of order "
       f"{len(mismatch)} channels, mqtt duplicates {mqtt_dups} (broker copies {broker_copies}, "
       f"unflagged {unflagged}) alarm topics {alarm_msgs} messages, last state wrong on "
       f"{len(alarm_bad)} channels, gaps near "
       f"the hold-off {near_holdoff}",
       [("channels whose changes differ", mismatch),
        ("unexpected camera rows", bad_rows),
        ("missing from MQTT (event ids)", mqtt_missing),
        ("published but not stored", mqtt_extra),
        ("alarm topic differs (channels)", alarm_bad)])
