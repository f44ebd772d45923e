//! `cairn inspect`: what a snapshot holds, or which snapshots a storage root holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::{StateKind, StateMeta, Visit};
use crate::error::Result;
use crate::snapshot::{
    shared_file_creator, JobSnapshot, KeyedStateHandle, SnapshotFormat, SnapshotKind,
    METADATA_FILE, SHARED_DIR,
};
use crate::storage::{Location, SnapshotStore, StoragePath};
use crate::ttl::{TtlUpdate, TtlVisibility};

use super::decode::format_millis;
use super::open::{
    checkpoint_dir_id, is_savepoint_dir, locate, open_location, OpenSnapshot, Target,
};
use super::read::HandleReader;
use super::{Progress, Unit};

/// What `cairn inspect` found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Inspection {
    /// One checkpoint or savepoint.
    Snapshot(SnapshotReport),
    /// A storage root and the snapshots in it.
    Root(RootReport),
}

/// One checkpoint or savepoint.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    /// The directory holding `_metadata`.
    pub path: String,
    /// The directory the file paths are relative to.
    pub files_root: String,
    /// `checkpoint`, `canonical-savepoint` or `native-savepoint`.
    pub kind: String,
    /// The checkpoint or savepoint id.
    pub id: u64,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub taken_at_millis: u64,
    /// When it was taken, RFC 3339 UTC.
    pub taken_at: String,
    /// The `_metadata` format version.
    pub metadata_version: u16,
    /// The size of `_metadata`.
    pub metadata_bytes: u64,
    /// Every file's bytes.
    pub total_bytes: u64,
    /// Bytes this snapshot wrote itself.
    pub new_bytes: u64,
    /// Bytes of shared files an earlier checkpoint wrote.
    pub reused_bytes: u64,
    /// The number of files.
    pub file_count: usize,
    /// Whether entries were counted (`--count`); otherwise every `entries` is null.
    pub entries_counted: bool,
    /// The operators.
    pub operators: Vec<OperatorReport>,
}

/// One operator of a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorReport {
    /// Its id.
    pub id: String,
    /// How many subtasks it ran with.
    pub parallelism: u32,
    /// Its number of key groups.
    pub max_parallelism: u32,
    /// Every file's bytes.
    pub total_bytes: u64,
    /// Bytes this snapshot wrote itself.
    pub new_bytes: u64,
    /// Bytes of shared files an earlier checkpoint wrote.
    pub reused_bytes: u64,
    /// Its states (as the first subtask that holds each records it).
    pub states: Vec<StateReport>,
    /// Its subtasks, in order.
    pub subtasks: Vec<SubtaskReport>,
    /// Its operator (non-keyed) states.
    pub operator_state: Vec<OperatorStateReport>,
}

/// One operator state of an operator, across its subtasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorStateReport {
    /// Its name.
    pub name: String,
    /// `list`, `union-list` or `broadcast`.
    pub kind: String,
    /// The element codec (broadcast: the value codec), `id vN`.
    pub value_codec: String,
    /// The key codec of a broadcast state.
    pub key_codec: Option<String>,
    /// Elements (broadcast: entries) held by each subtask, in subtask order.
    pub items_per_subtask: Vec<usize>,
}

fn operator_state_reports(op: &crate::OperatorSnapshot) -> Vec<OperatorStateReport> {
    let mut reports: Vec<OperatorStateReport> = Vec::new();
    for (subtask, snapshot) in op.operator_state.iter().enumerate() {
        for (name, entry) in &snapshot.states {
            let index = match reports.iter().position(|r| &r.name == name) {
                Some(index) => index,
                None => {
                    reports.push(OperatorStateReport {
                        name: name.clone(),
                        kind: match entry.kind {
                            crate::OperatorStateKind::List => "list",
                            crate::OperatorStateKind::UnionList => "union-list",
                            crate::OperatorStateKind::Broadcast => "broadcast",
                        }
                        .into(),
                        value_codec: entry.value_codec.to_string(),
                        key_codec: entry.key_codec.as_ref().map(ToString::to_string),
                        items_per_subtask: vec![0; op.operator_state.len()],
                    });
                    reports.len() - 1
                }
            };
            reports[index].items_per_subtask[subtask] = entry.items.len();
        }
    }
    reports
}

/// One state of an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateReport {
    /// Its name.
    pub name: String,
    /// `value`, `list`, `map`, `reducing` or `aggregating`.
    pub kind: String,
    /// The key codec, `id vN`.
    pub key_codec: String,
    /// The value codec (list elements, map user values, accumulators).
    pub value_codec: String,
    /// The user key codec of a map state.
    pub user_key_codec: Option<String>,
    /// Its TTL, if any.
    pub ttl: Option<TtlReport>,
    /// Stored entries over all subtasks (a list is one entry, a map one per user key), if
    /// counted.
    pub entries: Option<u64>,
}

/// A state's time-to-live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TtlReport {
    /// The TTL in milliseconds.
    pub ttl_millis: u64,
    /// `on-create-and-write` or `on-read-and-write`.
    pub update: String,
    /// `never-return-expired` or `return-expired-if-not-cleaned-up`.
    pub visibility: String,
}

/// One subtask of an operator.
#[derive(Debug, Clone, Serialize)]
pub struct SubtaskReport {
    /// Its index.
    pub subtask: u32,
    /// The first key group it owned.
    pub first_key_group: u16,
    /// The last key group it owned (inclusive).
    pub last_key_group: u16,
    /// `rocksdb` or `canonical`.
    pub format: String,
    /// The backend instance that wrote it (32 hex digits).
    pub instance: String,
    /// The checkpoint id its handle records.
    pub checkpoint_id: u64,
    /// Every file's bytes.
    pub total_bytes: u64,
    /// Bytes this snapshot wrote itself.
    pub new_bytes: u64,
    /// Bytes of shared files an earlier checkpoint wrote.
    pub reused_bytes: u64,
    /// Stored entries, if counted.
    pub entries: Option<u64>,
    /// Its files.
    pub files: Vec<FileReport>,
}

/// One file of a subtask's snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// Its name in the backend (`000012.sst`, `keyed-state`).
    pub name: String,
    /// Its path, relative to the files root.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its CRC32, 8 hex digits.
    pub crc32: String,
    /// Whether it is in `shared/`.
    pub shared: bool,
    /// The checkpoint that wrote a shared file.
    pub created_by: Option<u64>,
    /// Whether this snapshot wrote it (false: reused from an earlier checkpoint).
    pub new: bool,
}

/// A storage root.
#[derive(Debug, Clone, Serialize)]
pub struct RootReport {
    /// The root directory.
    pub path: String,
    /// Completed checkpoints, by id.
    pub checkpoints: Vec<RootEntry>,
    /// Savepoint directories, by name.
    pub savepoints: Vec<RootEntry>,
    /// `chk-<id>` directories without `_metadata`: aborted or in flight.
    pub incomplete_checkpoints: Vec<String>,
    /// Files in `shared/`.
    pub shared_files: u64,
    /// Their bytes.
    pub shared_bytes: u64,
}

/// A snapshot in a storage root.
#[derive(Debug, Clone, Serialize)]
pub struct RootEntry {
    /// Its directory, relative to the root.
    pub dir: String,
    /// Its id (null if `_metadata` does not decode).
    pub id: Option<u64>,
    /// `checkpoint`, `canonical-savepoint` or `native-savepoint`.
    pub kind: Option<String>,
    /// When it was taken, RFC 3339 UTC.
    pub taken_at: Option<String>,
    /// Its operators' ids.
    pub operators: Vec<String>,
    /// Every file's bytes.
    pub total_bytes: u64,
    /// Bytes it wrote itself.
    pub new_bytes: u64,
    /// Why its `_metadata` cannot be read, if it cannot.
    pub error: Option<String>,
}

/// `checkpoint`, `canonical-savepoint` or `native-savepoint`.
pub(crate) fn kind_name(job: &JobSnapshot) -> &'static str {
    match job.kind {
        SnapshotKind::Checkpoint => "checkpoint",
        SnapshotKind::Savepoint => {
            let canonical = job
                .operators
                .iter()
                .flat_map(|o| &o.subtasks)
                .all(|h| h.format == SnapshotFormat::Canonical);
            if canonical {
                "canonical-savepoint"
            } else {
                "native-savepoint"
            }
        }
    }
}

pub(crate) fn format_name(format: SnapshotFormat) -> &'static str {
    if format == SnapshotFormat::Canonical {
        "canonical"
    } else {
        "rocksdb"
    }
}

fn kind_text(kind: StateKind) -> &'static str {
    match kind {
        StateKind::Value => "value",
        StateKind::List => "list",
        StateKind::Map => "map",
        StateKind::Reducing => "reducing",
        StateKind::Aggregating => "aggregating",
        StateKind::Timers => "timers",
    }
}

pub(crate) fn state_report(meta: &StateMeta) -> StateReport {
    StateReport {
        name: meta.name.clone(),
        kind: kind_text(meta.kind).into(),
        key_codec: meta.key_codec.to_string(),
        value_codec: meta.value_codec.to_string(),
        user_key_codec: meta.user_key_codec.as_ref().map(ToString::to_string),
        ttl: meta.ttl.map(|ttl| TtlReport {
            ttl_millis: ttl.ttl_millis(),
            update: match ttl.update {
                TtlUpdate::OnCreateAndWrite => "on-create-and-write",
                TtlUpdate::OnReadAndWrite => "on-read-and-write",
            }
            .into(),
            visibility: match ttl.visibility {
                TtlVisibility::NeverReturnExpired => "never-return-expired",
                TtlVisibility::ReturnExpiredIfNotCleanedUp => "return-expired-if-not-cleaned-up",
            }
            .into(),
        }),
        entries: None,
    }
}

fn handle_sizes(handle: &KeyedStateHandle) -> (u64, u64, u64) {
    let total = handle.total_bytes();
    let new = handle.written_bytes();
    (total, new, total - new)
}

fn subtask_report(index: usize, handle: &KeyedStateHandle) -> SubtaskReport {
    let (total_bytes, new_bytes, reused_bytes) = handle_sizes(handle);
    SubtaskReport {
        subtask: index as u32,
        first_key_group: handle.key_groups.start(),
        last_key_group: handle.key_groups.end(),
        format: format_name(handle.format).into(),
        instance: handle.instance.to_string(),
        checkpoint_id: handle.checkpoint_id,
        total_bytes,
        new_bytes,
        reused_bytes,
        entries: None,
        files: handle
            .files
            .iter()
            .map(|f| {
                let created_by = shared_file_creator(&f.path).filter(|_| f.is_shared());
                FileReport {
                    name: f.name.clone(),
                    path: f.path.to_string(),
                    size: f.size,
                    crc32: format!("{:08x}", f.crc32),
                    shared: f.is_shared(),
                    created_by,
                    new: !f.is_shared() || created_by == Some(handle.checkpoint_id),
                }
            })
            .collect(),
    }
}

/// The report of an opened snapshot, without entry counts.
pub(crate) fn snapshot_report(snapshot: &OpenSnapshot) -> SnapshotReport {
    let job = &snapshot.job;
    let operators: Vec<OperatorReport> = job
        .operators
        .iter()
        .map(|op| {
            let mut states: Vec<StateReport> = Vec::new();
            for meta in op.subtasks.iter().flat_map(|h| &h.states) {
                if !states.iter().any(|s| s.name == meta.name) {
                    states.push(state_report(meta));
                }
            }
            let subtasks: Vec<SubtaskReport> = op
                .subtasks
                .iter()
                .enumerate()
                .map(|(i, h)| subtask_report(i, h))
                .collect();
            OperatorReport {
                id: op.operator_id.clone(),
                parallelism: op.parallelism,
                max_parallelism: op.max_parallelism.get(),
                total_bytes: subtasks.iter().map(|s| s.total_bytes).sum(),
                new_bytes: subtasks.iter().map(|s| s.new_bytes).sum(),
                reused_bytes: subtasks.iter().map(|s| s.reused_bytes).sum(),
                states,
                subtasks,
                operator_state: operator_state_reports(op),
            }
        })
        .collect();
    SnapshotReport {
        path: snapshot.dir.to_string(),
        files_root: snapshot.files_root.to_string(),
        kind: kind_name(job).into(),
        id: job.checkpoint_id,
        taken_at_millis: job.taken_at_millis,
        taken_at: format_millis(job.taken_at_millis),
        metadata_version: snapshot.metadata_version,
        metadata_bytes: snapshot.metadata_bytes,
        total_bytes: operators.iter().map(|o| o.total_bytes).sum(),
        new_bytes: operators.iter().map(|o| o.new_bytes).sum(),
        reused_bytes: operators.iter().map(|o| o.reused_bytes).sum(),
        file_count: job.files().count(),
        entries_counted: false,
        operators,
    }
}

/// Counts the stored entries of every state of every subtask (reading every canonical
/// stream, restoring every RocksDB subtask into a scratch directory).
fn count_entries(
    snapshot: &OpenSnapshot,
    report: &mut SnapshotReport,
    progress: &dyn Progress,
) -> Result<()> {
    let store: Arc<dyn SnapshotStore> = snapshot.store.clone();
    let subtasks: usize = snapshot
        .job
        .operators
        .iter()
        .map(|o| o.subtasks.len())
        .sum();
    progress.start("counting entries", subtasks as u64, Unit::Items);
    for (op, op_report) in snapshot.job.operators.iter().zip(&mut report.operators) {
        let mut per_state: BTreeMap<String, u64> = BTreeMap::new();
        for (handle, sub_report) in op.subtasks.iter().zip(&mut op_report.subtasks) {
            let reader = HandleReader::open(&store, handle, op.max_parallelism)?;
            let mut total = 0;
            for meta in reader.states()? {
                let mut count = 0u64;
                reader.read(&meta.name, handle.key_groups, None, &mut |_, _| {
                    count += 1;
                    Ok(Visit::Continue(()))
                })?;
                *per_state.entry(meta.name).or_default() += count;
                total += count;
            }
            sub_report.entries = Some(total);
            progress.advance(1);
        }
        for state in &mut op_report.states {
            state.entries = Some(per_state.get(&state.name).copied().unwrap_or(0));
        }
    }
    progress.finish();
    report.entries_counted = true;
    Ok(())
}

/// Inspects `location`: a snapshot (a directory holding `_metadata`, or the file), or a
/// storage root, on the local file system or an object store. With `count`, reads every
/// subtask's entries to count them (as long as a dump of everything: canonical streams are
/// read, RocksDB files copied and opened).
///
/// # Errors
/// [`Error::InvalidPath`](crate::Error::InvalidPath) if `location` is neither;
/// [`Error::Corrupted`](crate::Error::Corrupted) if the snapshot's `_metadata` does not
/// decode (or, with `count`, a file is damaged); I/O and store errors.
pub fn inspect(location: &Location, count: bool, progress: &dyn Progress) -> Result<Inspection> {
    match locate(location)? {
        Target::Snapshot(metadata) => {
            let snapshot = OpenSnapshot::open_metadata(&metadata)?;
            let mut report = snapshot_report(&snapshot);
            if count {
                count_entries(&snapshot, &mut report, progress)?;
            }
            Ok(Inspection::Snapshot(report))
        }
        Target::Root(root) => Ok(Inspection::Root(inspect_root(&root)?)),
    }
}

fn root_entry(root: &Location, dir: &str) -> RootEntry {
    match OpenSnapshot::open_metadata(&root.join(dir).join(METADATA_FILE)) {
        Ok(snapshot) => {
            let report = snapshot_report(&snapshot);
            RootEntry {
                dir: dir.to_string(),
                id: Some(report.id),
                kind: Some(report.kind),
                taken_at: Some(report.taken_at),
                operators: report.operators.into_iter().map(|o| o.id).collect(),
                total_bytes: report.total_bytes,
                new_bytes: report.new_bytes,
                error: None,
            }
        }
        Err(e) => RootEntry {
            dir: dir.to_string(),
            id: None,
            kind: None,
            taken_at: None,
            operators: Vec::new(),
            total_bytes: 0,
            new_bytes: 0,
            error: Some(e.to_string()),
        },
    }
}

/// Lists the snapshots of a storage root: its top level, then `shared/`, by listing.
fn inspect_root(root: &Location) -> Result<RootReport> {
    let store = open_location(root)?;
    let mut checkpoints: Vec<(u64, RootEntry)> = Vec::new();
    let mut savepoints = Vec::new();
    let mut incomplete: Vec<(u64, String)> = Vec::new();
    let (mut shared_files, mut shared_bytes) = (0, 0);
    for name in store.list_dir(None)?.dirs {
        let has_metadata = || -> Result<bool> {
            store.exists(&StoragePath::new(name.as_str())?.join(METADATA_FILE)?)
        };
        if let Some(id) = checkpoint_dir_id(&name) {
            if has_metadata()? {
                checkpoints.push((id, root_entry(root, &name)));
            } else {
                incomplete.push((id, name));
            }
        } else if is_savepoint_dir(&name) && has_metadata()? {
            savepoints.push(root_entry(root, &name));
        } else if name == SHARED_DIR {
            for (_, size) in store.list_dir(Some(&StoragePath::new(SHARED_DIR)?))?.files {
                shared_files += 1;
                shared_bytes += size;
            }
        }
    }
    checkpoints.sort_by_key(|(id, _)| *id);
    savepoints.sort_by(|a: &RootEntry, b| a.dir.cmp(&b.dir));
    incomplete.sort();
    Ok(RootReport {
        path: root.to_string(),
        checkpoints: checkpoints.into_iter().map(|(_, e)| e).collect(),
        savepoints,
        incomplete_checkpoints: incomplete.into_iter().map(|(_, n)| n).collect(),
        shared_files,
        shared_bytes,
    })
}
