//! Compression of the JSON parts of a person's record (and of timeline chunks, `chunks`):
//! LZ4 against a fixed dictionary.
//!
//! A record's parts are small (about 1.6 KB of JSON for a person with a stay, a referral
//! and a package), and most of their bytes are field names and vocabulary repeated in every
//! record. Compressed alone they hardly shrink (LZ4 keeps 64%); against a dictionary that
//! already holds those names and values they keep about a third (the benchmark's records:
//! 1,583 → 525 bytes, docs/performance.md). Smaller records make sled's copy-on-write
//! leaves smaller, keep more people's records in its page cache, and take less disk.
//! LZ4 rather than zstd: zstd with the same dictionary kept a quarter, but cost about
//! 15 µs to compress a record and 6 µs to read it against LZ4's 8 µs and 1.6 µs, paid on
//! every event and every read.
//!
//! A packed value is the plain length (u32 big-endian) and then an LZ4 block (the standard
//! block format, with the dictionary as its external dictionary).
//!
//! The dictionary (`record-dictionary-1.dict`) is the three parts of the record of the
//! person the contract's example events describe (`schemas/examples`, one of each type
//! from admission to a sourced package), as projected by layout 7. It is **frozen**:
//! every stored record depends on it byte for byte. A better dictionary needs a new record
//! version byte, with this one kept for reading the records written with it.

/// The dictionary of record version 4.
pub(crate) const DICTIONARY_1: &[u8] = include_bytes!("record-dictionary-1.dict");

/// The dictionary of timeline chunk version 1 (`chunks`).
pub(crate) const EVENT_DICTIONARY_1: &[u8] = include_bytes!("event-dictionary-1.dict");

/// The largest plain size accepted (a guard against a corrupt length).
const MAX_PLAIN: usize = 64 << 20;

/// Packs `plain`: its length, then the LZ4 block (against the record dictionary).
pub(crate) fn pack(plain: &[u8]) -> Vec<u8> {
    pack_with(plain, DICTIONARY_1)
}

/// Unpacks a value written by [`pack`]; `None` when it is not one.
pub(crate) fn unpack(packed: &[u8]) -> Option<Vec<u8>> {
    unpack_with(packed, DICTIONARY_1)
}

/// Packs `plain` against `dictionary`.
pub(crate) fn pack_with(plain: &[u8], dictionary: &[u8]) -> Vec<u8> {
    let bound = lz4_flex::block::get_maximum_output_size(plain.len());
    let mut out = vec![0u8; 4 + bound];
    out[..4].copy_from_slice(&(plain.len() as u32).to_be_bytes());
    // The output has the room LZ4 can need at most, so this does not fail.
    let n = lz4_flex::block::compress_into_with_dict(plain, &mut out[4..], dictionary)
        .unwrap_or_else(|_| unreachable!("an LZ4 output buffer of the maximum output size"));
    out.truncate(4 + n);
    out
}

/// Unpacks a value written by [`pack_with`] against `dictionary`; `None` when it is not one.
pub(crate) fn unpack_with(packed: &[u8], dictionary: &[u8]) -> Option<Vec<u8>> {
    let len = unpacked_len(packed)? as usize;
    // Into a buffer of exactly the plain length, not zeroed first: a block that would write
    // past it is refused (`OutputTooSmall`), one that writes less fails the length check.
    let out = lz4_flex::block::decompress_with_dict(&packed[4..], len, dictionary).ok()?;
    (out.len() == len).then_some(out)
}

/// The length of the plain bytes a value written by [`pack`] holds, from its prefix.
pub(crate) fn unpacked_len(packed: &[u8]) -> Option<u64> {
    let len = u32::from_be_bytes(packed.get(..4)?.try_into().ok()?) as usize;
    (len <= MAX_PLAIN).then_some(len as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_dictionary_is_frozen() {
        // Every record of version 4 was compressed against these bytes: changing them makes
        // those records unreadable. A new dictionary needs a new record version.
        assert_eq!(DICTIONARY_1.len(), 2850);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in DICTIONARY_1 {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(h, 277_085_294_334_355_118, "fnv of the dictionary");
    }

    #[test]
    fn round_trip_and_rejects() {
        let plain = br#"{"j":{"nhs_number":"9434765919","identity":{"local_ids":[]},"stays":[{"encounter_id":"RX1-ENC-0042","status":"in-hospital","source":"urn:ods:RX1:pas"}]}}"#;
        let packed = pack(plain);
        assert!(packed.len() < plain.len() / 2, "{} bytes", packed.len());
        assert_eq!(unpack(&packed).unwrap(), plain);
        assert_eq!(unpacked_len(&packed), Some(plain.len() as u64));
        assert_eq!(unpack(&pack(b"")).unwrap(), b"");
        // Not a packed value, a truncated one, one whose length is wrong.
        assert_eq!(unpack(b"{\"j\":{}}"), None);
        assert_eq!(unpack(&packed[..packed.len() - 1]), None);
        let mut longer = packed.clone();
        longer[3] += 1;
        assert_eq!(unpack(&longer), None);
        let mut huge = packed.clone();
        huge[0] = 0xff;
        assert_eq!(unpack(&huge), None);
    }

    #[test]
    fn corrupt_blocks_are_refused_or_read_to_their_stated_length() {
        // A stored value damaged on disk: every byte of a record and of a chunk-sized value
        // changed in turn (three ways), and every truncation. The decoder must answer None
        // or a value of exactly the stated length, never panic or read outside the block.
        let record = br#"{"j":{"nhs_number":"9434765919","identity":{"local_ids":[{"system":"urn:ods:RX1","value":"RX1-000123"}]},"stays":[{"encounter_id":"RX1-ENC-0042","status":"in-hospital","site":"RX1CC","source":"urn:ods:RX1:pas","admitted_at":"2026-11-01T10:00:00Z"}],"referrals":[],"care_packages":[]},"s":[1,2,3]}"#;
        let chunk: Vec<u8> = (0..16u32)
            .flat_map(|i| format!(r#"{{"id":"e{i}","source":"urn:ods:RX1:pas","type":"handover.discharge.admitted.v1","data":{{"site":"RX1CC","n":{i}}}}}"#).into_bytes())
            .collect();
        for (plain, dict) in [
            (&record[..], DICTIONARY_1),
            (&chunk[..], EVENT_DICTIONARY_1),
        ] {
            let packed = pack_with(plain, dict);
            assert_eq!(unpack_with(&packed, dict).as_deref(), Some(plain));
            let mut refused = 0;
            for i in 0..packed.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = packed.clone();
                    bad[i] ^= flip;
                    match unpack_with(&bad, dict) {
                        None => refused += 1,
                        Some(out) => assert_eq!(out.len() as u64, unpacked_len(&bad).unwrap()),
                    }
                }
                if let Some(out) = unpack_with(&packed[..i], dict) {
                    assert_eq!(out.len() as u64, unpacked_len(&packed[..i]).unwrap());
                }
            }
            assert!(
                refused > packed.len(),
                "{refused} of {} refused",
                3 * packed.len()
            );
        }
    }
}
