//! Sources: devices that produce events and own the commands for their hardware.

pub mod gate;
pub mod hikvision;
pub mod net2;
pub mod tls;
