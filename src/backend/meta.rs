//! What a backend records about each registered state, and its persisted encoding.
//!
//! The RocksDB backend keeps these records in its internal column family so that a reopened
//! directory knows its states before any is registered again; snapshots will carry them too.
//! Layout (docs/format.md, "state metadata"), all integers big endian, strings as
//! `[varint len][UTF-8]`:
//!
//! ```text
//! [version: u8 = 1][kind: u8][name][key codec id][key codec version: u32]
//! [value codec id][value codec version: u32]
//! [has user key codec: u8][user key codec id][user key codec version: u32]   (id+version only if 1)
//! [has ttl: u8][ttl ms: u64][update: u8][visibility: u8]                    (last three only if 1)
//! ```
//!
//! Version 2 has the same layout and adds kind 5, timers: a record is written as version 1
//! unless it is a timer set's, so that a cairn that reads only version 1 refuses timers with
//! a version error instead of misreading them, and reads everything else as before.

use std::fmt;
use std::time::Duration;

use crate::backend::key::{read_framed, read_varint, write_framed};
use crate::codec::CodecInfo;
use crate::ttl::{TtlConfig, TtlUpdate, TtlVisibility};

/// The newest version of the state metadata encoding: this cairn reads 1 and 2, and writes
/// 2 only for timer sets.
pub const STATE_META_VERSION: u8 = 2;

/// The value codec a timer set records: its entries have empty values.
pub(crate) const TIMER_VALUE_CODEC: (&str, u32) = ("empty", 1);

/// The kind of a keyed state. Reducing and aggregating states store like value states but are
/// kinds of their own, so one cannot be reopened as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// One value per key and namespace.
    Value,
    /// A list of elements per key and namespace, appended to with a merge.
    List,
    /// A map from user keys to user values per key and namespace.
    Map,
    /// A value folded by a reduce function on every add.
    Reducing,
    /// An accumulator folded by an aggregate function on every add.
    Aggregating,
    /// A timer set: one timer service's timers of one time domain (see [`TimerService`]).
    /// Its entries are timer keys with empty values; they change only through the timer
    /// methods of [`KeyedStateBackend`].
    ///
    /// [`TimerService`]: crate::TimerService
    /// [`KeyedStateBackend`]: crate::KeyedStateBackend
    Timers,
}

impl StateKind {
    fn code(self) -> u8 {
        match self {
            StateKind::Value => 0,
            StateKind::List => 1,
            StateKind::Map => 2,
            StateKind::Reducing => 3,
            StateKind::Aggregating => 4,
            StateKind::Timers => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => StateKind::Value,
            1 => StateKind::List,
            2 => StateKind::Map,
            3 => StateKind::Reducing,
            4 => StateKind::Aggregating,
            5 => StateKind::Timers,
            _ => return None,
        })
    }

    /// The first version of the state record that has this kind.
    fn since_version(self) -> u8 {
        if self == StateKind::Timers {
            2
        } else {
            1
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateKind::Value => "value state",
            StateKind::List => "list state",
            StateKind::Map => "map state",
            StateKind::Reducing => "reducing state",
            StateKind::Aggregating => "aggregating state",
            StateKind::Timers => "timer set",
        })
    }
}

/// Everything a backend knows about one state: its name, kind, codecs and TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMeta {
    /// The state's name, unique within the operator.
    pub name: String,
    /// Its kind.
    pub kind: StateKind,
    /// The codec of its keys.
    pub key_codec: CodecInfo,
    /// The codec of its values (list elements, map user values, accumulators).
    pub value_codec: CodecInfo,
    /// The codec of its user keys (map state only).
    pub user_key_codec: Option<CodecInfo>,
    /// Its time-to-live, if any.
    pub ttl: Option<TtlConfig>,
}

impl StateMeta {
    /// Whether `other` can use the entries stored under this meta: same kind, codecs and
    /// TTL on or off. (The TTL duration and policies may change between job versions.)
    pub fn same_layout(&self, other: &StateMeta) -> bool {
        self.kind == other.kind
            && self.key_codec == other.key_codec
            && self.value_codec == other.value_codec
            && self.user_key_codec == other.user_key_codec
            && self.ttl.is_some() == other.ttl.is_some()
    }

    /// Whether `other` differs from this meta only in its value codec (and TTL settings):
    /// a change schema evolution may resolve. Kind, key codecs and TTL presence never
    /// change.
    pub fn same_but_value_codec(&self, other: &StateMeta) -> bool {
        self.kind == other.kind
            && self.key_codec == other.key_codec
            && self.user_key_codec == other.user_key_codec
            && self.ttl.is_some() == other.ttl.is_some()
            && self.value_codec != other.value_codec
    }

    /// The version of the state record this meta is written with: 1, or 2 for a timer set.
    pub fn record_version(&self) -> u8 {
        self.kind.since_version()
    }

    /// A one-line description for error messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} (key {}, value {}",
            self.kind, self.key_codec, self.value_codec
        );
        if let Some(uk) = &self.user_key_codec {
            s.push_str(&format!(", user key {uk}"));
        }
        match &self.ttl {
            Some(ttl) => s.push_str(&format!(", ttl {:?})", ttl.ttl)),
            None => s.push_str(", no ttl)"),
        }
        s
    }

    /// Appends the persisted encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.record_version());
        out.push(self.kind.code());
        write_framed(out, self.name.as_bytes());
        write_codec(out, &self.key_codec);
        write_codec(out, &self.value_codec);
        match &self.user_key_codec {
            Some(codec) => {
                out.push(1);
                write_codec(out, codec);
            }
            None => out.push(0),
        }
        match &self.ttl {
            Some(ttl) => {
                out.push(1);
                out.extend_from_slice(&ttl.ttl_millis().to_be_bytes());
                out.push(match ttl.update {
                    TtlUpdate::OnCreateAndWrite => 0,
                    TtlUpdate::OnReadAndWrite => 1,
                });
                out.push(match ttl.visibility {
                    TtlVisibility::NeverReturnExpired => 0,
                    TtlVisibility::ReturnExpiredIfNotCleanedUp => 1,
                });
            }
            None => out.push(0),
        }
    }

    /// Decodes the persisted encoding; the error says what was wrong.
    pub fn decode(bytes: &[u8]) -> Result<StateMeta, String> {
        let mut r = Reader(bytes);
        let version = r.u8("version")?;
        if version == 0 || version > STATE_META_VERSION {
            return Err(format!(
                "state metadata version {version} is not supported (this cairn reads 1..={STATE_META_VERSION}); \
                 use a newer cairn"
            ));
        }
        let kind_code = r.u8("kind")?;
        let kind = StateKind::from_code(kind_code)
            .filter(|kind| kind.since_version() <= version)
            .ok_or(format!(
                "unknown state kind {kind_code} in a version {version} record"
            ))?;
        let name = r.string("name")?;
        let key_codec = r.codec("key codec")?;
        let value_codec = r.codec("value codec")?;
        let user_key_codec = match r.u8("user key codec flag")? {
            0 => None,
            1 => Some(r.codec("user key codec")?),
            other => return Err(format!("bad user key codec flag {other}")),
        };
        let ttl = match r.u8("ttl flag")? {
            0 => None,
            1 => {
                let millis = u64::from_be_bytes(r.array("ttl")?);
                let update = match r.u8("ttl update")? {
                    0 => TtlUpdate::OnCreateAndWrite,
                    1 => TtlUpdate::OnReadAndWrite,
                    other => return Err(format!("bad ttl update type {other}")),
                };
                let visibility = match r.u8("ttl visibility")? {
                    0 => TtlVisibility::NeverReturnExpired,
                    1 => TtlVisibility::ReturnExpiredIfNotCleanedUp,
                    other => return Err(format!("bad ttl visibility {other}")),
                };
                Some(TtlConfig {
                    ttl: Duration::from_millis(millis),
                    update,
                    visibility,
                })
            }
            other => return Err(format!("bad ttl flag {other}")),
        };
        if !r.0.is_empty() {
            return Err(format!("{} trailing bytes", r.0.len()));
        }
        Ok(StateMeta {
            name,
            kind,
            key_codec,
            value_codec,
            user_key_codec,
            ttl,
        })
    }
}

fn write_codec(out: &mut Vec<u8>, codec: &CodecInfo) {
    write_framed(out, codec.id.as_bytes());
    out.extend_from_slice(&codec.version.to_be_bytes());
}

/// A cursor over bytes whose every read is checked.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let head = self
            .0
            .get(..N)
            .ok_or_else(|| format!("truncated at {what}"))?;
        let array = head
            .try_into()
            .map_err(|_| format!("truncated at {what}"))?;
        self.0 = &self.0[N..];
        Ok(array)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn framed(&mut self, what: &str) -> Result<&'a [u8], String> {
        let (bytes, rest) = read_framed(self.0).ok_or_else(|| format!("truncated at {what}"))?;
        self.0 = rest;
        Ok(bytes)
    }

    pub(crate) fn varint(&mut self, what: &str) -> Result<u32, String> {
        let (value, used) = read_varint(self.0).ok_or_else(|| format!("bad varint at {what}"))?;
        self.0 = &self.0[used..];
        Ok(value)
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String, String> {
        let bytes = self.framed(what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn codec(&mut self, what: &str) -> Result<CodecInfo, String> {
        let id = self.string(what)?;
        let version = u32::from_be_bytes(self.array(what)?);
        Ok(CodecInfo { id, version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StateMeta {
        StateMeta {
            name: "m".into(),
            kind: StateKind::Map,
            key_codec: CodecInfo::new("utf8", 1),
            value_codec: CodecInfo::new("u64-be", 2),
            user_key_codec: Some(CodecInfo::new("bytes", 1)),
            ttl: Some(TtlConfig::new(Duration::from_millis(258)).update(TtlUpdate::OnReadAndWrite)),
        }
    }

    #[test]
    fn encoding_is_pinned() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        #[rustfmt::skip]
        let expected = [
            1, 2, 1, b'm',
            4, b'u', b't', b'f', b'8', 0, 0, 0, 1,
            6, b'u', b'6', b'4', b'-', b'b', b'e', 0, 0, 0, 2,
            1, 5, b'b', b'y', b't', b'e', b's', 0, 0, 0, 1,
            1, 0, 0, 0, 0, 0, 0, 1, 2, 1, 0,
        ];
        assert_eq!(out, expected);
        assert_eq!(StateMeta::decode(&out), Ok(sample()));
    }

    #[test]
    fn timer_records_are_version_2() {
        let timers = StateMeta {
            name: "_cairn_timers/w/event".into(),
            kind: StateKind::Timers,
            key_codec: CodecInfo::new("utf8", 1),
            value_codec: CodecInfo::new("empty", 1),
            user_key_codec: None,
            ttl: None,
        };
        let mut out = Vec::new();
        timers.encode(&mut out);
        assert_eq!(&out[..3], [2, 5, 21]);
        assert_eq!(StateMeta::decode(&out), Ok(timers));
        // Version 1 has no kind 5; and a reader of version 1 only would refuse version 2
        // by its version byte, as this one refuses version 3.
        out[0] = 1;
        assert!(StateMeta::decode(&out)
            .unwrap_err()
            .contains("unknown state kind 5"));
        out[0] = 3;
        assert!(StateMeta::decode(&out)
            .unwrap_err()
            .contains("use a newer cairn"));
        // Everything else is still written as version 1.
        let mut plain = Vec::new();
        sample().encode(&mut plain);
        assert_eq!(plain[0], 1);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        for len in 0..out.len() {
            assert!(StateMeta::decode(&out[..len]).is_err(), "length {len}");
        }
        out[0] = 9;
        assert!(StateMeta::decode(&out).unwrap_err().contains("version 9"));
    }
}
