//! Video: remuxing camera streams for viewers.

pub mod fmp4;
pub mod hls;
