//! Snapshots and live streams: RTSP sessions shared per camera channel ([`hub`]), H.264 →
//! JPEG ([`h264`]) a bounded number at a time ([`decode`]), fMP4/HLS remuxing ([`fmp4`], [`hls`]), live streams ([`live`]) and the
//! service tying them to MQTT, doors and the web server ([`service`]).

pub mod decode;
pub mod fmp4;
pub mod h264;
pub mod hls;
pub mod hub;
pub mod live;
pub mod rcvlowat;
pub mod service;
