//! Join tokens: `SWMTKN-1-<CA digest>-<secret>`, swarmkit's format.
//!
//! ```text
//!  SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx
//!  │      │ └──────────────── 50 chars ──────────────────────┘ └──────── 25 ────────┘
//!  │      │  SHA-256 of the root CA PEM, base36, zero-padded     16 random bytes, base36
//!  │      version 1
//!  prefix
//! ```
//!
//! The digest half *pins* the root CA: a joining node fetches the root certificate over an
//! unverified connection and refuses it unless it hashes to this digest
//! ([`verify_ca_digest`]). The secret half *authorises*: the manager compares the whole token in
//! constant time against its current worker and manager tokens ([`role_for`]); the one that
//! matches decides the new node's role. Rotating a token changes only the secret, so a leaked
//! old token stops working while the digest stays the same.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{CaError, Role, RootCa};

/// The token prefix and version.
pub const JOIN_TOKEN_PREFIX: &str = "SWMTKN-1-";
/// Length of the digest part: ceil(log36(2^256)).
pub const DIGEST_LEN: usize = 50;
/// Length of the secret part: ceil(log36(2^128)).
pub const SECRET_LEN: usize = 25;
/// Random bytes in the secret.
const SECRET_BYTES: usize = 16;

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A parsed join token. `Display` and [`as_str`](Self::as_str) give the full secret text;
/// `Debug` hides the secret.
#[derive(Clone)]
pub struct JoinToken {
    text: String,
    digest: [u8; 32],
}

impl JoinToken {
    /// A new token for the root CA whose [`RootCa::digest`] is `ca_digest` (50 base36 chars),
    /// with 16 fresh random bytes of secret.
    pub fn generate(ca_digest: &str) -> Result<JoinToken, CaError> {
        let digest = parse_digest(ca_digest)?;
        Ok(Self::with_digest(digest))
    }

    /// A new token pinning `root`.
    pub fn for_root(root: &RootCa) -> JoinToken {
        Self::with_digest(sha256(root.cert_pem().as_bytes()))
    }

    fn with_digest(digest: [u8; 32]) -> JoinToken {
        let mut secret = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut secret);
        let text = format!(
            "{JOIN_TOKEN_PREFIX}{}-{}",
            to_base36(&digest, DIGEST_LEN),
            to_base36(&secret, SECRET_LEN)
        );
        JoinToken { text, digest }
    }

    /// Parse a token as a user typed it (surrounding whitespace is ignored).
    pub fn parse(s: &str) -> Result<JoinToken, CaError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(CaError::InvalidJoinToken("the token is empty".into()));
        }
        let parts: Vec<&str> = s.split('-').collect();
        if parts.len() != 4 || parts[0] != "SWMTKN" {
            return Err(CaError::InvalidJoinToken(
                "expected SWMTKN-1-<CA digest>-<secret> (copy it from `swarm join-token`)".into(),
            ));
        }
        if parts[1] != "1" {
            return Err(CaError::InvalidJoinToken(format!(
                "unsupported token version {:?} (this version understands 1)",
                parts[1]
            )));
        }
        let digest = parse_digest(parts[2])?;
        if parts[3].len() != SECRET_LEN || from_base36(parts[3], SECRET_BYTES).is_none() {
            return Err(CaError::InvalidJoinToken(format!(
                "the secret part must be {SECRET_LEN} characters of [0-9a-z]"
            )));
        }
        Ok(JoinToken {
            text: s.to_owned(),
            digest,
        })
    }

    /// The full token text (a secret).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The CA digest part: 50 base36 characters, equal to [`RootCa::digest`] of the pinned root.
    pub fn digest(&self) -> &str {
        &self.text[JOIN_TOKEN_PREFIX.len()..JOIN_TOKEN_PREFIX.len() + DIGEST_LEN]
    }

    /// The pinned SHA-256, lowercase hex (as swarmkit prints it in errors).
    pub fn digest_hex(&self) -> String {
        hex(&self.digest)
    }

    /// Whether two tokens are the same, compared in constant time.
    pub fn matches(&self, other: &JoinToken) -> bool {
        bool::from(self.text.as_bytes().ct_eq(other.text.as_bytes()))
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JoinToken({JOIN_TOKEN_PREFIX}{}-<secret>)",
            self.digest()
        )
    }
}

impl FromStr for JoinToken {
    type Err = CaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JoinToken::parse(s)
    }
}

/// The role a presented `token` grants: `Manager` if it is the current manager token, `Worker`
/// if it is the current worker token, `None` otherwise (malformed, rotated away, or empty).
/// Both comparisons always run, in constant time.
pub fn role_for(token: &str, worker_token: &str, manager_token: &str) -> Option<Role> {
    let token = JoinToken::parse(token).ok()?;
    let presented = token.as_str().as_bytes();
    let worker = presented.ct_eq(worker_token.trim().as_bytes());
    let manager = presented.ct_eq(manager_token.trim().as_bytes());
    if bool::from(manager) {
        Some(Role::Manager)
    } else if bool::from(worker) {
        Some(Role::Worker)
    } else {
        None
    }
}

/// Check that `root_pem` (as received from a manager, byte for byte) is the root CA `token`
/// pins. Error text is swarmkit's: `remote CA does not match fingerprint. Expected: <hex>`.
pub fn verify_ca_digest(token: &JoinToken, root_pem: &str) -> Result<(), CaError> {
    let got = sha256(root_pem.as_bytes());
    if bool::from(got.ct_eq(&token.digest)) {
        Ok(())
    } else {
        Err(CaError::CaDigestMismatch {
            expected: token.digest_hex(),
        })
    }
}

fn parse_digest(s: &str) -> Result<[u8; 32], CaError> {
    if s.len() != DIGEST_LEN {
        return Err(CaError::InvalidJoinToken(format!(
            "the CA digest part must be {DIGEST_LEN} characters (got {})",
            s.len()
        )));
    }
    let bytes = from_base36(s, 32).ok_or_else(|| {
        CaError::InvalidJoinToken(
            "the CA digest part must be base36 ([0-9a-z]) and at most 2^256-1".into(),
        )
    })?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes);
    Ok(out)
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A SHA-256 as the token shows it.
pub(crate) fn base36_digest(digest: &[u8; 32]) -> String {
    to_base36(digest, DIGEST_LEN)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Big-endian bytes as a base36 number, left-padded with '0' to `width` (Go's `big.Int.Text(36)`
/// under `%0*s`).
fn to_base36(bytes: &[u8], width: usize) -> String {
    let mut num = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    while num.iter().any(|&b| b != 0) {
        let mut rem: u32 = 0;
        for b in num.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        digits.push(ALPHABET[rem as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    digits.into_iter().map(char::from).collect()
}

/// A base36 number into `nbytes` big-endian bytes; `None` on a bad digit or overflow.
fn from_base36(s: &str, nbytes: usize) -> Option<Vec<u8>> {
    let mut num = vec![0u8; nbytes];
    for c in s.bytes() {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'z' => c - b'a' + 10,
            _ => return None,
        };
        let mut carry = u32::from(d);
        for b in num.iter_mut().rev() {
            let cur = u32::from(*b) * 36 + carry;
            *b = (cur & 0xff) as u8;
            carry = cur >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(num)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_round_trips_and_pads() {
        assert_eq!(to_base36(&[0; 4], 5), "00000");
        assert_eq!(to_base36(&[0, 0, 0, 36], 1), "10");
        assert_eq!(to_base36(&[0xff; 32], 0).len(), DIGEST_LEN);
        assert_eq!(to_base36(&[0xff; 16], 0).len(), SECRET_LEN);
        let x = sha256(b"x");
        assert_eq!(from_base36(&to_base36(&x, DIGEST_LEN), 32).unwrap(), x);
        assert!(
            from_base36(&"z".repeat(DIGEST_LEN), 32).is_none(),
            "overflow must be refused"
        );
        assert!(from_base36("A", 4).is_none());
    }

    #[test]
    fn known_value_matches_arbitrary_precision_base36() {
        // int(sha256("").hexdigest(), 16) in base 36 (what Go's big.Int.Text(36) prints),
        // zero-padded to 50.
        let d = sha256(b"");
        assert_eq!(
            hex(&d),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            to_base36(&d, DIGEST_LEN),
            "5oaq0bjhj6un82wg98mgigso5q7qlhc63je4gw7ivixqqhkd3p"
        );
    }
}
