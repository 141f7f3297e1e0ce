//! `tracing` setup: level from `GATEHOUSE_LOG` (env-filter syntax) or the config, formats
//! pretty / json / journald, a reload handle for the level, and panics through the logger.
//! Colour only when stderr is a terminal and `NO_COLOR` is not set.

use crate::config::LogFormat;
use tracing_subscriber::{
    EnvFilter, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

pub const ENV: &str = "GATEHOUSE_LOG";

/// Changes the level filter at runtime (config hot reload). When `GATEHOUSE_LOG` is set it
/// wins and reloads of `log.level` are ignored.
#[derive(Clone)]
pub struct LogHandle {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    from_env: bool,
}

impl LogHandle {
    pub fn set_level(&self, level: &str) {
        if self.from_env {
            return;
        }
        if let (Some(h), Ok(f)) = (
            &self.handle,
            EnvFilter::try_new(quiet_embedded_broker(level)),
        ) {
            let _ = h.reload(f);
        }
    }
}

/// Journald reads a `<N>` priority prefix on each stderr line (sd-daemon(3)).
struct JournaldFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JournaldFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        ev: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = ev.metadata();
        let prio = match *meta.level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(w, "<{prio}>{}: ", meta.target())?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(w, "{}", span.name())?;
                if let Some(f) = span
                    .extensions()
                    .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                    && !f.is_empty()
                {
                    write!(w, "{{{f}}}")?;
                }
                write!(w, ": ")?;
            }
        }
        ctx.field_format().format_fields(w.by_ref(), ev)?;
        writeln!(w)
    }
}

/// The embedded broker (rumqttd) logs every client that hangs up as an ERROR: silence it
/// unless the filter names it.
fn quiet_embedded_broker(filter: &str) -> String {
    if filter.contains("rumqttd") {
        filter.to_string()
    } else {
        format!("{filter},rumqttd=off")
    }
}

/// Colour codes only for a person at a terminal (logs go to stderr): never into files, pipes
/// or the journal, and never with `NO_COLOR` set to a non-empty value (no-color.org).
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Install the global subscriber. Safe to call once per process; later calls are ignored.
pub fn init(format: LogFormat, level: &str) -> LogHandle {
    let env = std::env::var(ENV).ok().map(|e| quiet_embedded_broker(&e));
    let level = quiet_embedded_broker(level);
    let level = level.as_str();
    let from_env = env.is_some();
    let filter = env
        .as_deref()
        .and_then(|e| EnvFilter::try_new(e).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    use std::io::IsTerminal;
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let res = match format {
        LogFormat::Pretty => Registry::default().with(filter).with(fmt).try_init(),
        LogFormat::Json => Registry::default()
            .with(filter)
            .with(fmt.json().flatten_event(true))
            .try_init(),
        LogFormat::Journald => Registry::default()
            .with(filter)
            .with(fmt.with_ansi(false).event_format(JournaldFormat))
            .try_init(),
    };
    let installed = res.is_ok();
    if installed {
        std::panic::set_hook(Box::new(|info| {
            let bt = std::backtrace::Backtrace::capture();
            tracing::error!(panic = %info, backtrace = %bt, "panic");
        }));
    }
    LogHandle {
        handle: installed.then_some(handle),
        from_env,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "empty NO_COLOR is unset"
        );
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None), "file or pipe");
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
