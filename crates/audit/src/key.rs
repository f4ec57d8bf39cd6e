//! Ed25519 keys for checkpoints, with `ring`.
//!
//! The private key is PKCS#8, as `openssl genpkey -algorithm ed25519` writes it (a `PRIVATE
//! KEY` PEM block, version 1 without the public key) or as `countersign audit keygen` and ring
//! write it (version 2, with the public key). The PEM text or the base64 of the DER between its
//! lines is accepted, so that the key can sit in a file or in one environment variable.
//!
//! The public key is the raw 32 bytes, written in base64; the `PUBLIC KEY` PEM block (or its
//! base64 DER) that `openssl pkey -pubout` prints is accepted too. A key's id is `ed25519:`
//! and the first 16 hex digits of the SHA-256 of the raw public key: short enough to print on
//! every checkpoint, long enough that no two keys of one operator share it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

/// The DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410): the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a key was not accepted. The message never repeats the key text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

fn key_error(s: impl Into<String>) -> KeyError {
    KeyError(s.into())
}

/// The private key that signs checkpoints. Its `Debug` prints only the key id.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.public.key_id())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 Ed25519 private key: PEM text, or the base64 of its DER.
    pub fn parse(text: &str) -> Result<SigningKey, KeyError> {
        let text = text.trim();
        if text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
            return Err(key_error(
                "the key is encrypted; give the unencrypted PKCS#8 key (keep it in a secret store instead)",
            ));
        }
        if text.contains("BEGIN OPENSSH PRIVATE KEY") {
            return Err(key_error(
                "an OpenSSH key is not PKCS#8; make one with `countersign audit keygen` or `openssl genpkey -algorithm ed25519`",
            ));
        }
        let der = if text.starts_with("-----") {
            pem_block(text, "PRIVATE KEY")?
        } else {
            decode_base64(text)
                .ok_or_else(|| key_error("the key is neither a PEM block nor base64"))?
        };
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| {
            key_error(format!(
                "not an Ed25519 PKCS#8 private key ({e}); make one with `countersign audit keygen` or `openssl genpkey -algorithm ed25519`"
            ))
        })?;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(pair.public_key().as_ref());
        Ok(SigningKey {
            pair,
            public: PublicKey(raw),
        })
    }

    /// A new key, as PKCS#8 PEM text (for `countersign audit keygen`).
    pub fn generate_pem() -> Result<String, KeyError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| key_error("the system's random source failed"))?;
        Ok(pem("PRIVATE KEY", doc.as_ref()))
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// A public key that verifies checkpoints.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl PublicKey {
    /// Reads a public key: the base64 of its 32 bytes, or a `PUBLIC KEY` PEM block (or its
    /// base64 DER) as `openssl pkey -pubout` prints it.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let text = text.trim();
        if text.contains("PRIVATE KEY") {
            return Err(key_error(
                "this is a private key; give its public key (`countersign audit public-key`)",
            ));
        }
        let der = if text.starts_with("-----") {
            pem_block(text, "PUBLIC KEY")?
        } else {
            decode_base64(text).ok_or_else(|| {
                key_error("the public key is neither base64 nor a PUBLIC KEY PEM block")
            })?
        };
        let raw: &[u8] = match der.len() {
            32 => &der,
            44 if der[..12] == SPKI_PREFIX => &der[12..],
            _ => {
                return Err(key_error(
                    "not an Ed25519 public key (expected 32 bytes, or an Ed25519 SubjectPublicKeyInfo)",
                ));
            }
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(raw);
        Ok(PublicKey(key))
    }

    /// The raw 32 bytes in base64: what `--public-key` takes.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The `PUBLIC KEY` PEM block, as `openssl pkey -pubout` prints it.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem("PUBLIC KEY", &der)
    }

    /// `ed25519:` and the first 16 hex digits of the SHA-256 of the key.
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.0);
        format!("ed25519:{}", hex::encode(&digest[..8]))
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.0)
            .verify(message, signature)
            .is_ok()
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(compact).ok()
}

/// The DER inside the one PEM block labelled `label`.
fn pem_block(text: &str, label: &str) -> Result<Vec<u8>, KeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| key_error(format!("no {begin} line")))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| key_error(format!("no {end} line")))?
        + start;
    decode_base64(&text[start..stop])
        .ok_or_else(|| key_error(format!("the {label} block is not valid base64")))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `openssl genpkey -algorithm ed25519` (PKCS#8 version 1, no public key).
    const OPENSSL_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIKLLLi7mO6qVSLZz/9QVrepUn/ikgS3AAxf4ntc0GMEa
-----END PRIVATE KEY-----
";
    /// `openssl pkey -in key.pem -pubout` of the key above.
    const OPENSSL_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAQZsy/+otDV1wfBwh3xlfLrXkgYcTH8J4xTgniBbuXXk=
-----END PUBLIC KEY-----
";
    /// `openssl pkey -in key.pem -pubout -outform DER | tail -c 32 | base64`.
    const OPENSSL_RAW: &str = "QZsy/+otDV1wfBwh3xlfLrXkgYcTH8J4xTgniBbuXXk=";

    #[test]
    fn an_openssl_key_reads_and_its_public_key_matches_openssl() {
        let key = SigningKey::parse(OPENSSL_KEY).expect("openssl's PKCS#8 v1 key");
        assert_eq!(key.public_key().to_base64(), OPENSSL_RAW);
        assert_eq!(key.public_key().to_pem(), OPENSSL_PUB);
        for text in [OPENSSL_PUB, OPENSSL_RAW] {
            assert_eq!(
                &PublicKey::parse(text).expect("public key"),
                key.public_key()
            );
        }
        // The base64 of the DER alone, as one environment variable would hold it.
        let inner: String = OPENSSL_KEY
            .lines()
            .filter(|l| !l.starts_with("---"))
            .collect();
        let again = SigningKey::parse(&inner).expect("base64 DER");
        assert_eq!(again.public_key(), key.public_key());
    }

    #[test]
    fn a_generated_key_signs_and_its_public_key_verifies() {
        let pem = SigningKey::generate_pem().expect("keygen");
        let key = SigningKey::parse(&pem).expect("generated key");
        let sig = key.sign(b"message");
        assert!(key.public_key().verify(b"message", &sig));
        assert!(!key.public_key().verify(b"messagE", &sig));
        let other = SigningKey::parse(OPENSSL_KEY).expect("key");
        assert!(!other.public_key().verify(b"message", &sig));
    }

    #[test]
    fn debug_never_prints_the_private_key() {
        let key = SigningKey::parse(OPENSSL_KEY).expect("key");
        let shown = format!("{key:?}");
        assert!(shown.contains("ed25519:"), "{shown}");
        assert!(!shown.contains("MC4CAQAw"), "{shown}");
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason_that_does_not_repeat_them() {
        for (text, says) in [
            ("not a key", "neither"),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----",
                "OpenSSH",
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----",
                "encrypted",
            ),
            ("AAAAAAAA", "not an Ed25519"),
        ] {
            let e = SigningKey::parse(text).expect_err(text);
            assert!(e.0.contains(says), "{text}: {e}");
        }
        assert!(PublicKey::parse(OPENSSL_KEY).is_err());
        assert!(PublicKey::parse("AAAA").is_err());
    }
}
