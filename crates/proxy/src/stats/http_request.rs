//! C's HTTP request parsing for the stats port (`hts_parse_execute`): the request line,
//! the headers it cares about (`Connection`, `Content-Length`), and where the head ends.
//! Deciding what to answer is `http`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Head,
    Post,
    Options,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    /// No version word: the response is the body alone.
    V09,
    V10,
    V11,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request {
    pub(super) method: Method,
    pub(super) uri: Vec<u8>,
    pub(super) version: Version,
    pub(super) keep_alive: bool,
    pub(super) content_length: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parse {
    /// More bytes are needed.
    Incomplete,
    /// `400`; `v09` if the request line said HTTP/0.9 (no response header then).
    Bad {
        v09: bool,
    },
    Ok {
        req: Request,
        consumed: usize,
    },
}

/// C's request line: method, spaces, URI, spaces, optional version, spaces, end. Words are
/// runs of bytes above 0x20; only spaces separate them. `Err(v09)` for a bad line, `v09`
/// telling whether C had already taken it for HTTP/0.9 (its 400 then has no header).
fn parse_request_line(line: &[u8]) -> Result<(Method, Vec<u8>, Version), bool> {
    let mut i = 0;
    let word = |i: &mut usize| {
        let start = *i;
        while *i < line.len() && line[*i] > b' ' {
            *i += 1;
        }
        let w = &line[start..*i];
        while *i < line.len() && line[*i] == b' ' {
            *i += 1;
        }
        w
    };
    let method = match word(&mut i) {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"OPTIONS" => Method::Options,
        _ => return Err(false),
    };
    let uri = word(&mut i).to_vec();
    if uri.is_empty() {
        return Err(false);
    }
    let version = match word(&mut i) {
        b"" => Version::V09,
        b"HTTP/1.0" => Version::V10,
        b"HTTP/1.1" => Version::V11,
        _ => return Err(false),
    };
    if i != line.len() {
        return Err(version == Version::V09);
    }
    Ok((method, uri, version))
}

fn trim_sp_tab(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// One header line (no line ending) into `req`; `false` if C would flag it as an error.
fn parse_header(line: &[u8], req: &mut Request) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = &line[..colon];
    if name.iter().any(|&b| b <= b' ') {
        return false;
    }
    let value = trim_sp_tab(&line[colon + 1..]);
    if name.eq_ignore_ascii_case(b"content-length") {
        if req.content_length.is_some() || value.is_empty() || !value.iter().all(u8::is_ascii_digit)
        {
            return false;
        }
        let mut n: u64 = 0;
        for &d in value {
            if n >= 0x7fff_ffff / 10 {
                return false;
            }
            n = n * 10 + u64::from(d - b'0');
        }
        req.content_length = Some(n);
    } else if name.eq_ignore_ascii_case(b"connection") || name.eq_ignore_ascii_case(b"host") {
        // C reads one word here; anything after it on the line is an error.
        if value.iter().any(|&b| b <= b' ') {
            return false;
        }
        if name.eq_ignore_ascii_case(b"connection") && value.eq_ignore_ascii_case(b"keep-alive") {
            req.keep_alive = true;
        }
    }
    true
}

/// Strips the LF and at most one CR before it.
fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses one request head from the start of `buf` (C's `hts_parse_execute` rules).
pub(super) fn parse_request(buf: &[u8], max_head: usize) -> Parse {
    let too_big = |n: usize| n >= max_head;
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return if too_big(buf.len()) {
            Parse::Bad { v09: false }
        } else {
            Parse::Incomplete
        };
    };
    if too_big(lf + 1) {
        return Parse::Bad { v09: false };
    }
    let (method, uri, version) = match parse_request_line(strip_eol(&buf[..=lf])) {
        Ok(x) => x,
        Err(v09) => return Parse::Bad { v09 },
    };
    let mut req = Request {
        method,
        uri,
        version,
        keep_alive: false,
        content_length: None,
    };
    if version == Version::V09 {
        return Parse::Ok {
            req,
            consumed: lf + 1,
        };
    }
    let mut pos = lf + 1;
    let mut ok = true;
    loop {
        let Some(n) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return if too_big(buf.len()) {
                Parse::Bad { v09: false }
            } else {
                Parse::Incomplete
            };
        };
        let end = pos + n + 1;
        if too_big(end) {
            return Parse::Bad { v09: false };
        }
        let line = strip_eol(&buf[pos..end]);
        pos = end;
        if line.is_empty() {
            break;
        }
        // After an error C skips to the end of the head before answering 400.
        ok = ok && parse_header(line, &mut req);
    }
    if ok {
        Parse::Ok { req, consumed: pos }
    } else {
        Parse::Bad { v09: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::http::MAX_REQUEST_HEAD;

    fn ok(buf: &[u8]) -> (Request, usize) {
        match parse_request(buf, MAX_REQUEST_HEAD) {
            Parse::Ok { req, consumed } => (req, consumed),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn bad(buf: &[u8]) -> bool {
        match parse_request(buf, MAX_REQUEST_HEAD) {
            Parse::Bad { v09 } => v09,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn parser_waits_for_the_whole_head() {
        let req = b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n";
        for n in 0..req.len() {
            assert_eq!(
                parse_request(&req[..n], MAX_REQUEST_HEAD),
                Parse::Incomplete,
                "prefix {n}"
            );
        }
        let mut two = req.to_vec();
        two.extend_from_slice(b"GET /x HTTP/1.0\n\n");
        let (r, used) = ok(&two);
        assert_eq!(used, req.len());
        assert_eq!(r.uri, b"/stats");
        assert!(r.keep_alive);
        assert_eq!(r.version, Version::V11);
        let (r, used) = ok(&two[used..]);
        assert_eq!(
            (r.uri.as_slice(), used, r.keep_alive),
            (&b"/x"[..], 17, false)
        );
    }

    #[test]
    fn parser_follows_c() {
        // HTTP/0.9: one line, no headers.
        let (r, used) = ok(b"GET /stats\r\nrest");
        assert_eq!((r.version, used), (Version::V09, 12));
        // Several spaces, bare LF, lowercase header names, an empty Content-Length of 0.
        let (r, _) = ok(b"GET  /stats   HTTP/1.0 \ncontent-length: 0\n\n");
        assert_eq!(r.content_length, Some(0));
        let (r, _) = ok(b"POST /stats HTTP/1.1\r\nContent-Length:\t12 \r\n\r\n");
        assert_eq!((r.method, r.content_length), (Method::Post, Some(12)));
        assert!(!bad(b"PUT /stats HTTP/1.1\r\n\r\n"));
        assert!(!bad(b"get /stats HTTP/1.1\r\n\r\n"));
        assert!(!bad(b"GET\t/stats HTTP/1.1\r\n\r\n"));
        assert!(!bad(b" GET /stats HTTP/1.1\r\n\r\n"));
        assert!(!bad(b"GET \r\n"));
        assert!(!bad(b"GET /stats HTTP/2.0\r\n\r\n"));
        assert!(!bad(b"GET /stats HTTP/1.1 x\r\n\r\n"));
        assert!(!bad(b"GET /stats HTTP/1.1\r\r\n\r\n"));
        assert!(bad(b"GET /stats\tx\r\n"), "C has taken it for 0.9 by then");
        assert!(!bad(b"GET /stats HTTP/1.1\r\nNo colon\r\n\r\n"));
        assert!(!bad(b"GET /stats HTTP/1.1\r\n folded: x\r\n\r\n"));
        assert!(!bad(
            b"GET /stats HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(!bad(b"GET /stats HTTP/1.1\r\nContent-Length: 12a\r\n\r\n"));
        assert!(!bad(b"GET /stats HTTP/1.1\r\nContent-Length:\r\n\r\n"));
        assert!(!bad(
            b"GET /stats HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"
        ));
        assert!(!bad(
            b"GET /stats HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n"
        ));
        assert!(!bad(b"GET /stats HTTP/1.1\r\nHost: a b\r\n\r\n"));
        // Other headers may hold anything.
        let (r, _) = ok(b"GET /stats HTTP/1.1\r\nUser-Agent: a b\t\xff\r\n\r\n");
        assert!(!r.keep_alive);
        // Too long without an end → 400, whatever the bytes.
        let mut big = b"GET /".to_vec();
        big.resize(MAX_REQUEST_HEAD, b'a');
        assert!(!bad(&big));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST_HEAD + 10, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        assert!(!bad(&big));
    }
}
