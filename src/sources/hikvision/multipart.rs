//! A tolerant parser for Hikvision's `multipart/mixed` alert stream. Pure: bytes in, parts out,
//! fed in whatever chunks the socket delivers.
//!
//! Quirks from real devices (protocols.md §2), all handled here: any boundary string, with or
//! without the leading `--` (`boundary=boundary`, `hikboundary`, `--boundary`); duplicated
//! boundary lines; blank lines between parts; missing `Content-Length` (scan for the next
//! boundary); `Content-Length` that counts the body's trailing line ending; CRLF or bare-LF
//! bodies (NVRs); binary `image/jpeg` parts; a close-delimited HTTP/1.0 body (call
//! [`Parser::finish`] at end of stream). Parts are bounded: an oversized part is an error and
//! the parser resynchronises at the next boundary. The `multipart-stream` crate requires
//! `Content-Length` on every part, which these devices do not send.

use bytes::{Buf, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Part {
    pub fn kind(&self) -> PartKind {
        let ct = self
            .content_type
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        let body = self.body.trim_ascii_start();
        if ct.starts_with("image/") || self.body.starts_with(&[0xFF, 0xD8]) {
            PartKind::Image
        } else if ct.contains("json") || body.starts_with(b"{") {
            PartKind::Json
        } else {
            PartKind::Xml
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    Xml,
    Json,
    Image,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    #[error("multipart part larger than {limit} bytes; skipped")]
    TooLarge { limit: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary.
    Preamble,
    /// After a boundary: header lines until a blank line.
    Headers,
    /// In a body of known length.
    Body(usize),
    /// In a body without length: up to the next boundary line.
    Scan,
    /// Oversized part: discard up to the next boundary line.
    Skip,
}

pub struct Parser {
    buf: BytesMut,
    /// The boundary without leading dashes.
    token: Vec<u8>,
    max_part: usize,
    state: State,
    content_type: Option<String>,
    pending_len: Option<usize>,
    saw_header: bool,
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Parser {
    /// `boundary` as given in the Content-Type header (`boundary=…`), quotes removed.
    pub fn new(boundary: &str, max_part: usize) -> Parser {
        let token = boundary
            .trim()
            .trim_matches('"')
            .trim_start_matches('-')
            .as_bytes()
            .to_vec();
        Parser {
            buf: BytesMut::new(),
            token,
            max_part,
            state: State::Preamble,
            content_type: None,
            pending_len: None,
            saw_header: false,
        }
    }

    /// The boundary parameter of a `Content-Type: multipart/mixed; boundary=…` header.
    pub fn boundary_of(content_type: &str) -> Option<String> {
        content_type.split(';').find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })
    }

    /// A boundary line: dashes, the token, optional closing dashes, optional whitespace.
    fn is_boundary(&self, line: &[u8]) -> bool {
        let l = strip_eol(line).trim_ascii();
        let l = l.strip_suffix(b"--").unwrap_or(l);
        let l = {
            let mut l = l;
            while let Some(r) = l.strip_prefix(b"-") {
                l = r;
            }
            l
        };
        !self.token.is_empty() && l == self.token.as_slice()
    }

    pub fn push(&mut self, data: &[u8]) -> Vec<Result<Part, PartError>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Preamble | State::Skip => {
                    let Some(line) = self.take_line() else { break };
                    if self.is_boundary(&line) {
                        self.start_headers();
                    }
                }
                State::Headers => {
                    let Some(line) = self.peek_line() else {
                        if self.buf.len() > 16 * 1024 {
                            // No line end in 16 KiB of headers: not headers at all.
                            self.state = State::Scan;
                            continue;
                        }
                        break;
                    };
                    let content = strip_eol(&self.buf[..line]).to_vec();
                    if self.is_boundary(&content) {
                        // Duplicated boundary line.
                        self.buf.advance(line);
                        self.start_headers();
                    } else if content.trim_ascii().is_empty() {
                        self.buf.advance(line);
                        if self.saw_header {
                            self.state = self.body_state();
                        }
                    } else if let Some((k, v)) = header(&content) {
                        self.buf.advance(line);
                        self.saw_header = true;
                        if k.eq_ignore_ascii_case("content-type") {
                            self.content_type = Some(v.to_string());
                        } else if k.eq_ignore_ascii_case("content-length") {
                            self.pending_len = v.trim().parse().ok();
                        }
                    } else {
                        // A body with no headers at all.
                        self.state = State::Scan;
                    }
                }
                State::Body(n) => {
                    if n > self.max_part {
                        out.push(Err(PartError::TooLarge {
                            limit: self.max_part,
                        }));
                        self.state = State::Skip;
                        continue;
                    }
                    if self.buf.len() < n {
                        break;
                    }
                    let body = self.buf.split_to(n).to_vec();
                    out.push(Ok(self.part(body)));
                    self.start_between();
                }
                State::Scan => match self.find_boundary() {
                    Some((end, next)) => {
                        let body = self.buf.split_to(end).to_vec();
                        self.buf.advance(next - end);
                        if body.len() > self.max_part {
                            out.push(Err(PartError::TooLarge {
                                limit: self.max_part,
                            }));
                        } else if !body.trim_ascii().is_empty() {
                            out.push(Ok(self.part(body)));
                        }
                        self.start_headers();
                    }
                    None => {
                        if self.buf.len() > self.max_part {
                            out.push(Err(PartError::TooLarge {
                                limit: self.max_part,
                            }));
                            self.buf.clear();
                            self.state = State::Skip;
                        }
                        break;
                    }
                },
            }
        }
        out
    }

    /// End of a close-delimited stream: whatever body is pending is the last part.
    pub fn finish(&mut self) -> Vec<Result<Part, PartError>> {
        let mut out = Vec::new();
        if matches!(self.state, State::Scan | State::Body(_)) && !self.buf.trim_ascii().is_empty() {
            let body = std::mem::take(&mut self.buf).to_vec();
            out.push(Ok(self.part(body)));
        }
        self.buf.clear();
        self.state = State::Preamble;
        out
    }

    fn start_headers(&mut self) {
        self.state = State::Headers;
        self.content_type = None;
        self.pending_len = None;
        self.saw_header = false;
    }

    /// After a length-delimited body: blank lines, then a boundary (or, if a device's
    /// Content-Length was short, more body — scan for the boundary).
    fn start_between(&mut self) {
        self.state = State::Preamble;
        self.content_type = None;
        self.pending_len = None;
    }

    fn body_state(&mut self) -> State {
        match self.pending_len.take() {
            Some(n) => State::Body(n),
            None => State::Scan,
        }
    }

    fn part(&self, mut body: Vec<u8>) -> Part {
        // The body's own trailing line ending (counted in Content-Length, or before the
        // boundary) is not content; JPEG bytes are left untouched.
        let is_image = self
            .content_type
            .as_deref()
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("image/"))
            || body.starts_with(&[0xFF, 0xD8]);
        if !is_image {
            while body.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                body.pop();
            }
        }
        Part {
            content_type: self.content_type.clone(),
            body,
        }
    }

    fn peek_line(&self) -> Option<usize> {
        self.buf.iter().position(|b| *b == b'\n').map(|i| i + 1)
    }

    fn take_line(&mut self) -> Option<Vec<u8>> {
        let n = self.peek_line()?;
        Some(self.buf.split_to(n).to_vec())
    }

    /// Start of the line ending before the next boundary line, and the end of that line.
    fn find_boundary(&self) -> Option<(usize, usize)> {
        let mut start = 0;
        while start < self.buf.len() {
            let end = self.buf[start..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|i| start + i + 1)?;
            if self.is_boundary(&self.buf[start..end]) {
                return Some((start, end));
            }
            start = end;
        }
        None
    }
}

fn header(line: &[u8]) -> Option<(&str, &str)> {
    let s = std::str::from_utf8(line).ok()?;
    let (k, v) = s.split_once(':')?;
    let k = k.trim();
    (!k.is_empty() && !k.contains(' ') && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .then(|| (k, v.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIN: &[u8] =
        include_bytes!("../../../tests/fixtures/hikvision/multipart_stream_rs_hikvision_style.bin");

    fn all(p: &mut Parser, data: &[u8], chunk: usize) -> Vec<Part> {
        let mut out = Vec::new();
        for c in data.chunks(chunk.max(1)) {
            out.extend(p.push(c).into_iter().map(|r| r.unwrap()));
        }
        out.extend(p.finish().into_iter().map(|r| r.unwrap()));
        out
    }

    fn xml(i: usize, eol: &str) -> String {
        format!(
            "<EventNotificationAlert>{eol}<eventType>VMD</eventType>{eol}<eventState>active</eventState>{eol}<n>{i}</n>{eol}</EventNotificationAlert>{eol}"
        )
    }

    #[test]
    fn real_capture_in_any_chunking() {
        for chunk in [1, 2, 7, 64, 4096] {
            let parts = all(&mut Parser::new("boundary", 1 << 20), BIN, chunk);
            assert_eq!(parts.len(), 2, "chunk {chunk}");
            for p in &parts {
                assert_eq!(p.kind(), PartKind::Xml);
                assert!(p.body.starts_with(b"<EventNotificationAlert"));
                assert!(p.body.ends_with(b"</EventNotificationAlert>"));
            }
        }
    }

    fn stream(boundary_line: &str, eol: &str, with_len: bool, extras: bool) -> Vec<u8> {
        let mut s = Vec::new();
        for i in 0..5 {
            let body = xml(i, eol);
            if extras && i == 2 {
                s.extend(format!("{boundary_line}{eol}").as_bytes()); // duplicated boundary
                s.extend(eol.as_bytes()); // blank line between parts
            }
            s.extend(
                format!(
                    "{boundary_line}{eol}Content-Type: application/xml; charset=\"UTF-8\"{eol}"
                )
                .as_bytes(),
            );
            if with_len {
                s.extend(format!("Content-Length: {}{eol}", body.len()).as_bytes());
            }
            s.extend(eol.as_bytes());
            s.extend(body.as_bytes());
            if !with_len {
                s.extend(eol.as_bytes());
            }
        }
        s
    }

    #[test]
    fn every_quirk_in_every_chunking() {
        for (hdr, line) in [
            ("boundary", "--boundary"),
            ("hikboundary", "--hikboundary"),
            ("--boundary", "--boundary"),
            ("--boundary", "----boundary"),
        ] {
            for eol in ["\r\n", "\n"] {
                for with_len in [true, false] {
                    for extras in [false, true] {
                        let data = stream(line, eol, with_len, extras);
                        for chunk in [1, 3, 50, 100_000] {
                            let parts = all(&mut Parser::new(hdr, 1 << 20), &data, chunk);
                            let ns: Vec<String> = parts
                                .iter()
                                .map(|p| {
                                    let s = String::from_utf8_lossy(&p.body).to_string();
                                    s.split("<n>")
                                        .nth(1)
                                        .unwrap()
                                        .split('<')
                                        .next()
                                        .unwrap()
                                        .to_string()
                                })
                                .collect();
                            assert_eq!(
                                ns,
                                ["0", "1", "2", "3", "4"],
                                "{hdr} {line} {eol:?} len={with_len} extras={extras} chunk={chunk}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn jpeg_parts_are_binary_and_routed_by_type() {
        let jpeg: Vec<u8> = [
            0xFF, 0xD8, 0xFF, 0xE0, b'\n', b'\r', b'-', b'-', 0x00, 0xFF, 0xD9,
        ]
        .to_vec();
        let mut s = Vec::new();
        s.extend(b"--boundary\r\nContent-Type: image/jpeg\r\n");
        s.extend(format!("Content-Length: {}\r\n\r\n", jpeg.len()).as_bytes());
        s.extend(&jpeg);
        s.extend(b"\r\n--boundary\r\nContent-Type: application/json\r\nContent-Length: 18\r\n\r\n{\"eventType\":\"x\"}\r\n");
        let parts = all(&mut Parser::new("boundary", 1 << 20), &s, 5);
        assert_eq!(parts[0].kind(), PartKind::Image);
        assert_eq!(parts[0].body, jpeg, "binary bytes kept exactly");
        assert_eq!(parts[1].kind(), PartKind::Json);
    }

    #[test]
    fn close_delimited_last_part_and_size_limit() {
        let mut p = Parser::new("boundary", 64);
        let mut s = b"--boundary\r\nContent-Type: application/xml\r\n\r\n".to_vec();
        s.extend(vec![b'x'; 200]);
        s.extend(b"\r\n--boundary\r\nContent-Type: application/xml\r\n\r\n<ok/>");
        let res: Vec<_> = p.push(&s).into_iter().chain(p.finish()).collect();
        assert_eq!(res[0], Err(PartError::TooLarge { limit: 64 }));
        assert_eq!(
            res[1].as_ref().unwrap().body,
            b"<ok/>",
            "resynchronised; HTTP/1.0 close ends the last part"
        );
        assert_eq!(
            Parser::boundary_of("multipart/mixed; boundary=hikboundary").as_deref(),
            Some("hikboundary")
        );
        assert_eq!(
            Parser::boundary_of("multipart/mixed;boundary=\"--boundary\"").as_deref(),
            Some("--boundary")
        );
    }
}
