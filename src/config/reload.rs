//! Hot reload: the file is watched (notify) and SIGHUP re-reads it. What can change live is
//! applied through a `watch` channel; the rest is named as "restart required".

use super::*;
use std::sync::Arc;
use tokio::sync::watch;

/// Keys whose change needs a restart, comparing `old` and `new`. Live keys: `log.level`,
/// `doors.*`, Net2 poll intervals, timeouts and page size, camera hold-offs, `web.users`,
/// `web.session_ttl`, `web.hardware_key`, `web.rate_limits`, `web.body_read_timeout`, `people`
/// (once there are some),
/// `presence`, `apptive.*` but `readers[].usb`.
pub fn restart_required(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    if old.log.format != new.log.format {
        keys.push("log.format".to_string());
    }
    if old.storage.path != new.storage.path {
        keys.push("storage.path".into());
    }
    // Hold-offs apply live; anything else about a camera (or adding / removing one) does not.
    let fixed = |c: &HikvisionConfig| HikvisionConfig {
        holdoff: HumanDuration::secs(0),
        holdoff_per_type: Default::default(),
        ..c.clone()
    };
    if old.sources.hikvision.len() != new.sources.hikvision.len() {
        keys.push("sources.hikvision".into());
    } else {
        for (a, b) in old.sources.hikvision.iter().zip(&new.sources.hikvision) {
            if fixed(a) != fixed(b) {
                keys.push(format!("sources.hikvision.{}", a.id));
            }
        }
    }
    // Accounts, session length, hardware key, rate limits and the body timeout apply live
    // (read per request).
    let fixed_web = |w: &Option<WebConfig>| {
        w.clone().map(|w| WebConfig {
            users: Vec::new(),
            session_ttl: HumanDuration::secs(0),
            hardware_key: None,
            hardware_key_file: None,
            rate_limits: RateLimits::default(),
            body_read_timeout: HumanDuration::secs(0),
            ..w
        })
    };
    if fixed_web(&old.web) != fixed_web(&new.web) {
        keys.push("web".into());
    }
    if old.media.snapshot_dir != new.media.snapshot_dir {
        keys.push("media.snapshot_dir".into());
    }
    // People apply live (the presence engine reconfigures), but the engine is started only
    // when there are people at start-up.
    if old.people.is_empty() && !new.people.is_empty() {
        keys.push("people".into());
    }
    if old.mqtt != new.mqtt {
        // Discovery follows door changes live; the connection itself needs a restart.
        keys.push("mqtt".into());
    }
    // QR access: everything applies live (read per scan) but adding or removing the section
    // (the service starts with the daemon) and the USB readers (opened at start).
    match (&old.apptive, &new.apptive) {
        (Some(a), Some(b)) => {
            let usb = |c: &crate::config::ApptiveConfig| {
                c.readers
                    .iter()
                    .map(|r| (r.id.clone(), r.usb.clone()))
                    .filter(|(_, u)| u.is_some())
                    .collect::<Vec<_>>()
            };
            if usb(a) != usb(b) {
                keys.push("apptive.readers.usb".into());
            }
        }
        (None, None) => {}
        _ => keys.push("apptive".into()),
    }
    match (&old.sources.net2, &new.sources.net2) {
        (Some(a), Some(b)) => {
            let fields: [(&str, bool); 7] = [
                ("url", a.url != b.url),
                ("username", a.username != b.username),
                ("password", a.password != b.password),
                ("password_file", a.password_file != b.password_file),
                ("client_id", a.client_id != b.client_id),
                ("tls", a.tls != b.tls),
                ("live", a.live != b.live),
            ];
            keys.extend(
                fields
                    .iter()
                    .filter(|(_, changed)| *changed)
                    .map(|(k, _)| format!("sources.net2.{k}")),
            );
        }
        (None, None) => {}
        _ => keys.push("sources.net2".into()),
    }
    // GATE: the client (URL, token, TLS, timeout) is built once; intervals, page size,
    // backfill, back-off and the entity choices are read on each use.
    match (&old.sources.gate, &new.sources.gate) {
        (Some(a), Some(b)) => {
            let fields: [(&str, bool); 5] = [
                ("url", a.url != b.url),
                ("token", a.token != b.token),
                ("token_file", a.token_file != b.token_file),
                ("tls", a.tls != b.tls),
                ("request_timeout", a.request_timeout != b.request_timeout),
            ];
            keys.extend(
                fields
                    .iter()
                    .filter(|(_, changed)| *changed)
                    .map(|(k, _)| format!("sources.gate.{k}")),
            );
        }
        (None, None) => {}
        _ => keys.push("sources.gate".into()),
    }
    keys
}

/// The running configuration, shared with every task. Tasks read `borrow()` when they need a
/// value, so live-applicable changes take effect at their next use.
pub type ConfigRx = watch::Receiver<Arc<Config>>;

/// Outcome of one reload attempt, for logs and tests.
#[derive(Debug)]
pub enum ReloadOutcome {
    Unchanged,
    Applied { restart_required: Vec<String> },
    Rejected(ConfigErrors),
}

/// Re-read `path`, validate, and publish it on `tx` if valid. The running config stays when
/// the new file is invalid.
pub fn reload(path: &std::path::Path, tx: &watch::Sender<Arc<Config>>) -> ReloadOutcome {
    match load_file(path) {
        Err(e) => {
            tracing::error!(path = %path.display(), errors = %e, "config reload rejected; keeping the running config");
            ReloadOutcome::Rejected(e)
        }
        Ok(new) => {
            let old = tx.borrow().clone();
            if *old == new {
                return ReloadOutcome::Unchanged;
            }
            let restart = restart_required(&old, &new);
            if !restart.is_empty() {
                tracing::warn!(keys = %restart.join(", "), "restart required: {}", restart.join(", "));
            }
            tracing::info!(summary = %new.summary(), "config reloaded");
            tx.send_replace(Arc::new(new));
            ReloadOutcome::Applied {
                restart_required: restart,
            }
        }
    }
}

/// Watch the config file's directory (editors replace files) and SIGHUP; reload on either.
/// Returns when `cancel` fires.
pub async fn watch_file(
    path: std::path::PathBuf,
    tx: watch::Sender<Arc<Config>>,
    cancel: tokio_util::sync::CancellationToken,
) {
    use notify::{RecursiveMode, Watcher};
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel::<()>(8);
    let file_name = path.file_name().map(|f| f.to_owned());
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && (ev.kind.is_modify() || ev.kind.is_create())
            && ev
                .paths
                .iter()
                .any(|p| p.file_name() == file_name.as_deref())
        {
            let _ = ev_tx.try_send(());
        }
    });
    let _watcher = match watcher {
        Ok(mut w) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(error = %e, "unable to watch config file; SIGHUP still reloads");
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "unable to start config file watcher; SIGHUP still reloads");
            None
        }
    };
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            Some(()) = ev_rx.recv() => {
                // Editors write in several steps: let the burst settle, then read once.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                while ev_rx.try_recv().is_ok() {}
                reload(&path, &tx);
            }
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading config");
                reload(&path, &tx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "version: 1\nsources:\n  net2:\n    url: http://h:8080\n    username: A B\n    client_id: x\n    password: p\n{extra}"
        );
        load_str(&text, &|_| None).unwrap()
    }

    #[test]
    fn the_first_person_needs_a_restart_later_changes_do_not() {
        let none = crate::config::Config::default();
        let mut one = none.clone();
        one.people.push(crate::config::PersonConfig {
            id: "anna".into(),
            net2_users: vec![8],
            ..Default::default()
        });
        assert_eq!(restart_required(&none, &one), vec!["people"]);
        let mut two = one.clone();
        two.people.push(crate::config::PersonConfig {
            id: "bo".into(),
            ..Default::default()
        });
        two.presence.wifi_away_after = HumanDuration::secs(60);
        assert!(restart_required(&one, &two).is_empty());
        assert!(restart_required(&two, &none).is_empty());
    }

    #[test]
    fn live_keys_need_no_restart() {
        let a = cfg("");
        let b = cfg("    poll_interval: 9s\ndoors:\n  1: { mode: disabled }\n");
        assert!(restart_required(&a, &b).is_empty());
        let c = load_str(
            "version: 1\nsources:\n  net2:\n    url: http://other:8080\n    username: A B\n    client_id: x\n    password: p\n    live: false\n",
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            restart_required(&a, &c),
            vec!["sources.net2.url", "sources.net2.live"]
        );
    }

    #[test]
    fn gate_polling_is_live_its_client_is_not() {
        let gate = |extra: &str| {
            let text = format!(
                "version: 1\nsources:\n  gate:\n    url: http://127.0.0.1:9\n    token: t\n{extra}"
            );
            load_str(&text, &|_| None).unwrap()
        };
        let a = gate("");
        let b = gate(
            "    poll_interval: 5s\n    page_size: 20\n    user_entities: all\n    forget_after: 1d\n",
        );
        assert!(restart_required(&a, &b).is_empty());
        let c = load_str(
            "version: 1\nsources:\n  gate:\n    url: http://127.0.0.1:9\n    token: other\n    request_timeout: 3s\n",
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            restart_required(&a, &c),
            vec!["sources.gate.token", "sources.gate.request_timeout"]
        );
        let none = load_str("version: 1\n", &|_| None).unwrap();
        assert_eq!(restart_required(&none, &a), vec!["sources.gate"]);
    }

    #[test]
    fn web_accounts_and_limits_are_live_the_listener_is_not() {
        let hash = crate::web::accounts::hash_password("password-1").unwrap();
        let web = |extra: &str| {
            cfg(&format!(
                "web:\n  jwt_secret: 0123456789abcdef\n  bind: 127.0.0.1:8480\n{extra}"
            ))
        };
        let a = web("");
        let b = web(&format!(
            "  users: [{{ name: ada, role: admin, password_hash: \"{hash}\" }}]\n  session_ttl: 1h\n  rate_limits: {{ per_user: 5 }}\n  body_read_timeout: 5s\n"
        ));
        assert!(restart_required(&a, &b).is_empty());
        let c = cfg("web:\n  jwt_secret: 0123456789abcdef\n  bind: 127.0.0.1:9000\n");
        assert_eq!(restart_required(&a, &c), vec!["web"]);
        // The connection's own limits are set when the listener starts.
        for extra in ["  header_read_timeout: 5s\n", "  max_connections: 10\n"] {
            assert_eq!(restart_required(&a, &web(extra)), vec!["web"], "{extra}");
        }
    }

    #[test]
    fn camera_holdoffs_are_live_the_rest_is_not() {
        let cam = |extra: &str| {
            load_str(
                &format!("version: 1\nsources:\n  hikvision:\n    - {{ id: g, url: \"http://c\", password: p{extra} }}\n"),
                &|_| None,
            )
            .unwrap()
        };
        let a = cam("");
        let b = cam(", holdoff: 9s, holdoff_per_type: { VMD: 2s }");
        assert!(restart_required(&a, &b).is_empty());
        let d = load_str(
            "version: 1\nsources:\n  hikvision:\n    - { id: g, url: \"http://other\", password: p }\n",
            &|_| None,
        )
        .unwrap();
        assert_eq!(restart_required(&a, &d), vec!["sources.hikvision.g"]);
    }

    #[test]
    fn invalid_file_keeps_running_config() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        let a = cfg("");
        let (tx, rx) = watch::channel(Arc::new(a.clone()));
        std::fs::write(&p, "version: 1\nbogus: 1\n").unwrap();
        assert!(matches!(reload(&p, &tx), ReloadOutcome::Rejected(_)));
        assert_eq!(**rx.borrow(), a);
        std::fs::write(
            &p,
            "version: 1\nsources:\n  net2:\n    url: http://h:8080\n    username: A B\n    client_id: x\n    password: p\n    poll_interval: 7s\n",
        )
        .unwrap();
        assert!(
            matches!(reload(&p, &tx), ReloadOutcome::Applied { ref restart_required } if restart_required.is_empty())
        );
        assert_eq!(
            rx.borrow()
                .sources
                .net2
                .as_ref()
                .unwrap()
                .poll_interval
                .get()
                .as_secs(),
            7
        );
    }
}
