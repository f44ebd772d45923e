//! `cairn diff`: what changed between two snapshots, in files and, if asked, in entries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::backend::Visit;
use crate::error::{Error, Result};
use crate::keygroup::KeyGroupRange;
use crate::snapshot::OperatorSnapshot;
use crate::storage::{Location, SnapshotStore};

use super::dump::state_names;
use super::open::OpenSnapshot;
use super::read::HandleReader;
use super::{Progress, Unit};

/// What to compare.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiffOptions {
    /// Also compare entries, state by state (reads both snapshots whole).
    pub entries: bool,
}

/// A file in a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRef {
    /// Its local path.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Files of `b` that `a` does not reference (added), of `a` that `b` does not (removed),
/// and of both (shared). A file is the same file when it is the same path on disk: two
/// checkpoints of one root share files; a savepoint shares none.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileDiff {
    /// Files only `b` references.
    pub added: Vec<FileRef>,
    /// Files only `a` references.
    pub removed: Vec<FileRef>,
    /// How many files both reference.
    pub shared: u64,
    /// Bytes of the added files.
    pub added_bytes: u64,
    /// Bytes of the removed files.
    pub removed_bytes: u64,
    /// Bytes of the shared files.
    pub shared_bytes: u64,
}

/// How one state's entries changed from `a` to `b`. Entries are stored entries: a list is
/// one entry, a map one per user key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateDiff {
    /// The operator's id.
    pub operator: String,
    /// The state's name.
    pub state: String,
    /// Whether `a` holds the state.
    pub in_a: bool,
    /// Whether `b` holds the state.
    pub in_b: bool,
    /// Entries only in `b`.
    pub added: u64,
    /// Entries only in `a`.
    pub removed: u64,
    /// Entries in both with different stored bytes.
    pub changed: u64,
    /// Entries in both with the same stored bytes.
    pub unchanged: u64,
}

/// The outcome of [`diff`].
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// The first snapshot's directory.
    pub a: String,
    /// The second snapshot's directory.
    pub b: String,
    /// The first snapshot's id.
    pub a_id: u64,
    /// The second snapshot's id.
    pub b_id: u64,
    /// The files.
    pub files: FileDiff,
    /// Per state, with `--entries`; otherwise null.
    pub entries: Option<Vec<StateDiff>>,
}

impl DiffReport {
    /// Whether the two snapshots differ (in files, or in entries if those were compared).
    pub fn differs(&self) -> bool {
        let files = !self.files.added.is_empty() || !self.files.removed.is_empty();
        let entries = self
            .entries
            .iter()
            .flatten()
            .any(|s| s.added + s.removed + s.changed > 0 || s.in_a != s.in_b);
        files || entries
    }
}

fn files_of(snapshot: &OpenSnapshot) -> BTreeMap<String, u64> {
    snapshot
        .job
        .files()
        .map(|f| {
            (
                snapshot.files_root.join(f.path.as_str()).to_string(),
                f.size,
            )
        })
        .collect()
}

/// Compares the snapshots `a` and `b` name.
///
/// # Errors
/// As [`OpenSnapshot::open`] for either; with `entries`, [`Error::InvalidConfig`] if an
/// operator has another max parallelism in each, and the errors of reading the files.
pub fn diff(
    a: &Location,
    b: &Location,
    options: DiffOptions,
    progress: &dyn Progress,
) -> Result<DiffReport> {
    let a = OpenSnapshot::open(a)?;
    let b = OpenSnapshot::open(b)?;
    let (files_a, files_b) = (files_of(&a), files_of(&b));
    let mut files = FileDiff::default();
    for (path, &size) in &files_b {
        if files_a.contains_key(path) {
            files.shared += 1;
            files.shared_bytes += size;
        } else {
            files.added_bytes += size;
            files.added.push(FileRef {
                path: path.clone(),
                size,
            });
        }
    }
    for (path, &size) in &files_a {
        if !files_b.contains_key(path) {
            files.removed_bytes += size;
            files.removed.push(FileRef {
                path: path.clone(),
                size,
            });
        }
    }
    let entries = if options.entries {
        Some(diff_entries(&a, &b, progress)?)
    } else {
        None
    };
    Ok(DiffReport {
        a: a.dir.to_string(),
        b: b.dir.to_string(),
        a_id: a.job.checkpoint_id,
        b_id: b.job.checkpoint_id,
        files,
        entries,
    })
}

/// One side of an operator: its subtasks' readers, each opened once.
struct Side<'a> {
    readers: Vec<(KeyGroupRange, HandleReader<'a>)>,
}

impl<'a> Side<'a> {
    fn open(
        store: &'a Arc<dyn SnapshotStore>,
        operator: Option<&'a OperatorSnapshot>,
    ) -> Result<Self> {
        let mut readers = Vec::new();
        if let Some(op) = operator {
            for handle in &op.subtasks {
                readers.push((
                    handle.key_groups,
                    HandleReader::open(store, handle, op.max_parallelism)?,
                ));
            }
        }
        Ok(Side { readers })
    }

    /// The entries of `state` in key group `kg`, in key order.
    fn key_group(&self, state: &str, kg: u16) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for (range, reader) in &self.readers {
            if range.contains(kg) {
                reader.read(state, KeyGroupRange::new(kg, kg), None, &mut |k, v| {
                    out.push((k.to_vec(), v.to_vec()));
                    Ok(Visit::Continue(()))
                })?;
            }
        }
        Ok(out)
    }
}

fn compare(a: &[(Vec<u8>, Vec<u8>)], b: &[(Vec<u8>, Vec<u8>)], diff: &mut StateDiff) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    diff.removed += 1;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    diff.added += 1;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if va == vb {
                        diff.unchanged += 1;
                    } else {
                        diff.changed += 1;
                    }
                    i += 1;
                    j += 1;
                }
            },
            (Some(_), None) => {
                diff.removed += 1;
                i += 1;
            }
            (None, Some(_)) => {
                diff.added += 1;
                j += 1;
            }
            (None, None) => break,
        }
    }
}

fn diff_entries(
    a: &OpenSnapshot,
    b: &OpenSnapshot,
    progress: &dyn Progress,
) -> Result<Vec<StateDiff>> {
    let ids: BTreeSet<&str> = a
        .job
        .operators
        .iter()
        .chain(&b.job.operators)
        .map(|o| o.operator_id.as_str())
        .collect();
    let store_a: Arc<dyn SnapshotStore> = a.store.clone();
    let store_b: Arc<dyn SnapshotStore> = b.store.clone();
    let mut out = Vec::new();
    for id in ids {
        let (op_a, op_b) = (a.job.operator(id), b.job.operator(id));
        let max = match (op_a, op_b) {
            (Some(x), Some(y)) if x.max_parallelism != y.max_parallelism => {
                return Err(Error::InvalidConfig {
                    what: "diff",
                    detail: format!(
                        "operator '{id}' has max parallelism {} in the first snapshot and {} \
                         in the second: its entries cannot be compared",
                        x.max_parallelism, y.max_parallelism
                    ),
                })
            }
            (Some(op), _) | (None, Some(op)) => op.max_parallelism,
            (None, None) => continue,
        };
        let names_a = op_a.map(state_names).unwrap_or_default();
        let names_b = op_b.map(state_names).unwrap_or_default();
        let mut names = names_a.clone();
        names.extend(names_b.iter().filter(|n| !names_a.contains(n)).cloned());
        let side_a = Side::open(&store_a, op_a)?;
        let side_b = Side::open(&store_b, op_b)?;
        progress.start(
            &format!("comparing operator '{id}'"),
            u64::from(max.get()) * names.len() as u64,
            Unit::Items,
        );
        for name in names {
            let mut state = StateDiff {
                operator: id.to_string(),
                state: name.clone(),
                in_a: names_a.contains(&name),
                in_b: names_b.contains(&name),
                added: 0,
                removed: 0,
                changed: 0,
                unchanged: 0,
            };
            for kg in KeyGroupRange::all(max).iter() {
                let ea = side_a.key_group(&name, kg)?;
                let eb = side_b.key_group(&name, kg)?;
                compare(&ea, &eb, &mut state);
                progress.advance(1);
            }
            out.push(state);
        }
        progress.finish();
    }
    Ok(out)
}
