//! One error type with a kind. Messages say what was being attempted.

use std::fmt;

/// What went wrong, coarsely: callers (retry loops, the web layer) decide on the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Invalid configuration.
    Config,
    /// Credentials refused; retrying quickly will not help (and may lock accounts).
    Auth,
    /// The device or network did not answer as expected; retry with backoff.
    Unavailable,
    /// The device answered something we could not understand.
    Protocol,
    /// A request was refused because of its content (unknown door, disabled door, ...).
    InvalidArgument,
    /// Local storage failed.
    Storage,
    /// Shutdown in progress.
    Cancelled,
    /// Anything else.
    Internal,
}

#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    msg: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        Error {
            kind,
            msg: msg.into(),
            source: None,
        }
    }

    pub fn with_source(
        kind: ErrorKind,
        msg: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error {
            kind,
            msg: msg.into(),
            source: Some(source.into()),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)?;
        let mut src = self
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static));
        while let Some(s) = src {
            write!(f, ": {s}")?;
            src = s.source();
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::with_source(ErrorKind::Storage, "database operation failed", e)
    }
}

/// `err!(Kind, "fmt", args)` builds an [`Error`].
#[macro_export]
macro_rules! err {
    ($kind:ident, $($arg:tt)+) => {
        $crate::error::Error::new($crate::error::ErrorKind::$kind, format!($($arg)+))
    };
}

/// Attach context to foreign errors: `.ctx(Kind, || "unable to ...")`.
pub trait ResultExt<T> {
    fn ctx<M: Into<String>>(self, kind: ErrorKind, msg: impl FnOnce() -> M) -> Result<T>;
}

impl<T, E> ResultExt<T> for std::result::Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn ctx<M: Into<String>>(self, kind: ErrorKind, msg: impl FnOnce() -> M) -> Result<T> {
        self.map_err(|e| Error::with_source(kind, msg(), e))
    }
}
