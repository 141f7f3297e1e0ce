//! Every log line (at the level a test asks, trace included) into a buffer, on a
//! current-thread runtime: it keeps every task on this thread, under the capturing logger. For
//! tests that prove what the logs say — and what they never contain (secrets).

use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    /// What was logged so far, as bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    /// What was logged so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

/// Logs at `filter` (an `EnvFilter`: `trace`, `gatehouse=debug`) into the returned buffer
/// while the guard lives, and the runtime to run the test on.
pub fn capture(
    filter: &str,
) -> (
    Buf,
    tracing::subscriber::DefaultGuard,
    tokio::runtime::Runtime,
) {
    let buf = Buf::default();
    let writer = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(sub);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (buf, guard, rt)
}
