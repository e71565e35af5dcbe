//! Route path patterns (`/invoices/{id}`, `/static/*`): a value the config validates and the
//! route table matches with, so it lives below both.

use std::fmt;

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternSegment {
    /// Matches exactly this text.
    Literal(String),
    /// Matches one segment and captures it.
    Param(String),
    /// Matches whatever follows, including nothing.
    Tail,
}

/// A validated path pattern such as `/invoices/{id}` or `/static/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<PatternSegment>,
    trailing_slash: bool,
}

/// Why a pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pattern:?} {rule}")]
pub struct PatternError {
    pattern: String,
    rule: String,
}

impl PathPattern {
    /// Parses a pattern from config.
    pub fn parse(text: &str) -> Result<PathPattern, PatternError> {
        let err = |rule: &str| PatternError {
            pattern: text.to_string(),
            rule: rule.to_string(),
        };
        if !text.starts_with('/') {
            return Err(err("must start with /"));
        }
        let trailing_slash = text.len() > 1 && text.ends_with('/');
        let body = text.trim_start_matches('/');
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segments = Vec::new();
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        for (i, seg) in parts.iter().enumerate() {
            if *seg == "*" {
                if i + 1 != parts.len() || trailing_slash {
                    return Err(err("has * before the end: * may only be the last segment"));
                }
                segments.push(PatternSegment::Tail);
            } else if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(err("has a capture whose name is not letters, digits or _"));
                }
                if segments
                    .iter()
                    .any(|s| matches!(s, PatternSegment::Param(n) if n == name))
                {
                    return Err(err("captures the same name twice"));
                }
                segments.push(PatternSegment::Param(name.to_string()));
            } else {
                if seg.is_empty() || *seg == "." || *seg == ".." {
                    return Err(err(
                        "has an empty, . or .. segment: write the normalised path",
                    ));
                }
                if seg.contains(['{', '}', '*', '%', '\\', '?', '#']) {
                    return Err(err("has {, }, *, %, \\, ? or # inside a segment: captures and * take a whole segment"));
                }
                segments.push(PatternSegment::Literal(seg.to_string()));
            }
        }
        Ok(PathPattern {
            text: text.to_string(),
            segments,
            trailing_slash,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when a literal segment has an ASCII uppercase letter.
    pub(crate) fn has_uppercase(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, PatternSegment::Literal(l) if l.bytes().any(|b| b.is_ascii_uppercase())))
    }

    /// A path this pattern matches, with `~` for every capture and tail (for `authgate check`).
    pub(crate) fn sample(&self) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            out.push('/');
            match seg {
                PatternSegment::Literal(l) => out.push_str(l),
                PatternSegment::Param(_) | PatternSegment::Tail => out.push('~'),
            }
        }
        if out.is_empty() || self.trailing_slash {
            out.push('/');
        }
        out
    }

    /// The last segment, when it is a literal (`jwks.json` of `/.well-known/jwks.json`).
    pub fn last_literal(&self) -> Option<&str> {
        match self.segments.last() {
            Some(PatternSegment::Literal(l)) => Some(l),
            _ => None,
        }
    }

    /// Names of the captures, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            PatternSegment::Param(n) => Some(n.as_str()),
            _ => None,
        })
    }

    /// The matchit patterns this pattern is inserted as: the main one first, then variants
    /// (with and without trailing slash, empty tail). Captures are renamed by position so
    /// that `/a/{x}` and `/a/{y}` are the same path.
    pub(crate) fn router_keys(&self, fold: bool) -> Vec<String> {
        let mut base = String::new();
        let mut p = 0;
        let mut tail = false;
        for seg in &self.segments {
            match seg {
                PatternSegment::Literal(l) => {
                    base.push('/');
                    if fold {
                        base.push_str(&l.to_ascii_lowercase());
                    } else {
                        base.push_str(l);
                    }
                }
                PatternSegment::Param(_) => {
                    base.push_str(&format!("/{{p{p}}}"));
                    p += 1;
                }
                PatternSegment::Tail => tail = true,
            }
        }
        if tail {
            let with_slash = format!("{base}/");
            vec![
                format!("{base}/{{*tail}}"),
                with_slash,
                if base.is_empty() { "/".into() } else { base },
            ]
        } else if base.is_empty() {
            vec!["/".into()]
        } else if self.trailing_slash {
            vec![format!("{base}/"), base]
        } else {
            vec![base.clone(), format!("{base}/")]
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
