//! Configuration: the TOML file ([`file`]) is checked into a validated [`model::Config`].
//!
//! Loading reports every problem at once, each with file, line, key and the rule broken.
//! `${ENV_VAR}` (or `${ENV_VAR:-default}`) in any string is replaced from the environment;
//! `$${` writes a literal `${`.

pub mod file;
pub mod model;
pub mod span;
pub mod validate;

pub use model::Config;

use span::{KeyPath, LineIndex};
use std::fmt;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;
use validate::{Problem, Problems, Sections};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{file}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// toml's message, with line and column.
        message: String,
    },
    /// The file parsed but broke rules.
    #[error("{}", Located::list(.0))]
    Invalid(Vec<Located>),
}

/// A problem with the file and line it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The config file.
    pub file: String,
    /// 1-based line, when the key exists in the file.
    pub line: Option<usize>,
    /// The problem.
    pub problem: Problem,
}

impl Located {
    fn list(all: &[Located]) -> String {
        let mut out = format!(
            "{} problem{} in the config:",
            all.len(),
            if all.len() == 1 { "" } else { "s" }
        );
        for p in all {
            out.push_str("\n  ");
            out.push_str(&p.to_string());
        }
        out
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "{}:{}: {}: {}",
                self.file, line, self.problem.path, self.problem.message
            ),
            None => write!(
                f,
                "{}: {}: {}",
                self.file, self.problem.path, self.problem.message
            ),
        }
    }
}

/// What the runtime finds wrong with a valid config when it builds on it (routes that conflict
/// in its route table, say): the key to blame and the rule broken, reported like the
/// validator's own problems.
pub type Findings = Vec<(KeyPath, String)>;

/// Loads and validates a config file, reading `${VARS}` from the process environment.
/// Checks only what the config itself says; [`load_then`] also reports what the runtime finds.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_then(path, |_| Ok(())).map(|(config, ())| config)
}

/// Loads a config file like [`load`], then `build` makes of the valid config what the runtime
/// needs (the route table), or names the keys it cannot use: those are reported with file and
/// line like every other problem. Config knows nothing of the runtime: the caller supplies `build`.
pub fn load_then<T>(
    path: &Path,
    build: impl FnOnce(&Config) -> Result<T, Findings>,
) -> Result<(Config, T), ConfigError> {
    load_file_then(path, build).map(|(config, built, _)| (config, built))
}

/// Like [`load_then`], with the digest of the bytes read ([`file_hash`]), so that the hash
/// shown for the running config is the one of the file it was built from.
pub fn load_file_then<T>(
    path: &Path,
    build: impl FnOnce(&Config) -> Result<T, Findings>,
) -> Result<(Config, T, String), ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file_then(path, bytes, build)
}

/// Like [`load_file_then`] on `bytes` already read from `path` (the reloader applies the very
/// bytes it saw settle, not a later read of a file being written again).
pub fn parse_file_then<T>(
    path: &Path,
    bytes: Vec<u8>,
    build: impl FnOnce(&Config) -> Result<T, Findings>,
) -> Result<(Config, T, String), ConfigError> {
    let hash = file_hash(&bytes);
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    let (config, built) = parse_then(
        &path.display().to_string(),
        &text,
        &|name| std::env::var(name).ok(),
        build,
    )?;
    Ok((config, built, hash))
}

/// The SHA-256 of a config file's bytes, in lowercase hex: what `sha256sum` prints for it.
pub fn file_hash(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Parses and validates config text; `file` names it in messages, `env` resolves `${VARS}`.
pub fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    parse_then(file, text, env, |_| Ok(())).map(|(config, ())| config)
}

/// [`parse`], then `build` on the valid config (see [`load_then`]).
pub fn parse_then<T>(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    build: impl FnOnce(&Config) -> Result<T, Findings>,
) -> Result<(Config, T), ConfigError> {
    let mut root = DeTable::parse(text).map_err(|mut e| {
        e.set_input(Some(text));
        ConfigError::Syntax {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        }
    })?;
    let mut problems = Problems::default();
    for (key, value) in root.get_mut().iter_mut() {
        expand_env(
            value.get_mut(),
            &KeyPath::root(key.get_ref()),
            env,
            &mut problems,
        );
    }
    let sections = sections(root.into_inner(), &mut problems);
    let config = validate::validate(sections, &mut problems);
    let built = match config {
        Some(mut c) if problems.0.is_empty() => {
            if !problems.1.is_empty() {
                let index = LineIndex::new(text);
                c.warnings = std::mem::take(&mut problems.1)
                    .into_iter()
                    .map(|w| model::ConfigWarning {
                        line: index.line_of(&w.path),
                        at: w.path.to_string(),
                        message: w.message,
                    })
                    .collect();
            }
            match build(&c) {
                Ok(built) => Some((c, built)),
                Err(findings) => {
                    for (at, message) in findings {
                        problems.add(&at, message);
                    }
                    None
                }
            }
        }
        _ => None,
    };
    match built {
        Some(built) => Ok(built),
        _ => {
            let index = LineIndex::new(text);
            let mut located: Vec<Located> = problems
                .0
                .into_iter()
                .map(|problem| Located {
                    file: file.to_string(),
                    line: index.line_of(&problem.path),
                    problem,
                })
                .collect();
            located.sort_by_key(|l| l.line.unwrap_or(usize::MAX));
            Err(ConfigError::Invalid(located))
        }
    }
}

/// Deserializes each section on its own so that one bad table does not hide the others' problems.
fn sections(root: DeTable<'_>, problems: &mut Problems) -> Sections {
    let mut s = Sections::default();
    let mut routes_seen = false;
    for (key, value) in root {
        let name = key.get_ref().as_ref();
        let at = KeyPath::root(name);
        match name {
            "proxy" => s.proxy = deserialize(value, &at, problems).unwrap_or_default(),
            "admin" => s.admin = deserialize(value, &at, problems).unwrap_or_default(),
            "idp" => s.idp = deserialize(value, &at, problems).unwrap_or_default(),
            "cache" => s.cache = deserialize(value, &at, problems).unwrap_or_default(),
            "headers" => s.headers = deserialize(value, &at, problems).unwrap_or_default(),
            "abac" => s.abac = deserialize(value, &at, problems).unwrap_or_default(),
            "api_keys" => s.api_keys = deserialize(value, &at, problems).unwrap_or_default(),
            "identity_jwt" => s.identity_jwt = deserialize(value, &at, problems).unwrap_or_default(),
            "session" => s.session = deserialize(value, &at, problems).unwrap_or_default(),
            "default_client" => s.default_client = deserialize(value, &at, problems),
            "log" => s.log = deserialize(value, &at, problems).unwrap_or_default(),
            "clients" => s.clients = many(value, &at, problems),
            "providers" => s.providers = many(value, &at, problems),
            "upstreams" => s.upstreams = many(value, &at, problems),
            "routes" => {
                routes_seen = true;
                s.routes = many(value, &at, problems);
            }
            _ => problems.add(
                &at,
                "is not a known section: expected proxy, admin, idp, cache, headers, session, abac, api_keys, identity_jwt, log, default_client, [[providers]], [[clients]], [[upstreams]], [[routes]]",
            ),
        }
    }
    if !routes_seen {
        problems.add(
            &KeyPath::root("routes"),
            "no [[routes]]: every request would get 404; add at least one route",
        );
    }
    s
}

fn many<T: serde::de::DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    at: &KeyPath,
    problems: &mut Problems,
) -> Vec<(usize, T)> {
    match value.into_inner() {
        DeValue::Array(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| deserialize(v, &at.index(i), problems).map(|t| (i, t)))
            .collect(),
        _ => {
            problems.add(at, format!("must be an array of tables: write [[{at}]]"));
            Vec::new()
        }
    }
}

/// Deserializes one table; serde's complaint becomes a problem at the key it is about.
fn deserialize<T: serde::de::DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    at: &KeyPath,
    problems: &mut Problems,
) -> Option<T> {
    let located = value.clone();
    match T::deserialize(toml::de::ValueDeserializer::from(value)) {
        Ok(t) => Some(t),
        Err(e) => {
            let message = e.message().trim_end().to_string();
            let path = match e.span() {
                Some(span) => key_at(located.get_ref(), span.start, at.clone()),
                None => at.clone(),
            };
            let message = if message.starts_with("unknown field") {
                format!("{message}: unknown keys are errors so that typos are not silently ignored")
            } else {
                message
            };
            problems.add(&path, message);
            None
        }
    }
}

/// The path of the deepest key whose key or value covers `offset`.
fn key_at(value: &DeValue<'_>, offset: usize, at: KeyPath) -> KeyPath {
    match value {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                let (ks, vs) = (k.span(), v.span());
                if ks.contains(&offset)
                    || vs.contains(&offset)
                    || (vs.start..=vs.end).contains(&offset) && vs.is_empty()
                {
                    return key_at(v.get_ref(), offset, at.key(k.get_ref()));
                }
            }
            at
        }
        DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                if v.span().contains(&offset) {
                    return key_at(v.get_ref(), offset, at.index(i));
                }
            }
            at
        }
        _ => at,
    }
}

/// Replaces `${VAR}` in every string below `value`.
fn expand_env(
    value: &mut DeValue<'_>,
    at: &KeyPath,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) {
    match value {
        DeValue::String(s) => match expand(s, env) {
            Ok(expanded) => *s = expanded.into(),
            Err(message) => problems.add(at, message),
        },
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(item.get_mut(), &at.index(i), env, problems);
            }
        }
        DeValue::Table(t) => {
            for (k, v) in t.iter_mut() {
                expand_env(v.get_mut(), &at.key(k.get_ref()), env, problems);
            }
        }
        _ => {}
    }
}

/// Expands `${VAR}` and `${VAR:-default}` in one string; `$${` is a literal `${`.
pub fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| "has an unclosed ${: write ${VAR_NAME}".to_string())?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "${{{inner}}} is not a variable reference: names are letters, digits and _"
                ));
            }
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (referenced as ${{{name}}})"
                    ))
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests;
