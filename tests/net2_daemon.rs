//! The daemon against the Net2 simulator: backfill, live + REST dedupe, token trouble,
//! dropped sockets, server outages, door commands and the directory of doors and users.

mod common;

use common::{Harness, wait_for};
use gatehouse::model::*;
use gatehouse::sim::net2::{SimConfig, SimEvent, SimUser};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn events_in_db(h: &Harness) -> i64 {
    h.query_i64("SELECT count(*) FROM events")
}

fn no_duplicate_fingerprints(h: &Harness) {
    let dup = h.query_i64(
        "SELECT count(*) FROM (SELECT fingerprint FROM events WHERE kind != 'door_held_open' GROUP BY fingerprint HAVING count(*) > 1)",
    );
    assert_eq!(dup, 0, "an event was stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_after_downtime_has_no_gap_and_no_duplicate() {
    let mut h = Harness::new(SimConfig::default(), "    live: false\n    page_size: 50\n").await;
    let start = h.sim.local_now() - chrono::Duration::hours(2);
    h.sim.seed_history(230, start, Duration::from_secs(3));
    h.start().await;
    wait_for("first backfill", T, || events_in_db(&h) >= 230).await;
    h.stop().await;

    // While the daemon is down, more events happen (some within the same second).
    let t0 = h.sim.local_now();
    for i in 0..120 {
        h.sim.push_event(
            SimEvent::new(20, 6612642)
                .user(12)
                .at(t0 + chrono::Duration::milliseconds(i * 400))
                .rest_only(),
        );
    }
    h.start().await;
    let total = h.sim.event_count() as i64;
    wait_for("backfill after downtime", T, || events_in_db(&h) >= total).await;
    // A few more polls must not add anything.
    let polls = h.sim.stats().events_requests;
    wait_for("more polls", T, || {
        h.sim.stats().events_requests >= polls + 3
    })
    .await;
    h.stop().await;
    let ids = h.stored_source_ids();
    assert_eq!(
        ids.len() as i64,
        total,
        "every simulator event stored exactly once"
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    assert!(h.sim.commands().is_empty(), "no door command at start-up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_rest_copies_are_one_event() {
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.start().await;
    wait_for("live socket", T, || {
        h.sim.websocket_count() == 1 && !h.sim.stats().subscriptions.is_empty()
    })
    .await;
    let mut watch = h.app().bus.watch();
    for i in 0..6 {
        h.sim
            .push_event(SimEvent::new(20, 7319051).user(if i % 2 == 0 { 12 } else { 8 }));
        h.sim.push_event(SimEvent::new(46, 7319051));
    }
    // Live copies arrive first; wait until two safety polls have fetched the REST copies.
    let polls = h.sim.stats().events_requests;
    wait_for("safety polls", T, || {
        h.sim.stats().events_requests >= polls + 2
    })
    .await;
    wait_for("stored", T, || events_in_db(&h) >= 12).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // let the last batch commit
    // Whichever copy arrives first is published; the other is recognised.
    let mut published = Vec::new();
    while let Ok(m) = watch.try_recv() {
        if let Message::Event(e) = m {
            published.push(e);
        }
    }
    assert_eq!(published.len(), 12, "{published:#?}");
    assert!(published.iter().any(|e| e.via == Via::Live));
    assert_eq!(events_in_db(&h), 12);
    // Same-second repeats of one card at one door are real and stay separate.
    assert_eq!(
        h.query_i64("SELECT count(*) FROM events WHERE code = 46"),
        6
    );
    // Names are resolved through the user list, not split from "Surname Firstname".
    let named = h.query_i64("SELECT count(*) FROM events WHERE user_name = 'Jonas Bak'");
    assert_eq!(named, 3);
    let subs = h.sim.stats().subscriptions;
    let methods: Vec<_> = subs.iter().map(|(m, _)| m.to_ascii_lowercase()).collect();
    assert!(methods.contains(&"subscribetoliveevents".to_string()));
    assert!(subs.iter().any(
        |(m, a)| m.eq_ignore_ascii_case("subscribeToDoorStatusEvents")
            && a == &vec![serde_json::json!("7242929")]
    ));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_and_401_mid_run_reauthenticate() {
    let mut h = Harness::new(SimConfig::default(), "    live: false\n").await;
    h.start().await;
    wait_for("first poll", T, || h.sim.stats().events_requests >= 1).await;
    let before = h.sim.stats();
    h.sim.expire_tokens();
    let id = h
        .sim
        .push_event(SimEvent::new(26, 6612642).user(8).rest_only());
    wait_for("event after 401", T, || h.stored_source_ids().contains(&id)).await;
    let after = h.sim.stats();
    assert!(
        after.unauthorized > before.unauthorized,
        "the sim saw the stale token"
    );
    assert!(
        after.refresh_grants + after.password_grants
            > before.refresh_grants + before.password_grants,
        "a new token was fetched"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_tokens_are_refreshed_before_expiry_with_refresh_grant() {
    let sim = SimConfig {
        token_lifetime: Duration::from_secs(4),
        ..SimConfig::default()
    };
    let mut h = Harness::new(sim, "    live: false\n").await;
    h.start().await;
    wait_for("refresh grant", T, || h.sim.stats().refresh_grants >= 1).await;
    let s = h.sim.stats();
    assert_eq!(
        s.password_grants, 1,
        "refresh, not password, once the first token exists"
    );
    assert_eq!(s.unauthorized, 0, "tokens were renewed before they expired");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_token_endpoint_is_retried_single_flight() {
    let mut h = Harness::new(SimConfig::default(), "").await;
    // Use up the token budget right before the daemon starts: its first request gets 429.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let _ = http
            .post(format!("{}/api/v1/authorization/tokens", h.sim.base_url()))
            .form(&[
                ("grant_type", "password"),
                ("username", "x"),
                ("password", "y"),
                ("client_id", "z"),
            ])
            .send()
            .await;
    }
    h.start().await;
    wait_for("live connected despite 429", T, || {
        h.sim.websocket_count() == 1
    })
    .await;
    let s = h.sim.stats();
    assert!(
        s.token_429 >= 2,
        "the test's third request and the daemon's first met a 429"
    );
    // Several tasks wanted a token at once; single-flight means one grant by the daemon.
    assert_eq!(
        s.password_grants,
        2 + 1,
        "two by the test, one by the daemon"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_websocket_reconnects_resubscribes_and_backfills() {
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.start().await;
    let live_subs = |h: &Harness| {
        h.sim
            .stats()
            .subscriptions
            .iter()
            .filter(|(m, _)| m.eq_ignore_ascii_case("subscribeToLiveEvents"))
            .count()
    };
    wait_for("live socket subscribed", T, || {
        h.sim.websocket_count() == 1 && live_subs(&h) == 1
    })
    .await;
    h.sim.drop_websockets();
    // An event while the socket is down is only in the REST log.
    let id = h.sim.push_event(SimEvent::new(93, 7242929).rest_only());
    wait_for("reconnect", Duration::from_secs(30), || {
        h.sim.stats().ws_connects >= 2 && h.sim.websocket_count() == 1
    })
    .await;
    wait_for("backfilled", T, || h.stored_source_ids().contains(&id)).await;
    wait_for("resubscribed after reconnect", T, || live_subs(&h) >= 2).await;
    h.sim.push_event(SimEvent::new(20, 6612642).user(19));
    wait_for("live again", T, || {
        h.query_i64("SELECT count(*) FROM events WHERE user_id = 19") == 1
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_for_a_while_loses_nothing() {
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.start().await;
    wait_for("live socket", T, || h.sim.websocket_count() == 1).await;
    let mut watch = h.app().bus.watch();
    h.sim.go_down().await;
    let t0 = h.sim.local_now();
    let ids: Vec<i64> = (0..5)
        .map(|i| {
            h.sim.push_event(
                SimEvent::new(20, 6612642)
                    .user(12)
                    .at(t0 + chrono::Duration::seconds(i))
                    .rest_only(),
            )
        })
        .collect();
    let mut saw_offline = false;
    let deadline = tokio::time::Instant::now() + T;
    while !saw_offline && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(Message::Health(hl))) =
            tokio::time::timeout(Duration::from_millis(200), watch.recv()).await
        {
            saw_offline |= !hl.online;
        }
    }
    assert!(saw_offline, "health reported the server unreachable");
    h.sim.come_up().await.unwrap();
    wait_for("all events after outage", Duration::from_secs(40), || {
        let s = h.stored_source_ids();
        ids.iter().all(|i| s.contains(i))
    })
    .await;
    no_duplicate_fingerprints(&h);
    h.stop().await;
}

async fn command(h: &Harness, id: &str, door: DoorId, action: DoorAction) -> Vec<CommandUpdate> {
    let mut watch = h.app().bus.watch();
    h.app()
        .commands()
        .send(Command {
            request_id: id.into(),
            requester: "test".into(),
            kind: CommandKind::Door {
                door,
                action,
                duration_ms: None,
            },
            received: chrono::Utc::now(),
            received_at: tokio::time::Instant::now(),
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + T;
    while tokio::time::Instant::now() < end {
        if let Ok(Ok(Message::Command(u))) =
            tokio::time::timeout(Duration::from_millis(200), watch.recv()).await
            && u.request_id == id
        {
            let done = !matches!(u.status, CommandStatus::Accepted | CommandStatus::Sent);
            out.push(u);
            if done {
                break;
            }
        }
    }
    out
}

async fn ready(h: &Harness) {
    wait_for("door status synced", T, || {
        h.query_i64("SELECT count(*) FROM door_state") >= 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn door_command_reaches_the_simulator_exactly_once_and_is_audited() {
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.start().await;
    ready(&h).await;
    assert!(h.sim.commands().is_empty(), "nothing sent at start-up");
    let ups = command(&h, "req-1", 6612642, DoorAction::Open).await;
    let statuses: Vec<_> = ups.iter().map(|u| u.status).collect();
    assert_eq!(
        statuses,
        vec![
            CommandStatus::Accepted,
            CommandStatus::Sent,
            CommandStatus::Confirmed
        ]
    );
    let cmds = h.sim.commands();
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert_eq!(cmds[0].path, "/api/v1/commands/door/control");
    assert_eq!(cmds[0].body["DoorId"], 6612642);
    assert_eq!(cmds[0].body["RelayFunction"]["RelayOpenTime"], 800);
    // The same request id again is refused and nothing more is sent.
    let again = command(&h, "req-1", 6612642, DoorAction::Open).await;
    assert_eq!(again.last().unwrap().status, CommandStatus::Rejected);
    assert_eq!(h.sim.commands().len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.stop().await;
    assert_eq!(
        h.query_i64("SELECT count(*) FROM audit WHERE request_id = 'req-1'"),
        4
    );
    assert_eq!(
        h.query_i64("SELECT count(*) FROM audit WHERE status = 'confirmed'"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_that_moves_before_net2_answers_is_confirmed_in_order() {
    // Net2 answers each command 600 ms after the ACU moved the relay (and the contact
    // followed, 300 ms later): the status frames come before the answer, and nothing moves
    // after it. Every command must still read accepted → sent → confirmed, in that order.
    let mut h = Harness::new(SimConfig::default(), "    command_confirm_timeout: 3s\n").await;
    h.sim
        .faults()
        .command_answer_ms
        .store(600, Ordering::Relaxed);
    h.start().await;
    ready(&h).await;
    for i in 0..4 {
        for action in [DoorAction::HoldOpen, DoorAction::Close] {
            let ups = command(&h, &format!("early-{i}-{action:?}"), 6203980, action).await;
            let statuses: Vec<_> = ups.iter().map(|u| u.status).collect();
            assert_eq!(
                statuses,
                [
                    CommandStatus::Accepted,
                    CommandStatus::Sent,
                    CommandStatus::Confirmed
                ],
                "{action:?} {i}: {ups:#?}"
            );
        }
    }
    assert_eq!(h.sim.commands().len(), 8, "each sent once");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn momentary_door_is_not_toggled_the_wrong_way() {
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.start().await;
    ready(&h).await;
    // The garage port's relay is open in the fixture status: holding it open would close it.
    let ups = command(&h, "g-1", 7242929, DoorAction::HoldOpen).await;
    assert_eq!(ups.last().unwrap().status, CommandStatus::Rejected);
    assert!(h.sim.commands().is_empty());
    let ups = command(&h, "g-2", 7242929, DoorAction::Close).await;
    assert_eq!(
        ups.last().unwrap().status,
        CommandStatus::Confirmed,
        "{ups:?}"
    );
    assert_eq!(h.sim.commands().len(), 1);
    assert!(!h.sim.door_status(7242929).unwrap().door_relay_open);
    // Unconfigured doors are refused.
    let ups = command(&h, "x-1", 3962494, DoorAction::Open).await;
    assert_eq!(ups.last().unwrap().status, CommandStatus::Rejected);
    assert_eq!(h.sim.commands().len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_logged_kept_and_survived() {
    let mut h = Harness::new(SimConfig::default(), "    live: false\n").await;
    h.start().await;
    wait_for("first poll", T, || h.sim.stats().events_requests >= 1).await;
    h.sim
        .faults()
        .malformed_events
        .store(true, Ordering::SeqCst);
    wait_for("malformed kept", T, || {
        h.query_i64("SELECT count(*) FROM events WHERE kind IN ('unparsed', 'other')") >= 2
    })
    .await;
    h.sim
        .faults()
        .malformed_events
        .store(false, Ordering::SeqCst);
    // HTML error pages and 500s: the source reports the server unreachable, then recovers.
    for fault in [&h.sim.faults().html_error, &h.sim.faults().fail_500] {
        let mut watch = h.app().bus.watch();
        fault.store(true, Ordering::SeqCst);
        wait_health(&mut watch, false).await;
        fault.store(false, Ordering::SeqCst);
        wait_health(&mut watch, true).await;
    }
    // Empty bodies are "no events", not an error.
    h.sim.faults().empty_bodies.store(true, Ordering::SeqCst);
    let polls = h.sim.stats().events_requests;
    wait_for("polled empty bodies", T, || {
        h.sim.stats().events_requests >= polls + 2
    })
    .await;
    h.sim.faults().empty_bodies.store(false, Ordering::SeqCst);
    let id = h
        .sim
        .push_event(SimEvent::new(20, 6612642).user(12).rest_only());
    wait_for("recovered", T, || h.stored_source_ids().contains(&id)).await;
    h.stop().await;
    let raw_ok =
        h.query_i64("SELECT count(*) FROM events WHERE kind = 'unparsed' AND raw LIKE '%abc%'");
    assert!(raw_ok >= 1, "the malformed element is kept raw");
}

async fn wait_health(watch: &mut tokio::sync::broadcast::Receiver<Message>, online: bool) {
    let end = tokio::time::Instant::now() + T;
    loop {
        assert!(
            tokio::time::Instant::now() < end,
            "health never became online={online}"
        );
        if let Ok(Ok(Message::Health(hl))) =
            tokio::time::timeout(Duration::from_millis(200), watch.recv()).await
            && hl.online == online
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_live_events_is_published_in_order() {
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.start().await;
    wait_for("live socket", T, || {
        h.sim.websocket_count() == 1 && !h.sim.stats().subscriptions.is_empty()
    })
    .await;
    let mut watch = h.app().bus.watch();
    let t0 = h.sim.local_now();
    // One SignalR frame carrying three events (the `A:[[…,…,…]]` shape).
    h.sim.push_events(vec![
        SimEvent::new(20, 6612642).user(12).at(t0),
        SimEvent::new(46, 6612642).at(t0 + chrono::Duration::seconds(1)),
        SimEvent::new(29, 6612642).at(t0 + chrono::Duration::seconds(2)),
    ]);
    let mut kinds = Vec::new();
    let end = tokio::time::Instant::now() + T;
    while kinds.len() < 3 && tokio::time::Instant::now() < end {
        if let Ok(Ok(Message::Event(e))) =
            tokio::time::timeout(Duration::from_millis(200), watch.recv()).await
        {
            kinds.push(e.kind.name());
        }
    }
    assert_eq!(
        kinds,
        vec!["access_granted", "door_opened", "door_relocked"]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_socket_reconnects_before_the_token_expires() {
    let sim = SimConfig {
        token_lifetime: Duration::from_secs(6),
        drop_ws_on_token_expiry: true,
        ..SimConfig::default()
    };
    let mut h = Harness::new(sim, "    reconnect_before_expiry: 3s\n").await;
    h.start().await;
    wait_for("second socket", T, || {
        h.sim.stats().ws_connects >= 2 && h.sim.websocket_count() == 1
    })
    .await;
    let s = h.sim.stats();
    assert_eq!(
        s.unauthorized, 0,
        "reconnected with a fresh token, never with a stale one"
    );
    h.sim.push_event(SimEvent::new(20, 6612642).user(19));
    wait_for("live after planned reconnect", T, || {
        h.query_i64("SELECT count(*) FROM events WHERE user_id = 19") == 1
    })
    .await;
    h.stop().await;
}

async fn health_detail(h: &Harness, needle: &str) -> String {
    let mut detail = String::new();
    wait_for("health detail", T, || {
        detail = h
            .app()
            .bus
            .health("net2")
            .map(|s| s.detail)
            .unwrap_or_default();
        detail.contains(needle)
    })
    .await;
    assert!(!h.app().bus.health("net2").unwrap().online);
    detail
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_operator_gets_a_clear_error_naming_the_fix() {
    let mut h = Harness::new(
        SimConfig {
            mfa_required: true,
            ..SimConfig::default()
        },
        "    live: false\n",
    )
    .await;
    h.start().await;
    let d = health_detail(&h, "multi-factor").await;
    assert!(d.contains("operator without MFA"), "{d}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_not_retried_quickly() {
    let mut h = Harness::new(
        SimConfig {
            password: "something-else".into(),
            ..SimConfig::default()
        },
        "    live: false\n",
    )
    .await;
    h.start().await;
    let d = health_detail(&h, "refused the credentials").await;
    assert!(d.contains("Gate House"), "names the operator: {d}");
    let first = h.sim.stats().password_grants;
    // Every task needs a token; none may hammer the endpoint with a known-bad password.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = h.sim.stats().password_grants;
    assert_eq!(later, first, "bad credentials were retried within 3 s");
    assert_eq!(first, 1, "one refused grant is shared by every task");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockdown_is_sent_once_and_reported() {
    let mut h = Harness::new(SimConfig::default(), "    command_confirm_timeout: 1s\n").await;
    h.start().await;
    ready(&h).await;
    let mut watch = h.app().bus.watch();
    h.app()
        .commands()
        .send(Command {
            request_id: "ld-1".into(),
            requester: "test".into(),
            kind: CommandKind::Lockdown { active: true },
            received: chrono::Utc::now(),
            received_at: tokio::time::Instant::now(),
        })
        .await
        .unwrap();
    let mut statuses = Vec::new();
    let end = tokio::time::Instant::now() + T;
    while tokio::time::Instant::now() < end && statuses.len() < 3 {
        if let Ok(Ok(Message::Command(u))) =
            tokio::time::timeout(Duration::from_millis(200), watch.recv()).await
        {
            statuses.push(u.status);
        }
    }
    // The simulator logs no lockdown event, so the command is sent but never confirmed.
    assert_eq!(
        statuses,
        vec![
            CommandStatus::Accepted,
            CommandStatus::Sent,
            CommandStatus::Timeout
        ]
    );
    let cmds = h.sim.commands();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].path, "/api/v1/commands/controlLockdown");
    assert_eq!(cmds[0].body, serde_json::json!({"lockdown": true}));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_times_out_and_recovers() {
    let mut h = Harness::new(
        SimConfig::default(),
        "    live: false\n    request_timeout: 400ms\n",
    )
    .await;
    h.start().await;
    wait_for("online", T, || {
        h.app().bus.health("net2").is_some_and(|s| s.online)
    })
    .await;
    h.sim.faults().slow_ms.store(1500, Ordering::SeqCst);
    wait_for("offline while slow", T, || {
        h.app().bus.health("net2").is_some_and(|s| !s.online)
    })
    .await;
    h.sim.faults().slow_ms.store(0, Ordering::SeqCst);
    let id = h
        .sim
        .push_event(SimEvent::new(20, 6612642).user(12).rest_only());
    wait_for("recovered", Duration::from_secs(40), || {
        h.stored_source_ids().contains(&id)
    })
    .await;
    assert!(h.app().bus.health("net2").unwrap().online);
    h.stop().await;
}

/// 100 events within one second across 5 doors × 4 users (five of each pair: one card
/// badged five times at one door), starting half-way through a second so each pair has
/// events in two seconds; `rest_only(i)` events lose their live copy. Pushed in four batches
/// a few ms apart, so the REST poll races the live feed. Returns the Net2 ids.
fn burst(h: &Harness, want: &mut Vec<String>, rest_only: impl Fn(usize) -> bool) -> Vec<i64> {
    let doors = [6626578, 6612642, 7319051, 6203980, 7242929];
    let users = [8, 12, 19, 42];
    let now = h.sim.local_now();
    let t0 = now - chrono::Duration::nanoseconds(now.and_utc().timestamp_subsec_nanos() as i64)
        + chrono::Duration::milliseconds(500);
    let evs: Vec<SimEvent> = (0..100)
        .map(|i| {
            let (door, user) = (doors[i % 5], users[(i / 5) % 4]);
            let t = t0 + chrono::Duration::milliseconds(i as i64 * 9);
            want.push(format!(
                "{}|20|{user}|{door}",
                t.format("%Y-%m-%dT%H:%M:%S")
            ));
            let e = SimEvent::new(20, door).user(user).at(t);
            if rest_only(i) { e.rest_only() } else { e }
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in evs.chunks(25) {
        ids.extend(h.sim.push_events(chunk.to_vec()));
        std::thread::sleep(Duration::from_millis(5));
    }
    ids
}

/// The stored events are the events that happened: the same fingerprints (time to the
/// second, type, user, door), each as often.
fn same_events(h: &Harness, want: &[String]) {
    let c = rusqlite::Connection::open(h.db()).unwrap();
    let mut st = c
        .prepare("SELECT fingerprint FROM events ORDER BY fingerprint")
        .unwrap();
    let got: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let count = |v: &[String]| {
        let mut m = std::collections::BTreeMap::<String, i64>::new();
        for f in v {
            *m.entry(f.clone()).or_default() += 1;
        }
        m
    };
    let (got, want) = (count(&got), count(want));
    let diff: Vec<String> = want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter_map(|f| {
            let (g, w) = (got.get(f).unwrap_or(&0), want.get(f).unwrap_or(&0));
            (g != w).then(|| format!("{f}: stored {g}, happened {w}"))
        })
        .collect();
    assert!(
        diff.is_empty(),
        "stored events differ from what happened: {diff:#?}"
    );
}

/// Every one of `ids` is stored exactly once (by its Net2 id: a live copy records the id of
/// its REST copy) and published once, and nothing else is.
async fn all_exactly_once(
    h: &Harness,
    ids: &[i64],
    watch: &mut tokio::sync::broadcast::Receiver<Message>,
    published: &mut usize,
) {
    let end = tokio::time::Instant::now() + T;
    while h.stored_source_ids().len() < ids.len() {
        *published += drain(watch);
        assert!(tokio::time::Instant::now() < end, "every Net2 id stored");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // A few more polls add nothing.
    let polls = h.sim.stats().events_requests;
    wait_for("more polls", T, || {
        h.sim.stats().events_requests >= polls + 3
    })
    .await;
    *published += drain(watch);
    assert_eq!(
        h.stored_source_ids(),
        ids.to_vec(),
        "each event stored once, under its own Net2 id"
    );
    assert_eq!(events_in_db(h), ids.len() as i64, "and nothing else");
    assert_eq!(*published, ids.len(), "each event published once");
}

/// Events published on the bus since the last call.
fn drain(watch: &mut tokio::sync::broadcast::Receiver<Message>) -> usize {
    let mut n = 0;
    while let Ok(m) = watch.try_recv() {
        n += matches!(m, Message::Event(_)) as usize;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_events_in_one_second_is_kept_whole_live_rest_and_both() {
    // Live and REST (the REST poll fast enough to race the live copies).
    let mut h = Harness::new(SimConfig::default(), "").await;
    h.start().await;
    wait_for("live socket", T, || {
        h.sim.websocket_count() == 1 && !h.sim.stats().subscriptions.is_empty()
    })
    .await;
    let mut watch = h.app().bus.watch();
    let (mut published, mut fps) = (0, Vec::new());
    let mut all = burst(&h, &mut fps, |_| false);
    all_exactly_once(&h, &all, &mut watch, &mut published).await;
    same_events(&h, &fps);
    // A third of the live copies lost (a flaky socket): the REST copies fill in, nothing twice.
    all.extend(burst(&h, &mut fps, |i| i % 3 == 0));
    all_exactly_once(&h, &all, &mut watch, &mut published).await;
    same_events(&h, &fps);
    // A restart re-reads the overlap of the last minutes: still once each.
    h.stop().await;
    h.start().await;
    let polls = h.sim.stats().events_requests;
    wait_for("backfill after restart", T, || {
        h.sim.stats().events_requests >= polls + 2
    })
    .await;
    assert_eq!(h.stored_source_ids(), all);
    same_events(&h, &fps);
    h.stop().await;

    // REST only.
    let mut h = Harness::new(SimConfig::default(), "    live: false\n").await;
    h.start().await;
    let mut watch = h.app().bus.watch();
    let (mut published, mut fps) = (0, Vec::new());
    let ids = burst(&h, &mut fps, |_| true);
    all_exactly_once(&h, &ids, &mut watch, &mut published).await;
    same_events(&h, &fps);
    h.stop().await;
}

/// A UTC offset (minutes) an hour east of this machine's zone, so the simulated Net2 server
/// never shares the test machine's zone (here: a server at +01:00 on a UTC machine).
fn foreign_offset_minutes() -> i32 {
    let machine = chrono::Local::now().offset().local_minus_utc() / 60;
    machine + 60
}

/// Time, stored time and Net2 id of the stored events of `user`, in store order.
fn stored_times(h: &Harness, user: i64) -> Vec<(String, i64, String)> {
    let c = rusqlite::Connection::open(h.db()).unwrap();
    let mut st = c
        .prepare("SELECT time, time_ms, via FROM events WHERE user_id = ?1 ORDER BY seq")
        .unwrap();
    st.query_map([user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_event_at_connect_is_read_in_the_server_zone_not_the_machines() {
    use chrono::{DateTime, FixedOffset, TimeZone, Timelike};
    use common::broker::{Broker, Recorder};
    let server = foreign_offset_minutes();
    let zone = FixedOffset::east_opt(server * 60).unwrap();
    let broker = Broker::start();
    let rec = Recorder::start(broker.port, "recorder", "gatehouse/door/+/event", false).await;
    let sim = SimConfig {
        utc_offset_minutes: server,
        ..SimConfig::default()
    };
    let mut h = Harness::new(sim, "").await;
    h.top = format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {}\n  client_id: gatehouse-tz-{}\n",
        broker.port,
        rand::random::<u32>()
    );
    // Hostile: the log is empty until the daemon subscribes, and the event happens that very
    // moment. Its live copy has a naive local time and nothing has told the daemon the zone;
    // REST answers are slow, so the live copy comes first.
    let t = h.sim.local_now().with_nanosecond(0).unwrap();
    h.sim.faults().events_delay_ms.store(300, Ordering::Relaxed);
    h.sim
        .push_on_subscribe(vec![SimEvent::new(20, 6612642).user(12).at(t)]);
    h.start().await;
    wait_for("the event on MQTT", T, || {
        !rec.on("gatehouse/door/6612642/event").is_empty()
    })
    .await;
    let want = zone.from_local_datetime(&t).unwrap();
    let j = rec.on("gatehouse/door/6612642/event")[0].json();
    let got = DateTime::parse_from_rfc3339(j["time"].as_str().unwrap()).unwrap();
    assert_eq!(
        (got, got.offset()),
        (want, want.offset()),
        "published with the server's instant and offset: {j}"
    );
    assert_eq!(
        j["via"], "live",
        "the live copy was held until the zone was known, not dropped: {j}"
    );
    let stored = stored_times(&h, 12);
    assert_eq!(
        stored,
        vec![(want.to_rfc3339(), want.timestamp_millis(), "live".into())],
        "stored once, with the server's instant and offset"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_event_after_the_server_changes_offset_gets_the_new_one() {
    use chrono::{FixedOffset, TimeZone, Timelike};
    let server = foreign_offset_minutes();
    let sim = SimConfig {
        utc_offset_minutes: server,
        ..SimConfig::default()
    };
    let mut h = Harness::new(sim, "").await;
    h.start().await;
    wait_for("live socket", T, || {
        h.sim.websocket_count() == 1 && !h.sim.stats().subscriptions.is_empty()
    })
    .await;
    // One event with the first offset, seen live and over REST.
    let t1 = h.sim.local_now().with_nanosecond(0).unwrap();
    let id = h.sim.push_event(SimEvent::new(20, 6612642).user(19).at(t1));
    wait_for("first event paired with its REST copy", T, || {
        h.stored_source_ids().contains(&id)
    })
    .await;
    // Summer time starts: the server's clock jumps an hour ahead; the next live event carries
    // the new wall time, still without an offset.
    h.sim.set_utc_offset_minutes(server + 60);
    let t2 = h.sim.local_now().with_nanosecond(0).unwrap();
    h.sim
        .push_event(SimEvent::new(26, 6612642).user(19).token_type(1).at(t2));
    wait_for("second event stored", T, || stored_times(&h, 19).len() == 2).await;
    let before = FixedOffset::east_opt(server * 60).unwrap();
    let after = FixedOffset::east_opt((server + 60) * 60).unwrap();
    let (w1, w2) = (
        before.from_local_datetime(&t1).unwrap(),
        after.from_local_datetime(&t2).unwrap(),
    );
    assert_eq!(
        stored_times(&h, 19),
        vec![
            (w1.to_rfc3339(), w1.timestamp_millis(), "live".into()),
            (w2.to_rfc3339(), w2.timestamp_millis(), "live".into()),
        ],
        "each live event in the offset the server had when it happened"
    );
    h.stop().await;
}

/// PINs and phone numbers of the simulator's users (served in clear text, as Net2 does).
fn user_secrets(h: &Harness) -> Vec<String> {
    h.sim
        .users()
        .into_iter()
        .flat_map(|u| [u.pin, u.telephone])
        .flatten()
        .collect()
}

fn assert_no_secrets(dir: &gatehouse::directory::Directory, secrets: &[String]) {
    let dump = format!("{dir:?} {}", serde_json::to_string(dir).unwrap());
    for s in secrets {
        assert!(!dump.contains(s.as_str()), "{s:?} leaked into {dump}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_lists_doors_and_users_by_name_and_follows_them() {
    let mut h = Harness::new(SimConfig::default(), "    users_refresh_interval: 300ms\n").await;
    h.start().await;
    let dir = h.app().directory.clone();
    wait_for("directory ready", T, || dir.ready()).await;

    // Every door of the simulator, named as Net2 names it (the test config names none).
    let sim_doors: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("fixtures/net2/doors.json")).unwrap();
    assert_eq!(dir.doors().len(), sim_doors.len());
    for d in &sim_doors {
        let door = dir.door(d["id"].as_u64().unwrap()).expect("listed");
        assert_eq!(door.name.as_deref(), d["name"].as_str());
    }
    wait_for("every door polled and online", T, || {
        dir.doors()
            .iter()
            .all(|d| d.in_last_poll && d.online == Some(true) && d.last_change.is_some())
    })
    .await;

    // Users by name, nothing else.
    let names: Vec<_> = dir.users().into_iter().map(|u| u.name).collect();
    assert_eq!(
        names,
        [
            Some("Mette Kragh Holm".to_string()),
            Some("Jonas Bak".into()),
            Some("Signe Vestergaard".into())
        ]
    );
    assert!(dir.users().iter().all(|u| u.active == Some(true)));
    assert_no_secrets(&dir, &user_secrets(&h));

    // The ACU goes offline and comes back (events 500 / 501): the door follows.
    let door = 6612642;
    let before = dir.door(door).unwrap().last_change;
    h.sim.push_event(SimEvent::new(500, door));
    wait_for("ACU offline", T, || {
        dir.door(door).unwrap().online == Some(false)
    })
    .await;
    let offline_at = dir.door(door).unwrap().last_change;
    assert!(offline_at > before, "{offline_at:?} after {before:?}");
    h.sim.push_event(SimEvent::new(501, door));
    wait_for("ACU online", T, || {
        dir.door(door).unwrap().online == Some(true)
    })
    .await;
    assert!(dir.door(door).unwrap().last_change >= offline_at);

    // A user added in Net2 is listed at the next refresh, by name only.
    h.sim.add_user(SimUser {
        pin: Some("6060".into()),
        telephone: Some("29393939".into()),
        ..SimUser::new(40, "Ida", "Testesen")
    });
    wait_for("new user listed", T, || {
        dir.user(40)
            .is_some_and(|u| u.name.as_deref() == Some("Ida Testesen"))
    })
    .await;
    assert_no_secrets(&dir, &user_secrets(&h));

    // A failing user list keeps the users; the source goes on.
    h.sim.faults().users_500.store(true, Ordering::SeqCst);
    h.sim.remove_user(40);
    let asked = h.sim.stats().users_requests;
    wait_for("failed users fetches", T, || {
        h.sim.stats().users_requests >= asked + 3
    })
    .await;
    assert!(dir.user(40).is_some(), "kept through the failures");
    assert_eq!(dir.users().len(), 4);
    h.sim.faults().users_500.store(false, Ordering::SeqCst);
    wait_for("removed user gone", T, || dir.user(40).is_none()).await;
    assert_eq!(dir.users().len(), 3);
    h.stop().await;
}
