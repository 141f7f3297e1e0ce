//! Access events with 1,000,000 stored (issue 16): the REST events page (filtered, with its
//! total), the keyset cursor, the metrics counts and the full CSV export, against a year of
//! history. Target: a filtered page p99 ≤ 20 ms; the export's RSS growth ≤ 5 MB.
//!
//! The history is built through `Store::write_batch` (batches of 2,000, as the store sink
//! commits them): 20 % access events (85 % granted, 10 % denied, 5 % type 61 "door not
//! opened"; 50 users, 20 doors) and 80 % noise (door events on the same doors, and camera
//! alerts started / ended on four cameras), spread over a year with one burst of 5–20 events
//! in one millisecond every ~100 events, raw payloads of the real sizes (Net2 JSON ~350 bytes,
//! Hikvision XML ~750 bytes). Pass a path to keep the database and reuse it on the next run.
//!
//! Beside the figures, in the same run: a plain `SELECT count(*) FROM events`; the page as it
//! would be done plainly (`count(*)` for the total, then `LIMIT … OFFSET`, same columns) with
//! migration 7's indexes and without them (dropped inside a transaction that is rolled back);
//! and for the export, the same rows collected into a `Vec` instead of streamed.
//!
//! `cargo run --release --example bench_query -- 1000000 [/path/to/keep.db]`
//!
//! `… -- --build 1000000 /path/to.db` only builds the database (if it holds no events yet)
//! and exits: `scripts/bench_web.sh` serves it from a running daemon.

#[path = "common/mod.rs"]
mod common;

use gatehouse::model::{DoorRef, Event, EventKind, TokenType, UserRef, Via};
use gatehouse::storage::query::{self, AccessFilter, Action, Cursor};
use gatehouse::storage::{Store, Write};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

const USERS: i64 = 50;
const DOORS: u64 = 20;
const YEAR_MS: i64 = 365 * 86_400_000;
/// 2025-12-01T00:00:00Z: the history runs from here for a year.
const START_MS: i64 = 1_764_547_200_000;
const SAMPLES: usize = 300;

fn main() {
    let mut args = std::env::args().skip(1);
    if let Some("--export") = std::env::args().nth(1).as_deref() {
        export(std::path::Path::new(&std::env::args().nth(2).unwrap()));
        return;
    }
    if let Some("--build") = std::env::args().nth(1).as_deref() {
        let n: usize = std::env::args()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .expect("--build N PATH");
        let path = std::path::PathBuf::from(std::env::args().nth(3).expect("--build N PATH"));
        let store = Store::open(&path).unwrap();
        let have = store.count_events().unwrap() as usize;
        if have == 0 {
            let t = Instant::now();
            build(&store, n);
            let s = t.elapsed().as_secs_f64();
            println!(
                "built {n} events in {s:.1} s ({:.0} events/s), {:.0} MB",
                n as f64 / s,
                std::fs::metadata(&path).unwrap().len() as f64 / 1e6
            );
        } else {
            println!("reusing {} ({have} events)", path.display());
        }
        return;
    }
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let path = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("events.db"));

    let store = Store::open(&path).unwrap();
    let have = store.count_events().unwrap() as usize;
    if have == 0 {
        let t = Instant::now();
        build(&store, n);
        let s = t.elapsed().as_secs_f64();
        println!(
            "built {n} events in {s:.1} s ({:.0} events/s through write_batch), {:.0} MB",
            n as f64 / s,
            std::fs::metadata(&path).unwrap().len() as f64 / 1e6
        );
    } else {
        println!("reusing {} ({have} events)", path.display());
    }
    let access = store.with_conn(|c| query::access_counts(c, 0)).unwrap();
    println!(
        "access events: {} (granted {}, denied {}, timeout {})",
        access.total, access.granted, access.denied, access.timeout
    );

    let mut rng = StdRng::seed_from_u64(16);
    let shapes = shapes();

    // Reference: a plain count of the table.
    let count_all = measure(SAMPLES / 10, |_| {
        store
            .with_conn(|c| {
                Ok(c.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))?)
            })
            .unwrap();
    });
    println!(
        "\nreference: SELECT count(*) FROM events (1M rows): {}",
        fmt(&count_all)
    );

    println!(
        "\naccess_page (limit 50, with its total), {SAMPLES} samples each, random parameters:"
    );
    println!("| query | rows matched (last sample) | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (name, shape) in &shapes {
        let mut matched = 0;
        let t = measure(SAMPLES, |_| {
            let (f, page) = shape(&mut rng);
            let (rows, total) = store
                .with_conn(|c| query::access_page(c, &f, page, 50))
                .unwrap();
            assert!(rows.len() <= 50);
            matched = total;
        });
        println!("| {name} | {matched} | {} |", fmt_row(&t));
    }

    println!("\naccess_after (limit 50, a cursor at a random point of the year):");
    println!("| query | p50 | p99 | max |");
    println!("|---|---|---|---|");
    for (name, user) in [("no filter", false), ("userId", true)] {
        let t = measure(SAMPLES, |_| {
            let f = AccessFilter {
                user_id: user.then(|| rng.random_range(0..USERS)),
                ..Default::default()
            };
            let c = Cursor {
                time_ms: START_MS + rng.random_range(0..YEAR_MS),
                seq: i64::MAX,
            };
            let rows = store
                .with_conn(|conn| query::access_after(conn, &f, Some(c), 50))
                .unwrap();
            assert!(!rows.is_empty() || user);
        });
        println!("| {name} | {} |", fmt_row(&t));
    }
    // A whole walk through the denied events, 50 at a time.
    let t = Instant::now();
    let (mut cursor, mut pages, mut rows) = (None, 0, 0);
    let f = AccessFilter {
        action: Some(Action::Denied),
        ..Default::default()
    };
    loop {
        let r = store
            .with_conn(|c| query::access_after(c, &f, cursor, 50))
            .unwrap();
        pages += 1;
        rows += r.len();
        match r.last() {
            Some(last) if r.len() == 50 => cursor = Some(last.cursor()),
            _ => break,
        }
    }
    println!(
        "| walk: every denied event ({rows} in {pages} pages) | {:.1} ms per page | | |",
        t.elapsed().as_secs_f64() * 1000.0 / pages as f64
    );

    let today = START_MS + YEAR_MS - 86_400_000;
    for (name, since) in [
        ("access_counts, last day", today),
        ("access_counts, whole year", 0),
    ] {
        let t = measure(SAMPLES / 3, |_| {
            store.with_conn(|c| query::access_counts(c, since)).unwrap();
        });
        println!("{name}: {}", fmt(&t));
    }

    // Camera alarms (the NVR API's listing): ~100,000 started alerts on four cameras.
    println!("\nalarms_page (limit 50, a cursor at a random point of the year or none):");
    println!("| query | p50 | p99 | max |");
    println!("|---|---|---|---|");
    let alarms = |rng: &mut StdRng, device: Option<&str>| {
        let f = query::AlarmFilter {
            device: device.map(Into::into),
            ..Default::default()
        };
        let cursor = rng.random_bool(0.5).then(|| Cursor {
            time_ms: START_MS + rng.random_range(0..YEAR_MS),
            seq: i64::MAX,
        });
        store
            .with_conn(|c| query::alarms_page(c, &f, cursor, 50))
            .unwrap()
    };
    for (name, device) in [("all cameras", None), ("one camera", Some("cam1"))] {
        let t = measure(SAMPLES, |_| {
            alarms(&mut rng, device);
        });
        println!("| {name} | {} |", fmt_row(&t));
    }
    store.with_conn(|c| Ok(c.execute_batch("BEGIN")?)).unwrap();
    let t = Instant::now();
    let cleared = store
        .with_conn(|c| query::alarm_delete_all(c, None))
        .unwrap();
    let dismissed = t.elapsed().as_secs_f64() * 1000.0;
    let t = measure(SAMPLES, |_| {
        let (rows, _) = alarms(&mut rng, None);
        assert!(rows.is_empty());
    });
    println!(
        "| all cameras, after dismissing all {cleared} ({dismissed:.0} ms) | {} |",
        fmt_row(&t)
    );
    store
        .with_conn(|c| Ok(c.execute_batch("ROLLBACK")?))
        .unwrap();

    // Reference: the plain page (a count for the total, then LIMIT/OFFSET), with migration
    // 7's indexes, then without them (only `events_time` and the others of migration 1), in a
    // transaction rolled back afterwards.
    for (title, n, drop) in [
        ("with migration 7's indexes, no kept totals", SAMPLES, false),
        ("without migration 7's indexes", 20, true),
    ] {
        println!("\nreference: the plain page (count(*), LIMIT/OFFSET) {title}, {n} samples each:");
        println!("| query | p50 | p99 | max |");
        println!("|---|---|---|---|");
        if drop {
            store
                .with_conn(|c| {
                    c.execute_batch(
                        "BEGIN; DROP INDEX events_access_time; DROP INDEX events_access_kind;
                         DROP INDEX events_access_user; DROP INDEX events_access_door;",
                    )?;
                    Ok(())
                })
                .unwrap();
        }
        for (name, shape) in &shapes {
            let t = measure(n, |_| {
                let (f, page) = shape(&mut rng);
                store.with_conn(|c| plain_page(c, &f, page, 50)).unwrap();
            });
            println!("| {name} | {} |", fmt_row(&t));
        }
        if drop {
            store
                .with_conn(|c| Ok(c.execute_batch("ROLLBACK")?))
                .unwrap();
        }
    }

    // In a fresh process, so that memory this one freed (and may reuse) hides nothing.
    drop(store);
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--export")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());

    write_cost(n / 5);
}

/// What migration 7 costs the writer: `n` events of the same mix into a fresh database,
/// alternately as is and with its indexes and triggers dropped (its tables kept, since
/// `write_batch` fills `alarms`), three times each.
fn write_cost(n: usize) {
    println!("\nwrite_batch, {n} events into a fresh database (batches of 2,000):");
    println!("| schema | run 1 | run 2 | run 3 |");
    println!("|---|---|---|---|");
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..3 {
        for (k, without) in [false, true].into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("w.db")).unwrap();
            if without {
                store
                    .with_conn(|c| {
                        c.execute_batch(
                            "DROP INDEX events_access_time; DROP INDEX events_access_kind;
                             DROP INDEX events_access_user; DROP INDEX events_access_door;
                             DROP INDEX alarms_time; DROP INDEX alarms_source;
                             DROP TRIGGER events_access_added; DROP TRIGGER events_access_removed;
                             DROP TRIGGER events_access_changed;",
                        )?;
                        Ok(())
                    })
                    .unwrap();
            }
            let t = Instant::now();
            build(&store, n);
            rates[k].push(n as f64 / t.elapsed().as_secs_f64());
        }
    }
    for (k, name) in [
        "migration 7 (as shipped)",
        "reference: without migration 7's indexes and triggers",
    ]
    .into_iter()
    .enumerate()
    {
        let r: Vec<String> = rates[k]
            .iter()
            .map(|r| format!("{r:.0} events/s"))
            .collect();
        println!("| {name} | {} |", r.join(" | "));
    }
}

/// The page done plainly, for reference: the same WHERE (the access condition as migration 7's
/// indexes have it, so they serve it), `count(*)` for the total, `LIMIT … OFFSET`.
fn plain_page(
    c: &rusqlite::Connection,
    f: &AccessFilter,
    page: u32,
    limit: u32,
) -> gatehouse::error::Result<(usize, i64)> {
    use rusqlite::types::Value;
    let mut w = String::from(
        "(kind IN ('access_granted', 'access_denied') OR (kind = 'other' AND code = 61))",
    );
    let mut v: Vec<Value> = Vec::new();
    w.push_str(match f.action {
        None => "",
        Some(Action::Granted) => " AND kind = 'access_granted'",
        Some(Action::Denied) => " AND kind = 'access_denied'",
        Some(Action::Timeout) => " AND kind = 'other'",
    });
    for (col, val) in [
        (" AND user_id = ?", f.user_id),
        (" AND door_id = ?", f.door_id),
        (" AND time_ms >= ?", f.start_ms),
        (" AND time_ms <= ?", f.end_ms),
    ] {
        if let Some(x) = val {
            w.push_str(col);
            v.push(Value::Integer(x));
        }
    }
    let total: i64 = c.query_row(
        &format!("SELECT count(*) FROM events WHERE {w}"),
        rusqlite::params_from_iter(&v),
        |r| r.get(0),
    )?;
    v.extend([
        Value::Integer(limit.into()),
        Value::Integer(i64::from(page - 1) * i64::from(limit)),
    ]);
    let mut st = c.prepare_cached(&format!(
        "SELECT seq, id, time, time_ms, kind, code, door_id, door_name, user_id, user_name,
                json_extract(detail, '$.token'), json_extract(detail, '$.reason'), via, source,
                description
         FROM events WHERE {w} ORDER BY time_ms DESC, seq DESC LIMIT ? OFFSET ?"
    ))?;
    let mut rows = st.query(rusqlite::params_from_iter(&v))?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let _: String = r.get(1)?;
        n += 1;
    }
    Ok((n, total))
}

type Shape = Box<dyn Fn(&mut StdRng) -> (AccessFilter, u32)>;

/// The page requests measured: a filter and a page number, drawn anew for every sample.
fn shapes() -> Vec<(&'static str, Shape)> {
    vec![
        (
            "no filter, page 1",
            Box::new(|_| (AccessFilter::default(), 1)),
        ),
        (
            "action=denied",
            Box::new(|_| {
                (
                    AccessFilter {
                        action: Some(Action::Denied),
                        ..Default::default()
                    },
                    1,
                )
            }),
        ),
        (
            "userId",
            Box::new(|r| {
                (
                    AccessFilter {
                        user_id: Some(r.random_range(0..USERS)),
                        ..Default::default()
                    },
                    1,
                )
            }),
        ),
        (
            "accessPointId + 30-day range",
            Box::new(|r| {
                let from = START_MS + r.random_range(0..YEAR_MS - 30 * 86_400_000);
                (
                    AccessFilter {
                        door_id: Some(r.random_range(1..=DOORS) as i64),
                        start_ms: Some(from),
                        end_ms: Some(from + 30 * 86_400_000),
                        ..Default::default()
                    },
                    1,
                )
            }),
        ),
        (
            "userId + action=granted + 90-day range",
            Box::new(|r| {
                let from = START_MS + r.random_range(0..YEAR_MS - 90 * 86_400_000);
                (
                    AccessFilter {
                        action: Some(Action::Granted),
                        user_id: Some(r.random_range(0..USERS)),
                        start_ms: Some(from),
                        end_ms: Some(from + 90 * 86_400_000),
                        ..Default::default()
                    },
                    1,
                )
            }),
        ),
        (
            "no filter, page 200",
            Box::new(|_| (AccessFilter::default(), 200)),
        ),
        (
            "action=granted, page 200",
            Box::new(|_| {
                (
                    AccessFilter {
                        action: Some(Action::Granted),
                        ..Default::default()
                    },
                    200,
                )
            }),
        ),
    ]
}

/// The full CSV export on its own read-only connection (as a handler runs it), written in
/// 64 KB chunks to a sink; RSS growth = VmHWM during the export minus VmRSS before it (with
/// the connection open, nothing read). Runs in a process of its own (`--export PATH`).
fn export(path: &std::path::Path) {
    let reset = || std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
    let kb = |f: &str| common::status_kb("self", f);
    println!("\nfull CSV export (every access event, oldest first, read-only connection):");
    println!("| how | rows | bytes | time | VmRSS before | VmHWM during | growth |");
    println!("|---|---|---|---|---|---|---|");
    for run in 0..3 {
        let conn = Store::open_readonly(path).unwrap();
        reset();
        let before = kb("VmRSS");
        let t = Instant::now();
        let mut chunk = String::with_capacity(64 * 1024);
        chunk.push_str(query::CSV_HEADER);
        let mut bytes = 0usize;
        let rows = query::access_export(&conn, &AccessFilter::default(), |r| {
            query::csv_line(r, &mut chunk);
            if chunk.len() >= 60 * 1024 {
                bytes += std::hint::black_box(&chunk).len();
                chunk.clear();
            }
            Ok(())
        })
        .unwrap();
        bytes += chunk.len();
        let s = t.elapsed().as_secs_f64();
        let hwm = kb("VmHWM");
        println!(
            "| streamed ({}) | {rows} | {:.1} MB | {s:.2} s ({:.0} rows/s) | {:.1} MB | {:.1} MB | **{:+.1} MB** |",
            run + 1,
            bytes as f64 / 1e6,
            rows as f64 / s,
            before as f64 / 1024.0,
            hwm as f64 / 1024.0,
            (hwm as f64 - before as f64) / 1024.0
        );
    }
    // Reference: the same rows collected first (what a handler that builds the answer in
    // memory would hold).
    let conn = Store::open_readonly(path).unwrap();
    reset();
    let before = kb("VmRSS");
    let t = Instant::now();
    let mut all = Vec::new();
    query::access_export(&conn, &AccessFilter::default(), |r| {
        all.push(r.clone());
        Ok(())
    })
    .unwrap();
    let mut out = String::from(query::CSV_HEADER);
    for r in &all {
        query::csv_line(r, &mut out);
    }
    let s = t.elapsed().as_secs_f64();
    let hwm = kb("VmHWM");
    println!(
        "| reference: collected, then one string | {} | {:.1} MB | {s:.2} s | {:.1} MB | {:.1} MB | {:+.1} MB |",
        all.len(),
        out.len() as f64 / 1e6,
        before as f64 / 1024.0,
        hwm as f64 / 1024.0,
        (hwm as f64 - before as f64) / 1024.0
    );
}

/// Durations in ms of `n` runs of `f`.
fn measure(n: usize, mut f: impl FnMut(usize)) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

fn fmt(v: &[f64]) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        common::pct(v.to_vec(), 0.5),
        common::pct(v.to_vec(), 0.99),
        common::pct(v.to_vec(), 1.0)
    )
}

fn fmt_row(v: &[f64]) -> String {
    format!(
        "{:.2} ms | **{:.2} ms** | {:.2} ms",
        common::pct(v.to_vec(), 0.5),
        common::pct(v.to_vec(), 0.99),
        common::pct(v.to_vec(), 1.0)
    )
}

const NET2_RAW: &str = r#"{"id":1545681,"eventTime":"2026-01-05T06:00:01.017","eventType":26,"eventSubType":0,"eventDescription":"Adgang godkendt - med PIN kode","deviceId":7242929,"deviceName":"Garage Port","userId":8,"userName":"Mette Kragh Holm","firstName":"Mette","surname":"Kragh Holm","cardNo":0,"tokenNumber":"","linkedEventId":0,"eventDetails":null,"siteId":1,"siteName":"Kirkegade50","isEventDoor":true,"accessLevelName":"Alle døre","departmentName":"","userOnly":false}"#;
const CAMERA_RAW: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">
<ipAddress>192.168.1.64</ipAddress>
<portNo>80</portNo>
<protocol>HTTP</protocol>
<macAddress>a4:14:37:00:00:01</macAddress>
<channelID>1</channelID>
<dateTime>2026-01-05T06:00:01+08:00</dateTime>
<activePostCount>1</activePostCount>
<eventType>VMD</eventType>
<eventState>active</eventState>
<eventDescription>Motion alarm</eventDescription>
<channelName>Garage</channelName>
<DetectionRegionList>
<DetectionRegionEntry>
<regionID>1</regionID>
<sensitivityLevel>50</sensitivityLevel>
<RegionCoordinatesList></RegionCoordinatesList>
<detectionTarget>human</detectionTarget>
</DetectionRegionEntry>
</DetectionRegionList>
<isDataRetransmission>false</isDataRetransmission>
</EventNotificationAlert>"#;

/// A year of history, `n` events, in batches of 2,000.
fn build(store: &Store, n: usize) {
    let mut rng = StdRng::seed_from_u64(2026);
    let tz = chrono::FixedOffset::east_opt(3600).unwrap();
    let step = YEAR_MS / n as i64;
    let mut batch = Vec::with_capacity(2000);
    let mut burst = 0;
    let mut ms = START_MS;
    for i in 0..n {
        if burst > 0 {
            burst -= 1; // same millisecond as the one before
        } else {
            ms = START_MS + i as i64 * step + rng.random_range(0..step);
            if rng.random_ratio(1, 100) {
                burst = rng.random_range(4..20);
            }
        }
        let time = chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .with_timezone(&tz);
        let door = rng.random_range(1..=DOORS);
        let user = rng.random_range(0..USERS);
        let roll = rng.random_range(0..100);
        let event = if roll < 20 {
            let (kind, code) = match rng.random_range(0..100) {
                0..85 => (
                    EventKind::AccessGranted {
                        token: TokenType::Card,
                    },
                    20,
                ),
                85..95 => (
                    EventKind::AccessDenied {
                        reason: "not_permitted".into(),
                    },
                    16,
                ),
                _ => (EventKind::Other { code: 61 }, 61),
            };
            net2(i, time, kind, code, Some(user), door)
        } else if roll < 60 {
            let (kind, code) = match rng.random_range(0..4) {
                0 => (EventKind::DoorOpened, 28),
                1 => (EventKind::DoorClosed, 47),
                2 => (EventKind::DoorRelocked, 29),
                _ => (EventKind::Other { code: 62 }, 62),
            };
            net2(i, time, kind, code, None, door)
        } else {
            let cam = rng.random_range(0..4);
            Event {
                id: format!("camera/cam{cam}:1:vmd::on@{ms}.{i}"),
                source: format!("camera/cam{cam}"),
                source_id: None,
                fingerprint: format!("camera/cam{cam}:1:vmd::on@{ms}.{i}"),
                time,
                received: time.to_utc(),
                via: Via::Live,
                door: None,
                user: None,
                kind: EventKind::CameraAlert {
                    event_type: "vmd".into(),
                    active: i % 2 == 0,
                    channel: Some(1),
                    io_port: None,
                    targets: vec!["human".into()],
                    backlog: false,
                    device_time: Some("2026-01-05T06:00:01+08:00".into()),
                },
                code: None,
                description: Some("vmd started".into()),
                raw: CAMERA_RAW.into(),
            }
        };
        batch.push(Write::Event(Box::new(event)));
        if batch.len() == 2000 {
            store.write_batch(&batch).unwrap();
            batch.clear();
        }
    }
    store.write_batch(&batch).unwrap();
}

fn net2(
    i: usize,
    time: chrono::DateTime<chrono::FixedOffset>,
    kind: EventKind,
    code: i64,
    user: Option<i64>,
    door: u64,
) -> Event {
    Event {
        id: format!("net2:{}", 1_000_000 + i),
        source: "net2".into(),
        source_id: Some(1_000_000 + i as i64),
        fingerprint: format!("{}|{code}|{user:?}|{door}", time.timestamp()),
        time,
        received: time.to_utc(),
        via: Via::Rest,
        door: Some(DoorRef {
            id: door,
            name: Some(format!("Door {door}")),
        }),
        user: user.map(|u| UserRef {
            id: u,
            name: Some(format!("User {u}")),
        }),
        kind,
        code: Some(code),
        description: Some("Adgang godkendt - med PIN kode".into()),
        raw: NET2_RAW.into(),
    }
}
