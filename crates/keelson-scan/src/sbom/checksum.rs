//! Lockfile hashes turned into (algorithm, lowercase hex) pairs that SBOM formats accept.
//!
//! Lockfiles write hashes in several ways: `sha256:<hex>` (Cargo.lock as the inventory records
//! it, poetry.lock, uv.lock, Pipfile.lock, requirements `--hash`), `sha1:<hex>` (composer.lock),
//! Subresource-Integrity strings `sha512-<base64>` possibly several separated by spaces
//! (package-lock.json, pnpm-lock.yaml, yarn v1), and bare hex with an optional `<cache key>/`
//! prefix (yarn berry's SHA-512 `checksum`). Anything else — go.sum `h1:` directory hashes, unknown
//! algorithms, wrong lengths, bad hex or base64 — is dropped: a hash in an SBOM must be one a
//! consumer can check.

use base64::Engine as _;

use crate::lockfile::Format;

/// A digest algorithm both CycloneDX 1.6 and SPDX 2.3 name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    /// The CycloneDX `hash-alg` name.
    pub fn cyclonedx_name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha1 => "SHA-1",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha384 => "SHA-384",
            Algorithm::Sha512 => "SHA-512",
        }
    }

    /// The SPDX 2.3 checksum algorithm name.
    pub fn spdx_name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha384 => "SHA384",
            Algorithm::Sha512 => "SHA512",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }

    fn from_label(label: &str) -> Option<Algorithm> {
        let algorithm = match label.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "md5" => Algorithm::Md5,
            "sha1" => Algorithm::Sha1,
            "sha256" => Algorithm::Sha256,
            "sha384" => Algorithm::Sha384,
            "sha512" => Algorithm::Sha512,
            _ => return None,
        };
        Some(algorithm)
    }
}

/// One checkable digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checksum {
    pub algorithm: Algorithm,
    /// Lowercase hex, exactly `2 * algorithm.digest_len()` characters.
    pub hex: String,
}

/// The digests in one hash string from a lockfile of `format`; empty when none is recognisable.
pub fn parse(raw: &str, format: Format) -> Vec<Checksum> {
    raw.split_whitespace()
        .filter_map(|token| parse_token(token, format))
        .collect()
}

fn parse_token(token: &str, format: Format) -> Option<Checksum> {
    if let Some((label, value)) = token.split_once(':') {
        let algorithm = Algorithm::from_label(label)?;
        return from_hex(algorithm, value);
    }
    if let Some((label, value)) = token.split_once('-')
        && let Some(algorithm) = Algorithm::from_label(label)
    {
        // Subresource Integrity: base64 of the digest, optionally followed by `?options`.
        let value = value.split('?').next().unwrap_or(value);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        return (bytes.len() == algorithm.digest_len()).then(|| Checksum {
            algorithm,
            hex: hex::encode(bytes),
        });
    }
    if format == Format::YarnLock {
        // Yarn berry: `<cache key>/<sha512 hex>` or bare hex.
        let value = token.rsplit('/').next().unwrap_or(token);
        return from_hex(Algorithm::Sha512, value);
    }
    None
}

fn from_hex(algorithm: Algorithm, value: &str) -> Option<Checksum> {
    let valid =
        value.len() == 2 * algorithm.digest_len() && value.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| Checksum {
        algorithm,
        hex: value.to_ascii_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, format: Format, expect: &[(Algorithm, &str)]) {
        let got: Vec<(Algorithm, String)> = parse(raw, format)
            .into_iter()
            .map(|c| (c.algorithm, c.hex))
            .collect();
        let expect: Vec<(Algorithm, String)> =
            expect.iter().map(|(a, h)| (*a, (*h).to_owned())).collect();
        assert_eq!(got, expect, "{raw}");
    }

    #[test]
    fn recognised_forms() {
        let sha256 = "20cc960326ece64f010d2d2107537f26dc589a6573a316bd5b1dba685fa5fde4";
        check(
            &format!("sha256:{}", sha256.to_uppercase()),
            Format::PoetryLock,
            &[(Algorithm::Sha256, sha256)],
        );
        check(
            "sha1:d8a96bd77fd68df7793a73036a3ba0d5405d477b",
            Format::ComposerLock,
            &[(Algorithm::Sha1, "d8a96bd77fd68df7793a73036a3ba0d5405d477b")],
        );
        // SRI: base64 of the SHA-1 above, next to a SHA-512.
        let sha512_b64 = "soOk1h6J3VMTZtVeVpv15/Hpdl2cBLX3CAw4TAbkpTJiNPk9YP/zWcD1ND+xEtvyuuvKzbxliTOIyvkSeSJ6ag==";
        let parsed = parse(
            &format!("sha512-{sha512_b64} sha1-2Klr13/Wjfd5OnMDajug1UBdR3s="),
            Format::PackageLockJson,
        );
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].algorithm, Algorithm::Sha512);
        assert!(parsed[0].hex.starts_with("b283a4d61e89dd53"));
        assert_eq!(parsed[0].hex.len(), 128);
        assert_eq!(parsed[1].hex, "d8a96bd77fd68df7793a73036a3ba0d5405d477b");
        let yarn = "fb71d70632baa1e93283cf9d80f30ac97f003aabee026e0b4426c9716678079ef5fea7519b84d012cbed938c476493866a38a79760564a9e21ae9433e40e6f0d";
        check(
            &format!("10c0/{yarn}"),
            Format::YarnLock,
            &[(Algorithm::Sha512, yarn)],
        );
    }

    #[test]
    fn unrecognised_forms_are_dropped() {
        check(
            "h1:GTuzbq2qJJuyQdCWdRSKg0AB8LOjlGiVjUuBGV+gjvo=",
            Format::GoMod,
            &[],
        );
        check("sha256:abc", Format::PoetryLock, &[]);
        check("sha256:zz", Format::PoetryLock, &[]);
        check("crc32:deadbeef", Format::PoetryLock, &[]);
        check("sha512-not*base64", Format::PackageLockJson, &[]);
        check("sha1-AAAA", Format::PackageLockJson, &[]);
        // Bare hex is only understood from yarn.lock.
        check(&"a".repeat(128), Format::CargoLock, &[]);
        check("", Format::CargoLock, &[]);
    }
}
