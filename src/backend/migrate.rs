//! Schema evolution at the byte level: rewriting the payloads of a stored value.
//!
//! A state's stored values wrap the payloads its value codec wrote (docs/format.md,
//! "Stored values"): a value, an accumulator and a map's user value are `[stamp][payload]`,
//! a list is a run of `[varint len][stamp][payload]` elements, and the stamp is there only
//! for a state with TTL. A migration rewrites each payload and keeps everything around it:
//! the TTL stamps (an entry expires when it would have), the elements' order, the keys.

use crate::backend::key::{read_framed, write_framed};
use crate::backend::{StateKind, StateMeta};
use crate::error::{Error, Result};
use crate::ttl::STAMP_LEN;

/// What a migration does to one payload: reads the old bytes, appends the new ones.
pub type PayloadRewrite<'a> = dyn FnMut(&[u8], &mut Vec<u8>) -> Result<()> + 'a;

/// Writes into `out` (cleared first) the stored value `stored` of state `meta` with every
/// payload rewritten by `rewrite`, stamps and framing kept.
///
/// # Errors
/// [`Error::Codec`] if `stored` does not have the layout of the state's kind; the errors
/// of `rewrite`.
pub(crate) fn rewrite_stored(
    meta: &StateMeta,
    stored: &[u8],
    rewrite: &mut PayloadRewrite<'_>,
    out: &mut Vec<u8>,
    element: &mut Vec<u8>,
) -> Result<()> {
    let stamp_len = if meta.ttl.is_some() { STAMP_LEN } else { 0 };
    let malformed = |detail: String| Error::Codec {
        state: meta.name.clone(),
        action: "decode",
        part: "stored value",
        detail,
    };
    out.clear();
    match meta.kind {
        StateKind::List => {
            let mut rest = stored;
            while !rest.is_empty() {
                let (framed, tail) = read_framed(rest).ok_or_else(|| {
                    malformed(format!(
                        "a list element is truncated ({} bytes left)",
                        rest.len()
                    ))
                })?;
                rest = tail;
                let stamp = framed.get(..stamp_len).ok_or_else(|| {
                    malformed("a list element is shorter than its TTL stamp".into())
                })?;
                element.clear();
                element.extend_from_slice(stamp);
                rewrite(&framed[stamp_len..], element)?;
                if u32::try_from(element.len()).is_err() {
                    return Err(Error::Codec {
                        state: meta.name.clone(),
                        action: "migrate",
                        part: "element",
                        detail: "a migrated element is above the 4 GiB limit".into(),
                    });
                }
                write_framed(out, element);
            }
        }
        StateKind::Timers => {
            return Err(Error::InvalidConfig {
                what: "migration",
                detail: format!("'{}' is a timer set, which holds no values", meta.name),
            })
        }
        StateKind::Value | StateKind::Map | StateKind::Reducing | StateKind::Aggregating => {
            let stamp = stored
                .get(..stamp_len)
                .ok_or_else(|| malformed("a value is shorter than its TTL stamp".into()))?;
            out.extend_from_slice(stamp);
            rewrite(&stored[stamp_len..], out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecInfo;
    use crate::ttl::TtlConfig;
    use std::time::Duration;

    fn meta(kind: StateKind, ttl: bool) -> StateMeta {
        StateMeta {
            name: "s".into(),
            kind,
            key_codec: CodecInfo::new("utf8", 1),
            value_codec: CodecInfo::new("u32-be", 1),
            user_key_codec: None,
            ttl: ttl.then(|| TtlConfig::new(Duration::from_secs(1))),
        }
    }

    /// Doubles each byte: the new payload of old payload `p` is `p` twice over.
    fn double(old: &[u8], out: &mut Vec<u8>) -> Result<()> {
        for b in old {
            out.extend_from_slice(&[*b, *b]);
        }
        Ok(())
    }

    #[test]
    fn payloads_are_rewritten_and_stamps_kept() {
        let (mut out, mut element) = (Vec::new(), Vec::new());
        let stamped = [0, 0, 0, 0, 0, 0, 0, 9, 1, 2];
        rewrite_stored(
            &meta(StateKind::Map, true),
            &stamped,
            &mut double,
            &mut out,
            &mut element,
        )
        .unwrap();
        assert_eq!(out, [0, 0, 0, 0, 0, 0, 0, 9, 1, 1, 2, 2]);
        rewrite_stored(
            &meta(StateKind::Value, false),
            &[3],
            &mut double,
            &mut out,
            &mut element,
        )
        .unwrap();
        assert_eq!(out, [3, 3]);
        // Two elements, the second empty.
        let list = [9, 0, 0, 0, 0, 0, 0, 0, 7, 5, 8, 0, 0, 0, 0, 0, 0, 0, 8];
        rewrite_stored(
            &meta(StateKind::List, true),
            &list,
            &mut double,
            &mut out,
            &mut element,
        )
        .unwrap();
        assert_eq!(
            out,
            [10, 0, 0, 0, 0, 0, 0, 0, 7, 5, 5, 8, 0, 0, 0, 0, 0, 0, 0, 8]
        );
    }

    #[test]
    fn malformed_values_are_errors() {
        let (mut out, mut element) = (Vec::new(), Vec::new());
        for (kind, stored) in [
            (StateKind::Value, &[1u8, 2][..]),
            (StateKind::List, &[5, 1][..]),
            (StateKind::List, &[2, 1, 2][..]),
        ] {
            assert!(
                rewrite_stored(
                    &meta(kind, true),
                    stored,
                    &mut double,
                    &mut out,
                    &mut element
                )
                .is_err(),
                "{kind:?} {stored:?}"
            );
        }
    }
}
