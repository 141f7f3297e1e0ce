//! The Hikvision `multipart/mixed` alert stream parser (`sources::hikvision::multipart`), fed
//! in chunks as the socket delivers them, every part then handled as the source does
//! (`Part::kind`, `alert::parse`).
//!
//! Input: byte 0 picks the chunk size (1–256), byte 1 the part limit, then the response's
//! `Content-Type` up to the first `\n`, then the stream.
#![no_main]

use gatehouse::sources::hikvision::alert;
use gatehouse::sources::hikvision::multipart::{Parser, Part, PartError, PartKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let chunk = 1 + data[0] as usize;
    // The daemon's limit (2 MiB) and two small ones that the fuzzer can reach.
    let max_part = [2 * 1024 * 1024, 64, 1024][data[1] as usize % 3];
    let rest = &data[2..];
    let (ct, stream) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&b""[..], rest),
    };
    let ct = String::from_utf8_lossy(ct);
    let boundary = Parser::boundary_of(&ct).unwrap_or_else(|| "boundary".into());
    let mut parser = Parser::new(&boundary, max_part);
    let mut given = 0usize;
    let mut returned = 0usize;
    let mut take = |parts: Vec<Result<Part, PartError>>, given: usize| {
        for p in parts {
            match p {
                Ok(part) => {
                    assert!(
                        part.body.len() <= max_part,
                        "a part of {} bytes, limit {max_part}",
                        part.body.len()
                    );
                    returned += part.body.len();
                    assert!(
                        returned <= given,
                        "{returned} bytes of parts from {given} bytes of stream"
                    );
                    if matches!(part.kind(), PartKind::Xml | PartKind::Json) {
                        let _ = alert::parse(&part.body);
                    }
                }
                Err(PartError::TooLarge { limit }) => assert_eq!(limit, max_part),
            }
        }
    };
    for c in stream.chunks(chunk) {
        given += c.len();
        take(parser.push(c), given);
    }
    take(parser.finish(), given);
});
