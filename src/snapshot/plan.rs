//! Restore plans: which snapshot handles a subtask of a new parallelism restores from.

use crate::error::{Error, Result};
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::operator_state::OperatorStateSnapshot;
use crate::snapshot::{JobSnapshot, KeyedStateHandle};

/// What one subtask of a (possibly new) parallelism restores: its key groups and the
/// handles whose key groups overlap them, the one that overlaps most first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtaskRestore {
    /// The subtask's index.
    pub subtask: u32,
    /// The key groups it owns.
    pub key_groups: KeyGroupRange,
    /// The handles to restore from; the first overlaps most and is the base of a RocksDB
    /// restore.
    pub handles: Vec<KeyedStateHandle>,
    /// The subtask's share of the operator state (see [`crate::OperatorStateStore`]).
    pub operator_state: OperatorStateSnapshot,
}

impl SubtaskRestore {
    /// Whether the subtask restores exactly one handle of its own key groups: the RocksDB
    /// backend then opens the files as they are and keeps the incremental chain.
    pub fn is_same_range(&self) -> bool {
        matches!(self.handles.as_slice(), [h] if h.key_groups == self.key_groups)
    }
}

impl JobSnapshot {
    /// Plans the restore of operator `operator_id` at `parallelism` subtasks.
    ///
    /// An operator the snapshot does not hold restores empty (a new operator in the job).
    ///
    /// # Errors
    /// [`Error::Restore`] if the operator ran with another max parallelism (key groups
    /// cannot be re-cut) or `parallelism` is out of range.
    pub fn restore_plan(
        &self,
        operator_id: &str,
        parallelism: u32,
        max_parallelism: MaxParallelism,
    ) -> Result<Vec<SubtaskRestore>> {
        let what = || {
            format!(
                "operator '{operator_id}' from snapshot {}",
                self.checkpoint_id
            )
        };
        let ranges = (0..parallelism)
            .map(|i| max_parallelism.subtask_range(i, parallelism))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Error::Restore {
                what: what(),
                detail: e.to_string(),
            })?;
        let operator_state = match self.operator(operator_id) {
            Some(op) => OperatorStateSnapshot::redistribute(&op.operator_state, parallelism),
            None => vec![OperatorStateSnapshot::default(); parallelism as usize],
        };
        let handles: &[KeyedStateHandle] = match self.operator(operator_id) {
            None => &[],
            Some(op) if op.max_parallelism != max_parallelism => {
                return Err(Error::Restore {
                    what: what(),
                    detail: format!(
                        "it was snapshotted with max parallelism {}, not {max_parallelism}; \
                         the max parallelism of an operator cannot change, so restore with \
                         max parallelism {}",
                        op.max_parallelism, op.max_parallelism
                    ),
                });
            }
            Some(op) => &op.subtasks,
        };
        Ok(ranges
            .into_iter()
            .zip(operator_state)
            .enumerate()
            .map(|(subtask, (key_groups, operator_state))| {
                let mut overlapping: Vec<(u32, &KeyedStateHandle)> = handles
                    .iter()
                    .filter_map(|h| Some((h.key_groups.intersect(&key_groups)?.len(), h)))
                    .collect();
                // Most overlap first; ties keep subtask order.
                overlapping.sort_by_key(|(overlap, _)| std::cmp::Reverse(*overlap));
                SubtaskRestore {
                    subtask: subtask as u32,
                    key_groups,
                    handles: overlapping.into_iter().map(|(_, h)| h.clone()).collect(),
                    operator_state,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::metadata::tests::sample;

    #[test]
    fn rescaling_picks_overlapping_handles_most_overlap_first() {
        let job = sample(); // max 4, parallelism 2: key groups 0..=1 and 2..=3
        let max = MaxParallelism::new(4).unwrap();
        let same = job.restore_plan("word-count", 2, max).unwrap();
        assert!(same.iter().all(SubtaskRestore::is_same_range));

        let three = job.restore_plan("word-count", 3, max).unwrap();
        let ranges: Vec<_> = three
            .iter()
            .map(|r| (r.key_groups.start(), r.key_groups.end()))
            .collect();
        assert_eq!(ranges, vec![(0, 1), (2, 2), (3, 3)]);
        assert!(three[0].is_same_range());
        assert!(!three[1].is_same_range());
        assert_eq!(three[1].handles.len(), 1);

        let one = job.restore_plan("word-count", 1, max).unwrap();
        assert_eq!(one[0].handles.len(), 2);

        let absent = job.restore_plan("new-operator", 2, max).unwrap();
        assert!(absent.iter().all(|r| r.handles.is_empty()));
    }

    #[test]
    fn a_changed_max_parallelism_is_refused() {
        let err = sample()
            .restore_plan("word-count", 2, MaxParallelism::new(8).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("max parallelism 4"), "{err}");
    }
}
