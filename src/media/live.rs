//! Live streams: a hub's frames remuxed into a rolling window of fMP4 segments (no
//! transcoding). Started by REST (`…/live`) or MQTT (`stream/set START`), kept alive by
//! heartbeats and playlist fetches, stopped `hls_stop_after` after the last of them, on
//! `STOP`, or at shutdown. Several viewers of one channel share one stream (and the hub's one
//! RTSP session with snapshots).

use super::hls::Segmenter;
use super::hub::{Hub, Params, Recv, Subscription};
use super::service::{Media, lock};
use crate::error::Result;
use crate::model::{Message, StreamState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bytes of segments held per stream at most (beyond the window, a high-bitrate camera).
const MAX_BYTES: usize = 24 << 20;

pub struct Live {
    pub camera: String,
    pub channel: u32,
    pub seg: Mutex<Segmenter>,
    touched: Mutex<Instant>,
    /// Bumped on every completed segment (waiters for the first playlist).
    segments: watch::Sender<u64>,
    stop: CancellationToken,
    pub started: Instant,
    pub hub: Arc<Hub>,
}

#[derive(Default)]
pub struct Lives(Mutex<HashMap<(String, u32), Arc<Live>>>);

impl Live {
    pub fn touch(&self) {
        *lock(&self.touched) = Instant::now();
    }

    /// Wait until the playlist has a segment (or `timeout`).
    pub async fn ready(&self, timeout: Duration) -> bool {
        let mut rx = self.segments.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n > 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn playlist(&self, query: &str) -> Option<String> {
        lock(&self.seg).playlist("", query)
    }

    pub fn file(&self, name: &str) -> Option<bytes::Bytes> {
        lock(&self.seg).get(name)
    }
}

/// The playlist path of a channel's live stream on the web server.
pub fn hls_path(camera: &str, channel: u32) -> String {
    format!("/hls/{camera}/{channel}/index.m3u8")
}

/// The player page of a channel on the web server.
pub fn player_path(camera: &str, channel: u32) -> String {
    format!("/live/{camera}/{channel}")
}

/// What a token for a channel's player opens (the scope of every stream URL handed out): the
/// page, the calls it makes (start and heartbeat; not stop, which would cut off the other
/// viewers, nor snapshots), the playlist and its segments. One token, so the token of an
/// `hls_url` also opens the player page, and a leaked link opens this channel's video only.
pub fn player_scope(camera: &str, channel: u32) -> Vec<String> {
    let api = format!("/api/device/{camera}/channel/{channel}");
    vec![
        player_path(camera, channel),
        format!("{api}/live"),
        format!("{api}/heartbeat"),
        format!("/hls/{camera}/{channel}/"),
    ]
}

impl Media {
    /// Start (or keep alive) the live stream of a channel. Idempotent: a second START is a
    /// heartbeat.
    pub async fn live_start(&self, camera: &str, channel: u32) -> Result<Arc<Live>> {
        if let Some(l) = self.live(camera, channel) {
            l.touch();
            return Ok(l);
        }
        let m = self.config().media.clone();
        let hub = self.hub(camera, channel, m.live_stream)?;
        let live = {
            let mut lives = lock(&self.0.live.0);
            if let Some(l) = lives.get(&(camera.to_string(), channel)) {
                l.touch();
                return Ok(l.clone());
            }
            let live = Arc::new(Live {
                camera: camera.to_string(),
                channel,
                seg: Mutex::new(
                    Segmenter::new(m.hls_segment.get(), m.hls_window as usize)
                        .with_max_bytes(MAX_BYTES)
                        .with_short_first()
                        .with_gop_hint(hub.gop()),
                ),
                touched: Mutex::new(Instant::now()),
                segments: watch::channel(0).0,
                stop: self.0.cancel.child_token(),
                started: Instant::now(),
                hub: hub.clone(),
            });
            lives.insert((camera.to_string(), channel), live.clone());
            live
        };
        let sub = hub.subscribe();
        tokio::spawn(run(self.clone(), live.clone(), sub));
        tracing::info!(camera, channel, stream = ?m.live_stream, "live stream started");
        self.publish_state(&live, true, "started").await;
        Ok(live)
    }

    pub fn live(&self, camera: &str, channel: u32) -> Option<Arc<Live>> {
        lock(&self.0.live.0)
            .get(&(camera.to_string(), channel))
            .cloned()
    }

    /// Keep a stream alive; false when it is not running.
    pub fn live_heartbeat(&self, camera: &str, channel: u32) -> bool {
        self.live(camera, channel).map(|l| l.touch()).is_some()
    }

    /// Stop a stream; false when it was not running.
    pub fn live_stop(&self, camera: &str, channel: u32) -> bool {
        // Out of the map at once (not when its task gets round to it): the playlist 404s as
        // soon as STOP is answered, and a START right after gets a fresh stream rather than
        // this one, about to vanish.
        let l = lock(&self.0.live.0).remove(&(camera.to_string(), channel));
        match l {
            Some(l) => {
                l.stop.cancel();
                true
            }
            None => false,
        }
    }

    pub fn lives(&self) -> Vec<Arc<Live>> {
        lock(&self.0.live.0).values().cloned().collect()
    }

    async fn publish_state(&self, live: &Live, active: bool, detail: &str) {
        let urls = active.then(|| self.urls()).flatten().map(|u| {
            // One token for both URLs: the player's.
            let query = u.query_for(&player_scope(&live.camera, live.channel));
            let base = u.base();
            (
                format!("{base}{}{query}", hls_path(&live.camera, live.channel)),
                format!("{base}{}{query}", player_path(&live.camera, live.channel)),
            )
        });
        let (hls_url, player_url) = urls.unzip();
        self.0
            .bus
            .publish(Message::Stream(StreamState {
                camera: live.camera.clone(),
                channel: live.channel,
                active,
                hls_url,
                player_url,
                detail: detail.to_string(),
            }))
            .await;
    }
}

async fn run(media: Media, live: Arc<Live>, mut sub: Subscription) {
    let stop_after = || media.config().media.hls_stop_after.get();
    let mut params: Option<Arc<Params>> = None;
    let mut session = 0u64;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        tokio::select! {
            _ = live.stop.cancelled() => break "stopped",
            _ = check.tick() => {
                if lock(&live.touched).elapsed() > stop_after() {
                    break "no heartbeat or playlist fetch";
                }
            }
            r = sub.recv() => match r {
                None => break "shutdown",
                Some(Recv::Missed(n)) => {
                    // A gap in the timeline: start a new segment run at the next keyframe.
                    tracing::debug!(camera = %live.camera, channel = live.channel, missed = n, "live stream fell behind");
                    lock(&live.seg).reset();
                }
                Some(Recv::Frame(f)) => {
                    let mut seg = lock(&live.seg);
                    if f.session != session {
                        if session != 0 {
                            seg.reset();
                        }
                        session = f.session;
                    }
                    let p = f.params.clone();
                    if p.as_deref() != params.as_deref() {
                        if let Some(p) = &p
                            && let Err(e) = seg.set_params(&p.sample_entry, &p.codec, p.width, p.height)
                        {
                            tracing::warn!(camera = %live.camera, channel = live.channel, error = %e, "unusable stream parameters for HLS");
                        }
                        params = p;
                    }
                    if seg.push(f.data.clone(), f.is_key, f.pts).is_some() {
                        drop(seg);
                        live.segments.send_modify(|n| *n += 1);
                    }
                }
            }
        }
    };
    drop(sub);
    let superseded = {
        // Only this stream's own entry: after a STOP a new one may already be running.
        let mut lives = lock(&media.0.live.0);
        let key = (live.camera.clone(), live.channel);
        if lives.get(&key).is_some_and(|l| Arc::ptr_eq(l, &live)) {
            lives.remove(&key);
        }
        lives.contains_key(&key)
    };
    tracing::info!(camera = %live.camera, channel = live.channel, reason = why, "live stream stopped");
    // A START right after a STOP already runs a new stream for this channel: its retained
    // "ON" is the truth, so this one's "OFF" is not published over it.
    if !superseded {
        media.publish_state(&live, false, why).await;
    }
}
