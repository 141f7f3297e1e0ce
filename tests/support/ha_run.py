#!/usr/bin/env python3
"""Run a real Home Assistant against an MQTT broker on loopback and report what it made of the
discovery configs there, as one JSON document on stdout.

Run with the Python of a venv that has homeassistant==2024.1.6 (scripts/test.sh makes one and
exports GATEHOUSE_HA_PYTHON):

    $GATEHOUSE_HA_PYTHON tests/support/ha_run.py --broker-port 1883 --work-dir /tmp/x
    $GATEHOUSE_HA_PYTHON tests/support/ha_run.py --requirements   # pins to install beside HA

It writes a minimal config directory (the MQTT config entry in .storage/, discovery on with
prefix `homeassistant`, the http server on a free loopback port, no default_config, no cloud,
no analytics, no recorder), starts `python -m homeassistant -c DIR --skip-pip`, and lets a small
custom integration written beside it (`gatehouse_probe`) watch from inside HA: once HA has
started and neither the registries nor any state have changed for `--quiet` seconds (or
`--limit` has passed), it dumps every state and stops HA cleanly, so that HA writes its entity
and device registries. The JSON printed:

    {"ha_version", "stopped_because": "quiet"|"limit", "timings": {...seconds...},
     "mqtt": {"loaded", "connected", "discovered": <configs HA took>},
     "entities": [{entity_id, unique_id, platform, original_name, name, has_entity_name,
                   disabled_by, device_id, device_class, original_device_class,
                   entity_category, friendly_name}],
     "devices": [{id, name, name_by_user, identifiers, via_device_id, manufacturer, model,
                  sw_version}],
     "states": {entity_id: {"state", "attributes"}},
     "log": [{level, logger, message}],       # WARNING+ mentioning mqtt or discovery
     "other_log": [{level, logger, message}], # every other WARNING+ (for diagnosis)
     "problems": [why this run is not to be trusted]}

Network: HA's http integration (a dependency of mqtt) binds 127.0.0.1 only; to learn its
source address HA `connect()`s a UDP socket to 8.8.8.8 and 224.0.0.251 (a route lookup: no
datagram is sent); the MQTT client connects to 127.0.0.1. Nothing else opens a socket.

Exit status 0 when HA ran and stopped cleanly, 2 otherwise (with the reason and the tail of
HA's log on stderr; the JSON is still printed when there is any).
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

# What the config below sets up: the MQTT integration and the entity platforms gatehouse
# announces (each pulls in its manifest's dependencies), and the probe.
DOMAINS = ["mqtt", "binary_sensor", "sensor", "lock", "button", "camera", "event"]

PROBE_MANIFEST = {
    "domain": "gatehouse_probe",
    "name": "gatehouse test probe",
    "version": "1.0.0",
    "documentation": "https://example.invalid",
    "codeowners": [],
    "dependencies": [],
    "iot_class": "local_push",
}

# Runs inside HA. Debounced on every registry change and state change: the dump is taken
# from HA's own state machine (MQTT entities keep their state in memory only). It does not
# depend on mqtt, so that HA still stops (and the failure is reported) when MQTT fails.
PROBE = r'''
"""Dump HA's states once discovery is quiet, then stop HA (gatehouse test harness)."""
import json
import time

from homeassistant.const import EVENT_HOMEASSISTANT_STARTED, EVENT_STATE_CHANGED
from homeassistant.core import callback
from homeassistant.helpers.event import async_call_later
from homeassistant.helpers.json import JSONEncoder

DOMAIN = "gatehouse_probe"


async def async_setup(hass, config):
    conf = config.get(DOMAIN) or {}
    quiet = float(conf.get("quiet", 3))
    limit = float(conf.get("limit", 60))
    out = conf["out"]
    t0 = time.monotonic()
    st = {"started": None, "last_change": t0, "changes": 0, "timer": None, "done": False}

    def finish(reason):
        if st["done"]:
            return
        st["done"] = True
        now = time.monotonic()
        data = hass.data.get("mqtt")
        client = getattr(data, "client", None)
        mqtt = {
            "loaded": "mqtt" in hass.config.components,
            "connected": bool(getattr(client, "connected", False)),
            "discovered": len(getattr(data, "discovery_already_discovered", ())),
        }
        states = {
            s.entity_id: {"state": s.state, "attributes": dict(s.attributes)}
            for s in hass.states.async_all()
        }
        doc = {
            "stopped_because": reason,
            "mqtt": mqtt,
            "changes": st["changes"],
            "setup_to_started_s": None if st["started"] is None else st["started"] - t0,
            "started_to_dump_s": None if st["started"] is None else now - st["started"],
            "last_change_to_dump_s": now - st["last_change"],
            "states": states,
        }
        with open(out + ".tmp", "w", encoding="utf-8") as f:
            json.dump(doc, f, cls=JSONEncoder, default=str)
        import os
        os.replace(out + ".tmp", out)
        hass.async_create_task(hass.services.async_call("homeassistant", "stop"))

    @callback
    def arm(*_):
        if st["timer"] is not None:
            st["timer"]()
        st["timer"] = async_call_later(hass, quiet, lambda _now: finish("quiet"))

    @callback
    def changed(_event):
        st["last_change"] = time.monotonic()
        st["changes"] += 1
        if st["started"] is not None:
            arm()

    @callback
    def started(_event):
        st["started"] = time.monotonic()
        arm()

    hass.bus.async_listen("entity_registry_updated", changed)
    hass.bus.async_listen("device_registry_updated", changed)
    hass.bus.async_listen(EVENT_STATE_CHANGED, changed)
    hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STARTED, started)
    async_call_later(hass, limit, lambda _now: finish("limit"))
    return True
'''

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"\(([^)]*)\) \[([^\]]+)\] ?(.*)$"
)


def requirements():
    """Pins of DOMAINS and their dependencies, from the installed HA's own manifests."""
    import homeassistant.components as comps

    base = os.path.dirname(comps.__file__)
    seen, todo, reqs = set(), list(DOMAINS), []
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        with open(os.path.join(base, d, "manifest.json"), encoding="utf-8") as f:
            m = json.load(f)
        todo.extend(m.get("dependencies", []))
        for r in m.get("requirements", []):
            if r not in reqs:
                reqs.append(r)
    return sorted(reqs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(cfg, broker_port, quiet, limit, dump):
    os.makedirs(os.path.join(cfg, ".storage"), exist_ok=True)
    probe = os.path.join(cfg, "custom_components", "gatehouse_probe")
    os.makedirs(probe, exist_ok=True)
    with open(os.path.join(probe, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(PROBE_MANIFEST, f)
    with open(os.path.join(probe, "__init__.py"), "w", encoding="utf-8") as f:
        f.write(PROBE)
    # No default_config (it brings cloud, analytics, zeroconf, …): only what the config entry
    # and this file name are set up. http is a dependency of mqtt: loopback, a free port.
    yaml = f"""homeassistant:
  name: gatehouse test
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: DK
  currency: EUR
http:
  server_host: 127.0.0.1
  server_port: {free_port()}
logger:
  default: warning
gatehouse_probe:
  quiet: {quiet}
  limit: {limit}
  out: {json.dumps(dump)}
"""
    with open(os.path.join(cfg, "configuration.yaml"), "w", encoding="utf-8") as f:
        f.write(yaml)
    entry = {
        "entry_id": uuid.uuid4().hex,
        "version": 1,
        "minor_version": 1,
        "domain": "mqtt",
        "title": "127.0.0.1",
        "data": {
            "broker": "127.0.0.1",
            "port": broker_port,
            "discovery": True,
            "discovery_prefix": "homeassistant",
        },
        "options": {},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "unique_id": None,
        "disabled_by": None,
    }
    store = {
        "version": 1,
        "minor_version": 1,
        "key": "core.config_entries",
        "data": {"entries": [entry]},
    }
    with open(os.path.join(cfg, ".storage", "core.config_entries"), "w", encoding="utf-8") as f:
        json.dump(store, f)


def read_store(cfg, key):
    path = os.path.join(cfg, ".storage", key)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)["data"]


def read_log(path):
    """WARNING and above, continuation lines (tracebacks) joined to their record."""
    recs = []
    if not os.path.exists(path):
        return recs
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = LOG_LINE.match(line)
            if m:
                recs.append({"level": m.group(1), "logger": m.group(3), "message": m.group(4)})
            elif recs:
                recs[-1]["message"] += "\n" + line
    return [r for r in recs if r["level"] in ("WARNING", "ERROR", "CRITICAL")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker-port", type=int)
    ap.add_argument("--work-dir", help="where HA's config directory is made (created if needed)")
    ap.add_argument("--quiet", type=float, default=3.0, help="seconds without a change")
    ap.add_argument("--limit", type=float, default=60.0, help="seconds after setup at most")
    ap.add_argument("--requirements", action="store_true", help="print the pins and exit")
    a = ap.parse_args()
    if a.requirements:
        print("\n".join(requirements()))
        return 0
    if a.broker_port is None or a.work_dir is None:
        ap.error("--broker-port and --work-dir are required")

    cfg = os.path.join(os.path.abspath(a.work_dir), "ha")
    dump = os.path.join(os.path.abspath(a.work_dir), "ha-states.json")
    write_config(cfg, a.broker_port, a.quiet, a.limit, dump)
    t0 = time.monotonic()
    out_path = os.path.join(a.work_dir, "hass.out")
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "homeassistant", "-c", cfg, "--skip-pip", "--log-no-color"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    problems = []
    # The probe stops HA by `limit`; allow start-up (imports take a while) and the stop.
    try:
        rc = proc.wait(timeout=a.limit + 120)
    except subprocess.TimeoutExpired:
        problems.append("Home Assistant did not stop by itself: sent SIGTERM")
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            problems.append("Home Assistant ignored SIGTERM: killed")
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
    total = time.monotonic() - t0
    if rc != 0:
        problems.append(f"Home Assistant exited with status {rc}")

    probe = None
    if os.path.exists(dump):
        with open(dump, encoding="utf-8") as f:
            probe = json.load(f)
    else:
        problems.append("the probe never dumped the states (did HA start?)")
    ents = read_store(cfg, "core.entity_registry")
    devs = read_store(cfg, "core.device_registry")
    # A registry is written on a clean stop once it has anything in it (HA exited 0 above).
    mqtt = (probe or {}).get("mqtt")
    if probe and not (mqtt or {}).get("loaded"):
        problems.append("the MQTT integration did not set up (see HA's log)")
    elif probe and not mqtt.get("connected"):
        problems.append(f"HA's MQTT client was not connected to 127.0.0.1:{a.broker_port}")
    states = (probe or {}).get("states", {})
    dev_by_id = {d["id"]: d for d in (devs or {}).get("devices", [])}

    def friendly(e):
        s = states.get(e["entity_id"])
        if s and "friendly_name" in s["attributes"]:
            return s["attributes"]["friendly_name"]
        # Disabled entities have no state: compose as HA does.
        own = e["name"] or e["original_name"]
        if not e["has_entity_name"]:
            return own
        d = dev_by_id.get(e["device_id"]) or {}
        dn = d.get("name_by_user") or d.get("name")
        return " ".join(x for x in (dn, own) if x) or None

    keys = ["entity_id", "unique_id", "platform", "original_name", "name", "has_entity_name",
            "disabled_by", "device_id", "device_class", "original_device_class",
            "entity_category"]
    entities = [
        {**{k: e.get(k) for k in keys}, "friendly_name": friendly(e)}
        for e in (ents or {}).get("entities", [])
    ]
    dkeys = ["id", "name", "name_by_user", "identifiers", "via_device_id", "manufacturer",
             "model", "sw_version"]
    devices = [{k: d.get(k) for k in dkeys} for d in (devs or {}).get("devices", [])]
    log = read_log(os.path.join(cfg, "home-assistant.log"))
    mentions = re.compile(r"mqtt|discover", re.I)

    def about_mqtt(r):
        return bool(mentions.search(r["logger"]) or mentions.search(r["message"]))

    try:
        import homeassistant.const as hc

        version = hc.__version__
    except Exception:  # noqa: BLE001 - the version is informative only
        version = None
    doc = {
        "ha_version": version,
        "stopped_because": (probe or {}).get("stopped_because"),
        "mqtt": mqtt,
        "timings": {
            "total_s": round(total, 2),
            "setup_to_started_s": (probe or {}).get("setup_to_started_s"),
            "started_to_dump_s": (probe or {}).get("started_to_dump_s"),
        },
        "entities": entities,
        "devices": devices,
        "states": states,
        "log": [r for r in log if about_mqtt(r)],
        "other_log": [r for r in log if not about_mqtt(r)],
        "problems": problems,
    }
    json.dump(doc, sys.stdout, default=str)
    sys.stdout.write("\n")
    if problems:
        sys.stderr.write("ha_run.py: " + "; ".join(problems) + "\n")
        try:
            with open(out_path, encoding="utf-8", errors="replace") as f:
                tail = f.read()[-4000:]
            sys.stderr.write(f"--- end of {out_path} ---\n{tail}\n")
        except OSError:
            pass
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
