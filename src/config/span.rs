//! Key paths (`routes[2].upstream`) and where they stand in the file, for error messages.

use std::fmt;
use toml::de::{DeTable, DeValue};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path to a key in the config, e.g. `routes[2].upstream`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The path with one more key.
    pub fn key(&self, k: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    /// The path with one more index.
    pub fn index(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// Parses `a.b[2].c` (as written by `Display`).
    pub fn root(k: &str) -> KeyPath {
        KeyPath(vec![Seg::Key(k.to_string())])
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Finds line numbers of key paths in a TOML text.
pub struct LineIndex<'a> {
    text: &'a str,
    table: Option<toml::Spanned<DeTable<'a>>>,
}

impl<'a> LineIndex<'a> {
    /// Indexes `text`; a text that does not parse indexes nothing.
    pub fn new(text: &'a str) -> Self {
        LineIndex {
            text,
            table: DeTable::parse(text).ok(),
        }
    }

    /// The 1-based line of the deepest part of `path` found in the file.
    pub fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let table = self.table.as_ref()?;
        let mut best: Option<std::ops::Range<usize>> = None;
        let mut current: Option<&DeValue<'a>> = None;
        for seg in &path.0 {
            let next = match (seg, current) {
                (Seg::Key(k), None) => table
                    .get_ref()
                    .iter()
                    .find(|(key, _)| key.get_ref() == k)
                    .map(|(key, v)| (key.span(), v)),
                (Seg::Key(k), Some(DeValue::Table(t))) => t
                    .iter()
                    .find(|(key, _)| key.get_ref() == k)
                    .map(|(key, v)| (key.span(), v)),
                (Seg::Index(i), Some(DeValue::Array(a))) => a.get(*i).map(|v| (v.span(), v)),
                _ => None,
            };
            match next {
                Some((span, value)) => {
                    best = Some(span);
                    current = Some(value.get_ref());
                }
                None => break,
            }
        }
        best.map(|span| self.line_at(span.start))
    }

    /// The 1-based line of a byte offset.
    pub fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines_of_nested_keys() {
        let text = "[idp]\nissuer = \"x\"\n\n[[routes]]\npath = \"/a\"\n\n[[routes]]\npath = \"/b\"\nupstream = \"u\"\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.line_of(&KeyPath::root("idp").key("issuer")), Some(2));
        assert_eq!(
            idx.line_of(&KeyPath::root("routes").index(1).key("upstream")),
            Some(9)
        );
        assert_eq!(
            idx.line_of(&KeyPath::root("routes").index(0).key("path")),
            Some(5)
        );
        // A missing key points at the deepest part that exists.
        assert!(idx
            .line_of(&KeyPath::root("routes").index(0).key("upstream"))
            .is_some());
        assert_eq!(
            KeyPath::root("routes").index(1).key("upstream").to_string(),
            "routes[1].upstream"
        );
    }
}
