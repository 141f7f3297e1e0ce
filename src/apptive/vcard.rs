//! The Apptive QR code: a vCard (seed 002) whose `ORG` is the security key and `NOTE` the
//! member id. Only what those two need is parsed, strictly: anything that is not exactly one
//! vCard 3.0 / 4.0 with a usable key and id is refused with a reason a person can act on.
//!
//! What real codes and readers do (and what is accepted for it):
//! - line ends are CRLF (RFC 6350) or LF (many generators, and keyboard-wedge readers that
//!   send Enter for each line); a lone CR ends a line too (some serial readers);
//! - long lines are folded: a continuation line starts with a space or a tab (RFC 6350 §3.2);
//! - property names are case-insensitive and may carry a group (`item1.ORG`) and parameters
//!   (`ORG;CHARSET=UTF-8:…`, vCard 2.1 habit some generators keep);
//! - `ORG` is structured (`company;unit;…`): the key is the first component, trimmed;
//! - values are escaped: `\,` `\;` `\\` `\n` (`\N`); `\:` is unescaped too (seen in the wild).

use crate::secret::Secret;

/// Longer input is not a QR vCard of Apptive's (theirs are ~200 bytes; a QR code holds at
/// most ~3 KB of text).
pub const MAX_LEN: usize = 4096;
/// Longest key / member id accepted (a key is a UUID, 36 characters).
const MAX_FIELD: usize = 256;

/// What a scan carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrCode {
    /// `ORG`: the security key. Never logged or stored (only its SHA-256).
    pub key: Secret,
    /// `NOTE`: the member id.
    pub member: String,
    /// `3.0` or `4.0`.
    pub version: String,
}

/// Why a scan is not a usable code (the words go to logs, the event and the result topic;
/// they never quote the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid QR code: {0}")]
pub struct Invalid(pub String);

fn bad(s: impl Into<String>) -> Invalid {
    Invalid(s.into())
}

/// Parse a scan's raw bytes.
pub fn parse(raw: &[u8]) -> Result<QrCode, Invalid> {
    if raw.is_empty() {
        return Err(bad("empty scan"));
    }
    if raw.len() > MAX_LEN {
        return Err(bad(format!(
            "{} bytes is too long for a QR vCard (at most {MAX_LEN})",
            raw.len()
        )));
    }
    let text = std::str::from_utf8(raw).map_err(|e| {
        bad(format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Unfold: physical lines → logical lines.
    let mut lines: Vec<String> = Vec::new();
    for (n, physical) in text.split(['\n', '\r']).enumerate() {
        if let Some(rest) = physical
            .strip_prefix(' ')
            .or_else(|| physical.strip_prefix('\t'))
        {
            match lines.last_mut() {
                Some(l) => l.push_str(rest),
                None => return Err(bad(format!("line {} continues nothing", n + 1))),
            }
        } else if !physical.is_empty() {
            lines.push(physical.to_string());
        }
    }
    if lines.is_empty() {
        return Err(bad("empty scan"));
    }
    let mut begun = false;
    let mut ended = false;
    let mut version = None;
    let mut org = None;
    let mut note = None;
    for line in &lines {
        if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(bad(format!(
                "control character U+{:04X} in the text (binary data?)",
                c as u32
            )));
        }
        let (name, params, value) = split_line(line)?;
        if ended {
            return Err(if name == "BEGIN" {
                bad("more than one vCard in the scan")
            } else {
                bad(format!("{name} after END:VCARD"))
            });
        }
        if !begun {
            if name == "BEGIN" && value.trim().eq_ignore_ascii_case("VCARD") {
                begun = true;
                continue;
            }
            return Err(bad("not a vCard (it must start with BEGIN:VCARD)"));
        }
        match name.as_str() {
            "BEGIN" => {
                return Err(bad(
                    "BEGIN inside a vCard (nested vCards are not a QR code)",
                ));
            }
            "END" if value.trim().eq_ignore_ascii_case("VCARD") => ended = true,
            // Not the value in the reason: reasons are stored and published, and a garbled
            // scan's value may be the key.
            "END" => return Err(bad("END with a value other than VCARD inside a vCard")),
            "VERSION" => {
                if version.is_some() {
                    return Err(bad("VERSION given twice"));
                }
                version = Some(value.trim().to_string());
            }
            "ORG" => {
                check_params("ORG", &params)?;
                if org.is_some() {
                    return Err(bad("ORG given twice (which one is the key?)"));
                }
                org = Some(first_component(value));
            }
            "NOTE" => {
                check_params("NOTE", &params)?;
                if note.is_some() {
                    return Err(bad("NOTE given twice (which one is the member id?)"));
                }
                note = Some(unescape(value).trim().to_string());
            }
            _ => {}
        }
    }
    if !ended {
        return Err(bad("no END:VCARD (cut short?)"));
    }
    let version = match version.as_deref() {
        Some(v @ ("3.0" | "4.0")) => v.to_string(),
        Some(v) if v.len() <= 4 && v.chars().all(|c| c.is_ascii_digit() || c == '.') => {
            return Err(bad(format!(
                "vCard VERSION {v:?} is not supported (3.0 or 4.0)"
            )));
        }
        Some(v) => {
            return Err(bad(format!(
                "vCard VERSION is not a version number ({} characters; 3.0 or 4.0)",
                v.chars().count()
            )));
        }
        None => return Err(bad("no VERSION")),
    };
    let key = org.ok_or_else(|| bad("no ORG (the security key)"))?;
    let member = note.ok_or_else(|| bad("no NOTE (the member id)"))?;
    check_field("ORG (the security key)", &key)?;
    check_field("NOTE (the member id)", &member)?;
    Ok(QrCode {
        key: Secret::new(key),
        member,
        version,
    })
}

/// `group.NAME;PARAM=x;…:value` → upper-case name without group, parameters, raw value. The
/// value starts at the first `:` outside a quoted parameter value.
fn split_line(line: &str) -> Result<(String, Vec<String>, &str), Invalid> {
    let mut quoted = false;
    let mut colon = None;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => {
                colon = Some(i);
                break;
            }
            _ => {}
        }
    }
    // The reasons give lengths, not text: they are stored and published, and a line a reader
    // garbled (a QWERTZ wedge types `:` as `>`) may be the key.
    let Some(colon) = colon else {
        return Err(bad(format!(
            "not a vCard line (no ':'; {} characters)",
            line.chars().count()
        )));
    };
    let head = &line[..colon];
    let mut parts = head.split(';');
    let name = parts.next().unwrap_or_default();
    let name = name.rsplit('.').next().unwrap_or(name).trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(bad(format!(
            "bad property name ({} characters)",
            name.chars().count()
        )));
    }
    Ok((
        name.to_ascii_uppercase(),
        parts.map(|p| p.to_ascii_uppercase()).collect(),
        &line[colon + 1..],
    ))
}

/// Only UTF-8 text is accepted for the key and id: an `ENCODING` (quoted-printable, base64)
/// or another charset would be decoded into something else than what Apptive issued.
fn check_params(prop: &str, params: &[String]) -> Result<(), Invalid> {
    for p in params {
        let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
        let v = v.trim_matches('"');
        match k.trim() {
            "CHARSET" if v == "UTF-8" || v == "UTF8" => {}
            "CHARSET" => return Err(bad(format!("{prop} in charset {v:?} (only UTF-8)"))),
            "ENCODING" => return Err(bad(format!("{prop} with ENCODING={v} is not supported"))),
            _ => {}
        }
    }
    Ok(())
}

/// The first `;`-separated component of a structured value, unescaped and trimmed.
fn first_component(value: &str) -> String {
    let mut end = value.len();
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ';' => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    unescape(&value[..end]).trim().to_string()
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(e @ (',' | ';' | '\\' | ':')) => out.push(e),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn check_field(what: &str, v: &str) -> Result<(), Invalid> {
    if v.is_empty() {
        return Err(bad(format!("{what} is empty")));
    }
    if v.chars().count() > MAX_FIELD {
        return Err(bad(format!("{what} is longer than {MAX_FIELD} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(bad(format!("{what} contains a control character")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "6f1c2f5e-8d1a-4b7e-9a43-2c1d0e5f7a99";

    fn ok(raw: &str) -> QrCode {
        parse(raw.as_bytes()).unwrap_or_else(|e| panic!("{raw:?}: {e}"))
    }

    #[test]
    fn good_codes() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "Apptive's shape, CRLF",
                "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Muster;Erika\r\nORG:6f1c2f5e-8d1a-4b7e-9a43-2c1d0e5f7a99\r\nEMAIL:erika@example.org\r\nNOTE:303\r\nEND:VCARD\r\n",
                KEY,
                "303",
            ),
            (
                "LF, 4.0, no trailing newline",
                "BEGIN:VCARD\nVERSION:4.0\nORG:6f1c2f5e-8d1a-4b7e-9a43-2c1d0e5f7a99\nNOTE:303\nEND:VCARD",
                KEY,
                "303",
            ),
            (
                "folded ORG (space) and NOTE (tab)",
                "BEGIN:VCARD\r\nVERSION:3.0\r\nORG:6f1c2f5e-8d1a-4b7e\r\n -9a43-2c1d0e5f7a99\r\nNOTE:3\r\n\t03\r\nEND:VCARD\r\n",
                KEY,
                "303",
            ),
            (
                "lower-case names, group, charset parameter",
                "begin:vcard\nversion:3.0\nitem1.org;CHARSET=UTF-8:6f1c2f5e-8d1a-4b7e-9a43-2c1d0e5f7a99\nitem1.X-ABLabel:x\nNote;charset=utf-8:303\nend:vcard\n",
                KEY,
                "303",
            ),
            (
                "ORG with units: the first component, trimmed",
                "BEGIN:VCARD\nVERSION:3.0\nORG: 6f1c2f5e-8d1a-4b7e-9a43-2c1d0e5f7a99 ;Fitness;Zürich\nNOTE: 303 \nEND:VCARD\n",
                KEY,
                "303",
            ),
            (
                "escapes in the key and id",
                "BEGIN:VCARD\nVERSION:3.0\nORG:a\\,b\\;c\\\\d;unit\nNOTE:m\\:1\nEND:VCARD\n",
                "a,b;c\\d",
                "m:1",
            ),
            (
                "UTF-8 BOM, blank lines, CR-only line ends, quoted parameter with ':'",
                "\u{feff}BEGIN:VCARD\r\rVERSION:3.0\rORG;X-A=\"a:b\":k1\rNOTE:Zoë\rEND:VCARD\r",
                "k1",
                "Zoë",
            ),
        ];
        for (what, raw, key, member) in cases {
            let c = ok(raw);
            assert_eq!(c.key.expose(), *key, "{what}");
            assert_eq!(c.member, *member, "{what}");
        }
    }

    #[test]
    fn bad_codes_are_refused_with_a_reason() {
        let long = format!(
            "BEGIN:VCARD\nVERSION:3.0\nORG:{KEY}\nNOTE:303\nX-PAD:{}\nEND:VCARD\n",
            "x".repeat(MAX_LEN)
        );
        let long_key = format!(
            "BEGIN:VCARD\nVERSION:3.0\nORG:{}\nNOTE:303\nEND:VCARD\n",
            "k".repeat(300)
        );
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", b"".to_vec(), "empty scan"),
            ("only newlines", b"\r\n\r\n".to_vec(), "empty scan"),
            ("a URL", b"https://example.org/x".to_vec(), "not a vCard"),
            ("a plain number", b"303".to_vec(), "no ':'"),
            (
                "no ORG",
                b"BEGIN:VCARD\nVERSION:3.0\nNOTE:303\nEND:VCARD\n".to_vec(),
                "no ORG",
            ),
            (
                "no NOTE",
                format!("BEGIN:VCARD\nVERSION:3.0\nORG:{KEY}\nEND:VCARD\n").into_bytes(),
                "no NOTE",
            ),
            (
                "empty NOTE",
                format!("BEGIN:VCARD\nVERSION:3.0\nORG:{KEY}\nNOTE: \nEND:VCARD\n").into_bytes(),
                "NOTE (the member id) is empty",
            ),
            (
                "empty ORG key component",
                b"BEGIN:VCARD\nVERSION:3.0\nORG:;unit\nNOTE:303\nEND:VCARD\n".to_vec(),
                "ORG (the security key) is empty",
            ),
            (
                "two vCards",
                format!("BEGIN:VCARD\nVERSION:3.0\nORG:{KEY}\nNOTE:303\nEND:VCARD\nBEGIN:VCARD\nVERSION:3.0\nORG:x\nNOTE:1\nEND:VCARD\n").into_bytes(),
                "more than one vCard",
            ),
            (
                "nested",
                format!("BEGIN:VCARD\nVERSION:3.0\nBEGIN:VCARD\nORG:{KEY}\nNOTE:303\nEND:VCARD\n").into_bytes(),
                "nested",
            ),
            (
                "cut short",
                format!("BEGIN:VCARD\nVERSION:3.0\nORG:{KEY}\nNOTE:303\n").into_bytes(),
                "no END:VCARD",
            ),
            (
                "no VERSION",
                format!("BEGIN:VCARD\nORG:{KEY}\nNOTE:303\nEND:VCARD\n").into_bytes(),
                "no VERSION",
            ),
            (
                "vCard 2.1",
                format!("BEGIN:VCARD\nVERSION:2.1\nORG:{KEY}\nNOTE:303\nEND:VCARD\n").into_bytes(),
                "VERSION \"2.1\" is not supported",
            ),
            (
                "two ORG",
                format!("BEGIN:VCARD\nVERSION:3.0\nORG:{KEY}\nORG:other\nNOTE:303\nEND:VCARD\n").into_bytes(),
                "ORG given twice",
            ),
            (
                "quoted-printable ORG",
                b"BEGIN:VCARD\nVERSION:3.0\nORG;ENCODING=QUOTED-PRINTABLE:=41\nNOTE:303\nEND:VCARD\n".to_vec(),
                "ENCODING",
            ),
            (
                "Latin-1 charset",
                b"BEGIN:VCARD\nVERSION:3.0\nORG;CHARSET=ISO-8859-1:k\nNOTE:303\nEND:VCARD\n".to_vec(),
                "charset",
            ),
            (
                "binary junk",
                vec![0xff, 0xd8, 0xff, 0xe0, 0, 16, b'J', b'F'],
                "not UTF-8",
            ),
            (
                "NUL in the text",
                b"BEGIN:VCARD\nVERSION:3.0\nORG:ab\x00cd\nNOTE:303\nEND:VCARD\n".to_vec(),
                "control character U+0000",
            ),
            (
                "escaped newline in the member id",
                format!("BEGIN:VCARD\nVERSION:3.0\nORG:{KEY}\nNOTE:30\\n3\nEND:VCARD\n").into_bytes(),
                "member id) contains a control character",
            ),
            ("over 4 KiB", long.into_bytes(), "too long"),
            ("a 300-character key", long_key.into_bytes(), "longer than 256"),
            (
                "continuation first",
                b" BEGIN:VCARD\nVERSION:3.0\nEND:VCARD".to_vec(),
                "continues nothing",
            ),
            (
                "content after END",
                format!("BEGIN:VCARD\nVERSION:3.0\nORG:{KEY}\nNOTE:303\nEND:VCARD\nNOTE:1\n").into_bytes(),
                "after END:VCARD",
            ),
            // Garbled keys: the reason (stored, published) must not quote them.
            (
                "ORG without its ':'",
                format!("BEGIN:VCARD\nVERSION:3.0\nORG{KEY}\nNOTE:303\nEND:VCARD\n").into_bytes(),
                "no ':'",
            ),
            (
                "QWERTZ ':' as '>'",
                format!("BEGIN:VCARD\nVERSION:3.0\nORG>{KEY}\nNOTE:303\nEND:VCARD\n").into_bytes(),
                "no ':'",
            ),
            (
                "the key as a name",
                format!("BEGIN:VCARD\nVERSION:3.0\n{KEY}/x:1\nEND:VCARD\n").into_bytes(),
                "bad property name",
            ),
            (
                "the key in END",
                format!("BEGIN:VCARD\nVERSION:3.0\nEND:{KEY}\nEND:VCARD\n").into_bytes(),
                "END with a value",
            ),
            (
                "the key in VERSION",
                format!("BEGIN:VCARD\nVERSION:{KEY}\nORG:x\nNOTE:303\nEND:VCARD\n").into_bytes(),
                "not a version number",
            ),
        ];
        for (what, raw, want) in cases {
            let e = parse(&raw).expect_err(what);
            assert!(e.to_string().contains(want), "{what}: {e}");
            let k: Vec<char> = KEY.chars().collect();
            for w in k.windows(6) {
                let w: String = w.iter().collect();
                assert!(
                    !e.to_string().contains(&w),
                    "{what}: part of the key is quoted: {e}"
                );
            }
        }
    }

    #[test]
    fn the_key_never_prints() {
        let c = ok(&format!(
            "BEGIN:VCARD\nVERSION:3.0\nORG:{KEY}\nNOTE:303\nEND:VCARD\n"
        ));
        assert!(!format!("{c:?}").contains(KEY));
    }
}
