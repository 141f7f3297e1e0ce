//! gatehouse: a daemon that connects a building's access control (Paxton Net2) and cameras to
//! home automation (MQTT, Home Assistant, openHAB).
//!
//! # Layout
//! Data flows one way, commands the other:
//!
//! ```text
//! sources (net2, …)  →  bus (typed Message)  →  sinks (store, …)
//! sinks (CLI, …)     →  bus (typed Command)  →  the one source that owns the device
//! ```
//!
//! - [`app`]: wiring — config → bus → sources and sinks → shutdown. The list of sources and
//!   sinks is there, in one place.
//! - [`config`]: typed, strict config; loading with every error and its path; hot reload.
//! - [`model`]: `Event`, `Command`, door state — what the rest of the program sees.
//! - [`bus`]: the typed hub; [`commands`]: the door checks MQTT and REST share.
//! - [`directory`]: the doors and users the sources know (names only), and the cameras' device
//!   info and reachability, for the REST API.
//! - [`emergency`]: emergency lockdown / unlock / restore, their expiry kept across restarts.
//! - [`clock`]: wall time behind a trait (tests move it).
//! - [`presence`]: one home / away state per person (badges, Wi-Fi sessions, QR entries).
//! - [`sources`]: devices. [`sources::net2`] is the Paxton Net2 Local API (REST + SignalR);
//!   [`sources::gate`] polls Zequenze GATE (Wi-Fi portal log and RADIUS sessions).
//! - [`apptive`]: Apptive QR-code access (scans → Apptive → the door), the USB readers.
//! - [`sinks`]: where messages go ([`sinks::store`]: SQLite).
//! - [`storage`]: SQLite schema, migrations and queries.
//! - `sim`: device simulators for `gatehouse demo` and the tests (the `sim` feature, on by
//!   default; the packaged build leaves them out).
//! - [`task`]: named tasks with retry-and-backoff loops. [`logging`]: tracing setup.

pub mod app;
pub mod apptive;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod directory;
pub mod emergency;
pub mod error;
pub mod logging;
pub mod media;
pub mod memory;
pub mod model;
pub mod presence;
pub mod secret;
#[cfg(feature = "sim")]
pub mod sim;
pub mod sinks;
pub mod sources;
pub mod storage;
pub mod task;
pub mod web;
