//! Valid values built from fuzzer bytes: what cairn's encoders can be given, so that the
//! targets can check `decode(encode(x)) == x` over far more shapes than the tests write.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arbitrary::{Result, Unstructured};

use crate::backend::{StateKind, StateMeta};
use crate::codec::CodecInfo;
use crate::keygroup::MaxParallelism;
use crate::operator_state::{OperatorStateEntry, OperatorStateKind, OperatorStateSnapshot};
use crate::snapshot::{
    InstanceId, JobSnapshot, KeyedStateHandle, OperatorSnapshot, SnapshotFile, SnapshotFormat,
    SnapshotKind,
};
use crate::storage::StoragePath;
use crate::ttl::{TtlConfig, TtlUpdate, TtlVisibility};

/// Codec ids that occur in practice, besides arbitrary ones.
const CODEC_IDS: &[&str] = &["bytes", "utf8", "u64-be", "i32-be", "u8", "bincode-1.3"];

/// Characters a storage path component may hold.
const PATH_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";

/// A small number in `0..=max`.
pub(super) fn count(u: &mut Unstructured<'_>, max: usize) -> Result<usize> {
    u.int_in_range(0..=max)
}

/// Some bytes, at most `max` of them.
pub(super) fn bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let len = u.int_in_range(0..=max)?;
    Ok(u.bytes(len.min(u.len()))?.to_vec())
}

pub(super) fn codec(u: &mut Unstructured<'_>) -> Result<CodecInfo> {
    let id = if u.ratio(3, 4)? {
        (*u.choose(CODEC_IDS)?).to_string()
    } else {
        u.arbitrary()?
    };
    Ok(CodecInfo::new(id, u.arbitrary()?))
}

pub(super) fn state_kind(u: &mut Unstructured<'_>) -> Result<StateKind> {
    Ok(*u.choose(&[
        StateKind::Value,
        StateKind::List,
        StateKind::Map,
        StateKind::Reducing,
        StateKind::Aggregating,
        StateKind::Timers,
    ])?)
}

pub(super) fn state_meta(u: &mut Unstructured<'_>, name: String) -> Result<StateMeta> {
    let kind = state_kind(u)?;
    let key_codec = codec(u)?;
    let value_codec = codec(u)?;
    let user_key_codec = if kind == StateKind::Map || u.ratio(1, 8)? {
        Some(codec(u)?)
    } else {
        None
    };
    let ttl = if u.arbitrary()? {
        Some(TtlConfig {
            ttl: Duration::from_millis(u.arbitrary()?),
            update: *u.choose(&[TtlUpdate::OnCreateAndWrite, TtlUpdate::OnReadAndWrite])?,
            visibility: *u.choose(&[
                TtlVisibility::NeverReturnExpired,
                TtlVisibility::ReturnExpiredIfNotCleanedUp,
            ])?,
        })
    } else {
        None
    };
    Ok(StateMeta {
        name,
        kind,
        key_codec,
        value_codec,
        user_key_codec,
        ttl,
    })
}

/// Up to `max` states with distinct names.
pub(super) fn states(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<StateMeta>> {
    let mut names = BTreeSet::new();
    for _ in 0..count(u, max)? {
        names.insert(u.arbitrary::<String>()?);
    }
    names.into_iter().map(|name| state_meta(u, name)).collect()
}

/// One path component: 1 to 12 characters of `[A-Za-z0-9._-]`, never `.` or `..`.
pub(super) fn component(u: &mut Unstructured<'_>) -> Result<String> {
    let len = u.int_in_range(1..=12)?;
    let mut name = String::with_capacity(len);
    for _ in 0..len {
        name.push(char::from(*u.choose(PATH_CHARS)?));
    }
    if name == "." || name == ".." {
        name.push('x');
    }
    Ok(name)
}

/// A valid storage path of 1 to 4 components.
pub(super) fn storage_path(u: &mut Unstructured<'_>) -> Result<StoragePath> {
    let mut parts = Vec::new();
    for _ in 0..u.int_in_range(1..=4)? {
        parts.push(component(u)?);
    }
    let path = parts.join("/");
    match StoragePath::new(path.as_str()) {
        Ok(path) => Ok(path),
        Err(e) => panic!("the valid path {path:?} is refused: {e}"),
    }
}

/// A max parallelism, mostly small, sometimes the extremes.
pub(super) fn max_parallelism(u: &mut Unstructured<'_>) -> Result<MaxParallelism> {
    let value = if u.ratio(1, 4)? {
        *u.choose(&[1, 2, 128, 32_768])?
    } else {
        u.int_in_range(1..=300)?
    };
    match MaxParallelism::new(value) {
        Ok(max) => Ok(max),
        Err(e) => panic!("max parallelism {value} is refused: {e}"),
    }
}

fn handle(
    u: &mut Unstructured<'_>,
    max: MaxParallelism,
    subtask: u32,
    parallelism: u32,
) -> Result<KeyedStateHandle> {
    let key_groups = match max.subtask_range(subtask, parallelism) {
        Ok(range) => range,
        Err(e) => panic!("subtask {subtask} of {parallelism} under {max}: {e}"),
    };
    let mut files = Vec::new();
    let mut names = BTreeSet::new();
    for _ in 0..count(u, 4)? {
        let name = component(u)?;
        if names.insert(name.clone()) {
            files.push(SnapshotFile {
                name,
                path: storage_path(u)?,
                size: u.arbitrary()?,
                crc32: u.arbitrary()?,
            });
        }
    }
    Ok(KeyedStateHandle {
        format: *u.choose(&[SnapshotFormat::RocksDb, SnapshotFormat::Canonical])?,
        key_groups,
        instance: InstanceId(u.arbitrary()?),
        checkpoint_id: u.arbitrary()?,
        states: states(u, 3)?,
        files,
    })
}

/// The operator state of one subtask: lists without keys, broadcast maps with a key codec.
pub(super) fn operator_state(u: &mut Unstructured<'_>) -> Result<OperatorStateSnapshot> {
    let mut states = BTreeMap::new();
    for _ in 0..count(u, 3)? {
        let name: String = u.arbitrary()?;
        let kind = *u.choose(&[
            OperatorStateKind::List,
            OperatorStateKind::UnionList,
            OperatorStateKind::Broadcast,
        ])?;
        let broadcast = kind == OperatorStateKind::Broadcast;
        let value_codec = codec(u)?;
        let key_codec = if broadcast { Some(codec(u)?) } else { None };
        let mut items = Vec::new();
        for _ in 0..count(u, 5)? {
            let key = if broadcast { bytes(u, 16)? } else { Vec::new() };
            items.push((key, bytes(u, 16)?));
        }
        states.insert(
            name,
            OperatorStateEntry {
                kind,
                value_codec,
                key_codec,
                items,
            },
        );
    }
    Ok(OperatorStateSnapshot { states })
}

/// A job snapshot as [`CheckpointStorage`](crate::CheckpointStorage) could commit it.
pub(super) fn job_snapshot(u: &mut Unstructured<'_>) -> Result<JobSnapshot> {
    let mut ids = BTreeSet::new();
    for _ in 0..count(u, 3)? {
        let id: String = u.arbitrary()?;
        if !id.is_empty() {
            ids.insert(id);
        }
    }
    let mut operators = Vec::new();
    for operator_id in ids {
        let max = max_parallelism(u)?;
        let parallelism = u.int_in_range(1..=max.get().min(5))?;
        let mut subtasks = Vec::new();
        if u.arbitrary()? {
            for i in 0..parallelism {
                subtasks.push(handle(u, max, i, parallelism)?);
            }
        }
        let mut operator_states = Vec::new();
        if u.arbitrary()? {
            for _ in 0..parallelism {
                operator_states.push(operator_state(u)?);
            }
        }
        operators.push(OperatorSnapshot {
            operator_id,
            parallelism,
            max_parallelism: max,
            subtasks,
            operator_state: operator_states,
        });
    }
    Ok(JobSnapshot {
        checkpoint_id: u.arbitrary()?,
        kind: *u.choose(&[SnapshotKind::Checkpoint, SnapshotKind::Savepoint])?,
        taken_at_millis: u.arbitrary()?,
        operators,
    })
}
