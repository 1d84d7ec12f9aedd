//! Object identifiers: 25 lowercase base-36 characters from 128 random bits, as swarmkit makes them.

use rand::Rng;

/// Length of every Shoal object ID.
pub const ID_LEN: usize = 25;

/// A fresh random ID (`[0-9a-z]{25}`).
pub fn new_id() -> String {
    let mut n: u128 = rand::rng().random();
    let mut out = [b'0'; ID_LEN];
    for slot in out.iter_mut().rev() {
        let d = (n % 36) as u8;
        *slot = if d < 10 { b'0' + d } else { b'a' + d - 10 };
        n /= 36;
    }
    // 36^25 > 2^128, so every value fits; the conversion is always valid ASCII.
    out.iter().map(|b| *b as char).collect()
}

/// Truncates an ID for display the way the docker CLI does (12 characters).
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_25_base36_chars_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), ID_LEN);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_ne!(a, b);
        assert_eq!(short(&a).len(), 12);
        assert_eq!(short("abc"), "abc");
    }
}
