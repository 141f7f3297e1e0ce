//! Device simulators for `gatehouse demo` and the tests. They speak the devices' wire formats
//! (protocols.md), quirks included.

pub mod apptive;
pub mod gate;
pub mod hikvision;
pub mod net2;
pub mod rtsp;
