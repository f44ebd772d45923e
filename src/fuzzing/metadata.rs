//! Fuzz target `metadata`: the `_metadata` decoder, and the restore plans a decoded
//! snapshot gives.

use arbitrary::Unstructured;

use crate::keygroup::MaxParallelism;
use crate::operator_state::OperatorStateKind;
use crate::snapshot::{metadata, JobSnapshot, OperatorSnapshot};
use crate::storage::StoragePath;

use super::{recipe, reseal};

/// Decodes `data` as a `_metadata` file; checks what it accepts (see the module docs of
/// [`fuzzing`](super)).
pub fn metadata(data: &[u8]) -> Result<(), String> {
    let decoded = metadata::decode(data);
    if let Ok(job) = &decoded {
        check_accepted(data, job);
    }
    if let Some(sealed) = reseal::metadata(data).filter(|sealed| sealed != data) {
        if let Ok(job) = metadata::decode(&sealed) {
            check_accepted(&sealed, &job);
        }
    }
    let mut u = Unstructured::new(data);
    if let Ok(job) = recipe::job_snapshot(&mut u) {
        let bytes = job.encode();
        match metadata::decode(&bytes) {
            Ok(back) => assert_eq!(back, job, "decode(encode(job)) differs"),
            Err(e) => panic!("the encoding of a valid job snapshot is refused: {e}\n{job:?}"),
        }
    }
    decoded.map(|_| ())
}

/// What must hold of every `_metadata` the decoder accepts.
fn check_accepted(data: &[u8], job: &JobSnapshot) {
    let again = job.encode();
    assert!(
        again.len() <= data.len(),
        "the encoding of an accepted _metadata grew from {} to {} bytes",
        data.len(),
        again.len()
    );
    assert_eq!(
        metadata::decode(&again).as_ref(),
        Ok(job),
        "an accepted _metadata does not survive encode and decode"
    );
    let path = StoragePath::new("chk-1/_metadata").ok();
    if let Some(path) = path {
        let public = JobSnapshot::decode(data, &path).map_err(|e| e.to_string());
        assert_eq!(public.as_ref(), Ok(job), "JobSnapshot::decode disagrees");
    }
    for operator in &job.operators {
        check_plans(job, operator);
    }
}

/// Restore plans at a few parallelisms: key groups tile the operator's, each subtask gets
/// every handle that overlaps it, operator state is dealt out by its kind.
fn check_plans(job: &JobSnapshot, operator: &OperatorSnapshot) {
    let max = operator.max_parallelism;
    let id = operator.operator_id.as_str();
    let mut parallelisms = vec![1, operator.parallelism, max.get()];
    parallelisms.push((operator.parallelism + 1).min(max.get()));
    parallelisms.push((operator.parallelism / 2).max(1));
    for parallelism in parallelisms {
        // A plan at 32768 subtasks is fine but slow to check on every input.
        if parallelism > 512 {
            continue;
        }
        let plans = match job.restore_plan(id, parallelism, max) {
            Ok(plans) => plans,
            Err(e) => panic!("no plan for '{id}' at parallelism {parallelism}: {e}"),
        };
        assert_eq!(plans.len(), parallelism as usize);
        let mut next = 0u32;
        for (i, plan) in plans.iter().enumerate() {
            assert_eq!(plan.subtask as usize, i);
            assert_eq!(
                u32::from(plan.key_groups.start()),
                next,
                "plans leave a gap"
            );
            next = u32::from(plan.key_groups.end()) + 1;
            let overlapping = operator
                .subtasks
                .iter()
                .filter(|h| h.key_groups.intersect(&plan.key_groups).is_some())
                .count();
            assert_eq!(
                plan.handles.len(),
                overlapping,
                "subtask {i} misses a handle"
            );
        }
        assert_eq!(next, max.get(), "plans do not cover every key group");
        check_operator_state(operator, &plans, parallelism);
    }
    if let Ok(other) = MaxParallelism::new(max.get() % 32_768 + 1) {
        assert!(
            job.restore_plan(id, 1, other).is_err(),
            "a plan under another max parallelism is not refused"
        );
    }
}

fn check_operator_state(
    operator: &OperatorSnapshot,
    plans: &[crate::SubtaskRestore],
    parallelism: u32,
) {
    let Some(first) = operator.operator_state.first() else {
        return;
    };
    for (name, entry) in &first.states {
        let old: usize = operator
            .operator_state
            .iter()
            .filter_map(|s| s.states.get(name))
            .map(|e| e.items.len())
            .sum();
        let shares: Vec<usize> = plans
            .iter()
            .map(|p| {
                p.operator_state
                    .states
                    .get(name)
                    .map_or(0, |e| e.items.len())
            })
            .collect();
        match entry.kind {
            OperatorStateKind::List => {
                assert_eq!(
                    shares.iter().sum::<usize>(),
                    old,
                    "list '{name}' lost elements"
                );
                let (lo, hi) = (shares.iter().min(), shares.iter().max());
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    assert!(hi - lo <= 1, "list '{name}' is dealt unevenly: {shares:?}");
                }
            }
            OperatorStateKind::UnionList => {
                assert!(shares.iter().all(|&n| n == old), "union list '{name}'")
            }
            OperatorStateKind::Broadcast => assert!(
                shares.iter().all(|&n| n == entry.items.len()),
                "broadcast '{name}' at parallelism {parallelism}"
            ),
        }
    }
}
