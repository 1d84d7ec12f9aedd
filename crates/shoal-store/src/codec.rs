//! The bytes the store hands to Raft: batches (log entries) and snapshots.
//!
//! ```text
//!  JSON (serde_json) ──► < 1 KiB ──────────────────────────────► as is   ('{' ...)
//!                   └──► ≥ 1 KiB ──► lz4 block ──► MAGIC · len (u32 LE) · block
//! ```
//!
//! A batch of 500 tasks is ~330 KB of JSON that differs little from one task to the next; lz4
//! makes it several times smaller at a cost of well under a millisecond, and everything
//! downstream pays per byte: the AEAD seal, the redb write and fsync on every manager, the
//! replication messages, the snapshot kept and sent. Plain JSON (every entry written before
//! this format, and small ones) is still read: JSON never starts with the magic's NUL byte.

use crate::StoreError;
use std::borrow::Cow;

/// Marks a compressed payload.
const MAGIC: &[u8; 4] = b"\0SZ1";
/// Payloads from this size on are compressed.
const COMPRESS_FROM: usize = 1024;
/// The largest decompressed size accepted (a corrupt length must not allocate without bound).
const MAX_DECOMPRESSED: usize = 1 << 30;

/// Frames `json` for Raft: compressed if that is worth it.
pub(crate) fn pack(json: Vec<u8>) -> Vec<u8> {
    if json.len() < COMPRESS_FROM || json.len() > MAX_DECOMPRESSED {
        return json;
    }
    let block = lz4_flex::block::compress(&json);
    if block.len() + MAGIC.len() + 4 >= json.len() {
        return json;
    }
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + block.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&block);
    out
}

/// The JSON inside a payload made by [`pack`] (or written before it existed).
pub(crate) fn unpack(bytes: &[u8]) -> Result<Cow<'_, [u8]>, StoreError> {
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Ok(Cow::Borrowed(bytes));
    };
    let (len, block) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| StoreError::Codec("compressed payload without its length".into()))?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_DECOMPRESSED {
        return Err(StoreError::Codec(format!(
            "compressed payload claims {len} bytes, more than the {MAX_DECOMPRESSED} allowed"
        )));
    }
    let mut out = vec![0u8; len];
    let n = lz4_flex::block::decompress_into(block, &mut out)
        .map_err(|e| StoreError::Codec(format!("compressed payload: {e}")))?;
    if n != len {
        return Err(StoreError::Codec(format!(
            "compressed payload: {n} bytes, {len} announced"
        )));
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_payloads_shrink_and_round_trip_small_ones_stay_json() {
        let json: Vec<u8> = format!(
            "[{}]",
            vec![r#"{"Image":"busybox","Command":["sleep","100000"]}"#; 500].join(",")
        )
        .into_bytes();
        let packed = pack(json.clone());
        assert!(packed.starts_with(MAGIC), "compressed");
        assert!(packed.len() * 10 < json.len(), "{} bytes", packed.len());
        assert_eq!(unpack(&packed).unwrap().as_ref(), json.as_slice());
        let small = br#"{"actions":[]}"#.to_vec();
        assert_eq!(pack(small.clone()), small);
        assert_eq!(unpack(&small).unwrap().as_ref(), small.as_slice());
    }

    #[test]
    fn corrupt_frames_are_errors_not_panics() {
        let mut packed = pack(vec![b'x'; 4096]);
        assert!(unpack(&packed[..6]).is_err(), "truncated length");
        packed[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(unpack(&packed).is_err(), "absurd length");
        let mut packed = pack(vec![b'x'; 4096]);
        packed[4..8].copy_from_slice(&5000u32.to_le_bytes());
        assert!(unpack(&packed).is_err(), "wrong length");
        let mut packed = pack(vec![b'x'; 4096]);
        let n = packed.len();
        packed.truncate(n - 3);
        assert!(unpack(&packed).is_err(), "truncated block");
    }
}
