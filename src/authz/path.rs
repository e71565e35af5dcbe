//! Path normalisation before route matching, so that no encoding trick reaches a protected path.
//!
//! Unreserved characters are percent-decoded, `//` collapses, `.` and `..` segments are resolved
//! (never above `/`). Refused, because some upstream framework would read them differently from
//! the route matcher: encoded `/` or `\`, raw `\`, control characters (raw or encoded), `%25`
//! (a double-decoding upstream sees another escape), and escapes whose bytes are not valid
//! UTF-8 (overlong `%c0%ae` is `.` to a lenient decoder). The upstream receives the normalised,
//! still-encoded path; routes are matched on its fully decoded form, so `/caf%C3%A9` is governed
//! by a route for `/café`. `%3B` is refused too (a separator to some frameworks, data to others).
//! `;` path parameters are reported ([`NormalPath::has_params`]) and
//! left to the route to accept or refuse. Non-ASCII characters that Unicode compatibility
//! normalisation (NFKC) turns into ASCII — fullwidth `．` `／` `ａ`, ligatures — are refused: an
//! upstream that normalises would read `/ａdmin` or `/．．/` as `/admin` or `/../`.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path must start with /")]
    NotAbsolute,
    /// `%2F`, `%5C` or a raw `\`.
    #[error("the path contains an encoded or backslash separator")]
    AmbiguousSeparator,
    /// A control character, raw or encoded.
    #[error("the path contains a control character")]
    ControlCharacter,
    /// `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    /// `%25`: a double-decoding upstream would see another escape.
    #[error("the path contains %25 (an encoded %): send the character itself, encoded once")]
    EncodedPercent,
    /// `%3B`: an encoded `;` is a parameter separator to some frameworks and data to others.
    #[error("the path contains %3B (an encoded ;), which frameworks read differently: send ; or leave it out")]
    EncodedSemicolon,
    /// Percent-escapes that do not decode to UTF-8 (overlong forms, stray continuation bytes).
    #[error("the path's percent-escapes do not decode to valid UTF-8")]
    InvalidUtf8,
    /// A character that NFKC normalisation turns into ASCII (fullwidth `．`, `／`, letters).
    #[error("the path contains a character that Unicode normalisation turns into ASCII (such as a fullwidth . or /): send the ASCII character")]
    AsciiLookalike,
}

/// A request path after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath<'a> {
    /// What the upstream receives: dot segments resolved, unreserved characters decoded,
    /// every other escape kept (hex uppercase).
    pub forward: Cow<'a, str>,
    /// `forward` fully percent-decoded (valid UTF-8): what routes are matched on.
    pub decoded: Cow<'a, str>,
    /// Some segment has a `;`: a path parameter to Tomcat, Jetty or Spring.
    pub has_params: bool,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The uppercase hex digit of a nibble (`n` < 16).
fn hex_upper(n: u8) -> char {
    char::from(if n < 10 {
        b'0' + n
    } else {
        b'A' + (n & 15) - 10
    })
}

/// Returns the normalised form of a request path (without its query).
pub fn normalize(raw: &str) -> Result<NormalPath<'_>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let (clean, semicolon) = scan(bytes)?;
    if clean {
        return Ok(NormalPath {
            forward: Cow::Borrowed(raw),
            decoded: Cow::Borrowed(raw),
            has_params: semicolon,
        });
    }
    // Pass 1: percent-decoding of unreserved characters, refusals.
    let mut partly = String::with_capacity(raw.len());
    let has_params = semicolon;
    let mut rest = raw;
    while let Some(pos) = rest.find('%') {
        partly.push_str(rest.get(..pos).unwrap_or_default());
        let esc = rest.as_bytes().get(pos + 1..pos + 3).unwrap_or_default();
        let (Some(h), Some(l)) = (
            esc.first().and_then(|b| hex(*b)),
            esc.get(1).and_then(|b| hex(*b)),
        ) else {
            return Err(PathError::BadEscape);
        };
        let v = h * 16 + l;
        match v {
            b'/' | b'\\' => return Err(PathError::AmbiguousSeparator),
            b'%' => return Err(PathError::EncodedPercent),
            b';' => return Err(PathError::EncodedSemicolon),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ if is_unreserved(v) => partly.push(char::from(v)),
            _ => {
                partly.push('%');
                partly.push(hex_upper(v >> 4));
                partly.push(hex_upper(v & 15));
            }
        }
        rest = rest.get(pos + 3..).unwrap_or_default();
    }
    partly.push_str(rest);
    let forward = remove_dot_segments(&partly);
    let decoded: Cow<'_, str> = match decode(&forward)? {
        Cow::Borrowed(_) => Cow::Owned(forward.clone()),
        Cow::Owned(d) => Cow::Owned(d),
    };
    if !decoded.is_ascii() && has_ascii_lookalike(&decoded) {
        return Err(PathError::AsciiLookalike);
    }
    Ok(NormalPath {
        forward: Cow::Owned(forward),
        decoded,
        has_params,
    })
}

/// Whether some non-ASCII character of `decoded` becomes ASCII under NFKC (`／` → `/`,
/// `ａ` → `a`, `ﬁ` → `fi`): the path an NFKC-normalising upstream serves is another one.
fn has_ascii_lookalike(decoded: &str) -> bool {
    use unicode_normalization::UnicodeNormalization;
    decoded
        .chars()
        .filter(|c| !c.is_ascii())
        .any(|c| std::iter::once(c).nfkc().any(|n| n.is_ascii()))
}

/// `//` collapsed, `.` and `..` segments resolved (never above `/`), trailing slash kept.
fn remove_dot_segments(path: &str) -> String {
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(path.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if result.is_empty() || trailing {
        result.push('/');
    }
    result
}

/// Decodes every escape of a normalised path; the bytes must be UTF-8.
fn decode(forward: &str) -> Result<Cow<'_, str>, PathError> {
    if !forward.contains('%') {
        return Ok(Cow::Borrowed(forward));
    }
    let bytes = forward.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let h = bytes
                .get(i + 1)
                .and_then(|b| hex(*b))
                .ok_or(PathError::BadEscape)?;
            let l = bytes
                .get(i + 2)
                .and_then(|b| hex(*b))
                .ok_or(PathError::BadEscape)?;
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathError::InvalidUtf8)
}

/// Why a decoded path is one Windows reads as another (IIS, ASP.NET, NTFS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowsSpelling {
    /// A segment ending in `.` or a space, which Windows drops: `/private./x` is `/private/x`.
    #[error("a path segment ends in a dot or a space, which Windows servers drop (/private./x is served as /private/x): remove it")]
    TrailingDotOrSpace,
    /// An 8.3 short name (`PRIVAT~1`, `~1`), which NTFS serves as the long name it abbreviates.
    #[error("a path segment looks like a Windows 8.3 short name (~ then digits, as in PRIVAT~1), which Windows servers serve as the long name: use the full name")]
    ShortName,
    /// An NTFS stream (`::$DATA`, `:$I30:$INDEX_ALLOCATION`), served as the file or folder itself.
    #[error("a path segment names an NTFS stream (:$), which Windows servers serve as the file or folder itself: remove it")]
    Stream,
}

/// `Err` when a segment of the decoded path `decoded` is one Windows serves as another path:
/// it ends in `.` or space (`.` and `..` segments are resolved before), it is an 8.3 short
/// name (`~` then digits, at the segment's end or before a `.`), or it has `:$` (an NTFS
/// stream). IIS and NTFS would serve `/private./x`, `/private%20/x`, `/PRIVAT~1/x` and
/// `/private::$INDEX_ALLOCATION/x` as `/private/x`, which another route may govern.
pub fn windows_spelling(decoded: &str) -> Result<(), WindowsSpelling> {
    // One pass (this runs on every request to such an upstream): `prev` is the byte before,
    // `tilde_digits` whether the bytes since the last `~` of the segment are all digits (and
    // at least one).
    let bytes = decoded.as_bytes();
    if !has_windows_byte(bytes) {
        return Ok(());
    }
    let (mut prev, mut tilde, mut digits) = (b'/', false, false);
    for &b in bytes.iter().chain(std::iter::once(&b'/')) {
        match b {
            b'/' | b'.' if tilde && digits => return Err(WindowsSpelling::ShortName),
            b'$' if prev == b':' => return Err(WindowsSpelling::Stream),
            _ => {}
        }
        if b == b'/' && matches!(prev, b'.' | b' ') {
            return Err(WindowsSpelling::TrailingDotOrSpace);
        }
        match b {
            b'~' => (tilde, digits) = (true, false),
            b'0'..=b'9' if tilde => digits = true,
            _ => tilde = false,
        }
        prev = b;
    }
    Ok(())
}

/// Whether `bytes` has a `.`, a space, a `~` or a `$`, which every spelling of
/// [`windows_spelling`] needs: most paths have none, and a branch-free scan (vectorised) says so
/// at a fraction of the full check's cost.
pub fn has_windows_byte(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |seen, &b| {
        seen | matches!(b, b'.' | b' ' | b'~' | b'$')
    })
}

/// The path as Tomcat, Jetty and Spring read it: every `;...` up to the next `/` dropped from
/// each segment, then normalised again. Input is a normalised `forward` path.
pub fn strip_params(forward: &str) -> Result<NormalPath<'static>, PathError> {
    let mut stripped = String::with_capacity(forward.len());
    for (i, seg) in forward.split('/').enumerate() {
        if i > 0 {
            stripped.push('/');
        }
        let end = seg.find(';').unwrap_or(seg.len());
        stripped.push_str(seg.get(..end).unwrap_or(seg));
    }
    let n = normalize(&stripped)?;
    Ok(NormalPath {
        forward: Cow::Owned(n.forward.into_owned()),
        decoded: Cow::Owned(n.decoded.into_owned()),
        has_params: false,
    })
}

/// Whether the path needs no change, and whether it has a raw `;`; refuses raw backslashes and
/// control characters.
fn scan(bytes: &[u8]) -> Result<(bool, bool), PathError> {
    let mut clean = true;
    let mut semicolon = false;
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => return Err(PathError::AmbiguousSeparator),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            b'%' => clean = false,
            b';' => semicolon = true,
            0x80.. => clean = false, // raw UTF-8: checked for ASCII lookalikes
            b'/' if prev == b'/' => clean = false,
            b'.' if prev == b'/' => {
                let rest = bytes.get(i..).unwrap_or_default();
                if rest == b"."
                    || rest == b".."
                    || rest.starts_with(b"./")
                    || rest.starts_with(b"../")
                {
                    clean = false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    Ok((clean, semicolon))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(input: &str) -> Result<String, PathError> {
        normalize(input).map(|n| n.forward.into_owned())
    }

    #[test]
    fn normalisation_table() {
        // (input, forwarded, decoded for matching)
        let ok = [
            ("/", "/", "/"),
            ("/a/b", "/a/b", "/a/b"),
            ("/a/b/", "/a/b/", "/a/b/"),
            ("//a///b", "/a/b", "/a/b"),
            ("/a/./b", "/a/b", "/a/b"),
            ("/a/../b", "/b", "/b"),
            ("/a/b/..", "/a/", "/a/"),
            ("/../../etc/passwd", "/etc/passwd", "/etc/passwd"),
            ("/public/../admin", "/admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin", "/admin"),
            ("/public/.%2e/admin", "/admin", "/admin"),
            ("/%61dmin", "/admin", "/admin"),
            ("/a%7eb", "/a~b", "/a~b"),
            ("/a%20b", "/a%20b", "/a b"),
            ("/a%3fb", "/a%3Fb", "/a?b"),
            ("/caf\u{e9}", "/caf\u{e9}", "/caf\u{e9}"),
            ("/caf%c3%a9/x", "/caf%C3%A9/x", "/caf\u{e9}/x"),
            ("/caf%C3%A9/../x", "/x", "/x"),
            ("/%e2%82%ac", "/%E2%82%AC", "/\u{20ac}"),
            (
                "/%E6%97%A5%E6%9C%AC",
                "/%E6%97%A5%E6%9C%AC",
                "/\u{65e5}\u{672c}",
            ),
            ("/e%CC%81", "/e%CC%81", "/e\u{301}"),
            ("/a/.hidden", "/a/.hidden", "/a/.hidden"),
            ("/a/..b", "/a/..b", "/a/..b"),
            ("/.", "/", "/"),
            (
                "/public/..;/admin",
                "/public/..;/admin",
                "/public/..;/admin",
            ),
            ("/a;x=1/b", "/a;x=1/b", "/a;x=1/b"),
        ];
        for (input, fwd, dec) in ok {
            let n = normalize(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((&*n.forward, &*n.decoded), (fwd, dec), "{input}");
            assert_eq!(n.has_params, dec.contains(';'), "{input}");
        }
        let bad = [
            ("", PathError::NotAbsolute),
            ("a/b", PathError::NotAbsolute),
            ("/a%2fb", PathError::AmbiguousSeparator),
            ("/a%2Fb", PathError::AmbiguousSeparator),
            ("/public%2f..%2fadmin", PathError::AmbiguousSeparator),
            ("/a%5cb", PathError::AmbiguousSeparator),
            ("/a\\..\\admin", PathError::AmbiguousSeparator),
            ("/a%00b", PathError::ControlCharacter),
            ("/a%7f", PathError::ControlCharacter),
            ("/a\nb", PathError::ControlCharacter),
            ("/a%zz", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/a%", PathError::BadEscape),
            ("/a%25", PathError::EncodedPercent),
            ("/a%3bx/b", PathError::EncodedSemicolon),
            ("/public/..%3B/admin", PathError::EncodedSemicolon),
            ("/public/%252e%252e/admin/x", PathError::EncodedPercent),
            ("/a%25%32%46b", PathError::EncodedPercent),
            ("/public/%c0%ae%c0%ae/admin/x", PathError::InvalidUtf8),
            ("/%e0%80%ae", PathError::InvalidUtf8),
            ("/%80", PathError::InvalidUtf8),
            ("/%c3", PathError::InvalidUtf8),
            ("/%c3/x", PathError::InvalidUtf8),
            ("/%ff", PathError::InvalidUtf8),
            ("/%ed%a0%80", PathError::InvalidUtf8),
            (
                "/public/%EF%BC%8E%EF%BC%8E/admin",
                PathError::AsciiLookalike,
            ),
            ("/public/\u{ff0e}\u{ff0e}/admin", PathError::AsciiLookalike),
            ("/public%EF%BC%8Fadmin", PathError::AsciiLookalike),
            ("/%EF%BD%81dmin", PathError::AsciiLookalike),
            ("/\u{ff41}dmin", PathError::AsciiLookalike),
            ("/pro%EF%AC%81le", PathError::AsciiLookalike),
            ("/a%E2%80%A4%E2%80%A4/b", PathError::AsciiLookalike),
        ];
        for (input, want) in bad {
            assert_eq!(forward(input), Err(want), "{input}");
        }
    }

    #[test]
    fn params_are_stripped_as_tomcat_does() {
        let cases = [
            ("/a;x=1/b", "/a/b"),
            ("/public/..;/admin/x", "/admin/x"),
            ("/public/..;x=1/admin", "/admin"),
            ("/invoices/1;jsessionid=abc", "/invoices/1"),
            ("/invoices/1/..;/2", "/invoices/2"),
            ("/;x/admin", "/admin"),
            ("/a/b", "/a/b"),
        ];
        for (input, want) in cases {
            let n = normalize(input).unwrap();
            let s = strip_params(&n.forward).unwrap();
            assert_eq!(&*s.forward, want, "{input}");
            assert!(!s.has_params);
        }
    }

    #[test]
    fn windows_spellings() {
        use WindowsSpelling::*;
        for (decoded, want) in [
            ("/private./x", Err(TrailingDotOrSpace)),
            ("/private /x", Err(TrailingDotOrSpace)),
            ("/x/y.", Err(TrailingDotOrSpace)),
            ("/x/y /", Err(TrailingDotOrSpace)),
            ("/PRIVAT~1/x", Err(ShortName)),
            ("/PRIVAT~12", Err(ShortName)),
            ("/PRIVAT~1.HTM", Err(ShortName)),
            ("/~1", Err(ShortName)),
            ("/x::$DATA", Err(Stream)),
            ("/x:$I30:$INDEX_ALLOCATION/y", Err(Stream)),
            ("/", Ok(())),
            ("/a/b/", Ok(())),
            ("/~user/x", Ok(())),
            ("/a~1b", Ok(())),
            ("/a~/1", Ok(())),
            ("/a/.hidden", Ok(())),
            ("/a/..b", Ok(())),
            ("/a b/c", Ok(())),
            ("/v1/x:batchGet", Ok(())),
            ("/price/$5", Ok(())),
        ] {
            assert_eq!(windows_spelling(decoded), want, "{decoded}");
        }
    }

    #[test]
    fn clean_paths_are_borrowed() {
        for p in ["/api/invoices/42", "/a/.well-known/x", "/a;b"] {
            let n = normalize(p).unwrap();
            assert!(
                matches!(
                    (&n.forward, &n.decoded),
                    (Cow::Borrowed(_), Cow::Borrowed(_))
                ),
                "{p}"
            );
        }
    }
}
