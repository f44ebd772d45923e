//! Stored bytes shown as text, by the codec ids that state metadata records.
//!
//! UTF-8 and the fixed-width integer codecs decode to text; everything else (`bytes`,
//! `bincode-1.3`, which needs the type to decode, and codecs cairn does not know) is shown
//! as `0x` and lowercase hex. TTL stamps become expiry times.

use serde::Serialize;

use crate::backend::key::read_varint;
use crate::backend::{StateKind, StateMeta};
use crate::codec::CodecInfo;
use crate::ttl::{read_stamp, STAMP_LEN};

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// `bytes` as text by `codec`: UTF-8 text, an integer in decimal, or `0x` + hex when the
/// codec is not one of those or the bytes do not decode with it.
pub(crate) fn decode_scalar(codec: &CodecInfo, bytes: &[u8]) -> String {
    let as_hex = || format!("0x{}", hex(bytes));
    match codec.id.as_str() {
        "utf8" => std::str::from_utf8(bytes).map_or_else(|_| as_hex(), str::to_owned),
        id => match integer(id, bytes) {
            Some(text) => text,
            None => as_hex(),
        },
    }
}

/// A big-endian integer codec's value, if `id` is one and `bytes` has its width.
fn integer(id: &str, bytes: &[u8]) -> Option<String> {
    let (signed, width) = match id {
        "u8" => (false, 1),
        "i8" => (true, 1),
        "u16-be" => (false, 2),
        "i16-be" => (true, 2),
        "u32-be" => (false, 4),
        "i32-be" => (true, 4),
        "u64-be" => (false, 8),
        "i64-be" => (true, 8),
        _ => return None,
    };
    if bytes.len() != width {
        return None;
    }
    let mut wide = [0u8; 8];
    wide[8 - width..].copy_from_slice(bytes);
    let unsigned = u64::from_be_bytes(wide);
    if !signed {
        return Some(unsigned.to_string());
    }
    // Sign-extend from `width` bytes.
    let shift = 64 - 8 * width as u32;
    let value = ((unsigned << shift) as i64) >> shift;
    Some(value.to_string())
}

/// One stored value (a value, an accumulator, a map's user value or one list element),
/// decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecodedValue {
    /// The value as text (see the module docs).
    pub value: String,
    /// Its bytes in hex, without the TTL stamp.
    pub value_hex: String,
    /// With TTL: when it was last written (or read, with update on read), in milliseconds
    /// since the Unix epoch.
    pub written_at_millis: Option<u64>,
    /// With TTL: when it expires, in milliseconds since the Unix epoch.
    pub expires_at_millis: Option<u64>,
    /// With TTL: the expiry as an RFC 3339 UTC time.
    pub expires_at: Option<String>,
    /// With TTL: whether it had expired when the tool ran (a restored job would not see it).
    pub expired: Option<bool>,
}

fn decode_payload(codec: &CodecInfo, payload: &[u8]) -> DecodedValue {
    DecodedValue {
        value: decode_scalar(codec, payload),
        value_hex: hex(payload),
        written_at_millis: None,
        expires_at_millis: None,
        expires_at: None,
        expired: None,
    }
}

fn decode_one(meta: &StateMeta, stored: &[u8], now: u64) -> Option<DecodedValue> {
    let Some(ttl) = meta.ttl else {
        return Some(decode_payload(&meta.value_codec, stored));
    };
    let stamp = read_stamp(stored)?;
    let mut decoded = decode_payload(&meta.value_codec, stored.get(STAMP_LEN..)?);
    let expires = stamp.saturating_add(ttl.ttl_millis());
    decoded.written_at_millis = Some(stamp);
    decoded.expires_at_millis = Some(expires);
    decoded.expires_at = Some(format_millis(expires));
    decoded.expired = Some(expires <= now);
    Some(decoded)
}

/// A stored value, decoded as its state's kind says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    /// A value, reducing or aggregating state's value, or a map's user value.
    One(DecodedValue),
    /// A list's elements.
    List(Vec<DecodedValue>),
}

/// A stored value split and decoded as its state's kind says. `None` if the bytes do not
/// have the layout of the kind (then show them raw).
pub(crate) fn decode_stored(meta: &StateMeta, stored: &[u8], now: u64) -> Option<Stored> {
    if meta.kind != StateKind::List {
        return decode_one(meta, stored, now).map(Stored::One);
    }
    let mut elements = Vec::new();
    let mut rest = stored;
    while !rest.is_empty() {
        let (len, used) = read_varint(rest)?;
        let end = used.checked_add(usize::try_from(len).ok()?)?;
        elements.push(decode_one(meta, rest.get(used..end)?, now)?);
        rest = rest.get(end..)?;
    }
    Some(Stored::List(elements))
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time, e.g.
/// `2023-11-14T22:13:20.000Z`.
pub fn format_millis(millis: u64) -> String {
    let secs = millis / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        millis % 1000
    )
}

/// The proleptic Gregorian date of `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ttl::TtlConfig;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn codecs_decode_to_text_or_hex() {
        let c = |id: &str| CodecInfo::new(id, 1);
        assert_eq!(decode_scalar(&c("utf8"), b"hello"), "hello");
        assert_eq!(decode_scalar(&c("utf8"), &[0xff]), "0xff");
        assert_eq!(decode_scalar(&c("u64-be"), &42u64.to_be_bytes()), "42");
        assert_eq!(decode_scalar(&c("i32-be"), &(-7i32).to_be_bytes()), "-7");
        assert_eq!(decode_scalar(&c("i8"), &[0x80]), "-128");
        assert_eq!(decode_scalar(&c("u16-be"), &[1]), "0x01", "wrong width");
        assert_eq!(decode_scalar(&c("bincode-1.3"), &[1, 0]), "0x0100");
        assert_eq!(decode_scalar(&c("bytes"), &[]), "0x");
    }

    #[test]
    fn lists_split_and_stamps_become_expiry_times() {
        let meta = StateMeta {
            name: "l".into(),
            kind: StateKind::List,
            key_codec: CodecInfo::new("utf8", 1),
            value_codec: CodecInfo::new("u32-be", 1),
            user_key_codec: None,
            ttl: Some(TtlConfig::new(Duration::from_millis(10))),
        };
        let mut stored = Vec::new();
        for (stamp, v) in [(100u64, 1u32), (200, 2)] {
            stored.push(12);
            stored.extend_from_slice(&stamp.to_be_bytes());
            stored.extend_from_slice(&v.to_be_bytes());
        }
        let Some(Stored::List(elements)) = decode_stored(&meta, &stored, 150) else {
            panic!("a list");
        };
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].value, "1");
        assert_eq!(elements[0].expires_at_millis, Some(110));
        assert_eq!(elements[0].expired, Some(true));
        assert_eq!(elements[1].expired, Some(false));
        assert!(decode_stored(&meta, &stored[..5], 0).is_none(), "truncated");
    }
}
