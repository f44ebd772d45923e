//! Timers at the byte level: the key a timer is stored under, and the queue that finds the
//! next due timer across key groups without looking at every key group.
//!
//! A timer service keeps one *timer set* per time domain, a state of kind
//! [`StateKind::Timers`](crate::StateKind::Timers) named `_cairn_timers/<service>/event` or
//! `_cairn_timers/<service>/processing` (RocksDB: one column family each). A timer is one
//! entry, its value empty, its key (docs/format.md, "Timer keys"):
//!
//! ```text
//! [key group: u16 BE][timestamp: u64 BE][varint len][key bytes][varint len][namespace bytes]
//! ```
//!
//! The key group in front keeps a key group's timers contiguous, so snapshots, clipping
//! and ingestion on rescale treat timers as any other state; the timestamp next keeps them in
//! time order inside their key group (big endian: byte order is numeric order). A timer
//! registered twice for the same (key, namespace, timestamp) is the same entry: one timer.
//!
//! [`TimerQueue`] is the in-memory index over a timer set (Flink's
//! `RocksDBCachingPriorityQueueSet` per key group under a `KeyGroupPartitionedPriorityQueue`):
//! per key group a sorted cache of its earliest timers, at most [`CACHE_PER_KEY_GROUP`], and
//! an ordered set of the key groups' heads. The earliest timer of the subtask is the first
//! head; polling it touches one key group's cache, and the store is read only when a cache
//! runs empty while its key group has more timers. The store (a RocksDB column family, or
//! the heap backend's map) stays the truth: the queue is rebuilt from it after a restore.

use std::collections::BTreeSet;

use crate::backend::key::{read_framed, write_framed};
use crate::error::{Error, Result};
use crate::keygroup::{KeyGroup, KeyGroupRange};

/// What a timer state's name starts with; the rest is `<service>/<domain>`.
pub(crate) const TIMER_STATE_PREFIX: &str = "_cairn_timers/";

/// How many of a key group's earliest timers the queue keeps in memory (Flink's default).
pub(crate) const CACHE_PER_KEY_GROUP: usize = 128;

/// Which clock a timer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeDomain {
    /// Event time: timers fire when the watermark reaches them.
    EventTime,
    /// Processing time: timers fire when the processing time reaches them.
    ProcessingTime,
}

impl TimeDomain {
    /// The domain's part of a timer state's name: `event` or `processing`.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeDomain::EventTime => "event",
            TimeDomain::ProcessingTime => "processing",
        }
    }
}

/// The state name of a timer service's timers of one domain:
/// `_cairn_timers/<service>/<event|processing>`.
pub(crate) fn timer_state_name(service: &str, domain: TimeDomain) -> String {
    format!("{TIMER_STATE_PREFIX}{service}/{}", domain.as_str())
}

/// The service and domain of a timer state's name; `None` if it is not one.
pub(crate) fn parse_timer_state_name(name: &str) -> Option<(&str, TimeDomain)> {
    let rest = name.strip_prefix(TIMER_STATE_PREFIX)?;
    let (service, domain) = rest.rsplit_once('/')?;
    let domain = match domain {
        "event" => TimeDomain::EventTime,
        "processing" => TimeDomain::ProcessingTime,
        _ => return None,
    };
    (!service.is_empty()).then_some((service, domain))
}

/// Writes the key of a timer into `out` (cleared first).
pub fn write_timer_key(
    out: &mut Vec<u8>,
    key_group: KeyGroup,
    timestamp: u64,
    key: &[u8],
    namespace: &[u8],
) {
    out.clear();
    out.extend_from_slice(&key_group.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    write_framed(out, key);
    write_framed(out, namespace);
}

/// The parts of a timer's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerKey<'a> {
    /// The key group of the key.
    pub key_group: KeyGroup,
    /// When the timer fires (milliseconds, in its time domain).
    pub timestamp: u64,
    /// The serialized key.
    pub key: &'a [u8],
    /// The namespace (empty when none).
    pub namespace: &'a [u8],
}

impl<'a> TimerKey<'a> {
    /// Parses a timer key; `None` if it is not exactly one.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let key_group = KeyGroup::from_be_bytes(bytes.get(..2)?.try_into().ok()?);
        let timestamp = u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?);
        let (key, rest) = read_framed(&bytes[10..])?;
        let (namespace, rest) = read_framed(rest)?;
        rest.is_empty().then_some(TimerKey {
            key_group,
            timestamp,
            key,
            namespace,
        })
    }
}

/// The timestamp of a timer key whose layout was checked when it was added.
fn timestamp_of(timer: &[u8]) -> u64 {
    timer
        .get(2..10)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Where a timer set is stored: sorted timer keys, the truth the queue caches.
pub(crate) trait TimerStore {
    /// Stores `timer`.
    fn insert(&mut self, timer: &[u8]) -> Result<()>;

    /// Removes `timer`.
    fn remove(&mut self, timer: &[u8]) -> Result<()>;

    /// Appends to `out`, in order, up to `limit` timers of `key_group`, from `from` on
    /// (inclusive; the start of the key group if `None`).
    fn load(
        &mut self,
        key_group: KeyGroup,
        from: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<()>;
}

/// One key group's earliest timers.
#[derive(Debug, Default)]
struct GroupCache {
    /// The smallest timers of the key group, at most [`CACHE_PER_KEY_GROUP`]. Every stored
    /// timer not here is greater than the last one here.
    timers: BTreeSet<Vec<u8>>,
    /// Whether `timers` holds every timer of the key group.
    complete: bool,
    /// No stored timer of the key group is below it: where the next load seeks, past the
    /// tombstones that polling leaves in RocksDB.
    floor: Option<Vec<u8>>,
    /// The timestamp of the first timer, as entered in the heads.
    head: Option<u64>,
}

/// The in-memory index of one timer set of a subtask: see the module docs.
#[derive(Debug)]
pub(crate) struct TimerQueue {
    range: KeyGroupRange,
    groups: Vec<GroupCache>,
    /// (timestamp of the first timer, key group) of every key group that has timers.
    heads: BTreeSet<(u64, KeyGroup)>,
}

impl TimerQueue {
    /// Builds the queue of the timers `store` holds for `range`: loads each key group's
    /// earliest timers.
    pub(crate) fn load(range: KeyGroupRange, store: &mut dyn TimerStore) -> Result<Self> {
        let mut queue = TimerQueue {
            range,
            groups: (0..range.len()).map(|_| GroupCache::default()).collect(),
            heads: BTreeSet::new(),
        };
        for key_group in range.iter() {
            queue.refill(store, key_group)?;
        }
        Ok(queue)
    }

    fn index(&self, key_group: KeyGroup) -> Result<usize> {
        if !self.range.contains(key_group) {
            return Err(Error::InvalidConfig {
                what: "timer",
                detail: format!("key group {key_group} is outside {}", self.range),
            });
        }
        Ok(usize::from(key_group - self.range.start()))
    }

    /// Adds `timer` (a timer key, checked by the caller); a timer already there stays one.
    pub(crate) fn add(&mut self, store: &mut dyn TimerStore, timer: &[u8]) -> Result<()> {
        let key_group = parse(timer)?.key_group;
        let index = self.index(key_group)?;
        let group = &mut self.groups[index];
        if group.timers.contains(timer) {
            return Ok(());
        }
        store.insert(timer)?;
        if group.floor.as_deref().is_some_and(|floor| timer < floor) {
            group.floor = Some(timer.to_vec());
        }
        let below_last = group
            .timers
            .last()
            .is_some_and(|last| timer < last.as_slice());
        if group.complete || below_last {
            group.timers.insert(timer.to_vec());
            if group.timers.len() > CACHE_PER_KEY_GROUP {
                // The last one stays in the store only.
                group.timers.pop_last();
                group.complete = false;
            }
        }
        self.update_head(key_group);
        Ok(())
    }

    /// Removes `timer`; a timer that is not there changes nothing.
    pub(crate) fn delete(&mut self, store: &mut dyn TimerStore, timer: &[u8]) -> Result<()> {
        let key_group = parse(timer)?.key_group;
        let index = self.index(key_group)?;
        let group = &mut self.groups[index];
        let was_first = group.timers.first().is_some_and(|first| first == timer);
        if group.timers.remove(timer) {
            store.remove(timer)?;
            if was_first && !group.complete {
                group.floor = Some(timer.to_vec());
            }
        } else if !group.complete && group.timers.last().is_some_and(|l| timer > l.as_slice()) {
            // Beyond the cache: it may be in the store.
            store.remove(timer)?;
        }
        if group.timers.is_empty() && !group.complete {
            self.refill(store, key_group)?;
        }
        self.update_head(key_group);
        Ok(())
    }

    /// Removes the earliest timer if its timestamp is at most `up_to`, into `out`; false if
    /// no timer is due.
    pub(crate) fn poll(
        &mut self,
        store: &mut dyn TimerStore,
        up_to: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool> {
        let Some(&(timestamp, key_group)) = self.heads.first() else {
            return Ok(false);
        };
        if timestamp > up_to {
            return Ok(false);
        }
        let index = self.index(key_group)?;
        let group = &mut self.groups[index];
        let Some(timer) = group.timers.pop_first() else {
            return Ok(false);
        };
        store.remove(&timer)?;
        out.clear();
        out.extend_from_slice(&timer);
        if !group.complete {
            group.floor = Some(timer);
            if group.timers.is_empty() {
                self.refill(store, key_group)?;
            }
        }
        self.update_head(key_group);
        Ok(true)
    }

    /// The timestamp of the earliest timer.
    pub(crate) fn peek(&self) -> Option<u64> {
        self.heads.first().map(|&(timestamp, _)| timestamp)
    }

    /// Loads the earliest timers of a key group whose cache is empty.
    fn refill(&mut self, store: &mut dyn TimerStore, key_group: KeyGroup) -> Result<()> {
        let index = self.index(key_group)?;
        let group = &mut self.groups[index];
        let mut loaded = Vec::new();
        store.load(
            key_group,
            group.floor.as_deref(),
            CACHE_PER_KEY_GROUP,
            &mut loaded,
        )?;
        group.complete = loaded.len() < CACHE_PER_KEY_GROUP;
        group.timers.extend(loaded);
        self.update_head(key_group);
        Ok(())
    }

    /// Puts the key group's first timestamp into the heads.
    fn update_head(&mut self, key_group: KeyGroup) {
        let Ok(index) = self.index(key_group) else {
            return;
        };
        let group = &mut self.groups[index];
        let head = group.timers.first().map(|t| timestamp_of(t));
        if head != group.head {
            if let Some(old) = group.head {
                self.heads.remove(&(old, key_group));
            }
            if let Some(new) = head {
                self.heads.insert((new, key_group));
            }
            group.head = head;
        }
    }
}

fn parse(timer: &[u8]) -> Result<TimerKey<'_>> {
    TimerKey::parse(timer).ok_or_else(|| Error::InvalidConfig {
        what: "timer",
        detail: format!(
            "{} bytes that are not a timer key ([key group][timestamp][key][namespace])",
            timer.len()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A store that counts its loads, over a sorted set.
    #[derive(Default)]
    struct SetStore {
        timers: BTreeSet<Vec<u8>>,
        loads: usize,
    }

    impl TimerStore for SetStore {
        fn insert(&mut self, timer: &[u8]) -> Result<()> {
            self.timers.insert(timer.to_vec());
            Ok(())
        }
        fn remove(&mut self, timer: &[u8]) -> Result<()> {
            self.timers.remove(timer);
            Ok(())
        }
        fn load(
            &mut self,
            key_group: KeyGroup,
            from: Option<&[u8]>,
            limit: usize,
            out: &mut Vec<Vec<u8>>,
        ) -> Result<()> {
            self.loads += 1;
            let start = from.map_or_else(|| key_group.to_be_bytes().to_vec(), <[u8]>::to_vec);
            out.extend(
                self.timers
                    .range(start..)
                    .take_while(|t| t[..2] == key_group.to_be_bytes())
                    .take(limit)
                    .cloned(),
            );
            Ok(())
        }
    }

    fn timer(key_group: KeyGroup, timestamp: u64, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_timer_key(&mut out, key_group, timestamp, key, b"");
        out
    }

    #[test]
    fn layout_is_pinned() {
        let mut out = Vec::new();
        write_timer_key(&mut out, 0x0102, 0x0A0B, b"k", b"ns");
        assert_eq!(
            out,
            [1, 2, 0, 0, 0, 0, 0, 0, 0x0A, 0x0B, 1, b'k', 2, b'n', b's']
        );
        let parsed = TimerKey::parse(&out).unwrap();
        assert_eq!(
            (
                parsed.key_group,
                parsed.timestamp,
                parsed.key,
                parsed.namespace
            ),
            (0x0102, 0x0A0B, &b"k"[..], &b"ns"[..])
        );
        out.push(0);
        assert_eq!(TimerKey::parse(&out), None, "trailing bytes");
        assert_eq!(TimerKey::parse(&out[..9]), None, "truncated timestamp");
    }

    #[test]
    fn names_round_trip() {
        let name = timer_state_name("windows", TimeDomain::ProcessingTime);
        assert_eq!(name, "_cairn_timers/windows/processing");
        assert_eq!(
            parse_timer_state_name(&name),
            Some(("windows", TimeDomain::ProcessingTime))
        );
        assert_eq!(
            parse_timer_state_name("_cairn_timers/a/b/event"),
            Some(("a/b", TimeDomain::EventTime))
        );
        assert_eq!(parse_timer_state_name("_cairn_timers//event"), None);
        assert_eq!(parse_timer_state_name("_cairn_timers/x/later"), None);
        assert_eq!(parse_timer_state_name("x/event"), None);
    }

    /// Many timers in few key groups, with deletes: the queue polls them in (timestamp, key
    /// group, key) order and loads from the store only when a cache runs dry.
    #[test]
    fn polls_in_order_across_key_groups_and_caches() {
        let range = KeyGroupRange::new(4, 7);
        let mut store = SetStore::default();
        let mut queue = TimerQueue::load(range, &mut store).unwrap();
        let mut model: BTreeMap<(u64, KeyGroup, Vec<u8>), ()> = BTreeMap::new();
        let mut x = 7u64;
        for i in 0..2_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let kg = 4 + (x >> 60) as u16 % 4;
            let ts = (x >> 20) % 500;
            let key = (i % 300).to_be_bytes().to_vec();
            let t = timer(kg, ts, &key);
            if i % 7 == 3 {
                queue.delete(&mut store, &t).unwrap();
                model.remove(&(ts, kg, t.clone()));
            } else {
                queue.add(&mut store, &t).unwrap();
                model.insert((ts, kg, t), ());
            }
        }
        assert_eq!(store.timers.len(), model.len());
        let loads_before = store.loads;
        let mut out = Vec::new();
        let mut fired = Vec::new();
        while queue.poll(&mut store, 250, &mut out).unwrap() {
            fired.push(out.clone());
        }
        let due: Vec<Vec<u8>> = model
            .keys()
            .filter(|(ts, _, _)| *ts <= 250)
            .map(|(_, _, t)| t.clone())
            .collect();
        assert_eq!(fired, due);
        assert!(
            store.loads - loads_before <= due.len() / CACHE_PER_KEY_GROUP + 4,
            "{} loads for {} timers",
            store.loads - loads_before,
            due.len()
        );
        assert_eq!(queue.peek(), model.keys().find(|k| k.0 > 250).map(|k| k.0));
        // A rebuilt queue sees the same timers.
        let mut rebuilt = TimerQueue::load(range, &mut store).unwrap();
        let mut rest = Vec::new();
        while rebuilt.poll(&mut store, u64::MAX, &mut out).unwrap() {
            rest.push(out.clone());
        }
        assert_eq!(rest.len() + fired.len(), model.len());
        assert!(store.timers.is_empty());
    }

    #[test]
    fn a_timer_added_twice_is_one_and_bad_keys_are_refused() {
        let range = KeyGroupRange::new(0, 1);
        let mut store = SetStore::default();
        let mut queue = TimerQueue::load(range, &mut store).unwrap();
        let t = timer(1, 5, b"k");
        queue.add(&mut store, &t).unwrap();
        queue.add(&mut store, &t).unwrap();
        let mut out = Vec::new();
        assert!(!queue.poll(&mut store, 4, &mut out).unwrap());
        assert!(queue.poll(&mut store, 5, &mut out).unwrap());
        assert!(!queue.poll(&mut store, 5, &mut out).unwrap());
        assert!(queue.add(&mut store, &timer(2, 5, b"k")).is_err());
        assert!(queue.add(&mut store, b"short").is_err());
        assert!(store.timers.is_empty());
    }
}
