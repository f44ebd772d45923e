//! Fuzz target `state_record`: the state record and the RocksDB backend record
//! (docs/format.md, section 5), and how the CLI decodes a stored value by its state record.

use arbitrary::Unstructured;

use crate::backend::rocksdb::{encode_backend_record, parse_backend_record};
use crate::backend::{StateKind, StateMeta};
use crate::keygroup::MaxParallelism;
use crate::tools::decode::{decode_stored, Stored};

use super::recipe;

/// Decodes `data` as a state record and as a backend record; checks what either accepts,
/// then round-trips a valid state record and decodes a stored value by it. The answer is
/// the state record decoder's.
pub fn state_record(data: &[u8]) -> Result<(), String> {
    let decoded = StateMeta::decode(data);
    if let Ok(meta) = &decoded {
        let mut again = Vec::new();
        meta.encode(&mut again);
        assert!(again.len() <= data.len(), "an accepted state record grew");
        assert_eq!(
            StateMeta::decode(&again).as_ref(),
            Ok(meta),
            "an accepted state record does not survive encode and decode"
        );
    }
    if let Ok((max, range)) = parse_backend_record(data) {
        assert_eq!(data.len(), 9, "a backend record is 9 bytes");
        assert!(range.start() <= range.end());
        // The record is checked against the backend's own max parallelism, not here; a
        // valid one encodes back to the same bytes.
        if let Ok(max) = MaxParallelism::new(max) {
            assert_eq!(encode_backend_record(max, range), data, "backend record");
        }
    }
    let mut u = Unstructured::new(data);
    if let Ok(name) = u.arbitrary::<String>() {
        if let Ok(meta) = recipe::state_meta(&mut u, name) {
            let mut bytes = Vec::new();
            meta.encode(&mut bytes);
            assert_eq!(
                StateMeta::decode(&bytes),
                Ok(meta.clone()),
                "decode(encode)"
            );
            if let (Ok(stored), Ok(now)) = (recipe::bytes(&mut u, 64), u.arbitrary::<u64>()) {
                check_stored(&meta, &stored, now);
            }
        }
    }
    decoded.map(|_| ())
}

/// `cairn dump`'s decoding of a stored value: a list splits into elements that frame it
/// exactly; anything else is one value, stamped when the state has TTL.
fn check_stored(meta: &StateMeta, stored: &[u8], now: u64) {
    match decode_stored(meta, stored, now) {
        Some(Stored::List(elements)) => {
            assert_eq!(meta.kind, StateKind::List);
            assert!(elements.len() <= stored.len(), "more elements than bytes");
        }
        Some(Stored::One(value)) => {
            assert_ne!(meta.kind, StateKind::List);
            assert_eq!(value.written_at_millis.is_some(), meta.ttl.is_some());
        }
        None => assert!(
            meta.kind == StateKind::List || meta.ttl.is_some(),
            "a value without TTL always decodes"
        ),
    }
}
