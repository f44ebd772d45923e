//! Time-to-live: configuration and the stored layout both layers agree on.
//!
//! A state with TTL stores, in front of every value it holds, the time of its last write (or
//! read, with [`TtlUpdate::OnReadAndWrite`]) as 8 bytes, big endian, milliseconds since the
//! epoch. An entry is expired once `stamp + ttl <= now`, the rule Flink uses. Where the stamp
//! sits per state kind:
//!
//! | kind | stored value |
//! |---|---|
//! | value, reducing, aggregating | `[stamp: u64 BE][value]` |
//! | list | each element `[varint len][stamp: u64 BE][element]` |
//! | map | each user value `[stamp: u64 BE][user value]` |
//!
//! The typed state layer writes stamps and hides expired entries; the backends use
//! [`entry_expired`] to remove them for good (RocksDB in compaction, the heap backend when it
//! purges or snapshots). Storing the last-access time rather than the expiry time lets a new
//! job version change the TTL and have it apply to old entries.

use std::time::Duration;

use crate::backend::{key::read_varint, StateKind};

/// Length of the timestamp in front of a stored value of a state with TTL.
pub const STAMP_LEN: usize = 8;

/// When a state's entries expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TtlConfig {
    /// How long an entry lives after its last update.
    pub ttl: Duration,
    /// Which accesses renew an entry.
    pub update: TtlUpdate,
    /// Whether an expired entry that is still stored can be read.
    pub visibility: TtlVisibility,
}

impl TtlConfig {
    /// Entries live `ttl` after their last write, and expired ones are never returned.
    pub fn new(ttl: Duration) -> Self {
        TtlConfig {
            ttl,
            update: TtlUpdate::OnCreateAndWrite,
            visibility: TtlVisibility::NeverReturnExpired,
        }
    }

    /// Sets which accesses renew an entry.
    pub fn update(mut self, update: TtlUpdate) -> Self {
        self.update = update;
        self
    }

    /// Sets whether expired entries that are still stored can be read.
    pub fn visibility(mut self, visibility: TtlVisibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// The TTL in milliseconds, saturating.
    pub fn ttl_millis(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether an entry stamped at `stamp` is expired at `now`.
    pub fn is_expired(&self, stamp: u64, now: u64) -> bool {
        is_expired(stamp, self.ttl_millis(), now)
    }
}

/// Which accesses renew a TTL entry's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TtlUpdate {
    /// Writes (create and update) renew it.
    OnCreateAndWrite,
    /// Reads renew it too.
    OnReadAndWrite,
}

/// Whether an expired entry that has not been removed yet can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TtlVisibility {
    /// Expired entries are never returned.
    NeverReturnExpired,
    /// An expired entry is returned (once: the read removes it) until cleanup removes it.
    ReturnExpiredIfNotCleanedUp,
}

/// `stamp + ttl <= now`, without overflow.
pub fn is_expired(stamp: u64, ttl_millis: u64, now: u64) -> bool {
    stamp.saturating_add(ttl_millis) <= now
}

/// The stamp at the front of `bytes`, if there are enough bytes.
pub fn read_stamp(bytes: &[u8]) -> Option<u64> {
    let stamp: [u8; STAMP_LEN] = bytes.get(..STAMP_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(stamp))
}

/// Whether a whole stored entry of a state of `kind` with TTL is expired and can be removed.
///
/// A list entry is removed only when every element has expired. Bytes that do not parse are
/// never reported expired: cleanup must not destroy what it does not understand.
pub fn entry_expired(kind: StateKind, value: &[u8], ttl_millis: u64, now: u64) -> bool {
    match kind {
        StateKind::List => {
            let mut rest = value;
            let mut any = false;
            while !rest.is_empty() {
                let Some((len, used)) = read_varint(rest) else {
                    return false;
                };
                let Some(element) = rest.get(used..used + len as usize) else {
                    return false;
                };
                match read_stamp(element) {
                    Some(stamp) if is_expired(stamp, ttl_millis, now) => any = true,
                    _ => return false,
                }
                rest = &rest[used + len as usize..];
            }
            any
        }
        _ => read_stamp(value).is_some_and(|stamp| is_expired(stamp, ttl_millis, now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::key::write_varint;

    fn element(stamp: u64, payload: &[u8], out: &mut Vec<u8>) {
        write_varint(out, (STAMP_LEN + payload.len()) as u32);
        out.extend_from_slice(&stamp.to_be_bytes());
        out.extend_from_slice(payload);
    }

    #[test]
    fn expiry_is_inclusive_and_saturating() {
        assert!(!is_expired(100, 10, 109));
        assert!(is_expired(100, 10, 110));
        assert!(!is_expired(u64::MAX - 1, 10, u64::MAX - 1));
    }

    #[test]
    fn list_expires_only_when_every_element_has() {
        let mut list = Vec::new();
        element(100, b"a", &mut list);
        element(200, b"b", &mut list);
        assert!(!entry_expired(StateKind::List, &list, 50, 160));
        assert!(entry_expired(StateKind::List, &list, 50, 250));
        assert!(
            !entry_expired(StateKind::List, &[5, 1], 50, 250),
            "truncated list"
        );
        assert!(!entry_expired(StateKind::List, &[], 50, 250), "empty list");
    }

    #[test]
    fn value_with_short_bytes_is_kept() {
        assert!(!entry_expired(StateKind::Value, &[1, 2, 3], 1, u64::MAX));
        let stamped = 5u64.to_be_bytes();
        assert!(entry_expired(StateKind::Map, &stamped, 1, 6));
    }
}
