//! REST API request decoding (`web::fuzzing`): query strings through the handlers' `Query`
//! extractors into their request types, JSON bodies through their `Json` extractors, and the
//! values the handlers then parse (date bounds, months, event cursors).
//!
//! Input: byte 0 picks what (bits 0–1: query, body or value; the rest: which type), the rest
//! is the query string, body or value.
//!
//! Invariant: a door open's refusal never quotes the `code` sent with it.
#![no_main]

use gatehouse::web::fuzzing;
use libfuzzer_sys::fuzz_target;

/// The code a JSON body carries, as text, when it is distinctive enough to look for.
fn sent_code(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let s = match v.get("code")? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    // Short codes turn up in other words by chance; one quoted elsewhere may be quoted there.
    (s.len() >= 6 && s.chars().all(|c| c.is_ascii_alphanumeric()) && body.matches(&s).count() == 1)
        .then_some(s)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let which = sel >> 2;
    match sel & 3 {
        0 | 3 => {
            let q = String::from_utf8_lossy(rest);
            let _ = fuzzing::query(which, &q);
        }
        1 => {
            if let Err(text) = fuzzing::body(which, rest)
                && which % fuzzing::BODIES == 5
                && let Some(code) = sent_code(&String::from_utf8_lossy(rest))
            {
                assert!(!text.contains(&code), "the code {code:?} in {text:?}");
            }
        }
        _ => {
            if let Ok(v) = std::str::from_utf8(rest) {
                fuzzing::value(v);
            }
        }
    }
});
