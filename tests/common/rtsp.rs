//! A real RTSP server per test: tests/support/rtsp_server.py (GStreamer's RTSP server, run with
//! Debian's /usr/bin/python3) on a free loopback port, that can be stopped and restarted on the
//! same port; plus ffprobe/ffmpeg helpers used as the reference client, and a cached 1080p clip
//! for benchmarks (served from the file, not encoded live).

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Debian's Python: the `python3` first on PATH may be another build without `gi`.
pub const PYTHON: &str = "/usr/bin/python3";

pub const APT_HINT: &str = "apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 \
    gstreamer1.0-plugins-ugly gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
    gstreamer1.0-plugins-base gstreamer1.0-tools python3-gi ffmpeg";

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtsp_server.py")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Baseline,
    Main,
    High,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Baseline => "baseline",
            Profile::Main => "main",
            Profile::High => "high",
        }
    }
    /// How ffprobe names it (`profile=` in `-show_streams`).
    pub fn ffprobe_name(self) -> &'static str {
        match self {
            Profile::Baseline => "Constrained Baseline",
            Profile::Main => "Main",
            Profile::High => "High",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Digest,
    Basic,
    Both,
}

impl AuthMethod {
    fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Digest => "digest",
            AuthMethod::Basic => "basic",
            AuthMethod::Both => "both",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraTrack {
    /// `m=application … vnd.onvif.metadata/90000`, one XML document a second.
    Onvif,
    /// PCMA (G.711 A-law) 8 kHz mono, payload type 8.
    Audio,
}

#[derive(Clone, Debug)]
pub struct RtspOpts {
    /// Mount paths (at least one).
    pub paths: Vec<String>,
    pub profile: Profile,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Keyframe interval in frames.
    pub gop: u32,
    pub bitrate_kbps: u32,
    /// Credentials; no auth when `None`.
    pub user: Option<String>,
    pub password: Option<String>,
    pub auth: AuthMethod,
    pub extra_track: Option<ExtraTrack>,
    /// Serve this Annex B H.264 file in a loop (no encoding; `fps` must be the clip's).
    pub file: Option<PathBuf>,
    /// videotestsrc properties, e.g. `pattern=smpte horizontal-speed=8`.
    pub pattern: Option<String>,
}

impl Default for RtspOpts {
    fn default() -> Self {
        RtspOpts {
            paths: vec!["/Streaming/Channels/101".into()],
            profile: Profile::High,
            width: 640,
            height: 360,
            fps: 10,
            gop: 10,
            bitrate_kbps: 1000,
            user: None,
            password: None,
            auth: AuthMethod::Digest,
            extra_track: None,
            file: None,
            pattern: None,
        }
    }
}

impl RtspOpts {
    pub fn with_auth(mut self, user: &str, password: &str, method: AuthMethod) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self.auth = method;
        self
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--path".to_string(),
            self.paths.join(","),
            "--profile".into(),
            self.profile.as_str().into(),
            "--width".into(),
            self.width.to_string(),
            "--height".into(),
            self.height.to_string(),
            "--fps".into(),
            self.fps.to_string(),
            "--gop".into(),
            self.gop.to_string(),
            "--bitrate".into(),
            self.bitrate_kbps.to_string(),
        ];
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            a.extend([
                "--user".into(),
                u.clone(),
                "--password".into(),
                p.clone(),
                "--auth".into(),
                self.auth.as_str().into(),
            ]);
        }
        if let Some(t) = self.extra_track {
            a.push("--extra-track".into());
            a.push(match t {
                ExtraTrack::Onvif => "onvif".into(),
                ExtraTrack::Audio => "audio".into(),
            });
        }
        if let Some(f) = &self.file {
            a.push("--file".into());
            a.push(f.display().to_string());
        }
        if let Some(p) = &self.pattern {
            a.push("--pattern".into());
            a.push(p.clone());
        }
        a
    }
}

/// Panics (with the apt-get line) unless /usr/bin/python3 has gi and every GStreamer element
/// the script uses is installed. Checked once per test binary.
pub fn require_gstreamer() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = CHECKED.get_or_init(|| {
        let out = Command::new(PYTHON)
            .arg(script())
            .arg("--check")
            .output()
            .map_err(|e| format!("cannot run {PYTHON}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = r {
        panic!("GStreamer RTSP test server unavailable:\n{e}\nInstall with:\n  {APT_HINT}");
    }
}

pub struct RtspServer {
    port: u16,
    pub opts: RtspOpts,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RtspServer {
    /// Spawns the server on a free port and waits until it listens.
    pub fn start(opts: RtspOpts) -> RtspServer {
        require_gstreamer();
        let mut s = RtspServer {
            port: 0,
            opts,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        s.spawn(0);
        s
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("rtsp_server.stderr")
    }

    /// The server's stderr so far (GStreamer errors land here).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    fn spawn(&mut self, port: u16) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .unwrap();
        let mut child = Command::new(PYTHON)
            .arg(script())
            .arg("--port")
            .arg(port.to_string())
            .args(self.opts.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e}\nInstall with:\n  {APT_HINT}"));
        // A thread reads stdout (and keeps draining it) so the READY line has a timeout.
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let end = Instant::now() + Duration::from_secs(15);
        let bound = loop {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(p) = line.strip_prefix("READY ") {
                        break p.trim().parse::<u16>().expect("READY <port>");
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    panic!(
                        "rtsp_server.py exited before READY ({status:?}):\n{}",
                        self.stderr()
                    );
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rtsp_server.py not READY within 15 s:\n{}", self.stderr());
            }
        };
        assert!(
            port == 0 || bound == port,
            "asked for {port}, bound {bound}"
        );
        self.port = bound;
        self.child = Some(child);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process's pid (benchmarks read its CPU time from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `rtsp://127.0.0.1:<port><path>`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}{path}", self.port)
    }

    /// The URL of the first mount path.
    pub fn default_url(&self) -> String {
        self.url(&self.opts.paths[0])
    }

    /// `rtsp://user:password@127.0.0.1:<port><path>`, user and password percent-encoded.
    /// Without configured credentials this is `url(path)`.
    pub fn url_with_credentials(&self, path: &str) -> String {
        let (Some(u), Some(p)) = (self.opts.user.as_deref(), self.opts.password.as_deref()) else {
            return self.url(path);
        };
        format!(
            "rtsp://{}:{}@127.0.0.1:{}{path}",
            utf8_percent_encode(u, NON_ALPHANUMERIC),
            utf8_percent_encode(p, NON_ALPHANUMERIC),
            self.port
        )
    }

    /// Clean stop (SIGTERM), waits for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(5);
            while matches!(c.try_wait(), Ok(None)) {
                if Instant::now() > end {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.wait();
        }
    }

    /// Stop, then start again on the same port (clients must reconnect).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Start again on the same port after `stop()`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.spawn(self.port);
    }

    /// Sends a bare DESCRIBE (no credentials) and returns the raw response, headers and SDP.
    pub fn describe_raw(&self, path: &str) -> String {
        describe_raw(self.port, &self.url(path))
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One DESCRIBE over a fresh connection; returns the response (headers and body) as text.
pub fn describe_raw(port: u16, url: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\nUser-Agent: gatehouse-test\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(i) = text.find("\r\n\r\n") {
            let len = text[..i]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= i + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Runs a command with a deadline; Ok(stdout) on success, Err(stderr) otherwise.
fn run_with_deadline(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e} (install with: {APT_HINT})"))?;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (t_out.join().unwrap(), t_err.join().unwrap());
    match status {
        Some(st) if st.success() => Ok(out),
        Some(st) => Err(format!("{st}: {err}")),
        None => Err(format!("timed out after {limit:?}: {err}")),
    }
}

fn rtsp_input_args(path_or_url: &str) -> Vec<&str> {
    if path_or_url.starts_with("rtsp://") {
        // -timeout: socket I/O timeout in µs, so a dead server fails fast.
        vec!["-rtsp_transport", "tcp", "-timeout", "5000000"]
    } else {
        vec![]
    }
}

/// `ffprobe -v error -show_streams` of a file or an RTSP URL (over TCP): Ok(stdout), or
/// Err(stderr) when ffprobe fails (e.g. "401 Unauthorized").
pub fn ffprobe_ok(path_or_url: &str) -> Result<String, String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(rtsp_input_args(path_or_url))
        .args(["-v", "error", "-show_streams", path_or_url]);
    run_with_deadline(&mut cmd, Duration::from_secs(20))
}

/// Parses `-show_streams` output into one map per `[STREAM]`.
pub fn parse_streams(out: &str) -> Vec<HashMap<String, String>> {
    let mut streams = Vec::new();
    let mut cur: Option<HashMap<String, String>> = None;
    for line in out.lines() {
        match line.trim() {
            "[STREAM]" => cur = Some(HashMap::new()),
            "[/STREAM]" => streams.extend(cur.take()),
            l => {
                if let (Some(m), Some((k, v))) = (cur.as_mut(), l.split_once('=')) {
                    m.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    streams
}

/// One packet of the first video stream as ffmpeg received it.
#[derive(Clone, Debug)]
pub struct Packet {
    /// In 1/90000 s (RTP clock) for RTSP input.
    pub pts: i64,
    pub size: usize,
}

/// Reads `seconds` (of stream time) of the first video stream with `ffmpeg -c copy` and
/// returns its packets. Progress is written to `progress` as it happens (one line per packet)
/// when given, so a test can wait until the reader is really receiving.
pub fn read_packets(
    url: &str,
    seconds: f64,
    progress: Option<&Path>,
) -> Result<Vec<Packet>, String> {
    let out = match progress {
        Some(p) => p.display().to_string(),
        None => "-".to_string(),
    };
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error"])
        .args(rtsp_input_args(url))
        .args(["-i", url, "-map", "0:v:0", "-t", &seconds.to_string()])
        .args([
            "-c",
            "copy",
            "-flush_packets",
            "1",
            "-f",
            "framemd5",
            "-y",
            &out,
        ]);
    let limit = Duration::from_secs_f64(seconds + 20.0);
    let text = run_with_deadline(&mut cmd, limit)?;
    let text = match progress {
        Some(p) => std::fs::read_to_string(p).map_err(|e| e.to_string())?,
        None => text,
    };
    Ok(parse_framemd5(&text))
}

/// `#stream#, dts, pts, duration, size, hash` lines of ffmpeg's framemd5 muxer.
pub fn parse_framemd5(text: &str) -> Vec<Packet> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            Some(Packet {
                pts: f.get(2)?.parse().ok()?,
                size: f.get(4)?.parse().ok()?,
            })
        })
        .collect()
}

/// Encodes `seconds` of videotestsrc with `opts` (size, fps, gop, profile, bitrate, pattern)
/// into an Annex B file at `out` (written atomically), no B-frames.
pub fn encode_clip(opts: &RtspOpts, seconds: u32, out: &Path) -> Result<(), String> {
    require_gstreamer();
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script())
        .args(opts.args())
        .arg("--seconds")
        .arg(seconds.to_string())
        .arg("--encode-clip")
        .arg(out);
    run_with_deadline(&mut cmd, Duration::from_secs(300)).map(|_| ())
}

/// Options of the benchmark clip: 1080p, 25 fps, GOP 50, High profile, ~4 Mbit/s.
pub fn clip_1080p_opts() -> RtspOpts {
    RtspOpts {
        width: 1920,
        height: 1080,
        fps: 25,
        gop: 50,
        profile: Profile::High,
        bitrate_kbps: 4000,
        // The ball compresses to ~100 kbit/s; moving bars reach a camera-like bitrate.
        pattern: Some("pattern=smpte horizontal-speed=8".into()),
        ..RtspOpts::default()
    }
}

/// A ~10 s 1080p25 GOP-50 High-profile Annex B clip, encoded once and cached next to the test
/// binaries (`<target>/rtsp-clips/`); a lock file keeps concurrent test binaries from
/// encoding it twice. Serve it with `RtspOpts { file: Some(clip), fps: 25, .. }`.
pub fn clip_1080p() -> PathBuf {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _g = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = clip_dir();
    std::fs::create_dir_all(&dir).unwrap();
    // Bump the version when the encoding changes.
    let clip = dir.join("clip_1080p25_gop50_high_v1.h264");
    let lock = dir.join("clip_1080p25_gop50_high_v1.lock");
    let end = Instant::now() + Duration::from_secs(300);
    loop {
        if clip.exists() {
            return clip;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => {
                let r = if clip.exists() {
                    Ok(())
                } else {
                    encode_clip(&clip_1080p_opts(), 10, &clip)
                };
                let _ = std::fs::remove_file(&lock);
                if let Err(e) = r {
                    panic!("encoding the 1080p clip failed: {e}");
                }
                return clip;
            }
            Err(_) => {
                // Another process encodes; a lock older than the encode can take is stale.
                let stale = std::fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(240))
                    .unwrap_or(false);
                if stale {
                    let _ = std::fs::remove_file(&lock);
                }
                assert!(Instant::now() < end, "timed out waiting for {lock:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `<target>/rtsp-clips`, from the test binary's path (`<target>/debug/deps/<test>`), or a
/// directory under the system temp dir when that layout is not there.
fn clip_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let deps = exe.parent()?;
            (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(Path::to_path_buf))?
        })
        .map(|target| target.join("rtsp-clips"))
        .unwrap_or_else(|| std::env::temp_dir().join("gatehouse-rtsp-clips"))
}
