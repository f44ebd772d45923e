//! `cairn dump`: the entries of one state of a snapshot, decoded.

use std::sync::Arc;

use serde::Serialize;

use crate::backend::key::CompositeKey;
use crate::backend::timers::TimerKey;
use crate::backend::{StateKind, StateMeta, Visit};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::keygroup::{KeyGroup, KeyGroupRange};
use crate::snapshot::OperatorSnapshot;
use crate::storage::{Location, SnapshotStore};

use super::decode::{decode_scalar, decode_stored, hex, DecodedValue, Stored};
use super::inspect::{state_report, StateReport};
use super::open::OpenSnapshot;
use super::read::HandleReader;
use super::{Progress, Unit};

/// What to dump.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// The operator's id.
    pub operator: String,
    /// The state's name.
    pub state: String,
    /// Only this key group.
    pub key_group: Option<KeyGroup>,
    /// Only this key (its serialized bytes); its key group is computed from it.
    pub key: Option<Vec<u8>>,
    /// At most this many entries.
    pub limit: Option<u64>,
}

/// One stored entry, decoded.
#[derive(Debug, Clone, Serialize)]
pub struct DumpEntry {
    /// The subtask whose snapshot holds it.
    pub subtask: u32,
    /// Its key group.
    pub key_group: u16,
    /// The key as text (by the key codec; `0x…` hex if it does not decode as text).
    pub key: String,
    /// The key's bytes in hex.
    pub key_hex: String,
    /// The namespace's bytes in hex (empty: no namespace).
    pub namespace_hex: String,
    /// A map entry's user key as text.
    pub user_key: Option<String>,
    /// A map entry's user key bytes in hex.
    pub user_key_hex: Option<String>,
    /// The value of a value, reducing, aggregating or map state.
    pub value: Option<DecodedValue>,
    /// The elements of a list state, in order.
    pub elements: Option<Vec<DecodedValue>>,
    /// A timer's timestamp (timer sets only).
    pub timestamp: Option<u64>,
    /// The stored bytes in hex, when they do not have the layout of the state's kind (for a
    /// timer set: the stored key, when it is not a timer key).
    pub raw_hex: Option<String>,
}

/// What a dump read.
#[derive(Debug, Clone, Serialize)]
pub struct DumpSummary {
    /// The operator's id.
    pub operator: String,
    /// The state.
    pub state: StateReport,
    /// Entries visited.
    pub entries: u64,
    /// Whether the dump stopped at the limit (more entries may follow).
    pub truncated: bool,
}

/// The operator `id` of a snapshot, or an error listing the ones it has.
pub(crate) fn find_operator<'a>(
    snapshot: &'a OpenSnapshot,
    id: &str,
) -> Result<&'a OperatorSnapshot> {
    snapshot
        .job
        .operator(id)
        .ok_or_else(|| Error::InvalidConfig {
            what: "operator",
            detail: format!(
                "{} has no operator '{id}'; its operators: {}",
                snapshot.dir,
                snapshot
                    .job
                    .operators
                    .iter()
                    .map(|o| o.operator_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// The state `name` as the operator's handles record it.
pub(crate) fn find_state(operator: &OperatorSnapshot, name: &str) -> Option<StateMeta> {
    operator
        .subtasks
        .iter()
        .flat_map(|h| &h.states)
        .find(|s| s.name == name)
        .cloned()
}

/// The names of an operator's states.
pub(crate) fn state_names(operator: &OperatorSnapshot) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for meta in operator.subtasks.iter().flat_map(|h| &h.states) {
        if !names.contains(&meta.name) {
            names.push(meta.name.clone());
        }
    }
    names
}

/// Decodes one stored entry of `meta`.
pub(crate) fn decode_entry(
    meta: &StateMeta,
    subtask: u32,
    composite: &[u8],
    stored: &[u8],
    now: u64,
) -> DumpEntry {
    if meta.kind == StateKind::Timers {
        return decode_timer(meta, subtask, composite, stored);
    }
    let parsed = CompositeKey::parse(composite);
    let (key_group, key, namespace, user_key) = match parsed {
        Some(c) => (c.key_group, c.key, c.namespace, c.user_key),
        None => (0, composite, &[][..], &[][..]),
    };
    let is_map = meta.user_key_codec.is_some();
    let mut entry = DumpEntry {
        subtask,
        key_group,
        key: decode_scalar(&meta.key_codec, key),
        key_hex: hex(key),
        namespace_hex: hex(namespace),
        user_key: meta
            .user_key_codec
            .as_ref()
            .map(|c| decode_scalar(c, user_key)),
        user_key_hex: is_map.then(|| hex(user_key)),
        value: None,
        elements: None,
        timestamp: None,
        raw_hex: None,
    };
    match decode_stored(meta, stored, now) {
        Some(Stored::One(value)) => entry.value = Some(value),
        Some(Stored::List(elements)) => entry.elements = Some(elements),
        None => entry.raw_hex = Some(hex(stored)),
    }
    entry
}

/// Decodes one timer of a timer set: its key and namespace, and its timestamp as the value.
fn decode_timer(meta: &StateMeta, subtask: u32, stored_key: &[u8], stored: &[u8]) -> DumpEntry {
    let parsed = TimerKey::parse(stored_key).filter(|_| stored.is_empty());
    let (key_group, key, namespace) = parsed.map_or((0, stored_key, &[][..]), |t| {
        (t.key_group, t.key, t.namespace)
    });
    DumpEntry {
        subtask,
        key_group,
        key: decode_scalar(&meta.key_codec, key),
        key_hex: hex(key),
        namespace_hex: hex(namespace),
        user_key: None,
        user_key_hex: None,
        value: None,
        elements: None,
        timestamp: parsed.map(|t| t.timestamp),
        raw_hex: parsed.is_none().then(|| hex(stored_key)),
    }
}

/// Dumps the entries of one state of the snapshot `location` names, in (key group, key) order,
/// calling `on_entry` for each until it breaks or `limit` entries were given.
///
/// # Errors
/// [`Error::InvalidPath`] / [`Error::Corrupted`] as [`OpenSnapshot::open`];
/// [`Error::InvalidConfig`] for an operator or state the snapshot does not hold, or a key
/// group outside the operator's; [`Error::NotFound`] for a missing file; the errors of
/// reading the files and of `on_entry`.
pub fn dump(
    location: &Location,
    options: &DumpOptions,
    progress: &dyn Progress,
    on_entry: &mut dyn FnMut(DumpEntry) -> Result<Visit>,
) -> Result<DumpSummary> {
    let snapshot = OpenSnapshot::open(location)?;
    let operator = find_operator(&snapshot, &options.operator)?;
    let meta = find_state(operator, &options.state).ok_or_else(|| Error::InvalidConfig {
        what: "state",
        detail: format!(
            "operator '{}' has no state '{}'; its states: {}",
            operator.operator_id,
            options.state,
            state_names(operator).join(", ")
        ),
    })?;
    let max = operator.max_parallelism;
    let all = KeyGroupRange::all(max);
    let mut range = all;
    if let Some(kg) = options.key_group {
        if u32::from(kg) >= max.get() {
            return Err(Error::InvalidConfig {
                what: "key group",
                detail: format!(
                    "{kg} is not a key group of operator '{}', which has {max} (0..={})",
                    operator.operator_id,
                    max.get() - 1
                ),
            });
        }
        range = KeyGroupRange::new(kg, kg);
    }
    if let Some(key) = &options.key {
        let kg = max.key_group_of(key);
        if options.key_group.is_some_and(|asked| asked != kg) {
            return Ok(summary(operator, &meta, 0, false));
        }
        range = KeyGroupRange::new(kg, kg);
    }
    let now = SystemClock.now_millis();
    let store: Arc<dyn SnapshotStore> = snapshot.store.clone();
    let handles: Vec<(u32, _)> = operator
        .subtasks
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.key_groups.intersect(&range).map(|r| (i as u32, (h, r))))
        .collect();
    progress.start("reading subtasks", handles.len() as u64, Unit::Items);
    let mut count = 0u64;
    let mut truncated = false;
    for (subtask, (handle, range)) in handles {
        if options.limit.is_some_and(|limit| count >= limit) {
            truncated = true;
            break;
        }
        let reader = HandleReader::open(&store, handle, max)?;
        let finished = reader.read(
            &meta.name,
            range,
            options.key.as_deref(),
            &mut |composite, stored| {
                if options.limit.is_some_and(|limit| count >= limit) {
                    truncated = true;
                    return Ok(Visit::Break(()));
                }
                count += 1;
                on_entry(decode_entry(&meta, subtask, composite, stored, now))
            },
        )?;
        progress.advance(1);
        if !finished {
            break;
        }
    }
    progress.finish();
    Ok(summary(operator, &meta, count, truncated))
}

fn summary(
    operator: &OperatorSnapshot,
    meta: &StateMeta,
    entries: u64,
    truncated: bool,
) -> DumpSummary {
    DumpSummary {
        operator: operator.operator_id.clone(),
        state: state_report(meta),
        entries,
        truncated,
    }
}
