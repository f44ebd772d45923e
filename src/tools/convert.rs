//! `cairn convert`: a new self-contained savepoint, canonical or native, from any snapshot,
//! offline, at the operators' own parallelism or another one.
//!
//! Nothing is written by hand: the conversion is a job that restores and takes a savepoint
//! at once. [`begin_savepoint`] opens the new savepoint under the output root; for each
//! operator, each subtask of the new parallelism restores its key groups as a job would
//! ([`JobSnapshot::restore_plan`](crate::JobSnapshot::restore_plan), then
//! [`HeapBackend::restore`] or [`RocksDbBackendBuilder::restore_from`]) into a scratch
//! backend, takes its snapshot for the savepoint and acknowledges it; `_metadata` is
//! committed last. If anything fails, the savepoint's directory is removed: a failed
//! conversion leaves nothing behind.
//!
//! The scratch backend is a heap backend when a canonical savepoint is made from canonical
//! streams (they are read straight into memory), and otherwise a RocksDB backend in a
//! scratch directory, which restores from either format and writes either one.
//!
//! Scratch backends read a clock stopped at the epoch. Snapshots skip entries expired at
//! their backend's time and RocksDB's TTL compaction filter drops them; at time 0 nothing
//! has expired, so every stored entry is carried over with its TTL stamp as it is.
//!
//! [`RocksDbBackendBuilder::restore_from`]: crate::RocksDbBackendBuilder::restore_from

use std::sync::Arc;

use serde::Serialize;

use crate::backend::{HeapBackend, KeyedStateBackend};
use crate::clock::{Clock, ManualClock, SystemClock};
use crate::error::{Error, Result};
use crate::keygroup::MaxParallelism;
use crate::operator_state::{OperatorStateKind, OperatorStateSnapshot};
use crate::snapshot::{
    JobSnapshot, KeyedStateHandle, OperatorSnapshot, SavepointFormat, SnapshotFormat,
    SnapshotRequest, SubtaskRestore,
};
use crate::storage::{begin_savepoint, Location, PendingCheckpoint, SnapshotStore};
use crate::RocksDbBackend;

use super::inspect::kind_name;
use super::open::{open_location, OpenSnapshot};
use super::read::ScratchDir;
use super::{Progress, Unit};

/// What to convert into.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The format of the new savepoint.
    pub format: SavepointFormat,
    /// The storage root the savepoint is written under (a local directory, created if
    /// missing, or an object store URL); it lands in `savepoint-<id>-<random>/` there.
    pub out: Location,
    /// The parallelism of every operator in the new savepoint; `None` keeps each
    /// operator's own.
    pub parallelism: Option<u32>,
}

/// What a conversion wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertReport {
    /// The directory of the snapshot converted.
    pub source: String,
    /// Its kind: `checkpoint`, `canonical-savepoint` or `native-savepoint`.
    pub source_kind: String,
    /// The checkpoint id, the same in both.
    pub id: u64,
    /// The format asked for: `canonical` or `native`.
    pub format: String,
    /// The new savepoint's directory.
    pub savepoint: String,
    /// Its kind, as `inspect` names it.
    pub kind: String,
    /// The bytes of its files (`_metadata` not included).
    pub total_bytes: u64,
    /// The number of its files (`_metadata` not included).
    pub file_count: u64,
    /// Its operators, in `_metadata` order.
    pub operators: Vec<ConvertedOperator>,
}

/// One operator of a converted savepoint.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertedOperator {
    /// The operator's id.
    pub id: String,
    /// Its max parallelism (unchanged: key groups cannot be re-cut).
    pub max_parallelism: u32,
    /// Its parallelism in the snapshot converted.
    pub source_parallelism: u32,
    /// Its parallelism in the new savepoint.
    pub parallelism: u32,
    /// Whether it has keyed state (then one handle per new subtask).
    pub keyed_state: bool,
    /// Whether it has operator state.
    pub operator_state: bool,
    /// The bytes of its keyed state files.
    pub total_bytes: u64,
}

/// Writes the snapshot `location` names (a checkpoint or savepoint directory, or its
/// `_metadata`) as a new savepoint in `options.format` under `options.out`, with every
/// operator at `options.parallelism` subtasks (or its own parallelism). The input is only
/// read.
///
/// Keyed state is restored subtask by subtask and snapshotted again, so any backend's
/// checkpoint or savepoint converts into either format. Operator state is written so that
/// a restore of the new savepoint at any parallelism hands out exactly what a restore of
/// the input would: each list and union list state's elements, in the order a restore reads
/// them, cut into contiguous runs, one per subtask; broadcast state copied to each.
///
/// # Errors
/// As [`OpenSnapshot::open`] for the input; [`Error::InvalidConfig`] if `parallelism` is
/// 0 or above an operator's max parallelism; [`Error::NotFound`] / [`Error::Corrupted`]
/// for a missing or damaged file of the input; [`Error::Restore`] for handles no backend
/// restores together (of mixed formats); the output store's and RocksDB's errors. On
/// error nothing is left under `options.out` but the directory itself.
pub fn convert(
    location: &Location,
    options: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<ConvertReport> {
    let source = OpenSnapshot::open(location)?;
    if let Some(p) = options.parallelism {
        for op in &source.job.operators {
            check_parallelism(op, p)?;
        }
    }
    let root = open_location(&options.out)?;
    let out_dir = match &options.out {
        Location::Local(path) => {
            Location::Local(std::fs::canonicalize(path).map_err(|source| Error::Io {
                op: "resolve",
                path: path.clone(),
                source,
            })?)
        }
        url => url.clone(),
    };
    let pending = begin_savepoint(
        root.clone(),
        source.job.checkpoint_id,
        options.format,
        &SystemClock,
    )?;
    let savepoint_dir = pending
        .savepoint_dir()
        .cloned()
        .ok_or_else(|| Error::Checkpoint {
            checkpoint_id: source.job.checkpoint_id,
            detail: "a savepoint was begun without a directory".into(),
        })?;
    let dir = out_dir.join(savepoint_dir.as_str());
    let job = match write_savepoint(&source, options, pending, progress) {
        Ok(job) => job,
        Err(e) => {
            progress.finish();
            // A savepoint without `_metadata` is garbage; do not leave it behind.
            let _ = root.delete_dir(&savepoint_dir);
            return Err(e);
        }
    };
    let operators = job
        .operators
        .iter()
        .map(|op| ConvertedOperator {
            id: op.operator_id.clone(),
            max_parallelism: op.max_parallelism.get(),
            source_parallelism: source
                .job
                .operator(&op.operator_id)
                .map_or(op.parallelism, |o| o.parallelism),
            parallelism: op.parallelism,
            keyed_state: !op.subtasks.is_empty(),
            operator_state: !op.operator_state.is_empty(),
            total_bytes: op
                .subtasks
                .iter()
                .flat_map(|h| &h.files)
                .map(|f| f.size)
                .sum(),
        })
        .collect();
    Ok(ConvertReport {
        source: source.dir.to_string(),
        source_kind: kind_name(&source.job).into(),
        id: job.checkpoint_id,
        format: match options.format {
            SavepointFormat::Canonical => "canonical",
            SavepointFormat::Native => "native",
        }
        .into(),
        savepoint: dir.to_string(),
        kind: kind_name(&job).into(),
        total_bytes: job.files().map(|f| f.size).sum(),
        file_count: job.files().count() as u64,
        operators,
    })
}

fn check_parallelism(op: &OperatorSnapshot, parallelism: u32) -> Result<()> {
    if parallelism == 0 || parallelism > op.max_parallelism.get() {
        return Err(Error::InvalidConfig {
            what: "parallelism",
            detail: format!(
                "{parallelism} is not a parallelism of operator '{}', whose max parallelism \
                 is {}: it must be 1 to {}",
                op.operator_id, op.max_parallelism, op.max_parallelism
            ),
        });
    }
    Ok(())
}

/// Restores and snapshots every subtask of every operator into `pending`, and commits it.
fn write_savepoint(
    source: &OpenSnapshot,
    options: &ConvertOptions,
    mut pending: PendingCheckpoint,
    progress: &dyn Progress,
) -> Result<Arc<JobSnapshot>> {
    let input: Arc<dyn SnapshotStore> = source.store.clone();
    for op in &source.job.operators {
        let parallelism = options.parallelism.unwrap_or(op.parallelism);
        let max = op.max_parallelism;
        let id = op.operator_id.as_str();
        if !op.subtasks.is_empty() {
            let plans = source.job.restore_plan(id, parallelism, max)?;
            progress.start(
                &format!("converting operator {id}"),
                plans.len() as u64,
                Unit::Items,
            );
            for plan in &plans {
                let handle =
                    snapshot_subtask(&input, plan, max, options.format, pending.request())?;
                pending.acknowledge(id, parallelism, max, plan.subtask, handle)?;
                progress.advance(1);
            }
            progress.finish();
        }
        if !op.operator_state.is_empty() {
            let shares = split_operator_state(&op.operator_state, parallelism);
            for (subtask, share) in (0..parallelism).zip(shares) {
                pending.acknowledge_operator_state(id, parallelism, max, subtask, share)?;
            }
        }
    }
    pending.commit_savepoint()
}

/// Restores one new subtask's key groups into a scratch backend and takes its snapshot for
/// `request`.
fn snapshot_subtask(
    input: &Arc<dyn SnapshotStore>,
    plan: &SubtaskRestore,
    max: MaxParallelism,
    format: SavepointFormat,
    request: &SnapshotRequest,
) -> Result<KeyedStateHandle> {
    // Stopped at the epoch: nothing has expired, so nothing is dropped (module docs).
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(0));
    let canonical_input = plan
        .handles
        .iter()
        .all(|h| h.format == SnapshotFormat::Canonical);
    if format == SavepointFormat::Canonical && canonical_input {
        let backend =
            HeapBackend::restore(max, plan.key_groups, clock, input.as_ref(), &plan.handles)?;
        return backend.snapshot(request)?.run();
    }
    // Declared first, so removed after the backend has closed.
    let scratch = ScratchDir::new()?;
    let backend = RocksDbBackend::builder(scratch.path().join("db"), max, plan.key_groups)
        .clock(clock)
        .restore_from(input.clone(), plan.handles.clone())
        .open()?;
    let handle = backend.snapshot(request)?.run()?;
    backend.close()?;
    Ok(handle)
}

/// The operator state of the `old` subtasks, written as `parallelism` subtasks so that a
/// restore at any parallelism hands out exactly what a restore of `old` would.
///
/// A restore concatenates each list and union list state's elements in subtask order, then
/// deals them round-robin (list) or gives all to every subtask (union list); it gives every
/// subtask the first subtask's broadcast state. So each list and union list state's
/// elements, in that concatenated order, are cut into `parallelism` contiguous runs of even
/// length (the first `len % parallelism` runs one longer), and broadcast state is copied to
/// every subtask. Writing each new subtask's share of a restore instead would re-deal list
/// elements on the next restore and multiply union lists by the parallelism.
pub(crate) fn split_operator_state(
    old: &[OperatorStateSnapshot],
    parallelism: u32,
) -> Vec<OperatorStateSnapshot> {
    let p = parallelism.max(1) as usize;
    let mut new = vec![OperatorStateSnapshot::default(); p];
    // At parallelism 1 a restore hands every element, in order, to its one subtask.
    let whole = OperatorStateSnapshot::redistribute(old, 1)
        .pop()
        .unwrap_or_default();
    for (name, entry) in whole.states {
        let len = entry.items.len();
        let mut items = entry.items.iter();
        for (i, subtask) in new.iter_mut().enumerate() {
            let share = match entry.kind {
                OperatorStateKind::Broadcast => entry.items.clone(),
                OperatorStateKind::List | OperatorStateKind::UnionList => {
                    let run = len / p + usize::from(i < len % p);
                    items.by_ref().take(run).cloned().collect()
                }
            };
            let mut state = entry.clone();
            state.items = share;
            subtask.states.insert(name.clone(), state);
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecInfo;
    use crate::operator_state::OperatorStateEntry;

    fn entry(kind: OperatorStateKind, items: &[u8]) -> OperatorStateEntry {
        OperatorStateEntry {
            kind,
            value_codec: CodecInfo {
                id: "u8".into(),
                version: 1,
            },
            key_codec: None,
            items: items.iter().map(|&b| (Vec::new(), vec![b])).collect(),
        }
    }

    fn subtask(states: &[(&str, OperatorStateEntry)]) -> OperatorStateSnapshot {
        OperatorStateSnapshot {
            states: states
                .iter()
                .map(|(n, e)| (n.to_string(), e.clone()))
                .collect(),
        }
    }

    #[test]
    fn split_operator_state_restores_as_the_original_at_any_parallelism() {
        use OperatorStateKind::*;
        let old = vec![
            subtask(&[
                ("offsets", entry(List, &[0, 3, 6])),
                ("all", entry(UnionList, &[10])),
                ("config", entry(Broadcast, &[7])),
            ]),
            subtask(&[
                ("offsets", entry(List, &[1, 4])),
                ("all", entry(UnionList, &[11, 12])),
                ("config", entry(Broadcast, &[7])),
            ]),
            subtask(&[
                ("offsets", entry(List, &[2, 5])),
                ("all", entry(UnionList, &[])),
                ("config", entry(Broadcast, &[7])),
            ]),
        ];
        for written in 1..=5 {
            let new = split_operator_state(&old, written);
            assert_eq!(new.len(), written as usize);
            let sizes: Vec<usize> = new
                .iter()
                .map(|s| s.states["offsets"].items.len())
                .collect();
            assert!(
                sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
                "{sizes:?}"
            );
            for s in &new {
                assert_eq!(s.states["config"], entry(Broadcast, &[7]));
            }
            for restored in 1..=5 {
                assert_eq!(
                    OperatorStateSnapshot::redistribute(&new, restored),
                    OperatorStateSnapshot::redistribute(&old, restored),
                    "written at {written}, restored at {restored}"
                );
            }
        }
    }
}
