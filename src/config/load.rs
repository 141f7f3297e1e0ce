//! Loading: YAML → `${ENV}` substitution → typed sections → semantic validation.
//! Every problem is collected with its YAML path; nothing starts until the list is empty.

use super::*;
use serde::de::DeserializeOwned;
use serde_norway::Value;
use std::fmt;
use std::path::Path;

/// One problem in the file, with the YAML path it concerns (`sources.net2.url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All problems found in one file.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration error(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }
}

#[derive(Default)]
struct Collector(Vec<ConfigError>, Refused, SecretFiles);

/// `mqtt.embedded: true` in a build without the `embedded-broker` feature (the packaged
/// build leaves the broker out: rumqttd is ~1 MB of code a Pi in service does not run).
pub(crate) const EMBEDDED_MISSING: &str = "this build has no embedded broker (built without the `embedded-broker` feature): set mqtt.host to a broker (e.g. Mosquitto) instead";

impl Collector {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Paths whose value was refused while deserializing (the key took its default).
#[derive(Default)]
struct Refused(Vec<String>);

impl Refused {
    /// A later check of a refused value (or of something inside it) would only repeat the
    /// error about a default the user never wrote. `password` and `password_file` are one
    /// setting.
    fn covers(&self, path: &str) -> bool {
        let setting = |p: &str| p.strip_suffix("_file").unwrap_or(p).to_string();
        self.0.iter().any(|r| {
            setting(path) == setting(r)
                || path
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }
}

/// Whether loading reads the secret files (`password_file`, `token_file`, `jwt_secret_file`, …).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecretFiles {
    /// Read each one now; an unreadable file is an error.
    #[default]
    Read,
    /// Leave them unread (the secret stays unset); everything else is checked. For
    /// `check-config --skip-secret-files` as systemd's `ExecCondition=`: systemd 252 sets up a
    /// service's credentials (/run/credentials/<unit>/, where the files usually are) for
    /// `ExecStartPre=` and `ExecStart=` but not for `ExecCondition=` — there the directory is
    /// missing, or unreadable inside the unit's sandbox (seen under systemd-nspawn, Bookworm).
    Skip,
}

pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    load_file_with(path, SecretFiles::Read)
}

/// [`load_file`], choosing whether the secret files are read.
pub fn load_file_with(path: &Path, secret_files: SecretFiles) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("unable to read config file {}: {e}", path.display()),
        }])
    })?;
    load_str_with(&text, &|k| std::env::var(k).ok(), secret_files)
}

/// Parse and validate a config text. `env` looks up `${VAR}` substitutions.
pub fn load_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    load_str_with(text, env, SecretFiles::Read)
}

/// Deeper than this serde_norway refuses a document anyway (its recursion limit), but only
/// after libyaml has scanned all of it, in time quadratic in the depth of its flow collections:
/// `[[[…]]]` 20,000 deep (40 KB) took 36 s in the fuzz target, 10,000 deep 9 s.
const MAX_FLOW_DEPTH: usize = 128;

/// How deep `[` and `{` nest in the text. Brackets in strings and comments count too: a real
/// config is nowhere near the limit.
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// [`load_str`], choosing whether the secret files are read (the fuzz target leaves them
/// unread: a config naming `/dev/zero` is its author's problem, not the parser's).
pub fn load_str_with(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    secret_files: SecretFiles,
) -> Result<Config, ConfigErrors> {
    let mut errs = Collector::default();
    if flow_depth(text) > MAX_FLOW_DEPTH {
        errs.push(
            "",
            format!("invalid YAML: [ and {{ nested more than {MAX_FLOW_DEPTH} levels deep"),
        );
        return Err(ConfigErrors(errs.0));
    }
    let mut root: Value = match serde_norway::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            errs.push("", format!("invalid YAML: {e}"));
            return Err(ConfigErrors(errs.0));
        }
    };
    substitute_env(&mut root, "", env, &mut errs);

    let mut cfg = Config::default();
    let Value::Mapping(map) = root else {
        errs.push(
            "",
            "the config file must be a mapping with `version: 1` at the top",
        );
        return Err(ConfigErrors(errs.0));
    };

    let mut saw_version = false;
    for (k, v) in map {
        let Some(key) = k.as_str().map(str::to_owned) else {
            errs.push("", format!("non-string top-level key {k:?}"));
            continue;
        };
        match key.as_str() {
            "version" => {
                saw_version = true;
                match v.as_u64() {
                    Some(1) => cfg.version = 1,
                    _ => errs.push("version", format!("unsupported version {v:?}; expected 1")),
                }
            }
            "log" => section(v, "log", &mut errs)
                .map(|s| cfg.log = s)
                .unwrap_or(()),
            "storage" => section(v, "storage", &mut errs)
                .map(|s| cfg.storage = s)
                .unwrap_or(()),
            "sources" => sources(v, &mut cfg.sources, &mut errs),
            "doors" => doors(v, &mut cfg.doors, &mut errs),
            "mqtt" => cfg.mqtt = section(v, "mqtt", &mut errs),
            "media" => section(v, "media", &mut errs)
                .map(|s| cfg.media = s)
                .unwrap_or(()),
            "web" => cfg.web = section(v, "web", &mut errs),
            "sites" => sites(v, &mut cfg.sites, &mut errs),
            "apptive" => cfg.apptive = section(v, "apptive", &mut errs),
            "people" => people(v, &mut cfg.people, &mut errs),
            "presence" => section(v, "presence", &mut errs)
                .map(|s| cfg.presence = s)
                .unwrap_or(()),
            other => errs.push(other, "unknown key"),
        }
    }
    if !saw_version {
        errs.push("version", "missing; add `version: 1`");
    }
    // Sections keep what was valid in them, so their checks run too (every error in one
    // pass), except on values that were already refused.
    let mut checks = Collector(Vec::new(), Refused::default(), secret_files);
    validate(&mut cfg, &mut checks);
    let refused = &errs.1;
    let checks: Vec<_> = checks
        .0
        .into_iter()
        .filter(|e| !refused.covers(&e.path))
        .collect();
    errs.0.extend(checks);
    if errs.0.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigErrors(errs.0))
    }
}

/// Deserialize one section into `T`, recording every type error and unknown key with its
/// path. serde stops at the first error, so the value that caused it is taken out (its key
/// takes its default) and the rest is read again, until what is left deserializes: `T` holds
/// the valid keys. `None` when the section itself has the wrong shape.
fn section<T: DeserializeOwned>(v: Value, path: &str, errs: &mut Collector) -> Option<T> {
    let mut v = if v.is_null() {
        Value::Mapping(Default::default())
    } else {
        v
    };
    let fields = struct_fields::<T>();
    let mut pruned = Pruned::default();
    let mut seen_unknown = std::collections::HashSet::new();
    loop {
        let mut unknown: Vec<Vec<Seg>> = Vec::new();
        let mut cb = |p: serde_ignored::Path<'_>| unknown.push(ignored_segs(&p));
        let de = serde_ignored::Deserializer::new(v.clone(), &mut cb);
        let res: Result<T, _> = serde_path_to_error::deserialize(de);
        for u in unknown {
            let u = pruned.original(&u);
            let p = render(path, &u);
            if seen_unknown.insert(p.clone()) {
                let hint = match (u.as_slice(), fields) {
                    ([Seg::Key(k)], Some(fields)) => closest(k, fields)
                        .map(|f| format!(" (did you mean {f}?)"))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                errs.push(p, format!("unknown key{hint}"));
            }
        }
        let e = match res {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let at: Vec<Seg> = e
            .path()
            .iter()
            .map_while(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => None,
            })
            .collect();
        let p = render(path, &pruned.original(&at));
        errs.push(p.clone(), e.into_inner().to_string());
        errs.1.0.push(p);
        if !pruned.remove(&mut v, &at) {
            return None;
        }
    }
}

/// One step of a YAML path.
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render(base: &str, segs: &[Seg]) -> String {
    let mut out = base.to_string();
    for s in segs {
        match s {
            Seg::Key(k) => out = join(&out, k),
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn ignored_segs(p: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path as P;
    match p {
        P::Root => Vec::new(),
        P::Seq { parent, index } => {
            let mut v = ignored_segs(parent);
            v.push(Seg::Index(*index));
            v
        }
        P::Map { parent, key } => {
            let mut v = ignored_segs(parent);
            v.push(Seg::Key(key.clone()));
            v
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_segs(parent)
        }
    }
}

/// List items taken out of a section so far, to report later errors at their index in the
/// file rather than in the shortened list.
#[derive(Default)]
struct Pruned(Vec<(Vec<Seg>, usize)>);

impl Pruned {
    /// A path in the pruned value → the same node's path in the file.
    fn original(&self, at: &[Seg]) -> Vec<Seg> {
        let mut out = Vec::new();
        for s in at {
            let s = match s {
                Seg::Index(i) => {
                    let mut gone: Vec<usize> = self
                        .0
                        .iter()
                        .filter(|(list, _)| *list == out)
                        .map(|(_, i)| *i)
                        .collect();
                    gone.sort_unstable();
                    Seg::Index(
                        gone.into_iter()
                            .fold(*i, |j, g| if g <= j { j + 1 } else { j }),
                    )
                }
                k => k.clone(),
            };
            out.push(s);
        }
        out
    }

    /// Take the node at `at` out of `v` (or the deepest one of its path that exists). `false`
    /// when that would be the whole section.
    fn remove(&mut self, v: &mut Value, at: &[Seg]) -> bool {
        let mut depth = 0;
        let mut node = &*v;
        for s in at {
            match child(node, s) {
                Some(c) => node = c,
                None => break,
            }
            depth += 1;
        }
        let Some((last, parent_path)) = at[..depth].split_last() else {
            return false;
        };
        let original = self.original(parent_path);
        let mut parent = &mut *v;
        for s in parent_path {
            parent = child_mut(parent, s).expect("walked above");
        }
        match (parent, last) {
            (Value::Mapping(m), Seg::Key(k)) => {
                m.retain(|key, _| key_str(key).as_deref() != Some(k));
            }
            (Value::Sequence(seq), Seg::Index(i)) => {
                let gone = self.original(&at[..depth])[parent_path.len()].clone();
                seq.remove(*i);
                if let Seg::Index(g) = gone {
                    self.0.push((original, g));
                }
            }
            _ => return false,
        }
        true
    }
}

fn key_str(k: &Value) -> Option<String> {
    match k {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn child<'a>(v: &'a Value, s: &Seg) -> Option<&'a Value> {
    match (v, s) {
        (Value::Mapping(m), Seg::Key(k)) => m
            .iter()
            .find(|(key, _)| key_str(key).as_deref() == Some(k))
            .map(|(_, v)| v),
        (Value::Sequence(seq), Seg::Index(i)) => seq.get(*i),
        _ => None,
    }
}

fn child_mut<'a>(v: &'a mut Value, s: &Seg) -> Option<&'a mut Value> {
    match (v, s) {
        (Value::Mapping(m), Seg::Key(k)) => m
            .iter_mut()
            .find(|(key, _)| key_str(key).as_deref() == Some(k))
            .map(|(_, v)| v),
        (Value::Sequence(seq), Seg::Index(i)) => seq.get_mut(*i),
        _ => None,
    }
}

/// The keys of a config struct, as `#[derive(Deserialize)]` hands them to the deserializer.
fn struct_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    use serde::de::value::Error;
    struct Fields<'a>(&'a mut Option<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            *self.0 = Some(fields);
            Err(serde::de::Error::custom("fields taken"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut out = None;
    let _ = T::deserialize(Fields(&mut out));
    out
}

/// The known key a typo most likely meant: the same letters without `_`, or one or two
/// edits away.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let bare = |s: &str| s.replace(['_', '-'], "").to_lowercase();
    if let Some(k) = known.iter().find(|k| bare(k) == bare(key)) {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (edit_distance(k, key), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len().min(key.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (_, true) => a.to_string(),
        (true, _) => b.to_string(),
        _ => format!("{a}.{b}"),
    }
}

fn sources(v: Value, out: &mut SourcesConfig, errs: &mut Collector) {
    let Value::Mapping(map) = v else {
        if !v.is_null() {
            errs.push("sources", "expected a mapping of source name to settings");
        }
        return;
    };
    for (k, v) in map {
        match k.as_str() {
            Some("net2") => out.net2 = section(v, "sources.net2", errs),
            Some("hikvision") => match v {
                Value::Sequence(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        if let Some(d) = section::<HikvisionConfig>(
                            item,
                            &format!("sources.hikvision[{i}]"),
                            errs,
                        ) {
                            out.hikvision.push(d);
                        }
                    }
                }
                _ => errs.push("sources.hikvision", "expected a list of devices"),
            },
            Some("gate") => out.gate = section(v, "sources.gate", errs),
            Some(other) => errs.push(
                format!("sources.{other}"),
                "unknown source (known: net2, hikvision, gate)",
            ),
            None => errs.push("sources", format!("non-string key {k:?}")),
        }
    }
}

fn sites(v: Value, out: &mut Vec<crate::config::SiteConfig>, errs: &mut Collector) {
    list(v, "sites", "a list of {id, name}", out, errs)
}

fn people(v: Value, out: &mut Vec<crate::config::PersonConfig>, errs: &mut Collector) {
    list(
        v,
        "people",
        "a list of persons ({id, name, net2_users, …})",
        out,
        errs,
    )
}

/// A list section: each item parsed on its own so one bad item does not hide the others.
fn list<T: DeserializeOwned>(
    v: Value,
    path: &str,
    expected: &str,
    out: &mut Vec<T>,
    errs: &mut Collector,
) {
    let Value::Sequence(items) = v else {
        if !v.is_null() {
            errs.push(path, format!("expected {expected}"));
        }
        return;
    };
    for (i, item) in items.into_iter().enumerate() {
        if let Some(s) = section::<T>(item, &format!("{path}[{i}]"), errs) {
            out.push(s);
        }
    }
}

fn doors(v: Value, out: &mut BTreeMap<u64, DoorConfig>, errs: &mut Collector) {
    let Value::Mapping(map) = v else {
        if !v.is_null() {
            errs.push("doors", "expected a mapping of Net2 door id to settings");
        }
        return;
    };
    for (k, v) in map {
        let key = match &k {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            other => format!("{other:?}"),
        };
        let path = format!("doors.{key}");
        let Ok(id) = key.parse::<u64>() else {
            errs.push(
                path,
                "door keys must be the numeric Net2 door id (ACU address)",
            );
            continue;
        };
        if let Some(d) = section::<DoorConfig>(v, &path, errs) {
            out.insert(id, d);
        }
    }
}

/// Replace `${VAR}` in every string scalar. A missing variable is an error at that path.
fn substitute_env(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Collector,
) {
    match v {
        Value::String(s) if s.contains("${") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else {
                    errs.push(path, "unterminated `${` in value");
                    return;
                };
                let name = &after[..end];
                match env(name) {
                    Some(val) => out.push_str(&val),
                    None => errs.push(path, format!("environment variable {name} is not set")),
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => "?".into(),
                };
                substitute_env(val, &join(path, &key), env, errs);
            }
        }
        Value::Sequence(seq) => {
            for (i, val) in seq.iter_mut().enumerate() {
                substitute_env(val, &format!("{path}[{i}]"), env, errs);
            }
        }
        _ => {}
    }
}

/// `password` or `password_file` (read now, trailing newline trimmed) under `path`; with
/// `required`, one of them must be given.
fn resolve_password(
    password: &mut Option<Secret>,
    file: &Option<std::path::PathBuf>,
    path: &str,
    required: bool,
    errs: &mut Collector,
) {
    resolve_secret(password, file, path, "password", required, errs)
}

/// `<key>` or `<key>_file` under `path` (the file read now, trailing newline trimmed).
fn resolve_secret(
    value: &mut Option<Secret>,
    file: &Option<std::path::PathBuf>,
    path: &str,
    key: &str,
    required: bool,
    errs: &mut Collector,
) {
    match (&*value, file) {
        (Some(_), Some(_)) => errs.push(
            format!("{path}.{key}_file"),
            format!("give either {key} or {key}_file, not both"),
        ),
        (None, None) if required => {
            errs.push(format!("{path}.{key}"), format!("required (or {key}_file)"))
        }
        (None, Some(_)) if errs.2 == SecretFiles::Skip => {}
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(s) => *value = Some(Secret::new(s.trim_end_matches(['\r', '\n']))),
            Err(e) => errs.push(
                format!("{path}.{key}_file"),
                format!("unable to read {}: {e}", f.display()),
            ),
        },
        _ => {}
    }
}

/// Letters, digits, `-` and `_`: safe in MQTT topics and entity ids.
fn topic_safe(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// An `http(s)` base URL; `http` only to a loopback address (a simulator) when `https_only`.
fn check_base_url(url: &str, path: &str, https_only: bool, errs: &mut Collector) {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => {}
        Ok(u) if u.scheme() == "http" => {
            let loopback = match u.host() {
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if https_only && !loopback {
                errs.push(
                    path,
                    "must be https:// (http:// only to a loopback simulator): the token is a secret",
                );
            }
        }
        Ok(u) => errs.push(path, format!("scheme must be https, not {}", u.scheme())),
        Err(_) if url.is_empty() => errs.push(path, "required"),
        // The user info may hold a password.
        Err(e) => errs.push(
            path,
            format!("invalid URL {:?}: {e}", crate::secret::redact_url(url)),
        ),
    }
}

fn validate_apptive(cfg: &mut Config, errs: &mut Collector) {
    let doors = cfg.doors.clone();
    let Some(a) = cfg.apptive.as_mut() else {
        return;
    };
    let p = "apptive";
    check_base_url(&a.url, "apptive.url", true, errs);
    resolve_secret(&mut a.token, &a.token_file, p, "token", true, errs);
    if a.timeout.get() < std::time::Duration::from_millis(100) {
        errs.push("apptive.timeout", "must be at least 100ms");
    }
    if a.readers.is_empty() {
        errs.push("apptive.readers", "at least one reader is needed");
    }
    let mut ids = std::collections::HashSet::new();
    for (i, r) in a.readers.iter().enumerate() {
        let rp = format!("{p}.readers[{i}]");
        if !topic_safe(&r.id) {
            errs.push(
                format!("{rp}.id"),
                format!("{:?}: use letters, digits, - and _", r.id),
            );
        } else if !ids.insert(r.id.clone()) {
            errs.push(format!("{rp}.id"), format!("duplicate id {:?}", r.id));
        }
        if !doors.contains_key(&r.door) {
            errs.push(
                format!("{rp}.door"),
                format!(
                    "door {} is not in `doors` (a reader opens a configured Net2 door)",
                    r.door
                ),
            );
        }
        if r.door_id.trim().is_empty() {
            errs.push(format!("{rp}.door_id"), "required (Apptive's door id)");
        }
        if r.max_scans_per_minute == 0 {
            errs.push(format!("{rp}.max_scans_per_minute"), "must be at least 1");
        }
        if let Some(u) = &r.usb {
            if u.device.as_os_str().is_empty() {
                errs.push(
                    format!("{rp}.usb.device"),
                    "required (/dev/input/… or /dev/serial/…)",
                );
            }
            const BAUDS: [u32; 9] = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400];
            if u.kind == crate::config::QrUsbKind::Serial && !BAUDS.contains(&u.baud) {
                errs.push(
                    format!("{rp}.usb.baud"),
                    format!("{} is not one of {BAUDS:?}", u.baud),
                );
            }
        }
    }
    // A used code forgotten before Apptive stops accepting it could be replayed.
    if a.single_use && a.key_validity.get() < std::time::Duration::from_secs(15 * 60) {
        errs.push(
            "apptive.key_validity",
            "must be at least 15m (Apptive accepts a code for 15 minutes: a shorter memory reopens the replay window)",
        );
    }
}

fn validate_gate(cfg: &mut Config, errs: &mut Collector) {
    let Some(g) = cfg.sources.gate.as_mut() else {
        return;
    };
    let p = "sources.gate";
    check_base_url(&g.url, "sources.gate.url", true, errs);
    resolve_secret(&mut g.token, &g.token_file, p, "token", true, errs);
    if !(1..=100).contains(&g.page_size) {
        errs.push(format!("{p}.page_size"), "must be between 1 and 100");
    }
    for (name, d) in [
        ("poll_interval", g.poll_interval),
        ("request_timeout", g.request_timeout),
        ("max_backoff", g.max_backoff),
        ("forget_after", g.forget_after),
    ] {
        if d.get() < std::time::Duration::from_millis(100) {
            errs.push(format!("{p}.{name}"), "must be at least 100ms");
        }
    }
}

/// A MAC in any common notation (`AA:BB:…`, `aa-bb-…`, `aabb.ccdd.eeff`, 12 hex digits) as
/// `aa:bb:cc:dd:ee:ff`.
pub fn normalize_mac(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(
        hex.as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap_or("00"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

fn validate_people(cfg: &mut Config, errs: &mut Collector) {
    if cfg.presence.wifi_away_after.get() < std::time::Duration::from_secs(1) {
        errs.push("presence.wifi_away_after", "must be at least 1s");
    }
    let sites: Vec<String> = cfg.sites().into_iter().map(|s| s.id).collect();
    let mut ids = std::collections::HashSet::new();
    // Each identity (Net2 user, GATE user / name, MAC, Apptive member) belongs to one person.
    let mut owners: std::collections::HashMap<String, String> = Default::default();
    for (i, person) in cfg.people.iter_mut().enumerate() {
        let p = format!("people[{i}]");
        if !topic_safe(&person.id) {
            errs.push(
                format!("{p}.id"),
                format!("{:?}: use letters, digits, - and _", person.id),
            );
        } else if !ids.insert(person.id.clone()) {
            errs.push(format!("{p}.id"), format!("duplicate id {:?}", person.id));
        }
        if person.net2_users.is_empty()
            && person.gate_users.is_empty()
            && person.gate_usernames.is_empty()
            && person.macs.is_empty()
            && person.apptive_members.is_empty()
        {
            errs.push(
                p.clone(),
                "no identity: nothing could ever show this person's presence (add net2_users, gate_users, gate_usernames, macs or apptive_members)",
            );
        }
        if let Some(s) = &person.site
            && !sites.contains(s)
        {
            errs.push(
                format!("{p}.site"),
                format!("unknown site {s:?} (sites: {})", sites.join(", ")),
            );
        }
        for (j, m) in person.macs.iter_mut().enumerate() {
            match normalize_mac(m) {
                Some(n) => *m = n,
                None => errs.push(
                    format!("{p}.macs[{j}]"),
                    format!("{m:?} is not a MAC address"),
                ),
            }
        }
        for u in &mut person.gate_usernames {
            *u = u.trim().to_lowercase();
        }
        let keys = person
            .net2_users
            .iter()
            .map(|u| ("net2_users".to_string(), format!("net2 user {u}")))
            .chain(
                person
                    .gate_users
                    .iter()
                    .map(|u| ("gate_users".to_string(), format!("GATE user {u}"))),
            )
            .chain(person.gate_usernames.iter().map(|u| {
                (
                    "gate_usernames".to_string(),
                    format!("GATE user name {u:?}"),
                )
            }))
            .chain(
                person
                    .macs
                    .iter()
                    .map(|u| ("macs".to_string(), format!("MAC {u}"))),
            )
            .chain(person.apptive_members.iter().map(|u| {
                (
                    "apptive_members".to_string(),
                    format!("Apptive member {u:?}"),
                )
            }))
            .collect::<Vec<_>>();
        for (field, key) in keys {
            if let Some(other) = owners.get(&key)
                && other != &person.id
            {
                errs.push(
                    format!("{p}.{field}"),
                    format!("{key} is already {other:?}'s"),
                );
            } else {
                owners.insert(key, person.id.clone());
            }
        }
    }
}

fn validate_media(cfg: &mut Config, errs: &mut Collector) {
    let m = &cfg.media;
    if !(1..=100).contains(&m.jpeg_quality) {
        errs.push("media.jpeg_quality", "must be between 1 and 100");
    }
    if m.max_width != 0 && m.max_width < 64 {
        errs.push("media.max_width", "must be 0 (no limit) or at least 64");
    }
    if m.hls_window < 3 || m.hls_window > 60 {
        errs.push("media.hls_window", "must be between 3 and 60 segments");
    }
    let secs = |d: HumanDuration| d.get().as_secs_f64();
    if !(0.5..=30.0).contains(&secs(m.hls_segment)) {
        errs.push("media.hls_segment", "must be between 500ms and 30s");
    }
    if secs(m.hls_stop_after) < 5.0 {
        errs.push("media.hls_stop_after", "must be at least 5s");
    }
    if secs(m.snapshot_timeout) < 0.5 {
        errs.push("media.snapshot_timeout", "must be at least 500ms");
    }
    if let Some(w) = cfg.web.as_mut() {
        resolve_secret(
            &mut w.jwt_secret,
            &w.jwt_secret_file,
            "web",
            "jwt_secret",
            w.auth == crate::config::WebAuth::Token,
            errs,
        );
        if let Some(s) = &w.jwt_secret
            && s.expose().chars().count() < 16
        {
            errs.push("web.jwt_secret", "must be at least 16 characters");
        }
        if let Some(u) = &w.public_url {
            match url::Url::parse(u) {
                Ok(x) if x.scheme() == "http" || x.scheme() == "https" => {}
                _ => errs.push(
                    "web.public_url",
                    format!("expected http(s)://host[:port], not {u:?}"),
                ),
            }
        }
        if w.url_token_ttl.get() < std::time::Duration::from_secs(60) {
            errs.push("web.url_token_ttl", "must be at least 60s");
        }
        let r = &w.rate_limits;
        for (key, v) in [
            ("per_user", r.per_user),
            ("per_device", r.per_device),
            ("emergency", r.emergency),
        ] {
            if v == 0 {
                errs.push(format!("web.rate_limits.{key}"), "must be at least 1");
            }
        }
        if w.session_ttl.get() < std::time::Duration::from_secs(60) {
            errs.push("web.session_ttl", "must be at least 60s");
        }
        resolve_secret(
            &mut w.hardware_key,
            &w.hardware_key_file,
            "web",
            "hardware_key",
            false,
            errs,
        );
        if w.hardware_key.is_none()
            && let Ok(k) = std::env::var("HARDWARE_INGEST_KEY")
            && !k.is_empty()
        {
            w.hardware_key = Some(crate::secret::Secret::new(k));
        }
        if let Some(k) = &w.hardware_key
            && k.expose().chars().count() < 16
        {
            errs.push("web.hardware_key", "must be at least 16 characters");
        }
        let off = w.hardware_offline_after.get();
        if off < std::time::Duration::from_secs(1)
            || off > std::time::Duration::from_secs(7 * 86400)
        {
            errs.push("web.hardware_offline_after", "must be between 1s and 7d");
        }
        if !(1..=10000).contains(&w.max_connections) {
            errs.push("web.max_connections", "must be between 1 and 10000");
        }
        for (key, d) in [
            ("web.header_read_timeout", w.header_read_timeout.get()),
            ("web.body_read_timeout", w.body_read_timeout.get()),
        ] {
            if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(600)
            {
                errs.push(key, "must be between 100ms and 10m");
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, u) in w.users.iter().enumerate() {
            let p = format!("web.users[{i}]");
            if u.name.trim().is_empty() || u.name.len() > 64 {
                errs.push(format!("{p}.name"), "must be 1 to 64 characters");
            } else if !names.insert(u.name.as_str()) {
                errs.push(format!("{p}.name"), format!("{:?} is listed twice", u.name));
            }
            if let Err(e) = crate::web::accounts::check_hash(&u.password_hash) {
                errs.push(format!("{p}.password_hash"), e);
            }
        }
        if !w.users.is_empty() && w.auth == crate::config::WebAuth::None {
            errs.push(
                "web.users",
                "accounts need auth: token (with auth: none nobody logs in)",
            );
        }
    }
}

fn validate(cfg: &mut Config, errs: &mut Collector) {
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&cfg.log.level) {
        errs.push("log.level", format!("invalid level filter: {e}"));
    }
    if cfg.storage.path.as_os_str().is_empty() {
        errs.push("storage.path", "must not be empty");
    }
    if let Some(n) = cfg.sources.net2.as_mut() {
        let p = "sources.net2";
        match url::Url::parse(&n.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                if u.scheme() == "http" && (n.tls.ca_file.is_some() || n.tls.pin_sha256.is_some()) {
                    errs.push(format!("{p}.tls"), "TLS settings given but url is http://");
                }
            }
            Ok(u) => errs.push(
                format!("{p}.url"),
                format!("scheme must be http or https, not {}", u.scheme()),
            ),
            Err(_) if n.url.is_empty() => errs.push(format!("{p}.url"), "required"),
            Err(e) => errs.push(
                format!("{p}.url"),
                format!("invalid URL {:?}: {e}", crate::secret::redact_url(&n.url)),
            ),
        }
        if n.username.trim().is_empty() {
            errs.push(
                format!("{p}.username"),
                "required (the operator's display name)",
            );
        }
        if n.client_id.trim().is_empty() {
            errs.push(
                format!("{p}.client_id"),
                "required (the licence GUID from Paxton)",
            );
        }
        resolve_password(&mut n.password, &n.password_file, p, true, errs);
        if let Some(pin) = &n.tls.pin_sha256 {
            let hex: String = pin.chars().filter(|c| *c != ':').collect();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                errs.push(
                    format!("{p}.tls.pin_sha256"),
                    "expected 64 hex digits (SHA-256 of the certificate)",
                );
            }
        }
        if let Some(f) = &n.tls.ca_file
            && !f.exists()
        {
            errs.push(
                format!("{p}.tls.ca_file"),
                format!("{} does not exist", f.display()),
            );
        }
        if n.page_size == 0 || n.page_size > 1000 {
            errs.push(format!("{p}.page_size"), "must be between 1 and 1000");
        }
        for (name, d) in [
            ("poll_interval", n.poll_interval),
            ("safety_poll_interval", n.safety_poll_interval),
            ("door_status_interval", n.door_status_interval),
            ("door_status_safety_interval", n.door_status_safety_interval),
            ("users_refresh_interval", n.users_refresh_interval),
            ("request_timeout", n.request_timeout),
        ] {
            if d.get() < std::time::Duration::from_millis(100) {
                errs.push(format!("{p}.{name}"), "must be at least 100ms");
            }
        }
    }
    let mut ids = std::collections::HashSet::new();
    for (i, h) in cfg.sources.hikvision.iter_mut().enumerate() {
        let p = format!("sources.hikvision[{i}]");
        if h.id.is_empty()
            || !h
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            errs.push(
                format!("{p}.id"),
                "required: letters, digits, - and _ only (used in topics)",
            );
        } else if !ids.insert(h.id.clone()) {
            errs.push(format!("{p}.id"), format!("duplicate id {:?}", h.id));
        }
        match url::Url::parse(&h.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ if h.url.is_empty() && h.rtsp_url.is_some() => {} // RTSP only
            _ if h.url.is_empty() => errs.push(
                format!("{p}.url"),
                "required: the device's http(s)://host (ISAPI); for a camera without ISAPI, give rtsp_url instead",
            ),
            _ => errs.push(
                format!("{p}.url"),
                format!("expected http(s)://host, not {:?}", h.url),
            ),
        }
        // An RTSP-only camera may carry its credentials in rtsp_url, or need none.
        let required = h.isapi();
        resolve_password(&mut h.password, &h.password_file, &p, required, errs);
        if let Some(u) = &h.rtsp_url {
            let u = u.expose();
            match url::Url::parse(u) {
                Ok(x) if x.scheme() == "rtsp" => {}
                _ => errs.push(
                    format!("{p}.rtsp_url"),
                    format!(
                        "expected rtsp://host[:port]/path (percent-encode / # ? @ in a password), not {:?}",
                        crate::secret::redact_url(u)
                    ),
                ),
            }
        }
    }
    validate_media(cfg, errs);
    validate_apptive(cfg, errs);
    validate_gate(cfg, errs);
    validate_people(cfg, errs);
    for (id, d) in &cfg.doors {
        let p = format!("doors.{id}");
        if !(d.relay == 1 || d.relay == 2) {
            errs.push(
                format!("{p}.relay"),
                format!("must be 1 or 2, not {}", d.relay),
            );
        }
        if let Some(ms) = d.open_time_ms
            && !(100..=3_600_000).contains(&ms)
        {
            errs.push(
                format!("{p}.open_time_ms"),
                "must be between 100 and 3600000",
            );
        }
        if d.camera.is_some() {
            match d.camera_ref() {
                None => errs.push(
                    format!("{p}.camera"),
                    "expected <hikvision id>/<channel>, e.g. garage/1",
                ),
                Some((dev, _)) if !cfg.sources.hikvision.iter().any(|h| h.id == dev) => errs.push(
                    format!("{p}.camera"),
                    format!("no camera with id {dev:?} in sources.hikvision"),
                ),
                Some(_) => {}
            }
        }
        for (i, k) in d.snapshot_on.iter().enumerate() {
            if !crate::config::SNAPSHOT_DOOR_KINDS.contains(&k.as_str()) {
                errs.push(
                    format!("{p}.snapshot_on[{i}]"),
                    format!(
                        "unknown door event {k:?} (one of {})",
                        crate::config::SNAPSHOT_DOOR_KINDS.join(", ")
                    ),
                );
            }
        }
        if let Some(h) = d.held_open_after
            && h.get() < std::time::Duration::from_secs(1)
        {
            errs.push(format!("{p}.held_open_after"), "must be at least 1s");
        }
        if let Some(s) = &d.site
            && !cfg.sites().iter().any(|x| &x.id == s)
        {
            let known: Vec<String> = cfg.sites().into_iter().map(|x| x.id).collect();
            errs.push(
                format!("{p}.site"),
                format!("unknown site {s:?} (sites: {})", known.join(", ")),
            );
        }
    }
    let mut site_ids = std::collections::BTreeSet::new();
    for (i, s) in cfg.sites.iter().enumerate() {
        if s.id.is_empty()
            || s.id.len() > 64
            || !s
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            errs.push(
                format!("sites[{i}].id"),
                "required: 1 to 64 letters, digits, - and _",
            );
        } else if !site_ids.insert(s.id.as_str()) {
            errs.push(format!("sites[{i}].id"), format!("duplicate id {:?}", s.id));
        }
    }
    if let Some(m) = cfg.mqtt.as_mut() {
        if m.base_topic.is_empty()
            || m.base_topic.contains(['+', '#'])
            || m.base_topic.ends_with('/')
        {
            errs.push(
                "mqtt.base_topic",
                "must be non-empty, without + or #, and not end with /",
            );
        }
        if let Some(i) = &m.instance
            && !crate::config::valid_instance(i)
        {
            errs.push(
                "mqtt.instance",
                format!(
                    "{i:?}: 1 to 32 lower-case letters, digits and _ (not at the ends): it \
                     becomes part of Home Assistant entity ids"
                ),
            );
        }
        let instance = m.instance();
        if crate::config::RESERVED_INSTANCES.contains(&instance.as_str()) {
            let path = if m.instance.is_some() {
                "mqtt.instance"
            } else {
                "mqtt.base_topic"
            };
            errs.push(
                path,
                format!(
                    "the instance {instance:?} could share Home Assistant ids with another \
                     gatehouse's: set mqtt.instance to another name"
                ),
            );
        }
        if m.discovery.prefix.is_empty() || m.discovery.prefix.contains(['+', '#']) {
            errs.push(
                "mqtt.discovery.prefix",
                "must be non-empty and without + or #",
            );
        }
        validate_embedded(m, cfg!(feature = "embedded-broker"), errs);
        if !m.embedded && m.host.trim().is_empty() {
            errs.push("mqtt.host", "required (or embedded: true)");
        }
        resolve_password(&mut m.password, &m.password_file, "mqtt", false, errs);
        if m.password.is_some() && m.username.is_none() {
            errs.push("mqtt.username", "required when a password is given");
        }
        if m.keep_alive.get() < std::time::Duration::from_secs(5) {
            errs.push("mqtt.keep_alive", "must be at least 5s");
        }
    }
    if !cfg.doors.is_empty() && cfg.sources.net2.is_none() {
        errs.push("doors", "doors are configured but sources.net2 is missing");
    }
}

/// `mqtt.embedded: true` needs a build with the broker in it (`built_in`).
fn validate_embedded(m: &crate::config::MqttConfig, built_in: bool, errs: &mut Collector) {
    if m.embedded && !built_in {
        errs.push("mqtt.embedded", EMBEDDED_MISSING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "NET2_PASSWORD").then(|| "s3cret".to_string())
    }

    const GOOD: &str = r#"
version: 1
storage: { path: /tmp/x.db }
sources:
  net2:
    url: https://net2.local:8443
    username: Gate House
    password: ${NET2_PASSWORD}
    client_id: 00000000-0000-4000-8000-000000000000
    poll_interval: 2s
doors:
  7242929: { mode: momentary, relay: 1, held_open_after: 2m }
  6612642: { open_time_ms: 8000 }
"#;

    #[test]
    fn good_config_loads_with_env_substitution() {
        let c = load_str(GOOD, &env).unwrap();
        let n = c.sources.net2.as_ref().unwrap();
        assert_eq!(n.password().expose(), "s3cret");
        assert_eq!(format!("{:?}", n.password), "Some(***)");
        assert_eq!(n.poll_interval.get().as_secs(), 2);
        assert_eq!(c.doors[&7242929].mode, DoorMode::Momentary);
        assert_eq!(c.doors[&6612642].open_time_ms, Some(8000));
        assert!(c.summary().contains("2 door(s)"));
    }

    #[test]
    fn embedded_broker_is_refused_with_its_path_by_a_build_without_it() {
        let c = load_str(&format!("{GOOD}mqtt: {{ embedded: true }}\n"), &env)
            .expect("this (default) build has the embedded broker");
        let m = c.mqtt.as_ref().unwrap();
        let mut errs = Collector(Vec::new(), Refused::default(), SecretFiles::default());
        validate_embedded(m, true, &mut errs);
        assert!(errs.0.is_empty());
        validate_embedded(m, false, &mut errs);
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].path, "mqtt.embedded");
        assert!(
            errs.0[0].message.contains("embedded-broker"),
            "{}",
            errs.0[0].message
        );
        assert!(
            errs.0[0].message.contains("mqtt.host"),
            "{}",
            errs.0[0].message
        );
        // A broker by host is fine either way.
        let mut errs = Collector(Vec::new(), Refused::default(), SecretFiles::default());
        let c = load_str(&format!("{GOOD}mqtt: {{ host: localhost }}\n"), &env).unwrap();
        validate_embedded(c.mqtt.as_ref().unwrap(), false, &mut errs);
        assert!(errs.0.is_empty());
    }

    #[test]
    fn reports_every_error_with_its_path() {
        let bad = r#"
version: 1
colour: blue
log: { level: "info", format: fancy }
storage: { retention_dayz: 3 }
sources:
  net2:
    url: ftp://x
    username: ""
    password: ${MISSING_VAR}
    client_id: abc
    page_size: 5000
    poll_interval: 10
    tls: { pin_sha256: nothex }
  apptive: {}
doors:
  garage: {}
  7242929: { relay: 3, mode: sometimes }
  6612642: { relay: 2, open_time_ms: 5, colour: red }
"#;
        let e = load_str(bad, &env).unwrap_err();
        let paths = e.paths();
        for want in [
            "colour",
            "log.format",
            "storage.retention_dayz",
            "sources.net2.url",
            "sources.net2.username",
            "sources.net2.password",
            "sources.net2.page_size",
            "sources.net2.tls.pin_sha256",
            "sources.apptive",
            "doors.garage",
            "doors.7242929.mode",
            "doors.6612642.colour",
            "doors.6612642.open_time_ms",
        ] {
            assert!(paths.contains(&want), "missing error for {want}: {e}");
        }
        assert!(e.to_string().contains("MISSING_VAR"), "{e}");
    }

    #[test]
    fn reports_every_error_within_one_section() {
        let e = load_str(
            "version: 1\nmqtt: {port: \"9\", protocol: 3.1, keepalive: 5s}\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(
            e.paths(),
            vec!["mqtt.port", "mqtt.protocol", "mqtt.keepalive"],
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("mqtt.keepalive: unknown key (did you mean keep_alive?)"),
            "{text}"
        );
        assert!(text.contains("unknown MQTT protocol \"3.1\""), "{text}");

        // Nested structs, list items and the section's own checks, all in one pass; a key
        // whose value was refused is not reported again as missing.
        let e = load_str(
            r#"
version: 1
sources:
  net2:
    url: 5
    username: A B
    password: [x]
    client_id: c
    poll_interval: soon
    tls: { insecure: maybe, colour: red, pin_sha256: nothex }
  hikvision:
    - { id: g, url: http://cam, password: p, ignore_channels: [1, x, 3, y], holdoff: -1s }
mqtt:
  port: 70000
  base_topic: "a/#"
  discovery: { enabled: sometimes, mode: everything, prefix: ha }
doors:
  1: { relay: 3, mode: sometimes, colour: red }
"#,
            &env,
        )
        .unwrap_err();
        assert_eq!(
            e.paths(),
            vec![
                "sources.net2.url",
                "sources.net2.password",
                "sources.net2.poll_interval",
                "sources.net2.tls.insecure",
                "sources.net2.tls.colour",
                "sources.hikvision[0].ignore_channels[1]",
                "sources.hikvision[0].ignore_channels[3]",
                "sources.hikvision[0].holdoff",
                "mqtt.port",
                "mqtt.discovery.enabled",
                "mqtt.discovery.mode",
                "doors.1.mode",
                "doors.1.colour",
                "sources.net2.tls.pin_sha256",
                "doors.1.relay",
                "mqtt.base_topic",
            ],
            "{e}"
        );
    }

    #[test]
    fn mqtt_instance_from_the_base_topic_or_set() {
        let mqtt = |extra: &str| {
            load_str(&format!("version: 1\nmqtt:\n  host: b\n{extra}"), &env)
                .map(|c| c.mqtt.unwrap())
        };
        // The default base topic keeps the ids (and client id) every install had.
        let m = mqtt("").unwrap();
        assert_eq!(m.instance(), "gatehouse");
        assert!(m.client_id().starts_with("gatehouse-"), "{}", m.client_id());
        assert!(!m.client_id().contains("site"));
        for (base, want) in [
            ("site-b/gatehouse", "site_b"),
            ("gatehouse/site-b", "site_b"),
            ("Home/Gatehouse", "home"),
            ("sites/Nørre Allé 5", "sites_n_rre_all_5"),
            ("gatehouse/gatehouse", "gatehouse"),
        ] {
            let m = mqtt(&format!("  base_topic: \"{base}\"\n")).unwrap();
            assert_eq!(m.instance(), want, "{base}");
        }
        // Another site's default client id differs from the first's on the same host.
        let b = mqtt("  base_topic: site-b/gatehouse\n").unwrap();
        assert!(
            b.client_id().starts_with("gatehouse-site_b-"),
            "{}",
            b.client_id()
        );
        assert_ne!(b.client_id(), m.client_id());
        // Set: it wins over the base topic (to keep ids when moving the topics).
        let m = mqtt("  base_topic: site-b/gatehouse\n  instance: gatehouse\n").unwrap();
        assert_eq!(m.instance(), "gatehouse");
        for bad in [
            "\"\"",
            "Site-B",
            "a/b",
            "_x",
            "x_",
            &"x".repeat(33),
            "camera",
        ] {
            let e = mqtt(&format!("  instance: {bad}\n")).unwrap_err();
            assert_eq!(e.paths(), vec!["mqtt.instance"], "{bad}: {e}");
        }
        // Derived from the base topic, the same words are refused there.
        let e = mqtt("  base_topic: camera/gatehouse\n").unwrap_err();
        assert_eq!(e.paths(), vec!["mqtt.base_topic"], "{e}");
        assert!(mqtt("  base_topic: camera/gatehouse\n  instance: cams\n").is_ok());
    }

    #[test]
    fn door_camera_must_name_a_configured_camera() {
        let base = "version: 1\nsources:\n  net2: { url: http://h:8080, username: A B, client_id: x, password: p }\n  hikvision:\n    - { id: garage, url: http://cam, password: p }\ndoors:\n";
        let ok = load_str(&format!("{base}  1: {{ camera: garage/1 }}\n"), &env).unwrap();
        assert_eq!(ok.doors[&1].camera_ref(), Some(("garage", 1)));
        let e = load_str(
            &format!("{base}  1: {{ camera: porch/1 }}\n  2: {{ camera: garage }}\n"),
            &env,
        )
        .unwrap_err();
        assert_eq!(e.paths(), vec!["doors.1.camera", "doors.2.camera"]);
        let e = load_str("version: 1\nsources:\n  hikvision:\n    - { id: a, url: ftp://x }\n    - { id: a, url: http://y, password: p }\n", &env).unwrap_err();
        assert_eq!(
            e.paths(),
            vec![
                "sources.hikvision[0].url",
                "sources.hikvision[0].password",
                "sources.hikvision[1].id"
            ]
        );
    }

    #[test]
    fn a_camera_without_isapi_needs_only_rtsp_url() {
        let c = load_str(
            "version: 1\nsources:\n  hikvision:\n    - { id: porch, rtsp_url: \"rtsp://u:p@cam/s\" }\n",
            &env,
        )
        .unwrap();
        let h = &c.sources.hikvision[0];
        assert!(!h.isapi() && h.password.is_none());
        // Neither: the error says both ways.
        let e = load_str(
            "version: 1\nsources:\n  hikvision:\n    - { id: porch }\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(e.paths(), vec!["sources.hikvision[0].url"]);
        assert!(e.to_string().contains("rtsp_url"), "{e}");
    }

    #[test]
    fn decimal_durations_load_everywhere() {
        let c = load_str(
            "version: 1\nsources:\n  hikvision:\n    - { id: g, url: http://cam, password: p, holdoff: 1.5s, holdoff_per_type: { VMD: 0.5m } }\nmqtt: { keep_alive: 2.25h }\n",
            &env,
        )
        .unwrap();
        let h = &c.sources.hikvision[0];
        assert_eq!(h.holdoff.get(), std::time::Duration::from_millis(1500));
        assert_eq!(h.holdoff_per_type["VMD"].get().as_secs(), 30);
        assert_eq!(c.mqtt.unwrap().keep_alive.get().as_secs(), 8100);
        let e = load_str(
            "version: 1\nsources:\n  hikvision:\n    - { id: g, url: http://cam, password: p, holdoff: 1.0005s }\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(e.paths(), vec!["sources.hikvision[0].holdoff"]);
        assert!(e.to_string().contains("millisecond"), "{e}");
    }

    #[test]
    fn version_is_required() {
        let e = load_str("storage: {}", &env).unwrap_err();
        assert_eq!(e.paths(), vec!["version"]);
        let e = load_str("version: 2", &env).unwrap_err();
        assert_eq!(e.paths(), vec!["version"]);
        assert!(load_str("version: 1", &env).is_ok());
    }

    #[test]
    fn password_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\n").unwrap();
        let text = format!(
            "version: 1\nsources:\n  net2:\n    url: http://h:8080\n    username: A B\n    client_id: x\n    password_file: {}\n",
            f.display()
        );
        let c = load_str(&text, &env).unwrap();
        assert_eq!(c.sources.net2.unwrap().password().expose(), "from-file");
        let text = text.replace("password_file:", "password: x\n    password_file:");
        assert_eq!(
            load_str(&text, &env).unwrap_err().paths(),
            vec!["sources.net2.password_file"]
        );
    }

    /// systemd's ExecCondition= runs without the service's credentials: the check that runs
    /// there leaves the secret files unread and still finds every other error.
    #[test]
    fn secret_files_can_be_left_unread_for_the_units_condition() {
        let text = "version: 1\nsources:\n  net2:\n    url: http://h:8080\n    username: A B\n    client_id: x\n    password_file: /run/credentials/gatehouse.service/secrets_net2\nweb:\n  jwt_secret_file: /run/credentials/gatehouse.service/secrets_jwt\n";
        assert_eq!(
            load_str(text, &env).unwrap_err().paths(),
            vec!["sources.net2.password_file", "web.jwt_secret_file"]
        );
        let c = load_str_with(text, &env, SecretFiles::Skip).unwrap();
        assert!(c.sources.net2.unwrap().password.is_none(), "not read");
        let bad = format!("{text}colour: red\n");
        assert_eq!(
            load_str_with(&bad, &env, SecretFiles::Skip)
                .unwrap_err()
                .paths(),
            vec!["colour"]
        );
    }

    #[test]
    fn invalid_yaml_is_one_clear_error() {
        let e = load_str("version: 1\n  bad: [", &env).unwrap_err();
        assert!(e.to_string().contains("invalid YAML"));
    }

    /// Found by the config fuzz target (an `${ENV}` value in an invalid URL was quoted): the
    /// password of a URL's user info is not.
    #[test]
    fn an_invalid_url_is_quoted_without_its_password() {
        let e = load_str(
            "apptive:\n  url: \"https://admin:S3cr3t-pw@apptive.example:99999/\"\n",
            &env,
        )
        .unwrap_err();
        let url =
            e.0.iter()
                .find(|e| e.path == "apptive.url")
                .expect("apptive.url");
        assert!(url.message.contains("invalid URL"), "{url:?}");
        assert!(!e.to_string().contains("S3cr3t-pw"), "{e}");
        let e = load_str(
            "sources:\n  net2:\n    url: \"https://admin:S3cr3t-pw@net2.example:99999/\"\n",
            &env,
        )
        .unwrap_err();
        let url = e.0.iter().find(|e| e.path == "sources.net2.url");
        assert!(
            url.expect("sources.net2.url")
                .message
                .contains("invalid URL"),
            "{e}"
        );
        assert!(!e.to_string().contains("S3cr3t-pw"), "{e}");
    }

    /// Found probing the config fuzz target: libyaml scans deep flow nesting in quadratic
    /// time before serde_norway's depth limit refuses it; refused before parsing now.
    #[test]
    fn absurdly_deep_flow_nesting_is_refused_before_parsing() {
        let text = format!("sources: {}{}\n", "[".repeat(20_000), "]".repeat(20_000));
        let e = load_str(&text, &|_| None).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e:?}");
        assert!(e.0[0].message.contains("nested more than 128"), "{e:?}");
        // At the limit, YAML decides as before.
        let ok = format!("sources: {}{}\n", "[".repeat(128), "]".repeat(128));
        let e = load_str(&ok, &|_| None).unwrap_err();
        assert!(!e.to_string().contains("nested more than"), "{e}");
    }

    /// Found by the config fuzz target (fuzz/corpus/config/alias-bomb.yaml): anchors that
    /// expand 9^40 times ("billion laughs"). serde_norway stops at its repetition limit: a
    /// clear error, at once, in little memory (31 MB peak for `check-config`, 30 ms).
    #[test]
    fn an_alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [\"xxxxxxxx\", \"xxxxxxxx\"]\n");
        for i in 1..40 {
            let p = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![p; 9].join(",")));
        }
        text.push_str("version: 1\nsources: *a39\n");
        let e = load_str(&text, &|_| None).unwrap_err().to_string();
        assert!(e.contains("repetition limit"), "{e}");
    }

    #[test]
    fn a_bad_rtsp_url_is_reported_without_its_password() {
        let env = |_: &str| None;
        let e = load_str(
            "version: 1\nsources:\n  hikvision:\n    - { id: g, url: http://cam, password: x, rtsp_url: \"rtsp://admin:S3cr/t@cam/x\" }\n",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rtsp_url") && e.contains("***@"), "{e}");
        assert!(!e.contains("S3cr"), "{e}");
    }

    #[test]
    fn media_and_web_are_checked_with_every_path() {
        let env = |_: &str| None;
        let base = "version: 1\nsources:\n  hikvision:\n    - { id: garage, url: http://cam, password: x, rtsp_url: http://cam/x }\n";
        let e = load_str(
            &format!(
                "{base}media: {{ jpeg_quality: 0, hls_window: 1, hls_segment: 100ms }}\nweb: {{ jwt_secret: short }}\ndoors:\n  1: {{ camera: garage/1, snapshot_on: [door_opened, door_closed] }}\n"
            ),
            &env,
        )
        .unwrap_err();
        assert_eq!(
            e.paths(),
            vec![
                "sources.hikvision[0].rtsp_url",
                "media.jpeg_quality",
                "media.hls_window",
                "media.hls_segment",
                "web.jwt_secret",
                "doors.1.snapshot_on[1]",
                "doors",
            ]
        );
        let e = load_str(&format!("{base}web: {{}}\n"), &env).unwrap_err();
        assert!(e.paths().contains(&"web.jwt_secret"));
        let ok = load_str("version: 1\nweb: { auth: none }\n", &env).unwrap();
        assert_eq!(ok.web.unwrap().base_url(), "http://127.0.0.1:8480");
        let door = DoorConfig::default();
        assert!(!door.snapshot_on("door_forced"), "no camera, no picture");
    }

    #[test]
    fn apptive_readers_are_checked() {
        let env = |v: &str| (v == "APPTIVE_TOKEN").then(|| "t0k".to_string());
        let base = "version: 1\nsources:\n  net2: { url: http://n, username: u, password: p, client_id: c }\ndoors:\n  1: {}\napptive:\n  url: https://api.apptive.ch\n  token: ${APPTIVE_TOKEN}\n";
        let ok = load_str(
            &format!("{base}  readers:\n    - {{ id: front-qr, door: 1, door_id: d1, usb: {{ kind: serial, device: /dev/ttyACM0 }} }}\n"),
            &env,
        )
        .unwrap();
        let a = ok.apptive.unwrap();
        assert_eq!(a.token.unwrap().expose(), "t0k");
        assert_eq!(a.timeout.get(), std::time::Duration::from_secs(3));
        assert!(a.single_use && !a.keep_picture);
        assert_eq!(a.readers[0].max_scans_per_minute, 12);
        assert_eq!(a.readers[0].usb.as_ref().unwrap().baud, 9600);
        let e = load_str(
            &format!("{base}  key_validity: 5m\n  readers:\n    - {{ id: \"a b\", door: 2, door_id: \" \", max_scans_per_minute: 0, usb: {{ kind: serial, device: /dev/ttyACM0, baud: 12345 }} }}\n    - {{ id: x, door: 1, door_id: d, usb: {{ kind: hid, device: \"\" }} }}\n"),
            &env,
        )
        .unwrap_err();
        assert_eq!(
            e.paths(),
            vec![
                "apptive.readers[0].id",
                "apptive.readers[0].door",
                "apptive.readers[0].door_id",
                "apptive.readers[0].max_scans_per_minute",
                "apptive.readers[0].usb.baud",
                "apptive.readers[1].usb.device",
                "apptive.key_validity",
            ]
        );
        let e = load_str(
            "version: 1\napptive:\n  url: http://apptive.example\n  token: t\n  readers: []\n",
            &env,
        )
        .unwrap_err();
        assert_eq!(e.paths(), vec!["apptive.url", "apptive.readers"]);
    }

    #[test]
    fn sites_and_door_sites_are_checked() {
        let env = |_: &str| None;
        let net2 = "sources:\n  net2: { url: http://n, username: u, password: p, client_id: c }\n";
        let ok = load_str(
            &format!("version: 1\n{net2}sites:\n  - {{ id: home, name: Home }}\n  - {{ id: cabin }}\ndoors:\n  1: {{ site: cabin }}\n  2: {{}}\n"),
            &env,
        )
        .unwrap();
        assert_eq!(
            (ok.door_site(1), ok.door_site(2)),
            ("cabin".into(), "home".into())
        );
        assert!(ok.has_site("home") && !ok.has_site("default"));
        let plain = load_str(&format!("version: 1\n{net2}doors:\n  1: {{}}\n"), &env).unwrap();
        assert_eq!(plain.door_site(1), "default");
        let e = load_str(
            &format!("version: 1\n{net2}sites:\n  - {{ id: home }}\n  - {{ id: home }}\n  - {{ id: \"a b\" }}\ndoors:\n  1: {{ site: nowhere }}\nweb: {{ auth: none, hardware_offline_after: 0s }}\n"),
            &env,
        )
        .unwrap_err();
        assert_eq!(
            e.paths(),
            vec![
                "web.hardware_offline_after",
                "doors.1.site",
                "sites[1].id",
                "sites[2].id"
            ]
        );
    }

    #[test]
    fn people_errors_name_their_paths() {
        let text = format!(
            "{GOOD}{}",
            r#"sites:
  - { id: hq, name: HQ }
presence: { wifi_away_after: 0s }
people:
  - id: anna
    net2_users: [11]
    macs: ["AA-BB-CC-00-00-01"]
    gate_usernames: [" Anna@Example.ORG "]
  - id: anna
    net2_users: [12]
  - id: bo
    net2_users: [11]
    macs: ["aa:bb:cc:00:00:01", "not-a-mac"]
    gate_usernames: [anna@example.org]
    site: annex
  - id: "c y"
    apptive_members: ["M-1"]
  - id: dee
"#
        );
        let e = load_str(&text, &env).unwrap_err();
        let want = [
            ("presence.wifi_away_after", "at least 1s"),
            ("people[1].id", "duplicate id \"anna\""),
            ("people[2].net2_users", "net2 user 11 is already \"anna\"'s"),
            (
                "people[2].macs",
                "MAC aa:bb:cc:00:00:01 is already \"anna\"'s",
            ),
            ("people[2].macs[1]", "\"not-a-mac\" is not a MAC address"),
            ("people[2].gate_usernames", "already \"anna\"'s"),
            ("people[2].site", "unknown site \"annex\" (sites: hq)"),
            ("people[3].id", "use letters, digits"),
            ("people[4]", "no identity"),
        ];
        let text = e.to_string();
        for (path, msg) in want {
            assert!(e.paths().contains(&path), "no error at {path}: {text}");
            assert!(
                text.lines().any(|l| l.contains(path) && l.contains(msg)),
                "{path}: {msg} not in {text}"
            );
        }
        // A good one: normalized MACs and lower-case names, the first site by default.
        let c = load_str(
            &format!(
                "{}people:\n  - {{ id: anna, macs: [AABB.CC00.0001], gate_usernames: [Anna@X.org] }}\n",
                GOOD.replace("6612642: { open_time_ms: 8000 }", "6612642: { open_time_ms: 8000, direction: out }")
            ),
            &env,
        )
        .unwrap();
        assert_eq!(c.people[0].macs, vec!["aa:bb:cc:00:00:01"]);
        assert_eq!(c.people[0].gate_usernames, vec!["anna@x.org"]);
        assert_eq!(c.doors[&6612642].direction, DoorDirection::Out);
        assert_eq!(c.doors[&7242929].direction, DoorDirection::Both);
        assert_eq!(c.presence.wifi_away_after.get().as_secs(), 600);
    }
}
