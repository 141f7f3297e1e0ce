//! Sinks: where bus messages go. Each is a task with its own queue from the bus.

pub mod mqtt;
pub mod store;
