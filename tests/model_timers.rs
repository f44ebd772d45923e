//! Model-based test of timers: random programs of timer registrations, deletions, advances of
//! the watermark and of processing time, checkpoints, savepoints and restores at random
//! parallelism run on a job of either backend, and must fire exactly what a plain set of
//! timers says, on the subtask that owns each key, in order, each once.
//!
//! CI runs 24 programs; `PROPTEST_CASES=2000 cargo test --release --test model_timers` runs
//! 1,000.

mod common;

use std::sync::Arc;

use cairn::{
    CheckpointStorage, JobSnapshot, LocalStore, MaxParallelism, Retention, SavepointFormat,
    SnapshotStore, SubStore, TimeDomain, TimerService,
};
use common::job::{restore_targets, Job};
use common::timers::{delete, expect_fired, fire, register, services, ModelTimer, Timers};
use common::{proptest_cases, Kind, KINDS};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Register(ModelTimer),
    Delete(ModelTimer),
    Advance(TimeDomain, u64),
    Checkpoint,
    /// Restore from the latest checkpoint at this parallelism (nothing if there is none).
    Restore(u32),
    /// Take a savepoint and restore from it at once, at this parallelism, into this backend
    /// (a native savepoint of RocksDB restores into RocksDB whatever is asked).
    Savepoint(SavepointFormat, u32, Kind),
}

fn timer() -> impl Strategy<Value = ModelTimer> {
    (
        prop::sample::select(vec![TimeDomain::EventTime, TimeDomain::ProcessingTime]),
        0u64..40,
        (0u8..16).prop_map(|k| format!("k{k}")),
        prop::sample::select(vec![vec![], vec![1], vec![1, 0]]),
    )
}

fn op() -> impl Strategy<Value = Op> {
    let domain = prop::sample::select(vec![TimeDomain::EventTime, TimeDomain::ProcessingTime]);
    let format = prop::sample::select(vec![SavepointFormat::Canonical, SavepointFormat::Native]);
    prop_oneof![
        8 => timer().prop_map(Op::Register),
        2 => timer().prop_map(Op::Delete),
        3 => (domain, 0u64..45).prop_map(|(d, t)| Op::Advance(d, t)),
        1 => Just(Op::Checkpoint),
        1 => (1u32..=3).prop_map(Op::Restore),
        1 => (format, 1u32..=3, prop::sample::select(KINDS.to_vec()))
            .prop_map(|(f, p, k)| Op::Savepoint(f, p, k)),
    ]
}

/// The job under test, its timer services, and where its snapshots go.
struct Harness {
    kind: Kind,
    max: MaxParallelism,
    job: Job,
    services: Vec<TimerService<String>>,
    _dir: tempfile::TempDir,
    root: Arc<dyn SnapshotStore>,
    storage: CheckpointStorage,
    next_id: u64,
    /// The latest checkpoint and the timers it holds.
    latest: Option<(Arc<JobSnapshot>, Timers)>,
}

impl Harness {
    fn new(kind: Kind) -> Self {
        let max = MaxParallelism::new(16).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
        let storage = CheckpointStorage::open(root.clone(), Retention::new(1).unwrap()).unwrap();
        let job = Job::new(kind, max, 2);
        let services = services(&job);
        Harness {
            kind,
            max,
            job,
            services,
            _dir: dir,
            root,
            storage,
            next_id: 1,
            latest: None,
        }
    }

    fn restore(
        &mut self,
        kind: Kind,
        store: &Arc<dyn SnapshotStore>,
        snapshot: &JobSnapshot,
        p: u32,
    ) {
        self.job = Job::restore(kind, store, snapshot, self.max, p).unwrap();
        self.services = services(&self.job);
        self.kind = kind;
    }

    /// Runs one operation on the job and the model; panics where they disagree.
    fn apply(&mut self, model: &mut Timers, op: &Op) {
        match op {
            Op::Register(timer) => {
                register(&self.job, &mut self.services, timer);
                model.insert(timer.clone());
            }
            Op::Delete(timer) => {
                delete(&self.job, &mut self.services, timer);
                model.remove(timer);
            }
            Op::Advance(domain, to) => {
                // The services' times never go back: a lower one fires nothing new.
                let time = self
                    .services
                    .first()
                    .and_then(|s| match domain {
                        TimeDomain::EventTime => s.current_watermark(),
                        TimeDomain::ProcessingTime => s.current_processing_time(),
                    })
                    .map_or(*to, |t| t.max(*to));
                let expected = expect_fired(&self.job, model, *domain, time);
                let fired = fire(&mut self.services, *domain, *to);
                assert_eq!(fired, expected, "{:?}: {op:?}", self.kind);
            }
            Op::Checkpoint => {
                let id = self.next_id;
                self.next_id += 1;
                let snapshot = self.job.checkpoint(&self.storage, id).unwrap();
                self.latest = Some((snapshot, model.clone()));
            }
            Op::Restore(p) => {
                if let Some((snapshot, timers)) = self.latest.clone() {
                    let root = self.root.clone();
                    self.restore(self.kind, &root, &snapshot, *p);
                    *model = timers;
                }
            }
            Op::Savepoint(format, p, to) => {
                let id = self.next_id;
                self.next_id += 1;
                let (dir, snapshot) = self.job.savepoint(&self.root, id, *format).unwrap();
                let store: Arc<dyn SnapshotStore> = Arc::new(SubStore::new(self.root.clone(), dir));
                let to = if restore_targets(self.kind, *format).contains(to) {
                    *to
                } else {
                    Kind::RocksDb
                };
                self.restore(to, &store, &snapshot, *p);
                // The job goes on from the savepoint: its checkpoints start anew there.
                self.latest = None;
            }
        }
    }
}

proptest! {
    // Half the programs of the other model tests: a program restores RocksDB backends about
    // twice, which costs more than all its other operations.
    #![proptest_config(ProptestConfig {
        cases: proptest_cases() / 2,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn timers_match_the_model(ops in prop::collection::vec(op(), 1..32), start in prop::sample::select(KINDS.to_vec())) {
        let mut harness = Harness::new(start);
        let mut model = Timers::new();
        for op in &ops {
            harness.apply(&mut model, op);
        }
        // In the end every timer left fires once, where it belongs.
        for domain in [TimeDomain::EventTime, TimeDomain::ProcessingTime] {
            let expected = expect_fired(&harness.job, &mut model, domain, u64::MAX);
            prop_assert_eq!(fire(&mut harness.services, domain, u64::MAX), expected);
        }
        prop_assert!(model.is_empty());
    }
}
