#!/usr/bin/env python3
"""Regenerate the seed corpora (fuzz/corpus/<target>/) from the fixtures in tests/fixtures and
the samples in the parsers' unit tests. Run from the repository root: python3 fuzz/seed.py.
File names are the SHA-1 of the content, as libFuzzer names its own."""
import hashlib, json, os, re, glob, shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(ROOT, "fuzz", "corpus")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def read(*p):
    with open(os.path.join(FIX, *p), "rb") as f:
        return f.read()


def notice(target, src):
    shutil.copy(src, os.path.join(OUT, target, "NOTICE.md"))


def rust_strings(path, needle):
    """String literals (plain "…") containing `needle`, unescaped."""
    text = open(os.path.join(ROOT, path), encoding="utf-8").read()
    out = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"', text):
        s = m.group(1)
        if needle in s:
            s = (s.replace("\\r", "\r").replace("\\n", "\n").replace("\\t", "\t")
                 .replace('\\"', '"').replace("\\\\", "\\"))
            out.append(s)
    return out


hik = os.path.join(FIX, "hikvision")
# --- alert: the alert documents, and the part bodies of the recorded streams.
bodies = []
for p in sorted(glob.glob(os.path.join(hik, "*.xml"))):
    bodies.append(open(p, "rb").read())
for p in sorted(glob.glob(os.path.join(hik, "*_sequence_*.jsonl"))):
    seen = set()
    for line in open(p, encoding="utf-8"):
        c = json.loads(line).get("content", "")
        # One of each event type / state: the rest differ only in time.
        key = re.sub(r"<dateTime>[^<]*</dateTime>|<activePostCount>\d+", "", c)
        if key not in seen and len(seen) < 6:
            seen.add(key)
            bodies.append(c.encode())
for b in bodies:
    put("alert", b)
put("alert", '{"ipAddress":"10.0.0.7","channelID":1,"dateTime":"2026-01-26T10:30:00+01:00",'
    '"activePostCount":1,"eventType":"VMD","eventState":"active","eventDescription":"Motion"}')
notice("alert", os.path.join(hik, "NOTICE.md"))

# --- multipart: [chunk size, part limit] + Content-Type line + stream.
ct = b"Content-Type: multipart/mixed; boundary=boundary\n"
stream = read("hikvision", "multipart_stream_rs_hikvision_style.bin")
for chunk in (255, 7, 0):
    put("multipart", bytes([chunk, 0]) + ct + stream)
xmls = [b for b in bodies if b.lstrip().startswith(b"<")][:8]
for i, (style, bnd) in enumerate([("len", b"boundary"), ("nolen", b"boundary"),
                                  ("lf", b"hikboundary"), ("dup", b"--boundary")]):
    parts = b""
    for body in xmls[i * 2:i * 2 + 2]:
        sep = b"\n" if style == "lf" else b"\r\n"
        head = b"--" + bnd.lstrip(b"-") + sep
        if style == "dup":
            head = head + head
        head += b"Content-Type: application/xml; charset=\"UTF-8\"" + sep
        if style == "len":
            head += b"Content-Length: " + str(len(body)).encode() + sep
        parts += head + sep + body + sep
    if i == 3:
        parts += b"--boundary\r\nContent-Type: image/jpeg\r\nContent-Length: 6\r\n\r\n\xff\xd8\xff\xe0\x00\x10\r\n"
    put("multipart", bytes([64 + i, i]) + b"Content-Type: multipart/mixed; boundary=" + bnd + b"\n" + parts)
notice("multipart", os.path.join(hik, "NOTICE.md"))

# --- signalr: every recorded frame.
for f in ("frames.jsonl", "client_subscribe.jsonl"):
    for line in read("net2", "signalr", f).splitlines():
        if line.strip():
            put("signalr", line)
put("signalr", read("net2", "signalr", "negotiate.json"))

# --- net2_events: selector byte + body.
for sel, f in ((0, "events_page.json"), (1, "users.json"), (2, "doors.json"),
               (3, "doors_status.json"), (4, "command_response_holdopen.json"),
               (0, "events_empty_body.txt")):
    put("net2_events", bytes([sel]) + read("net2", f))
for ev in json.loads(read("net2", "events_page.json")):
    put("net2_events", b"\x00" + json.dumps([ev]).encode())
for sel, t in ((5, "2026-01-26T10:30:00+01:00"), (5, "2026-01-26T10:30:00.123"),
               (5, (20).to_bytes(8, "little") + (1).to_bytes(8, "little"))):
    put("net2_events", bytes([sel]) + (t if isinstance(t, bytes) else t.encode()))

# --- mqtt_command: flags + topic + "\n" + payload.
for flags, topic, payload in [
    (0, "gatehouse/door/1/set", "OPEN"),
    (0, "gatehouse/door/1/set", "unlock"),
    (1, "gatehouse/door/1/set", "LOCK"),
    (0, "gatehouse/door/1/set", '{"action":"OPEN","duration_ms":5000,"request_id":"r1"}'),
    (0, "gatehouse/door/2/set", '{"action":"HOLD_OPEN","code":"739154"}'),
    (0, "gatehouse/door/2/set", '{"action":"OPEN","code":123456}'),
    (0, "gatehouse/door/9/set", "PRESS"),
    (0, "gatehouse/door/x/set", "OPEN"),
    (0, "gatehouse/camera/front/snapshot/set", ""),
    (0, "gatehouse/camera/front/ch2/snapshot/set", '{"channel":2}'),
    (0, "gatehouse/camera/front/stream/set", "START"),
    (0, "gatehouse/camera/front/ch1/stream/set", '{"action":"stop","request_id":"s"}'),
    (0, "gatehouse/bridge/replay/set", "1234"),
    (0, "gatehouse/bridge/replay/set", '{"from_seq":7,"request_id":"x"}'),
    (0, "gatehouse/net2/lockdown/set", "ON"),
    (0, "gatehouse/net2/lockdown/set", '{"lockdown":false}'),
    (0, "gatehouse/qr/lobby/scan", "BEGIN:VCARD\nVERSION:4.0\nORG:6f1c2f5e-8d1a-4b7e-9a43-2c1d0e5f7a99\nNOTE:303\nEND:VCARD"),
]:
    put("mqtt_command", bytes([flags]) + topic.encode() + b"\n" + payload.encode())

# --- config: the shipped example and the packaged default.
for p in ("config.example.yaml", "packaging/config.yaml"):
    put("config", open(os.path.join(ROOT, p), "rb").read())
for s in rust_strings("src/config/load.rs", "sources:")[:30]:
    put("config", s)

# --- vcard: the unit tests' codes.
for s in rust_strings("src/apptive/vcard.rs", "BEGIN:VCARD"):
    put("vcard", s)

# --- http: selector (bits 0-1: 0 query, 1 body, 2 value; bits 2-7: which type).
queries = ["page=2&limit=50&property_id=main", "property_id=main",
           "startDate=2026-01-26&endDate=2026-01-27T10:00:00Z&action=granted&userId=7&limit=10",
           "format=json&startDate=2026-01-01", "status=pending", "limit=5&action=door_open",
           "month=2026-01&channel=1", "start=2026-01-26T00:00:00Z&limit=3", "device=nvr1",
           "", "format=pdf&startDate=2026-01-01&endDate=2026-01-31", "token=abc.def",
           "channel=1&token=x", "channel=1&quality=sub", "token=abc"]
for i, q in enumerate(queries):
    put("http", bytes([i << 2]) + q.encode())
bodies_json = ['{"mode":"lockdown","duration":"1h","reason":"drill"}', '{"reason":"over"}',
               '{"action":"note","detail":"x"}', '{"id":"hw-1","name":"Gate","site":"main"}',
               '{"status":"ok"}', '{"duration_ms":3000,"code":"1234"}',
               '{"id":"p1","name":"Door","door":6612642}', '{"name":"Side door"}',
               '{"url":"https://10.0.0.9","username":"admin","password":"pw"}',
               '{"events":[{"id":"e1","timestamp":"2026-01-26T10:00:00Z"}]}',
               '{"userId":"7","accessPointId":"net2-1","timestamp":"2026-01-26T10:00:00Z"}',
               '{"reader":"lobby","data":"BEGIN:VCARD"}', '{"username":"admin","password":"pw"}',
               '{"old_password":"a","new_password":"b"}', '[1,2,{"a":null}]']
for i, b in enumerate(bodies_json):
    put("http", bytes([(i << 2) | 1]) + b.encode())
for v in ["2026-01-26", "2026-01-26T10:30:00Z", "2026-01-26T10:30:00.5", "2026-02",
          "1769421000000.42", "2026-03-29T02:30:00"]:
    put("http", b"\x02" + v.encode())
