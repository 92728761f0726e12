//! Content ids: a named hash over a file's bytes exactly as stored (never decoded or
//! recompressed), as lowercase hex.
//!
//! The seed's databases key images by 32 hex digits, the MD5 of the file (its example id
//! `8f14e45f…2543` is one), so `md5` is the default and keeps those ids; `sha256` gives the
//! 64-digit ids the labels importer verifies against the image.

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::case::hex;

/// The hash of `--id-hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IdHash {
    /// MD5, 32 hex digits: the seed's `compute_content_hash`.
    #[default]
    Md5,
    /// SHA-256, 64 hex digits.
    Sha256,
}

impl IdHash {
    /// The content id of `bytes`.
    pub fn id(self, bytes: &[u8]) -> String {
        match self {
            IdHash::Md5 => hex(&Md5::digest(bytes)),
            IdHash::Sha256 => hex(&Sha256::digest(bytes)),
        }
    }

    /// The content id of everything `r` yields, read in 1 MiB chunks (for files too large to
    /// hold in memory).
    pub fn id_reader(self, mut r: impl std::io::Read) -> std::io::Result<String> {
        let mut buf = vec![0u8; 1 << 20];
        let mut md5 = Md5::new();
        let mut sha = Sha256::new();
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            match self {
                IdHash::Md5 => md5.update(&buf[..n]),
                IdHash::Sha256 => sha.update(&buf[..n]),
            }
        }
        Ok(match self {
            IdHash::Md5 => hex(&md5.finalize()),
            IdHash::Sha256 => hex(&sha.finalize()),
        })
    }

    /// Whether `id` has this hash's form (hex digits of the right length).
    pub fn is_id(self, id: &str) -> bool {
        let len = match self {
            IdHash::Md5 => 32,
            IdHash::Sha256 => 64,
        };
        id.len() == len && id.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        // The seed's example id is the MD5 of the one byte `7`.
        assert_eq!(IdHash::Md5.id(b"7"), "8f14e45fceea167a5a36dedd4bea2543");
        assert_eq!(IdHash::Md5.id(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            IdHash::Sha256.id(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for h in [IdHash::Md5, IdHash::Sha256] {
            assert_eq!(h.id_reader(&big[..]).unwrap(), h.id(&big));
        }
        assert!(IdHash::Md5.is_id("8f14e45fceea167a5a36dedd4bea2543"));
        assert!(!IdHash::Md5.is_id("8f14e45fceea167a5a36dedd4bea254"));
        assert!(!IdHash::Sha256.is_id("8f14e45fceea167a5a36dedd4bea2543"));
    }
}
