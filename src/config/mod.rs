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
        let mut out = format!("{} problem{} in the config:", all.len(), if all.len() == 1 { "" } else { "s" });
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
            Some(line) => write!(f, "{}:{}: {}: {}", self.file, line, self.problem.path, self.problem.message),
            None => write!(f, "{}: {}: {}", self.file, self.problem.path, self.problem.message),
        }
    }
}

/// Loads and validates a config file, reading `${VARS}` from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse(&path.display().to_string(), &text, &|name| std::env::var(name).ok())
}

/// Parses and validates config text; `file` names it in messages, `env` resolves `${VARS}`.
pub fn parse(file: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut root: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax { file: file.to_string(), message: e.to_string().trim_end().to_string() })?;
    let mut problems = Problems::default();
    for (key, value) in root.iter_mut() {
        expand_env(value, &KeyPath::root(key), env, &mut problems);
    }
    let sections = sections(root, &mut problems);
    let config = validate::validate(sections, &mut problems);
    let config = config.and_then(|c| {
        if let Err(conflicts) = crate::authz::routes::RouteTable::build(&c.routes) {
            for (index, message) in conflicts {
                problems.add(&KeyPath::root("routes").index(index).key("path"), message);
            }
            None
        } else {
            Some(c)
        }
    });
    match config {
        Some(c) if problems.0.is_empty() => Ok(c),
        _ => {
            let index = LineIndex::new(text);
            Err(ConfigError::Invalid(
                problems
                    .0
                    .into_iter()
                    .map(|problem| Located { file: file.to_string(), line: index.line_of(&problem.path), problem })
                    .collect(),
            ))
        }
    }
}

/// Deserializes each section on its own so that one bad table does not hide the others' problems.
fn sections(mut root: toml::Table, problems: &mut Problems) -> Sections {
    fn one<T: serde::de::DeserializeOwned + Default>(root: &mut toml::Table, key: &str, problems: &mut Problems) -> T {
        match root.remove(key) {
            None => T::default(),
            Some(v) => deserialize(v, &KeyPath::root(key), problems).unwrap_or_default(),
        }
    }
    fn many<T: serde::de::DeserializeOwned>(root: &mut toml::Table, key: &str, problems: &mut Problems) -> Vec<(usize, T)> {
        let at = KeyPath::root(key);
        match root.remove(key) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| deserialize(v, &at.index(i), problems).map(|t| (i, t)))
                .collect(),
            Some(_) => {
                problems.add(&at, format!("must be an array of tables: write [[{key}]]"));
                Vec::new()
            }
        }
    }
    let s = Sections {
        proxy: one(&mut root, "proxy", problems),
        admin: one(&mut root, "admin", problems),
        idp: one(&mut root, "idp", problems),
        cache: one(&mut root, "cache", problems),
        headers: one(&mut root, "headers", problems),
        clients: many(&mut root, "clients", problems),
        upstreams: many(&mut root, "upstreams", problems),
        routes: many(&mut root, "routes", problems),
    };
    for key in root.keys() {
        problems.add(
            &KeyPath::root(key),
            "is not a known section: expected proxy, admin, idp, cache, headers, [[clients]], [[upstreams]], [[routes]]",
        );
    }
    s
}

/// Deserializes one table, turning serde's message into a problem at the offending key.
fn deserialize<T: serde::de::DeserializeOwned>(value: toml::Value, at: &KeyPath, problems: &mut Problems) -> Option<T> {
    match value.try_into::<T>() {
        Ok(t) => Some(t),
        Err(e) => {
            let message = e.message().trim_end().to_string();
            // serde names the offending field in backticks: point at it when it is in the file.
            let path = message
                .split('`')
                .nth(1)
                .filter(|_| message.starts_with("unknown field") || message.starts_with("invalid type") || message.starts_with("missing field"))
                .map(|field| at.key(field))
                .unwrap_or_else(|| at.clone());
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

/// Replaces `${VAR}` in every string below `value`.
fn expand_env(value: &mut toml::Value, at: &KeyPath, env: &dyn Fn(&str) -> Option<String>, problems: &mut Problems) {
    match value {
        toml::Value::String(s) => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.add(at, message),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(item, &at.index(i), env, problems);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                expand_env(v, &at.key(k), env, problems);
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
            let end = tail.find('}').ok_or_else(|| "has an unclosed ${: write ${VAR_NAME}".to_string())?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("${{{inner}}} is not a variable reference: names are letters, digits and _"));
            }
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set (referenced as ${{{name}}})")),
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
mod tests;
