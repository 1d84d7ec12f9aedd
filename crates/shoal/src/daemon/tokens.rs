//! Join tokens in swarm's format: `SWMTKN-1-<CA digest, base36, 50 chars>-<secret, base36, 25 chars>`.
//!
//! Until the cluster CA exists (node-to-node TLS), the digest part is random per cluster; the
//! secret part is what authorizes a join and decides the role.

use rand::RngCore;

/// Encodes big-endian bytes in base 36, left-padded with `0` to `width`.
pub fn base36(bytes: &[u8], width: usize) -> String {
    let mut digits: Vec<u8> = Vec::new();
    let mut num: Vec<u8> = bytes.to_vec();
    while num.iter().any(|b| *b != 0) {
        let mut rem: u32 = 0;
        for b in num.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        digits.push(rem as u8);
    }
    while digits.len() < width {
        digits.push(0);
    }
    digits
        .iter()
        .rev()
        .map(|d| {
            if *d < 10 {
                (b'0' + d) as char
            } else {
                (b'a' + d - 10) as char
            }
        })
        .collect()
}

/// A fresh random cluster digest part (50 chars).
pub fn new_digest() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base36(&b, 50)
}

/// A join token for the cluster whose digest part is `digest`.
pub fn new_token(digest: &str) -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    format!("SWMTKN-1-{digest}-{}", base36(&b, 25))
}

/// The digest part of a token, if it has swarm's shape.
pub fn digest_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("SWMTKN-1-")?;
    let (digest, secret) = rest.split_once('-')?;
    (digest.len() == 50 && secret.len() == 25).then_some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_swarm_shape() {
        let d = new_digest();
        assert_eq!(d.len(), 50);
        let t = new_token(&d);
        assert!(t.starts_with("SWMTKN-1-"));
        assert_eq!(t.len(), "SWMTKN-1-".len() + 50 + 1 + 25);
        assert_eq!(digest_of(&t), Some(d.as_str()));
        assert_ne!(new_token(&d), t);
        assert_eq!(digest_of("SWMTKN-1-abc-def"), None);
    }

    #[test]
    fn base36_encodes_numbers() {
        assert_eq!(base36(&[0], 3), "000");
        assert_eq!(base36(&[35], 1), "z");
        assert_eq!(base36(&[1, 0], 0), "74"); // 256 = 7*36 + 4
        assert_eq!(base36(&[0xff; 32], 50).len(), 50);
    }
}
