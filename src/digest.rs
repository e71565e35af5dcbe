//! Cache keys for secrets and attacker-chosen input: keyed SipHash-1-3 (the variant Rust's
//! `HashMap` keys attacker-chosen input with) with a 128-bit output and a random key per
//! process. The keys never leave the process, so without the key nobody can make two inputs
//! share a key; hashing a 700-byte token this way costs about a third of SHA-256.

use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// A 128-bit cache key.
pub type Digest = u128;

/// A keyed hasher for cache keys, with a random key made once.
pub struct KeyedDigest(SipHasher13);

impl KeyedDigest {
    /// A hasher with a fresh random key (made at start-up).
    #[allow(
        clippy::expect_used,
        reason = "start-up only: no random generator, no keyed caches"
    )]
    pub fn random() -> KeyedDigest {
        let mut key = [0u8; 16];
        aws_lc_rs::rand::fill(&mut key).expect("the system random generator works");
        KeyedDigest(SipHasher13::new_with_key(&key))
    }

    /// The key of `parts`, each length-prefixed so that no two part lists share a key.
    pub fn of(&self, parts: &[&[u8]]) -> Digest {
        let mut w = self.writer();
        for p in parts {
            w.part(p);
        }
        w.finish()
    }

    /// A writer for keys built piece by piece (also an `io::Write`, for serialisers).
    pub fn writer(&self) -> DigestWriter {
        DigestWriter(self.0)
    }
}

/// A key being built: [`DigestWriter::part`] for length-prefixed parts, `io::Write` for a
/// serialiser's output (one part of its own: write it last, or after a length-prefixed part).
pub struct DigestWriter(SipHasher13);

impl DigestWriter {
    /// Adds one length-prefixed part.
    pub fn part(&mut self, bytes: &[u8]) {
        self.0.write_usize(bytes.len());
        self.0.write(bytes);
    }

    /// The key.
    pub fn finish(self) -> Digest {
        self.0.finish128().as_u128()
    }
}

impl std::io::Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_length_prefixed_and_keys_differ_per_process() {
        let k = KeyedDigest::random();
        assert_eq!(k.of(&[b"ab", b"c"]), k.of(&[b"ab", b"c"]));
        assert_ne!(k.of(&[b"ab", b"c"]), k.of(&[b"a", b"bc"]));
        assert_ne!(k.of(&[b"abc"]), k.of(&[b"abc", b""]));
        assert_ne!(k.of(&[b"abc"]), KeyedDigest::random().of(&[b"abc"]));
        let mut w = k.writer();
        w.part(b"ab");
        w.part(b"c");
        assert_eq!(w.finish(), k.of(&[b"ab", b"c"]));
    }
}
