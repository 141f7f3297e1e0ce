//! A tolerant parser for Hikvision's `multipart/mixed` alert stream. Pure: bytes in, parts out,
//! fed in whatever chunks the socket delivers.
//!
//! Quirks from real devices (protocols.md §2), all handled here: any boundary string, with or
//! without the leading `--` (`boundary=boundary`, `hikboundary`, `--boundary`); duplicated
//! boundary lines; blank lines between parts; missing `Content-Length` (scan for the next
//! boundary); `Content-Length` that counts the body's trailing line ending; CRLF or bare-LF
//! bodies (NVRs); binary `image/jpeg` parts; a close-delimited HTTP/1.0 body (call
//! [`Parser::finish`] at end of stream). A part without `Content-Length` ends as soon as its
//! XML or JSON document is complete, not when the next boundary arrives: on a quiet camera
//! that can be minutes later (the check measured a door alarm 1.0 s late). Parts are bounded: an oversized part is an error and
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum DocKind {
    /// Not decided yet (nothing but white space so far).
    #[default]
    Unknown,
    Xml,
    Json,
    /// Neither: the part ends at the next boundary.
    Other,
}

/// How far a length-less body has been read as a document, to end it when it is complete.
#[derive(Debug, Clone, Copy, Default)]
struct DocScan {
    kind: DocKind,
    /// Bytes of `buf` already looked at.
    pos: usize,
    depth: usize,
    started: bool,
    /// JSON: inside a string, and after a backslash in it.
    in_str: bool,
    escaped: bool,
}

impl DocScan {
    /// The end of the XML document in `b` (after the root's closing tag, or a self-closing
    /// root), once it is there. Resumes where it stopped; an unfinished construct is looked at
    /// again with more bytes.
    fn xml_end(&mut self, b: &[u8]) -> Option<usize> {
        while let Some(off) = memchr::memchr(b'<', &b[self.pos..]) {
            let lt = self.pos + off;
            let rest = &b[lt..];
            let (len, delta) = if rest.starts_with(b"<?") {
                (find(rest, b"?>")? + 2, 0)
            } else if rest.starts_with(b"<!--") {
                (find(rest, b"-->")? + 3, 0)
            } else if rest.starts_with(b"<![CDATA[") {
                (find(rest, b"]]>")? + 3, 0)
            } else if rest.len() < 9
                && (b"<![CDATA[".starts_with(rest) || b"<!--".starts_with(rest))
            {
                return None;
            } else if rest.starts_with(b"<!") {
                (find(rest, b">")? + 1, 0)
            } else if rest.starts_with(b"</") {
                (find(rest, b">")? + 1, -1)
            } else {
                let end = tag_end(rest)?;
                (end + 1, if rest[end - 1] == b'/' { 0 } else { 1 })
            };
            self.pos = lt + len;
            match delta {
                1 => {
                    self.depth += 1;
                    self.started = true;
                }
                -1 => self.depth = self.depth.saturating_sub(1),
                _ if rest[1] != b'?' && rest[1] != b'!' && !self.started => {
                    // A self-closing root element.
                    return Some(self.pos);
                }
                _ => {}
            }
            if self.started && self.depth == 0 {
                return Some(self.pos);
            }
        }
        self.pos = b.len();
        None
    }

    /// The end of the JSON document in `b` (its outermost brace or bracket closed).
    fn json_end(&mut self, b: &[u8]) -> Option<usize> {
        while self.pos < b.len() {
            let c = b[self.pos];
            self.pos += 1;
            if self.in_str {
                match (self.escaped, c) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_str = false,
                    _ => {}
                }
                continue;
            }
            match c {
                b'"' => self.in_str = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    self.started = true;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.started && self.depth == 0 {
                        return Some(self.pos);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// Where `needle` starts in `hay`. Alerts are scanned on every part, so the byte searches are
/// memchr's (SIMD) rather than byte loops.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// The `>` that ends a start tag (quoted attribute values may hold one).
fn tag_end(tag: &[u8]) -> Option<usize> {
    let gt = memchr::memchr(b'>', tag)?;
    if memchr::memchr2(b'"', b'\'', &tag[..gt]).is_none() {
        return Some(gt);
    }
    let mut quote = None;
    for (i, c) in tag.iter().enumerate().skip(1) {
        match (quote, *c) {
            (None, b'"' | b'\'') => quote = Some(*c),
            (Some(q), c) if c == q => quote = None,
            (None, b'>') => return Some(i),
            _ => {}
        }
    }
    None
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
    doc: DocScan,
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
            doc: DocScan::default(),
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
                    let Some(n) = self.peek_line() else { break };
                    let boundary = self.is_boundary(&self.buf[..n]);
                    self.buf.advance(n);
                    if boundary {
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
                    // No boundary yet (a quiet camera sends the next part minutes later): the
                    // part ends as soon as its document is complete. The line ending and the
                    // boundary that follow are skipped as between parts.
                    None => match self.document_end() {
                        Some(end) => {
                            let body = self.buf.split_to(end).to_vec();
                            // The buffer is checked against the limit only while the document
                            // is incomplete: the read that completes it may take it over.
                            if body.len() > self.max_part {
                                out.push(Err(PartError::TooLarge {
                                    limit: self.max_part,
                                }));
                            } else {
                                out.push(Ok(self.part(body)));
                            }
                            self.start_between();
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

    /// Where the body being scanned (all of the buffer: no boundary has come) ends as a
    /// complete XML or JSON document (by its Content-Type, else its first character), once it
    /// does.
    fn document_end(&mut self) -> Option<usize> {
        let body = &self.buf[..];
        if self.doc.kind == DocKind::Unknown {
            let ct = self.content_type.as_deref().unwrap_or("");
            let has = |w: &str| {
                ct.as_bytes()
                    .windows(w.len())
                    .any(|x| x.eq_ignore_ascii_case(w.as_bytes()))
            };
            self.doc.kind = match body.iter().find(|c| !c.is_ascii_whitespace()) {
                _ if has("xml") => DocKind::Xml,
                _ if has("json") => DocKind::Json,
                _ if !ct.is_empty() => DocKind::Other,
                Some(b'<') => DocKind::Xml,
                Some(b'{' | b'[') => DocKind::Json,
                Some(_) => DocKind::Other,
                None => return None,
            };
        }
        match self.doc.kind {
            DocKind::Xml => self.doc.xml_end(body),
            DocKind::Json => self.doc.json_end(body),
            DocKind::Other | DocKind::Unknown => None,
        }
    }

    fn start_headers(&mut self) {
        self.state = State::Headers;
        self.doc = DocScan::default();
        self.content_type = None;
        self.pending_len = None;
        self.saw_header = false;
    }

    /// After a length-delimited body: blank lines, then a boundary (or, if a device's
    /// Content-Length was short, more body — scan for the boundary).
    fn start_between(&mut self) {
        self.state = State::Preamble;
        self.doc = DocScan::default();
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

    /// Found by fuzzing (fuzz/corpus/multipart/crash-53e09fa7…): a length-less part that ends
    /// as a complete document in the read that takes it over the limit was returned whole.
    #[test]
    fn a_document_over_the_limit_is_refused_however_it_arrives() {
        let doc = format!(
            "<EventNotificationAlert>{}</EventNotificationAlert>",
            "x".repeat(40)
        );
        assert!(doc.len() > 64);
        let head = "--boundary\r\nContent-Type: application/xml\r\n\r\n";
        for chunk in [1, 7, 70, 4096] {
            let mut p = Parser::new("boundary", 64);
            let mut got = Vec::new();
            for c in format!("{head}{doc}").as_bytes().chunks(chunk) {
                got.extend(p.push(c));
            }
            got.extend(p.finish());
            assert!(
                got.iter().all(|r| r
                    .as_ref()
                    .is_err_and(|e| *e == PartError::TooLarge { limit: 64 })),
                "chunk {chunk}: {got:?}"
            );
            assert!(
                !got.is_empty(),
                "chunk {chunk}: the oversized part vanished"
            );
        }
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
    fn a_part_without_length_ends_when_its_document_is_complete() {
        // Nothing follows the document yet (a quiet camera): it must not wait for the next
        // boundary. Byte by byte, with what trips a naive scanner.
        let docs: [(&str, &str); 4] = [
            (
                "application/xml",
                "<?xml version=\"1.0\"?>\n<!-- c > d --><EventNotificationAlert version=\"2.0\" a='x>y'><eventType>VMD</eventType><eventDescription><![CDATA[a </b> c]]></eventDescription><x/><EventNotificationAlert/></EventNotificationAlert>",
            ),
            ("application/xml", "<heartBeat/>"),
            (
                "application/json",
                r#"{"eventType":"AccessControllerEvent","note":"a } in a \" string","list":[{"x":1}]}"#,
            ),
            (
                "",
                "\n<EventNotificationAlert><eventType>IO</eventType></EventNotificationAlert>",
            ),
        ];
        for (ct, doc) in docs {
            for eol in ["\r\n", "\n"] {
                let head = if ct.is_empty() {
                    format!("--boundary{eol}Content-Disposition: x{eol}{eol}")
                } else {
                    format!("--boundary{eol}Content-Type: {ct}{eol}{eol}")
                };
                let mut p = Parser::new("boundary", 1 << 20);
                let mut got = Vec::new();
                for b in head.bytes().chain(doc.bytes()) {
                    got.extend(p.push(&[b]));
                }
                assert_eq!(got.len(), 1, "{ct} {eol:?}: emitted at its last byte");
                assert_eq!(got[0].as_ref().unwrap().body, doc.as_bytes());
                // The line ending and the next part follow as usual.
                let next =
                    format!("{eol}--boundary{eol}Content-Type: application/xml{eol}{eol}<a>1</a>");
                let more = p.push(next.as_bytes());
                assert_eq!(more.len(), 1, "{ct} {eol:?}");
                assert_eq!(more[0].as_ref().unwrap().body, b"<a>1</a>");
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
