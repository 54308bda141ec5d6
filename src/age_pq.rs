//! The post-quantum age identity of age v1.3 (`AGE-SECRET-KEY-PQ-1…`, which `age-keygen -pq`
//! makes) and its recipient (`age1pq1…`). Pure: strings in, strings out.
//!
//! The key pair is ML-KEM-768 with X25519, the hybrid KEM that draft-ietf-hpke-pq names
//! MLKEM768-X25519 (X-Wing), derived as filippo.io/hpke does for age:
//!
//! - the identity is the Bech32 encoding (type `AGE-SECRET-KEY-PQ-`, written upper-case) of a
//!   32-byte seed;
//! - SHAKE256 of the seed is read as 64 bytes, the ML-KEM-768 key-generation seed (`d ‖ z` of
//!   FIPS 203), then 32 bytes, the X25519 private key;
//! - the public key is the ML-KEM-768 encapsulation key (1184 bytes) followed by the X25519
//!   public key (32 bytes), and the recipient its Bech32 encoding of type `age1pq`, lower-case.
//!
//! Bech32 here has no length limit: a recipient is 1959 characters, beyond the 90 of BIP 173.
//! `tests/age_pq.rs` checks the derivation against `age-keygen -y` of age v1.3.2.

use bech32::{FromBase32, ToBase32, Variant};
use ml_kem::{KeyExport, MlKem768};
use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;
use shake::{ExtendableOutput, Shake256, Update, XofReader};

/// What every post-quantum age identity starts with (age writes it upper-case).
pub const IDENTITY_PREFIX: &str = "AGE-SECRET-KEY-PQ-1";
/// The same in lower case, as bech32 may be written.
pub const IDENTITY_PREFIX_LOWER: &str = "age-secret-key-pq-1";
/// What every post-quantum age recipient starts with.
pub const RECIPIENT_PREFIX: &str = "age1pq1";

/// The Bech32 types (human-readable parts), in the lower case the checksum is computed over.
const IDENTITY_TYPE: &str = "age-secret-key-pq-";
const RECIPIENT_TYPE: &str = "age1pq";

const SEED_SIZE: usize = 32;
/// ML-KEM-768's key-generation seed (`d ‖ z`).
const MLKEM_SEED_SIZE: usize = 64;
const MLKEM_KEY_SIZE: usize = 1184;
const X25519_KEY_SIZE: usize = 32;
/// The size of the public key a recipient encodes.
pub const PUBLIC_KEY_SIZE: usize = MLKEM_KEY_SIZE + X25519_KEY_SIZE;

/// A post-quantum identity: its canonical spelling and its recipient. No field is printable.
pub struct Identity {
    /// Upper-case, as `age-keygen -pq` writes it.
    pub canonical: SecretString,
    /// Lower-case `age1pq1…`, as `age-keygen -y` prints it.
    pub recipient: String,
}

/// The value is not a post-quantum identity (the reason never holds the value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// Parses `AGE-SECRET-KEY-PQ-1…` (either case, not mixed: Bech32's rule) and derives its
/// recipient.
pub fn parse_identity(value: &str) -> Result<Identity, Malformed> {
    let (kind, data, variant) = bech32::decode(value).map_err(|_| Malformed)?;
    if kind != IDENTITY_TYPE || variant != Variant::Bech32 {
        return Err(Malformed);
    }
    // Padding is checked here: one seed has one spelling.
    let bytes = Zeroizing::new(Vec::<u8>::from_base32(&data).map_err(|_| Malformed)?);
    let seed: Zeroizing<[u8; SEED_SIZE]> =
        Zeroizing::new(bytes.as_slice().try_into().map_err(|_| Malformed)?);
    let canonical = bech32::encode(IDENTITY_TYPE, seed.to_base32(), Variant::Bech32)
        .map_err(|_| Malformed)?
        .to_ascii_uppercase();
    Ok(Identity {
        canonical: SecretString::from(canonical),
        recipient: encode_recipient(&public_key(&seed)),
    })
}

/// The public key of a seed: ML-KEM-768's encapsulation key, then X25519's public key.
fn public_key(seed: &[u8; SEED_SIZE]) -> Vec<u8> {
    let mut xof = Shake256::default();
    xof.update(seed);
    let mut reader = xof.finalize_xof();
    let mut mlkem_seed = Zeroizing::new([0u8; MLKEM_SEED_SIZE]);
    reader.read(mlkem_seed.as_mut_slice());
    let mut x25519_secret = Zeroizing::new([0u8; X25519_KEY_SIZE]);
    reader.read(x25519_secret.as_mut_slice());

    let decapsulation = ml_kem::DecapsulationKey::<MlKem768>::from_seed((*mlkem_seed).into());
    let mlkem_public = decapsulation.encapsulation_key().to_bytes();
    // Any 32 bytes are an X25519 private key (clamped when used), so age reads once.
    let x25519 = x25519_dalek::StaticSecret::from(*x25519_secret);
    let x25519_public = x25519_dalek::PublicKey::from(&x25519);

    let mut out = Vec::with_capacity(PUBLIC_KEY_SIZE);
    out.extend_from_slice(&mlkem_public);
    out.extend_from_slice(x25519_public.as_bytes());
    out
}

fn encode_recipient(public_key: &[u8]) -> String {
    // Encoding a lower-case type with valid 5-bit groups cannot fail.
    bech32::encode(RECIPIENT_TYPE, public_key.to_base32(), Variant::Bech32).unwrap_or_default()
}

/// The public key of an `age1pq1…` recipient (either case), or `None` when it is not one.
pub fn parse_recipient(value: &str) -> Option<Vec<u8>> {
    let (kind, data, variant) = bech32::decode(value).ok()?;
    if kind != RECIPIENT_TYPE || variant != Variant::Bech32 {
        return None;
    }
    let bytes = Vec::<u8>::from_base32(&data).ok()?;
    (bytes.len() == PUBLIC_KEY_SIZE).then_some(bytes)
}

/// A recipient short enough for a message (`age1pq1` and its first and last characters):
/// the whole one is 1959 characters.
pub fn shorten(recipient: &str) -> String {
    let count = recipient.chars().count();
    if count <= 40 {
        return recipient.to_string();
    }
    let head: String = recipient.chars().take(16).collect();
    let tail: String = recipient.chars().skip(count - 8).collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    /// Made by `age-keygen -pq` of age v1.3.2 (tests/env/age) and `age-keygen -y`: test-only
    /// keys, never used for anything else.
    const VECTORS: &str = include_str!("../tests/fixtures/age-pq/vectors.txt");

    /// `(identity, recipient)` pairs of the vectors file: an identity line, then its recipient.
    fn vectors() -> Vec<(&'static str, &'static str)> {
        let lines: Vec<&str> = VECTORS
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        lines.chunks(2).map(|pair| (pair[0], pair[1])).collect()
    }

    #[test]
    fn recipients_are_derived_as_age_keygen_does() {
        let vectors = vectors();
        assert!(vectors.len() >= 4, "{} vectors", vectors.len());
        for (identity, recipient) in vectors {
            assert!(identity.starts_with(IDENTITY_PREFIX), "{identity}");
            assert!(recipient.starts_with(RECIPIENT_PREFIX));
            assert_eq!(recipient.len(), 1959);
            let parsed = parse_identity(identity).unwrap();
            assert_eq!(parsed.recipient, recipient);
            assert_eq!(parsed.canonical.expose_secret(), identity);
            // Lower case is the same identity, spelled canonically.
            let lower = parse_identity(&identity.to_ascii_lowercase()).unwrap();
            assert_eq!(lower.recipient, recipient);
            assert_eq!(lower.canonical.expose_secret(), identity);
            assert_eq!(parse_recipient(recipient).unwrap().len(), PUBLIC_KEY_SIZE);
            assert_eq!(
                parse_recipient(&recipient.to_ascii_uppercase()),
                parse_recipient(recipient)
            );
        }
    }

    #[test]
    fn malformed_identities_and_recipients_are_refused() {
        let (identity, recipient) = vectors()[0];
        // Every single-character change is caught by the checksum.
        for at in IDENTITY_PREFIX.len()..identity.len() {
            let mut changed: Vec<char> = identity.chars().collect();
            changed[at] = if changed[at] == 'Q' { 'P' } else { 'Q' };
            let changed: String = changed.into_iter().collect();
            assert_eq!(parse_identity(&changed).err(), Some(Malformed), "{at}");
        }
        let mut truncated = identity.to_string();
        truncated.truncate(identity.len() - 5);
        assert_eq!(parse_identity(&truncated).err(), Some(Malformed));
        // Mixed case, the X25519 type, a recipient, and a 33-byte seed.
        let mixed = format!("{}{}", &identity[..30], identity[30..].to_ascii_lowercase());
        assert_eq!(parse_identity(&mixed).err(), Some(Malformed));
        let x25519 = "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQS0D4QXM";
        assert_eq!(parse_identity(x25519).err(), Some(Malformed));
        assert_eq!(parse_identity(recipient).err(), Some(Malformed));
        let long = bech32::encode(IDENTITY_TYPE, [7u8; 33].to_base32(), Variant::Bech32).unwrap();
        assert_eq!(parse_identity(&long).err(), Some(Malformed));
        let m = bech32::encode(IDENTITY_TYPE, [7u8; 32].to_base32(), Variant::Bech32m).unwrap();
        assert_eq!(parse_identity(&m).err(), Some(Malformed));

        let mut broken: Vec<char> = recipient.chars().collect();
        broken[1000] = if broken[1000] == 'q' { 'p' } else { 'q' };
        assert_eq!(
            parse_recipient(&broken.into_iter().collect::<String>()),
            None
        );
        assert_eq!(parse_recipient(&recipient[..1900]), None);
        assert_eq!(
            parse_recipient("age1mj625hgyr8nva356f54rpymq4gq5m7zwz6zcczewyz60ep6u0glqx546yq"),
            None
        );
    }

    /// The output filter masks anything shaped like a post-quantum identity, in either case,
    /// whether or not it was registered as a secret, and keeps the line's width.
    #[test]
    fn the_output_filter_masks_the_shape() {
        for (identity, _) in vectors() {
            for shown in [identity.to_string(), identity.to_ascii_lowercase()] {
                let line = format!("key: {shown} (line 3)");
                let masked = crate::output::redact(&line);
                assert_eq!(masked.len(), line.len());
                assert!(
                    !masked.contains(&shown[IDENTITY_PREFIX.len()..]),
                    "{masked}"
                );
                assert!(masked.starts_with("key: ***") && masked.ends_with(" (line 3)"));
            }
        }
    }

    #[test]
    fn a_shortened_recipient_keeps_its_ends() {
        let (_, recipient) = vectors()[0];
        let short = shorten(recipient);
        assert_eq!(short.chars().count(), 25);
        assert!(short.starts_with(&recipient[..16]), "{short}");
        assert!(
            short.ends_with(&recipient[recipient.len() - 8..]),
            "{short}"
        );
        assert_eq!(shorten("age1abc"), "age1abc");
    }
}
