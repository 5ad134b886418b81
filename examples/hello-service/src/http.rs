//! A small, strict HTTP/1.x request parser and response writer (just what the service needs).

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest request line or header line accepted, in bytes.
pub const MAX_LINE: usize = 8 * 1024;
/// Most header fields accepted in one request.
pub const MAX_HEADERS: usize = 64;
/// Largest request body accepted (and discarded).
pub const MAX_BODY: u64 = 1024 * 1024;

/// The HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// A parsed request head (request line and header fields); the body is read separately.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent (origin form, may hold a query).
    pub target: String,
    pub version: Version,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body length from `Content-Length` (0 when absent).
    pub content_length: u64,
}

impl Request {
    /// The path part of the target (without the query).
    pub fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or("")
    }

    /// The first value of a header field, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a `Connection` header lists `token`.
    fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the client wants the connection kept open after the response.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.connection_has("close"),
            Version::Http10 => self.connection_has("keep-alive"),
        }
    }

    /// Whether the client waits for `100 Continue` before sending the body.
    pub fn expects_continue(&self) -> bool {
        self.version == Version::Http11
            && self
                .header("expect")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }
}

/// Why a request could not be read; all but [`ParseError::Io`] get an error response.
#[derive(Debug)]
pub enum ParseError {
    /// The connection failed, timed out or closed in the middle of a request.
    Io(io::Error),
    /// Malformed request (400).
    Bad(&'static str),
    /// A request line or header line too long, or too many headers (431).
    HeadersTooLarge,
    /// A body over [`MAX_BODY`] (413).
    BodyTooLarge,
    /// A transfer coding this server does not implement (501).
    NotImplemented(&'static str),
    /// An HTTP version other than 1.0/1.1 (505).
    VersionNotSupported,
}

impl ParseError {
    /// The status to answer with, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            ParseError::Io(_) => None,
            ParseError::Bad(_) => Some(400),
            ParseError::HeadersTooLarge => Some(431),
            ParseError::BodyTooLarge => Some(413),
            ParseError::NotImplemented(_) => Some(501),
            ParseError::VersionNotSupported => Some(505),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Io(e) => write!(f, "i/o error: {e}"),
            ParseError::Bad(why) => write!(f, "bad request: {why}"),
            ParseError::HeadersTooLarge => f.write_str("request header fields too large"),
            ParseError::BodyTooLarge => f.write_str("request body too large"),
            ParseError::NotImplemented(why) => write!(f, "not implemented: {why}"),
            ParseError::VersionNotSupported => f.write_str("HTTP version not supported"),
        }
    }
}

impl From<io::Error> for ParseError {
    fn from(e: io::Error) -> ParseError {
        ParseError::Io(e)
    }
}

/// Reads one line (up to `\n`), without its line ending. `Ok(None)` at end of input before
/// any byte was read.
fn read_line(reader: &mut impl BufRead) -> Result<Option<String>, ParseError> {
    let mut buf = Vec::new();
    let n = reader
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if n > MAX_LINE {
            return Err(ParseError::HeadersTooLarge);
        }
        return Err(ParseError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if buf.len() > MAX_LINE {
        return Err(ParseError::HeadersTooLarge);
    }
    if buf.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(ParseError::Bad("stray CR or NUL in line"));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// A header field name must be a non-empty RFC 9110 token.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads the next request head. `Ok(None)` when the peer closed the connection cleanly
/// between requests.
pub fn read_request(reader: &mut impl BufRead) -> Result<Option<Request>, ParseError> {
    // A client may send stray empty lines between requests (RFC 9112 §2.2).
    let mut line = None;
    for _ in 0..4 {
        match read_line(reader)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => {
                line = Some(l);
                break;
            }
        }
    }
    let line = line.ok_or(ParseError::Bad("empty request line"))?;

    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Bad(
            "request line is not `METHOD TARGET VERSION`",
        ));
    };
    if !is_token(method) {
        return Err(ParseError::Bad("invalid method"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ParseError::Bad("request target must be an absolute path"));
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        v if v.len() == 8
            && v.starts_with("HTTP/")
            && v.as_bytes()[5].is_ascii_digit()
            && v.as_bytes()[6] == b'.'
            && v.as_bytes()[7].is_ascii_digit() =>
        {
            return Err(ParseError::VersionNotSupported);
        }
        _ => return Err(ParseError::Bad("invalid HTTP version")),
    };

    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?
            .ok_or_else(|| ParseError::Io(io::ErrorKind::UnexpectedEof.into()))?;
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            return Err(ParseError::Bad("obsolete header line folding"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ParseError::Bad("header line without a colon"))?;
        if !is_token(name) {
            return Err(ParseError::Bad("invalid header name"));
        }
        if headers.len() == MAX_HEADERS {
            return Err(ParseError::HeadersTooLarge);
        }
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }

    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        version,
        headers,
        content_length: 0,
    };
    if request.header("transfer-encoding").is_some() {
        return Err(ParseError::NotImplemented(
            "Transfer-Encoding request bodies",
        ));
    }
    let mut length: Option<u64> = None;
    for (_, value) in request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for item in value.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseError::Bad("invalid Content-Length"));
            }
            let n: u64 = item.parse().map_err(|_| ParseError::BodyTooLarge)?;
            if length.is_some_and(|l| l != n) {
                return Err(ParseError::Bad("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    request.content_length = length.unwrap_or(0);
    if request.content_length > MAX_BODY {
        return Err(ParseError::BodyTooLarge);
    }
    let hosts = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 || (version == Version::Http11 && hosts == 0) {
        return Err(ParseError::Bad("HTTP/1.1 needs exactly one Host header"));
    }
    Ok(Some(request))
}

/// Reads and throws away `len` body bytes.
pub fn discard_body(reader: &mut impl BufRead, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(len), &mut io::sink())?;
    if copied < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// A response to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra header fields.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
            headers: Vec::new(),
        }
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the response; `head_only` leaves out the body (for `HEAD`).
    pub fn write_to(
        &self,
        w: &mut impl Write,
        head_only: bool,
        keep_alive: bool,
    ) -> io::Result<()> {
        write!(
            w,
            "HTTP/1.1 {} {}\r\nDate: {}\r\nServer: hello-service\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            reason(self.status),
            http_date(SystemTime::now()),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        )?;
        for (name, value) in &self.headers {
            write!(w, "{name}: {value}\r\n")?;
        }
        w.write_all(b"\r\n")?;
        if !head_only {
            w.write_all(&self.body)?;
        }
        Ok(())
    }
}

/// The reason phrase for the status codes this service uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Formats a time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};
    use std::time::Duration;

    fn parse(raw: &str) -> Result<Option<Request>, ParseError> {
        read_request(&mut BufReader::new(Cursor::new(raw.as_bytes().to_vec())))
    }

    fn status_of(raw: &str) -> Option<u16> {
        parse(raw).expect_err("should be rejected").status()
    }

    #[test]
    fn parses_a_simple_get() {
        let req = parse("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent:  t/1 \r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/metrics?x=1");
        assert_eq!(req.path(), "/metrics");
        assert_eq!(req.version, Version::Http11);
        assert_eq!(req.header("user-agent"), Some("t/1"));
        assert_eq!(req.header("HOST"), Some("a"));
        assert_eq!(req.content_length, 0);
        assert!(req.keep_alive());
    }

    #[test]
    fn accepts_bare_lf_and_leading_empty_lines() {
        let req = parse("\r\n\nGET / HTTP/1.0\n\n").unwrap().unwrap();
        assert_eq!(req.version, Version::Http10);
        assert!(!req.keep_alive());
    }

    #[test]
    fn connection_header_decides_keep_alive() {
        let close = parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n");
        assert!(!close.unwrap().unwrap().keep_alive());
        let keep = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(keep.unwrap().unwrap().keep_alive());
    }

    #[test]
    fn clean_eof_is_none() {
        assert!(parse("").unwrap().is_none());
    }

    #[test]
    fn truncated_head_is_an_io_error() {
        let err = parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap_err();
        assert!(matches!(err, ParseError::Io(_)));
        assert_eq!(err.status(), None);
    }

    #[test]
    fn rejects_malformed_requests() {
        assert_eq!(status_of("GET /\r\n\r\n"), Some(400));
        assert_eq!(status_of("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(400));
        assert_eq!(status_of("GET / HTTP/1.1 x\r\nHost: a\r\n\r\n"), Some(400));
        assert_eq!(status_of("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(400));
        assert_eq!(
            status_of("GET index HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(400)
        );
        assert_eq!(status_of("GET / HTTX/1.1\r\nHost: a\r\n\r\n"), Some(400));
        assert_eq!(status_of("GET / HTTP/1.1\r\n\r\n"), Some(400));
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Some(400)
        );
        assert_eq!(status_of("GET / HTTP/1.1\r\nHost a\r\n\r\n"), Some(400));
        assert_eq!(status_of("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), Some(400));
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"),
            Some(400)
        );
        assert_eq!(status_of("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), Some(400));
        assert_eq!(status_of("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), Some(505));
    }

    #[test]
    fn checks_content_length() {
        let ok = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(ok.unwrap().unwrap().content_length, 5);
        let same = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello");
        assert_eq!(same.unwrap().unwrap().content_length, 5);
        for bad in ["-1", "+5", "5x", "", "5, 6"] {
            let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(status_of(&raw), Some(400), "Content-Length: {bad}");
        }
        let huge = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(status_of(&huge), Some(413));
        let overflow =
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(status_of(overflow), Some(413));
        let chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status_of(chunked), Some(501));
    }

    #[test]
    fn limits_head_size() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(MAX_LINE));
        assert_eq!(status_of(&long), Some(431));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(status_of(&raw), Some(431));
    }

    #[test]
    fn pipelined_requests_stay_in_sync_after_discarding_bodies() {
        let raw = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyzGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut reader = BufReader::new(Cursor::new(raw.as_bytes().to_vec()));
        let first = read_request(&mut reader).unwrap().unwrap();
        discard_body(&mut reader, first.content_length).unwrap();
        let second = read_request(&mut reader).unwrap().unwrap();
        assert_eq!(second.path(), "/b");
        assert!(read_request(&mut reader).unwrap().is_none());
    }

    #[test]
    fn short_body_is_an_error() {
        let mut reader = BufReader::new(Cursor::new(b"ab".to_vec()));
        assert!(discard_body(&mut reader, 3).is_err());
    }

    #[test]
    fn expect_continue() {
        let req =
            parse("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(req.unwrap().unwrap().expects_continue());
    }

    #[test]
    fn writes_a_response() {
        let mut out = Vec::new();
        Response::text(405, "no\n")
            .with_header("Allow", "GET, HEAD")
            .write_to(&mut out, false, false)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nContent-Length: 3\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"));
        assert!(text.ends_with("\r\n\r\nno\n"));

        let mut head = Vec::new();
        Response::text(200, "ok")
            .write_to(&mut head, true, true)
            .unwrap();
        let head = String::from_utf8(head).unwrap();
        assert!(head.contains("\r\nContent-Length: 2\r\n"));
        assert!(head.contains("\r\nConnection: keep-alive\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn formats_http_dates() {
        let at = |secs| http_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(at(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
    }
}
