//! CLI dispatch only.

use clap::{Parser, Subcommand};
use gatehouse::config::{self, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Paxton Net2 and cameras to MQTT / Home Assistant / openHAB"
)]
struct Cli {
    /// Log format (overrides log.format): pretty, json or journald.
    #[arg(long, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        #[arg(short, long, default_value = "/etc/gatehouse/config.yaml")]
        config: PathBuf,
    },
    /// Validate a config file: print every error with its path, or "ok" and a summary.
    CheckConfig {
        #[arg(short, long)]
        config: PathBuf,
        /// Check everything but leave the secret files (password_file, token_file, …) unread:
        /// the unit's ExecCondition= runs before systemd has set up its credentials.
        #[arg(long)]
        skip_secret_files: bool,
    },
    /// Run the whole daemon against built-in simulators; nothing to configure.
    #[cfg(feature = "sim")]
    Demo {
        /// Directory for the demo's database and config (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Print stored events; `--follow` keeps printing new ones as a running instance stores them.
    Events {
        /// Database file (default: storage.path of --config, else ./gatehouse.db).
        #[arg(long)]
        db: Option<PathBuf>,
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[arg(short, long)]
        follow: bool,
        /// How many past events to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        last: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print a token for the web server (`Authorization: Bearer …` or `?token=…`), signed
    /// with web.jwt_secret. Anyone holding it sees the cameras until it expires.
    Token {
        #[arg(short, long, default_value = "/etc/gatehouse/config.yaml")]
        config: PathBuf,
        /// Who it is for (the token's `sub`, logged when refused).
        #[arg(long, default_value = "cli")]
        name: String,
        /// Lifetime: 30d, 12h, 90m…
        #[arg(long, default_value = "30d")]
        ttl: String,
        /// Only paths under this prefix (e.g. /api/pictures/); repeat for several; default:
        /// everything.
        #[arg(long, value_name = "PREFIX")]
        scope: Vec<String>,
        /// Print a viewer's link instead: the player page of this camera channel (e.g.
        /// garage/1), with a token that opens only it — its stream, playlist and segments.
        #[arg(long, value_name = "CAMERA/CH", conflicts_with = "scope")]
        player: Option<String>,
        /// What the token may do: viewer (reads), operator (also doors, snapshots, streams),
        /// admin (also emergency operations and access points). Default: admin, as tokens
        /// were before roles.
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: Option<String>,
    },
    /// Hash a password for `web.users[].password_hash` (argon2id). Reads the password from
    /// the terminal (twice, not echoed) or the first line of stdin; prints the hash.
    Passwd,
    /// Run a device simulator on its own (for trying gatehouse or measuring it).
    #[cfg(feature = "sim")]
    Sim {
        #[command(subcommand)]
        what: SimCmd,
    },
    /// Net2 diagnostics.
    Net2 {
        #[arg(short, long, default_value = "/etc/gatehouse/config.yaml")]
        config: PathBuf,
        #[command(subcommand)]
        what: Net2Cmd,
    },
}

#[cfg(feature = "sim")]
#[derive(Subcommand)]
enum SimCmd {
    /// The Paxton Net2 simulator (REST + SignalR). Prints its URL and credentials.
    Net2 {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: std::net::SocketAddr,
        /// Generate a random event this often, in seconds (0 = never).
        #[arg(long, default_value_t = 5)]
        every: u64,
    },
    /// A Hikvision camera or NVR (ISAPI with Digest auth, the alert stream, `/picture`,
    /// RTSP). Prints its URL and credentials. Stdin lines `burst N RATE` push N alerts
    /// (`active` / `inactive` in turn, across the channels) at RATE per second, each printed
    /// as `alert SEQ CHANNEL STATE` and, once written to an alert stream, `delivered SEQ
    /// STREAM MS`; `fault drop` (or SIGUSR1, at once) closes the open alert streams.
    Hikvision {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: std::net::SocketAddr,
        /// An NVR's framing (bare LF, HTTP/1.0, the stream closed every 20 s) instead of a
        /// camera's.
        #[arg(long)]
        nvr: bool,
        /// The channels alerts are spread over.
        #[arg(long, default_value_t = 1)]
        channels: u32,
        /// Serve no RTSP (the device then reports port 554 in adminAccesses).
        #[arg(long)]
        no_rtsp: bool,
        /// An alert (`active`, then `inactive` the next time) this often, in seconds
        /// (0 = never).
        #[arg(long, default_value_t = 0)]
        every: u64,
    },
    /// The Apptive QR access simulator (`GET /qr/`, `POST /access`). Prints its URL, token,
    /// door ids and members.
    Apptive {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: std::net::SocketAddr,
    },
    /// The Zequenze GATE simulator (portal log + RADIUS sessions, cursor paging). Prints its
    /// URL and token.
    Gate {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: std::net::SocketAddr,
        /// A login, logout or timeout this often, in seconds (0 = never).
        #[arg(long, default_value_t = 5)]
        every: u64,
    },
}

#[derive(Subcommand)]
enum Net2Cmd {
    /// List doors with their status.
    Doors,
    /// Open a door (timed), or hold it open / close it. Audited like every command.
    Open {
        door: u64,
        #[arg(long, conflicts_with = "close")]
        hold: bool,
        #[arg(long)]
        close: bool,
    },
}

/// sysexits.h: configuration error.
const EX_CONFIG: u8 = 78;

/// glibc malloc for a daemon that runs for months on a small machine (issue 18; figures in
/// BENCHMARKS.md). By default every thread that allocates while another holds the arena lock
/// gets an arena of its own (up to 8 per core), and each arena keeps what was freed in it:
/// the tokio workers and the blocking pool's threads (SQLite, decodes, file reads) each
/// pinned their own free pages after a burst. Two arenas keep contention low for two workers; a
/// process-wide setting, so it is made here, before any thread starts. Other C libraries:
/// nothing to do. (A burst's freed heap is given back by `memory::run`.)
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // Blocks of 128 KiB and more (a REST page's body, a queue grown in a burst) are
        // mapped apart and unmapped when freed. By default glibc raises this threshold up to
        // 32 MiB each time such a block is freed, after which they come from the heap and
        // leave holes there that live small blocks pin. A fixed threshold also fixes the trim
        // threshold at its 128 KiB default.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let res = rt.block_on(gatehouse::cli::dispatch(match cli.cmd {
        Cmd::Run { config } => gatehouse::cli::Action::Run {
            config,
            log_format: cli.log_format,
        },
        Cmd::CheckConfig {
            config,
            skip_secret_files,
        } => {
            let secret_files = if skip_secret_files {
                config::SecretFiles::Skip
            } else {
                config::SecretFiles::Read
            };
            return match config::load_file_with(&config, secret_files) {
                Ok(c) => {
                    println!("ok: {}", c.summary());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprint!("{}: {e}", config.display());
                    ExitCode::FAILURE
                }
            };
        }
        Cmd::Token {
            config,
            name,
            ttl,
            scope,
            player,
            role,
        } => gatehouse::cli::Action::Token {
            config,
            name,
            ttl,
            scope,
            player,
            role,
        },
        Cmd::Passwd => gatehouse::cli::Action::Passwd,
        #[cfg(feature = "sim")]
        Cmd::Demo { dir, seconds } => gatehouse::cli::Action::Demo {
            dir,
            seconds,
            log_format: cli.log_format,
        },
        Cmd::Events {
            db,
            config,
            follow,
            last,
            json,
        } => gatehouse::cli::Action::Events {
            db,
            config,
            follow,
            last,
            json,
        },
        #[cfg(feature = "sim")]
        Cmd::Sim {
            what: SimCmd::Net2 { bind, every },
        } => gatehouse::cli::Action::SimNet2 { bind, every },
        #[cfg(feature = "sim")]
        Cmd::Sim {
            what:
                SimCmd::Hikvision {
                    bind,
                    nvr,
                    channels,
                    no_rtsp,
                    every,
                },
        } => gatehouse::cli::Action::SimHikvision {
            bind,
            nvr,
            channels,
            rtsp: !no_rtsp,
            every,
        },
        #[cfg(feature = "sim")]
        Cmd::Sim {
            what: SimCmd::Apptive { bind },
        } => gatehouse::cli::Action::SimApptive { bind },
        #[cfg(feature = "sim")]
        Cmd::Sim {
            what: SimCmd::Gate { bind, every },
        } => gatehouse::cli::Action::SimGate { bind, every },
        Cmd::Net2 { config, what } => match what {
            Net2Cmd::Doors => gatehouse::cli::Action::Net2Doors { config },
            Net2Cmd::Open { door, hold, close } => gatehouse::cli::Action::Net2Open {
                config,
                door,
                action: if hold {
                    gatehouse::model::DoorAction::HoldOpen
                } else if close {
                    gatehouse::model::DoorAction::Close
                } else {
                    gatehouse::model::DoorAction::Open
                },
            },
        },
    }));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        // EX_CONFIG: the unit's RestartPreventExitStatus= does not restart a daemon whose
        // config does not load (say a secret file missing from its credentials), which would
        // only fail again every RestartSec=.
        Err(e) if e.kind() == gatehouse::error::ErrorKind::Config => {
            eprintln!("gatehouse: {e}");
            ExitCode::from(EX_CONFIG)
        }
        Err(e) => {
            eprintln!("gatehouse: {e}");
            ExitCode::FAILURE
        }
    }
}
