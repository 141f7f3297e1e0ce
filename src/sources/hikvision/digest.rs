//! HTTP Digest authentication (RFC 2617, qop=auth) as Hikvision firmware ≥ 5.5.0 asks for it:
//! cameras omit `algorithm` / `opaque` (missing algorithm = MD5), NVRs send `opaque=""` and
//! `algorithm="MD5"` (an empty opaque is echoed), `stale=true` means "same credentials, new
//! nonce" and must not count as a failed login (repeated failures lock the client out for
//! ~30 min). Pure.

use md5::{Digest as _, Md5};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: String,
    pub qop_auth: bool,
    pub stale: bool,
}

/// Parse a `WWW-Authenticate: Digest …` header value; `None` if it is not Digest.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let rest = header.trim();
    let (scheme, params) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut map = std::collections::HashMap::new();
    let mut s = params.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, rest) = if let Some(q) = after.strip_prefix('"') {
            // Quoted: up to the closing quote (backslash escapes allowed).
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        map.insert(k, v);
        s = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        realm: map.get("realm").cloned().unwrap_or_default(),
        nonce: map.get("nonce").cloned()?,
        opaque: map.get("opaque").cloned(),
        algorithm: map
            .get("algorithm")
            .cloned()
            .unwrap_or_else(|| "MD5".into()),
        qop_auth: map
            .get("qop")
            .is_some_and(|q| q.split(',').any(|x| x.trim().eq_ignore_ascii_case("auth"))),
        stale: map
            .get("stale")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
    })
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `response` value.
pub fn response(
    c: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let ha1 = md5_hex(&format!("{user}:{}:{password}", c.realm));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    if c.qop_auth {
        md5_hex(&format!("{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}", c.nonce))
    } else {
        md5_hex(&format!("{ha1}:{}:{ha2}", c.nonce))
    }
}

/// The `Authorization` header value for one request.
pub fn authorization(
    c: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut h = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", algorithm={}, response=\"{}\"",
        q(user),
        q(&c.realm),
        q(&c.nonce),
        q(uri),
        c.algorithm,
        response(c, user, password, method, uri, nc, cnonce)
    );
    if c.qop_auth {
        h.push_str(&format!(
            ", qop=auth, nc={nc:08x}, cnonce=\"{}\"",
            q(cnonce)
        ));
    }
    if let Some(o) = &c.opaque {
        // Echoed even when empty (NVRs send `opaque=""` and expect it back).
        h.push_str(&format!(", opaque=\"{}\"", q(o)));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_test_vector() {
        let c = parse_challenge(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert_eq!(
            response(
                &c,
                "Mufasa",
                "Circle Of Life",
                "GET",
                "/dir/index.html",
                1,
                "0a4f113b"
            ),
            "6629fae49393a05397450978507c4ef1"
        );
        let h = authorization(
            &c,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(
            h.contains("nc=00000001")
                && h.contains("qop=auth")
                && h.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#)
        );
    }

    #[test]
    fn hikvision_camera_and_nvr_challenges() {
        // Camera: no algorithm, no opaque → MD5, nothing echoed.
        let cam = parse_challenge(r#"Digest qop="auth", realm="IP Camera(C6262)", nonce="4e5468694e7a42694e7a4d364f4449774e54633d", stale="FALSE""#).unwrap();
        assert_eq!(cam.algorithm, "MD5");
        assert!(cam.qop_auth && !cam.stale && cam.opaque.is_none());
        assert!(
            !authorization(
                &cam,
                "admin",
                "x",
                "GET",
                "/ISAPI/System/deviceInfo",
                1,
                "abc"
            )
            .contains("opaque")
        );
        // NVR: empty opaque echoed, stale recognised.
        let nvr = parse_challenge(r#"Digest realm="DS-7608NI", domain="::", qop="auth", nonce="abc, def", opaque="", algorithm="MD5", stale="TRUE""#).unwrap();
        assert_eq!(nvr.nonce, "abc, def", "commas inside quotes");
        assert_eq!(nvr.opaque.as_deref(), Some(""));
        assert!(nvr.stale);
        assert!(
            authorization(
                &nvr,
                "admin",
                "p\"w",
                "GET",
                "/ISAPI/Event/notification/alertStream",
                2,
                "c"
            )
            .contains(r#"opaque="""#)
        );
        assert!(parse_challenge(r#"Basic realm="x""#).is_none());
    }
}
