//! Path normalisation before route matching, so that no encoding trick reaches a protected path.
//!
//! Unreserved characters are percent-decoded, `//` collapses, `.` and `..` segments are resolved
//! (never above `/`). Encoded `/` or `\`, raw `\`, and control characters are refused: an upstream
//! might decode them into separators the matcher never saw. The upstream receives the
//! normalised path, so what was authorised is exactly what is served.

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

/// Returns the normalised form of a request path (without its query).
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_clean(bytes)? {
        return Ok(Cow::Borrowed(raw));
    }
    // Pass 1: percent-decoding of unreserved characters, refusals.
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) else {
                return Err(PathError::BadEscape);
            };
            let v = h * 16 + l;
            match v {
                b'/' | b'\\' => return Err(PathError::AmbiguousSeparator),
                0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
                _ if is_unreserved(v) => decoded.push(v as char),
                _ => {
                    decoded.push('%');
                    decoded.push(char::from(b"0123456789ABCDEF"[(v >> 4) as usize]));
                    decoded.push(char::from(b"0123456789ABCDEF"[(v & 15) as usize]));
                }
            }
            i += 3;
        } else {
            // `is_clean` already refused raw `\` and control characters; copy whole UTF-8 runs.
            let next = bytes[i..].iter().position(|b| *b == b'%').map_or(bytes.len(), |p| i + p);
            decoded.push_str(&raw[i..next]);
            i = next;
        }
    }
    // Pass 2: dot segments and empty segments.
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    Ok(Cow::Owned(path))
}

/// True when the path needs no change; refuses raw backslashes and control characters.
fn is_clean(bytes: &[u8]) -> Result<bool, PathError> {
    let mut clean = true;
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' => return Err(PathError::AmbiguousSeparator),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            b'%' => clean = false,
            b'/' if prev == b'/' => clean = false,
            b'.' if prev == b'/' => {
                let rest = &bytes[i..];
                if rest == b"." || rest == b".." || rest.starts_with(b"./") || rest.starts_with(b"../") {
                    clean = false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let ok = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/a%7eb", "/a~b"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/a%25%32%46b", "/a%252Fb"),
            ("/caf\u{e9}", "/caf\u{e9}"),
            ("/a/.hidden", "/a/.hidden"),
            ("/a/..b", "/a/..b"),
            ("/.", "/"),
        ];
        for (input, want) in ok {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
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
            ("/a\nb", PathError::ControlCharacter),
            ("/a%zz", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
        ];
        for (input, want) in bad {
            assert_eq!(normalize(input), Err(want), "{input}");
        }
    }

    #[test]
    fn clean_paths_are_borrowed() {
        assert!(matches!(normalize("/api/invoices/42"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/a/.well-known/x"), Ok(Cow::Borrowed(_))));
    }
}
