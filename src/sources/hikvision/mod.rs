//! Hikvision cameras and NVRs (ISAPI). Pure protocol pieces so far: the alert-stream multipart
//! parser, the alert XML/JSON parser, the hold-off state machine and Digest authentication.

pub mod alert;
pub mod client;
pub mod digest;
pub mod multipart;
pub mod state;
