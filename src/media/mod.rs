//! Snapshots and live streams: RTSP sessions shared per camera channel ([`hub`]), H.264 →
//! JPEG ([`h264`]), fMP4/HLS remuxing ([`fmp4`], [`hls`]) and the service tying them to
//! MQTT, doors and the web server ([`service`]).

pub mod h264;
pub mod hub;
