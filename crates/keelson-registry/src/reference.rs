//! Parsing and validation of OCI repository names, tags, digests and references: pure, no I/O.
//!
//! Grammar follows the OCI Distribution Spec v1.1:
//! - name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255 bytes;
//! - tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`;
//! - digest: `sha256:<64 lowercase hex>` (the only algorithm this registry stores).

use std::fmt;

/// Longest accepted repository name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest accepted tag, in bytes.
pub const MAX_TAG_LEN: usize = 128;

/// Why a name, tag, digest or reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid repository name")]
    InvalidName,
    #[error("invalid tag")]
    InvalidTag,
    #[error("invalid digest: expected sha256:<64 lowercase hex>")]
    InvalidDigest,
    #[error("unsupported digest algorithm")]
    UnsupportedAlgorithm,
}

/// A validated repository name such as `team/app`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() || input.len() > MAX_NAME_LEN {
            return Err(ReferenceError::InvalidName);
        }
        if input.split('/').all(is_name_component) {
            Ok(Self(input.to_owned()))
        } else {
            Err(ReferenceError::InvalidName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated components; each is safe to use as a directory name.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_name_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let mut index = 0;
    let mut expect_alnum_run = true;
    while index < bytes.len() {
        if expect_alnum_run {
            let start = index;
            while index < bytes.len() && is_alnum_lower(bytes[index]) {
                index += 1;
            }
            if index == start {
                return false;
            }
            expect_alnum_run = false;
        } else {
            let start = index;
            match bytes[index] {
                b'.' => index += 1,
                b'_' => {
                    index += 1;
                    if index < bytes.len() && bytes[index] == b'_' {
                        index += 1;
                    }
                }
                b'-' => {
                    while index < bytes.len() && bytes[index] == b'-' {
                        index += 1;
                    }
                }
                _ => return false,
            }
            debug_assert!(index > start);
            expect_alnum_run = true;
        }
    }
    // Must end on an alphanumeric run (and must not be empty).
    !bytes.is_empty() && !expect_alnum_run
}

/// A validated tag such as `v1.2.3` or `latest`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(String);

impl Tag {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let bytes = input.as_bytes();
        let valid_first = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let valid_rest = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-';
        match bytes.split_first() {
            Some((&first, rest))
                if bytes.len() <= MAX_TAG_LEN
                    && valid_first(first)
                    && rest.iter().all(|&b| valid_rest(b)) =>
            {
                Ok(Self(input.to_owned()))
            }
            _ => Err(ReferenceError::InvalidTag),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A sha256 content digest, `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let (algorithm, encoded) = input.split_once(':').ok_or(ReferenceError::InvalidDigest)?;
        // Spec grammar for the algorithm part: [a-z0-9]+([+._-][a-z0-9]+)*
        if algorithm.is_empty()
            || !algorithm
                .bytes()
                .all(|b| is_alnum_lower(b) || matches!(b, b'+' | b'.' | b'_' | b'-'))
        {
            return Err(ReferenceError::InvalidDigest);
        }
        if algorithm != "sha256" {
            return Err(ReferenceError::UnsupportedAlgorithm);
        }
        Self::from_hex(encoded)
    }

    /// Parses the 64 lowercase hex characters of a sha256 digest.
    pub fn from_hex(encoded: &str) -> Result<Self, ReferenceError> {
        if encoded.len() != 64
            || !encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ReferenceError::InvalidDigest);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(encoded, &mut bytes).map_err(|_| ReferenceError::InvalidDigest)?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(data).into())
    }

    /// The 64 lowercase hex characters.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.contains(':') {
            Digest::parse(input).map(Reference::Digest)
        } else {
            Tag::parse(input).map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(tag) => tag.fmt(f),
            Reference::Digest(digest) => digest.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(input: &str, valid: bool) {
        assert_eq!(RepoName::parse(input).is_ok(), valid, "name {input:?}");
    }

    #[test]
    fn names() {
        for good in [
            "a",
            "library/busybox",
            "a.b/c_d/e__f/g--h-i",
            "0/1/2",
            "ns/app-v2",
        ] {
            check_name(good, true);
        }
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "a/../b",
            "..",
            "a.",
            "_a",
            "a___b",
            "a-",
            "a b",
            "a/_layers",
        ] {
            check_name(bad, false);
        }
        check_name(&"a".repeat(255), true);
        check_name(&"a".repeat(256), false);
    }

    #[test]
    fn tags_and_digests() {
        assert!(Tag::parse("latest").is_ok());
        assert!(Tag::parse("_x.Y-1").is_ok());
        assert!(Tag::parse(".x").is_err());
        assert!(Tag::parse("").is_err());
        assert!(Tag::parse(&"a".repeat(129)).is_err());
        let hex = "a".repeat(64);
        let digest = Digest::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(digest.to_string(), format!("sha256:{hex}"));
        assert_eq!(
            Digest::parse(&format!("sha512:{hex}")),
            Err(ReferenceError::UnsupportedAlgorithm)
        );
        assert_eq!(
            Digest::parse(&format!("sha256:{}", "A".repeat(64))),
            Err(ReferenceError::InvalidDigest)
        );
        assert!(matches!(
            Reference::parse(&format!("sha256:{hex}")),
            Ok(Reference::Digest(_))
        ));
        assert!(matches!(Reference::parse("v1"), Ok(Reference::Tag(_))));
    }
}
