//! Picture decodes, a bounded number at a time.
//!
//! An openh264 decoder holds ~27 MB while it decodes a 1080p stream (picture buffers and
//! per-macroblock state; measured in BENCHMARKS.md "Door pictures and peak RSS"), and each
//! picture runs its own. Eight door events at once on eight channels ran eight on blocking
//! threads: the daemon peaked at ~375 MB and kept ~110 MB more afterwards, freed but held
//! by glibc in the threads' malloc arenas. So pictures take turns ([`MAX_DECODES`]): the
//! others wait in order, they do not fail, and a caller that gives up (a timeout) still
//! holds its turn until its decode ends (the work cannot be cancelled). What the decode
//! freed is handed back to the system before the next one starts.

use crate::error::{Error, ErrorKind, Result};
use std::sync::Arc;
use tokio::sync::{Semaphore, watch};

/// Decodes at a time. One: a burst of pictures then costs one decoder's memory (and the Pi's
/// cores stay free for the RTSP sessions feeding them); each waits for those before it: ~40 ms
/// per 1080p key frame, more for a door picture that decodes part of a GOP (BENCHMARKS.md).
pub const MAX_DECODES: usize = 1;

/// What the decoders are doing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    /// Pictures waiting for their turn.
    pub waiting: usize,
    /// Decodes running now.
    pub running: usize,
    /// The most that ever ran at once.
    pub peak: usize,
    /// Decodes finished.
    pub done: u64,
}

/// The decode queue of one media service.
pub struct Decoders {
    turns: Arc<Semaphore>,
    stats: Arc<watch::Sender<DecodeStats>>,
}

impl Decoders {
    pub fn new(max: usize) -> Decoders {
        Decoders {
            turns: Arc::new(Semaphore::new(max.max(1))),
            stats: Arc::new(watch::Sender::new(DecodeStats::default())),
        }
    }

    pub fn stats(&self) -> DecodeStats {
        *self.stats.borrow()
    }

    /// Follows the stats as they change (tests wait on it).
    pub fn watch(&self) -> watch::Receiver<DecodeStats> {
        self.stats.subscribe()
    }

    /// Run `job` on a blocking thread when its turn comes (first come, first served).
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let waiting = Waiting::new(self.stats.clone());
        let turn = self
            .turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::with_source(ErrorKind::Internal, "decoder queue closed", e))?;
        // Counted as running from its turn on (also when the thread never runs it: the
        // runtime shutting down drops the closure, and the count with it).
        let running = waiting.start();
        tokio::task::spawn_blocking(move || {
            let out = job();
            release_freed_memory();
            drop(running);
            drop(turn);
            out
        })
        .await
        .map_err(|e| Error::with_source(ErrorKind::Internal, "decoder task failed", e))
    }
}

/// Counts a caller as waiting until its turn comes ([`Waiting::start`]) or it gives up.
struct Waiting(Option<Arc<watch::Sender<DecodeStats>>>);

impl Waiting {
    fn new(stats: Arc<watch::Sender<DecodeStats>>) -> Waiting {
        stats.send_modify(|s| s.waiting += 1);
        Waiting(Some(stats))
    }

    /// From waiting to running, in one step (nobody sees it in neither).
    fn start(mut self) -> Running {
        let stats = self.0.take().expect("started once");
        stats.send_modify(|s| {
            s.waiting -= 1;
            s.running += 1;
            s.peak = s.peak.max(s.running);
        });
        Running(stats)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(stats) = &self.0 {
            stats.send_modify(|s| s.waiting -= 1);
        }
    }
}

/// Counts a decode as running until dropped (it ended, panicked, or never ran).
struct Running(Arc<watch::Sender<DecodeStats>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|s| {
            s.running -= 1;
            s.done += 1;
        });
    }
}

/// Give the memory a decode freed back to the system. glibc keeps freed memory in the malloc
/// arena of the thread that used it (one per blocking thread, up to 8 per core), where a
/// later small allocation pins it: one 1080p decode at a time on four threads kept 70 MB,
/// the daemon ~110 MB after a burst of pictures. `malloc_trim(0)` returns the free pages of
/// every arena (~3 ms after a 1080p decode, measured). Other C libraries: nothing is done.
fn release_freed_memory() {
    crate::memory::trim_heap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// A door the jobs wait at until the test opens it.
    #[derive(Default)]
    struct Gate(Mutex<bool>, Condvar);

    impl Gate {
        fn pass(&self) {
            let mut open = self.0.lock().unwrap();
            while !*open {
                open = self.1.wait(open).unwrap();
            }
        }
        fn open(&self) {
            *self.0.lock().unwrap() = true;
            self.1.notify_all();
        }
    }

    /// Opens the gate when the test ends, passed or not (a blocked job would otherwise keep
    /// the runtime from shutting down).
    struct OpenAtEnd(Arc<Gate>);

    impl Drop for OpenAtEnd {
        fn drop(&mut self) {
            self.0.open();
        }
    }

    async fn until(d: &Decoders, what: impl Fn(&DecodeStats) -> bool) -> DecodeStats {
        let mut rx = d.watch();
        match tokio::time::timeout(std::time::Duration::from_secs(20), rx.wait_for(what)).await {
            Ok(s) => *s.unwrap(),
            Err(_) => panic!("decoder stats never got there: {:?}", d.stats()),
        }
    }

    /// Eight pictures at once (a burst of door events on eight channels): one decodes, seven
    /// wait their turn, and all eight get their result. Before the queue, all eight ran at
    /// once (eight 1080p decoders: ~27 MB each).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_pictures_take_turns_and_all_finish() {
        let d = Arc::new(Decoders::new(MAX_DECODES));
        let gate = Arc::new(Gate::default());
        let _open = OpenAtEnd(gate.clone());
        let jobs: Vec<_> = (0..8)
            .map(|i| {
                let (d, gate) = (d.clone(), gate.clone());
                tokio::spawn(async move {
                    d.run(move || {
                        gate.pass();
                        i
                    })
                    .await
                })
            })
            .collect();
        // Every request has arrived: decoding or queued.
        let s = until(&d, |s| s.waiting + s.running == 8).await;
        assert_eq!(
            (s.running, s.waiting),
            (MAX_DECODES, 8 - MAX_DECODES),
            "{s:?}"
        );
        gate.open();
        for (i, j) in jobs.into_iter().enumerate() {
            assert_eq!(j.await.unwrap().unwrap(), i);
        }
        let s = d.stats();
        assert_eq!((s.waiting, s.running, s.done), (0, 0, 8), "{s:?}");
        assert_eq!(s.peak, MAX_DECODES);
    }

    /// A caller that gives up (its snapshot timed out) keeps its turn until its decode ends:
    /// the work goes on in the background, and the bound counts it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_gives_up_keeps_its_turn_until_its_decode_ends() {
        let d = Arc::new(Decoders::new(1));
        let gate = Arc::new(Gate::default());
        let _open = OpenAtEnd(gate.clone());
        let (d1, g1) = (d.clone(), gate.clone());
        let first = tokio::spawn(async move { d1.run(move || g1.pass()).await });
        until(&d, |s| s.running == 1).await;
        first.abort();
        let (d2, g2) = (d.clone(), gate.clone());
        let second = tokio::spawn(async move { d2.run(move || g2.pass()).await });
        let s = until(&d, |s| s.waiting == 1).await;
        assert_eq!(
            s.running, 1,
            "the abandoned decode still holds the turn: {s:?}"
        );
        // A waiter that gives up is no longer counted.
        let (d3, g3) = (d.clone(), gate.clone());
        let third = tokio::spawn(async move { d3.run(move || g3.pass()).await });
        until(&d, |s| s.waiting == 2).await;
        third.abort();
        until(&d, |s| s.waiting == 1).await;
        gate.open();
        second.await.unwrap().unwrap();
        let s = until(&d, |s| s.done == 2).await;
        assert_eq!((s.waiting, s.running, s.peak), (0, 0, 1), "{s:?}");
    }
}
