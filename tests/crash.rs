//! Crash consistency by SIGKILL.
//!
//! A child process (this test binary, re-run on the ignored test `crash_child`) runs a
//! job-like workload on a checkpoint storage root: it restores from the latest completed
//! checkpoint if there is one, at the parallelism the parent picked for this run, then
//! loops: a batch of state writes, a checkpoint (synchronous phase, uploads on background
//! threads, the `_metadata` commit with its garbage collection), and every other
//! checkpoint an explicit garbage collection. It announces each phase on stdout. The
//! parent kills it with SIGKILL at a random delay after a chosen phase (`write`, `sync`,
//! `upload`, `commit`, `gc`, `restore`) or at a random time, and then checks the root:
//!
//! - the latest completed checkpoint ([`cairn::latest_checkpoint`]) is at least the last
//!   one the child announced as committed, and [`cairn::tools::verify`] finds every file
//!   it references whole;
//! - `cairn gc` ([`cairn::tools::collect_garbage`]) removes what the kill left behind by
//!   the engine's rule (no directory of a checkpoint that never completed below the
//!   latest, no shared file, finished or not, that nothing references and that a
//!   checkpoint older than the oldest retained one created), and the checkpoint still
//!   verifies and restores afterwards;
//! - restored in this process at a random parallelism, the checkpoint holds exactly the
//!   model of its batches. The workload is deterministic from a seed: batch `b`'s changes
//!   are the same in every run, so the parent computes the model of "batches 1..=b" itself.
//!   The number `b` is operator state (a union list, one copy per subtask) committed with
//!   the keyed state, as a source's offsets would be; the parent reads it from the
//!   checkpoint, bounds it by what the child announced, and trusts it only because the
//!   keyed state then matches the model exactly.
//!
//! Each backend has its own root, so its chain of kills and restores goes on across the
//! whole run; at the end a child runs three checkpoints to completion and the root must
//! then hold exactly the files of the retained checkpoints, not one byte more.
//!
//! `CAIRN_CRASH_KILLS` sets the number of kills (default 24, split between the backends);
//! `CAIRN_CRASH_SEED` replays a run (the seed is printed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::tools::NoProgress;
use cairn::{
    BigEndian, CheckpointStorage, JobSnapshot, LocalStore, MaxParallelism, OperatorStateStore,
    Retention, SnapshotStore,
};
use common::job::{ops, Job, Model, Rng, OPERATOR};
use common::Kind;

/// The environment variable that makes `crash_child` run the workload.
const CHILD: &str = "CAIRN_CRASH_CHILD";
const KEYS: u64 = 200;
const OPS_PER_BATCH: usize = 300;
const MAX_PARALLELISM: u32 = 32;
const RETAINED: usize = 2;
/// The operator state that counts the batches a checkpoint holds.
const BATCHES: &str = "batches";
/// A child that announces nothing for this long is stuck.
const SILENCE: Duration = Duration::from_secs(60);

fn max() -> MaxParallelism {
    MaxParallelism::new(MAX_PARALLELISM).unwrap()
}

/// The random numbers of batch `batch` of the workload of `seed`: the same in every run.
fn batch_rng(seed: u64, batch: u64) -> Rng {
    Rng((seed ^ batch.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
}

/// What the keys hold after batches `1..=batches`.
fn model_of(seed: u64, batches: u64) -> Model {
    let mut model = Model::default();
    for batch in 1..=batches {
        for op in ops(&mut batch_rng(seed, batch), KEYS, OPS_PER_BATCH) {
            model.apply(&op);
        }
    }
    model.prune();
    model
}

/// The number of batches a checkpoint holds, from its operator state: every subtask
/// committed the same number.
fn batches_of(snapshot: &JobSnapshot) -> u64 {
    let plans = snapshot.restore_plan(OPERATOR, 1, max()).unwrap();
    let share = plans.into_iter().next().unwrap().operator_state;
    let copies = OperatorStateStore::restore(share)
        .union_list_state::<u64>(BATCHES, BigEndian)
        .unwrap()
        .get()
        .unwrap();
    let parallelism = snapshot.operator(OPERATOR).unwrap().parallelism as usize;
    assert_eq!(copies.len(), parallelism, "one batch count per subtask");
    let distinct: BTreeSet<u64> = copies.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        1,
        "subtasks disagree on the batches: {copies:?}"
    );
    copies[0]
}

/// The next checkpoint id: above every checkpoint and savepoint directory of the root,
/// completed or not (docs/operations.md), as the demo does.
fn next_checkpoint_id(root: &Path) -> u64 {
    let used = std::fs::read_dir(root).unwrap().filter_map(|entry| {
        let name = entry.unwrap().file_name().into_string().ok()?;
        let id = name
            .strip_prefix("chk-")
            .or_else(|| name.strip_prefix("savepoint-")?.split('-').next())?;
        id.parse::<u64>().ok()
    });
    used.max().unwrap_or(0) + 1
}

// ---- the child ----

/// What one run of the child does.
#[derive(Debug, Clone)]
struct ChildSpec {
    kind: Kind,
    root: PathBuf,
    work: PathBuf,
    seed: u64,
    parallelism: u32,
    /// Checkpoints after which to exit; 0 runs until killed.
    finish: u32,
}

impl ChildSpec {
    fn encode(&self) -> String {
        let kind = match self.kind {
            Kind::Heap => "heap",
            Kind::RocksDb => "rocksdb",
        };
        format!(
            "{kind}\n{}\n{}\n{}\n{}\n{}",
            self.root.display(),
            self.work.display(),
            self.seed,
            self.parallelism,
            self.finish
        )
    }

    fn decode(text: &str) -> ChildSpec {
        let parts: Vec<&str> = text.split('\n').collect();
        let [kind, root, work, seed, parallelism, finish] = parts[..] else {
            panic!("a bad child spec: {text:?}");
        };
        ChildSpec {
            kind: match kind {
                "heap" => Kind::Heap,
                _ => Kind::RocksDb,
            },
            root: root.into(),
            work: work.into(),
            seed: seed.parse().unwrap(),
            parallelism: parallelism.parse().unwrap(),
            finish: finish.parse().unwrap(),
        }
    }
}

fn announce(phase: &str) {
    // Stdout is line-buffered: each line reaches the parent as it is printed.
    println!("PHASE {phase}");
}

#[test]
#[ignore = "the child process of sigkill_at_random_moments_then_restore_the_latest_checkpoint"]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    run_child(&ChildSpec::decode(&spec));
}

fn run_child(spec: &ChildSpec) {
    announce("start");
    let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(&spec.root).unwrap());
    let (job, mut batches) = match cairn::latest_checkpoint(store.as_ref()).unwrap() {
        Some(latest) => {
            announce(&format!("restore {}", latest.checkpoint_id));
            let job = Job::restore_in(
                &spec.work,
                spec.kind,
                &store,
                &latest,
                max(),
                spec.parallelism,
            )
            .unwrap();
            let batches = batches_of(&latest);
            announce(&format!("restored {} {batches}", latest.checkpoint_id));
            (job, batches)
        }
        None => (
            Job::new_in(&spec.work, spec.kind, max(), spec.parallelism),
            0,
        ),
    };
    let storage =
        CheckpointStorage::open(store.clone(), Retention::new(RETAINED).unwrap()).unwrap();
    for done in 1.. {
        batches += 1;
        announce(&format!("write {batches}"));
        let mut scratch = Model::default();
        job.write(
            &mut scratch,
            &mut batch_rng(spec.seed, batches),
            KEYS,
            OPS_PER_BATCH,
        );
        checkpoint(&job, &storage, next_checkpoint_id(&spec.root), batches);
        if done % 2 == 0 {
            announce("gc");
            storage.collect_garbage().unwrap();
            announce("gc-done");
        }
        if done == spec.finish {
            announce("finished");
            return;
        }
    }
}

/// Checkpoint `id` of the job, holding `batches` batches, announcing each phase.
fn checkpoint(job: &Job, storage: &CheckpointStorage, id: u64, batches: u64) {
    announce(&format!("sync {id}"));
    let mut pending = storage.begin(id).unwrap();
    let snapshots: Vec<_> = job
        .subtasks
        .iter()
        .map(|s| s.backend().snapshot(pending.request()).unwrap())
        .collect();
    announce(&format!("upload {id}"));
    let tasks: Vec<_> = snapshots.into_iter().map(|s| s.spawn().unwrap()).collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let subtask = i as u32;
        let handle = task.wait().unwrap();
        pending
            .acknowledge(OPERATOR, job.parallelism, job.max, subtask, handle)
            .unwrap();
        let progress = OperatorStateStore::new();
        progress
            .union_list_state::<u64>(BATCHES, BigEndian)
            .unwrap()
            .update(&[batches])
            .unwrap();
        pending
            .acknowledge_operator_state(
                OPERATOR,
                job.parallelism,
                job.max,
                subtask,
                progress.snapshot(),
            )
            .unwrap();
    }
    announce(&format!("commit {id}"));
    storage.commit(pending).unwrap();
    announce(&format!("committed {id} {batches}"));
    for s in &job.subtasks {
        s.backend().notify_checkpoint_complete(id);
    }
}

// ---- the parent ----

/// When to kill the child.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// `delay` after the `skip + 1`-th announcement of `phase`.
    After {
        phase: &'static str,
        skip: u32,
        delay: Duration,
    },
    /// `delay` after the child started.
    At(Duration),
}

/// One line the child printed, when it arrived.
struct Line {
    phase: String,
}

/// One backend's storage root and what the parent knows of its history.
struct Chain {
    kind: Kind,
    root: PathBuf,
    work: PathBuf,
    seed: u64,
    rng: Rng,
    runs: u32,
    /// The last checkpoint the child announced as committed, and its batches.
    committed: Option<(u64, u64)>,
    /// The highest batch the child announced it was writing.
    written: u64,
    /// Kills by the phase the child was in.
    kills: BTreeMap<String, u32>,
    /// Files `cairn gc` deleted after kills.
    collected: usize,
}

impl Chain {
    fn new(base: &Path, kind: Kind, seed: u64) -> Chain {
        let root = base.join(format!("{kind:?}-root"));
        let work = base.join(format!("{kind:?}-work"));
        std::fs::create_dir_all(&work).unwrap();
        Chain {
            kind,
            root,
            work,
            seed,
            rng: Rng(seed | 1),
            runs: 0,
            committed: None,
            written: 0,
            kills: BTreeMap::new(),
            collected: 0,
        }
    }

    fn spawn(&mut self, finish: u32) -> (Child, Receiver<Line>, PathBuf) {
        self.runs += 1;
        let work = self.work.join(format!("run-{}", self.runs));
        std::fs::create_dir_all(&work).unwrap();
        let spec = ChildSpec {
            kind: self.kind,
            root: self.root.clone(),
            work: work.clone(),
            seed: self.seed,
            parallelism: 1 + (self.rng.next() % 4) as u32,
            finish,
        };
        let stderr = std::fs::File::create(work.join("stderr")).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD, spec.encode())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((_, phase)) = line.split_once("PHASE ") {
                    if tx
                        .send(Line {
                            phase: phase.to_string(),
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        (child, rx, work)
    }

    /// Learns from one announcement.
    fn learn(&mut self, line: &Line) {
        let words: Vec<&str> = line.phase.split(' ').collect();
        match words[..] {
            ["write", batch] => self.written = self.written.max(batch.parse().unwrap()),
            ["committed", id, batches] => {
                self.committed = Some((id.parse().unwrap(), batches.parse().unwrap()))
            }
            _ => {}
        }
    }

    fn pick_moment(&mut self, has_checkpoint: bool) -> Moment {
        let r = self.rng.next();
        let micros = |max_ms: u64, r: u64| Duration::from_micros((r >> 20) % (max_ms * 1000));
        let phases: &[(&'static str, u64)] = &[
            ("write", 20),
            ("sync", 5),
            ("upload", 30),
            ("commit", 10),
            ("gc", 10),
            ("restore", 40),
        ];
        match r % 8 {
            0 | 1 => Moment::At(micros(1_500, r)),
            n => {
                let (phase, max_ms) = phases[(n - 2) as usize];
                if phase == "restore" && !has_checkpoint {
                    return Moment::At(micros(300, r));
                }
                let skip = if phase == "restore" {
                    0
                } else {
                    (r >> 8) as u32 % 3
                };
                Moment::After {
                    phase,
                    skip,
                    delay: micros(max_ms, r),
                }
            }
        }
    }

    /// Runs the child until the chosen moment, kills it, and checks the root.
    fn kill_once(&mut self) {
        let has_checkpoint = cairn::latest_checkpoint(&LocalStore::new(&self.root).unwrap())
            .unwrap()
            .is_some();
        let moment = self.pick_moment(has_checkpoint);
        let (mut child, lines, work) = self.spawn(0);
        let started = Instant::now();
        let mut last = String::from("spawned");
        let mut seen = 0;
        let deadline = match moment {
            Moment::At(delay) => Some(started + delay),
            Moment::After { .. } => None,
        };
        loop {
            let wait = deadline.map_or(SILENCE, |d| d.saturating_duration_since(Instant::now()));
            match lines.recv_timeout(wait) {
                Ok(line) => {
                    self.learn(&line);
                    last.clone_from(&line.phase);
                    if let Moment::After { phase, skip, delay } = moment {
                        if line.phase.split(' ').next() == Some(phase) {
                            seen += 1;
                            if seen > skip {
                                std::thread::sleep(delay);
                                break;
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) if deadline.is_some() => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the child said nothing for {SILENCE:?} after '{last}'; {}",
                        stderr_of(&work)
                    )
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the child ended on its own ({status}) before it was killed, after '{last}': {}",
            stderr_of(&work)
        );
        // Whatever it printed before it died.
        for line in lines.try_iter() {
            self.learn(&line);
            last = line.phase;
        }
        let phase = last.split(' ').next().unwrap_or("").to_string();
        *self.kills.entry(phase).or_default() += 1;
        self.check();
        std::fs::remove_dir_all(&work).unwrap();
    }

    /// A child that runs `checkpoints` checkpoints to completion.
    fn finish(&mut self, checkpoints: u32) {
        let (mut child, lines, work) = self.spawn(checkpoints);
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "the last child failed: {}",
            stderr_of(&work)
        );
        for line in lines.iter() {
            self.learn(&line);
        }
        self.check();
        self.check_no_garbage();
        std::fs::remove_dir_all(&work).unwrap();
    }

    /// Everything a kill may leave must hold: the latest checkpoint is whole, gc cleans
    /// up after the kill, and the checkpoint restores to exactly its model.
    fn check(&mut self) {
        let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(&self.root).unwrap());
        let Some(latest) = cairn::latest_checkpoint(store.as_ref()).unwrap() else {
            assert_eq!(self.committed, None, "a committed checkpoint is gone");
            return;
        };
        let id = latest.checkpoint_id;
        let batches = batches_of(&latest);
        if let Some((committed, committed_batches)) = self.committed {
            assert!(
                id >= committed,
                "checkpoint {committed} was committed, the latest is {id}"
            );
            if id == committed {
                assert_eq!(batches, committed_batches, "checkpoint {id}'s batches");
            }
        }
        assert!(
            batches <= self.written,
            "checkpoint {id} claims {batches} batches; {} were written",
            self.written
        );
        self.verify(id);
        let gc = cairn::tools::collect_garbage(&cairn::Location::Local(self.root.clone()), false)
            .unwrap();
        self.collected += gc.deleted.len();
        let after = cairn::latest_checkpoint(store.as_ref()).unwrap().unwrap();
        assert_eq!(after.checkpoint_id, id, "gc changed the latest checkpoint");
        self.check_collected(store.as_ref());
        self.verify(id);
        let parallelism = 1 + (self.rng.next() % 4) as u32;
        let restored =
            Job::restore_in(&self.work, self.kind, &store, &latest, max(), parallelism).unwrap();
        restored.check(&model_of(self.seed, batches));
    }

    fn verify(&self, id: u64) {
        let dir = self.root.join(format!("chk-{id}"));
        let report =
            cairn::tools::verify(&cairn::Location::Local(dir.clone()), &NoProgress).unwrap();
        assert!(
            report.ok,
            "checkpoint {id} does not verify: {:#?}",
            report.problems
        );
    }

    /// After gc, nothing the rule calls garbage is left: no directory of a checkpoint that
    /// never completed below the latest, no file in `shared/` (finished or not) that no
    /// retained checkpoint references and that a checkpoint older than the oldest
    /// retained one created.
    fn check_collected(&self, store: &dyn SnapshotStore) {
        let storage = CheckpointStorage::open(
            Arc::new(LocalStore::new(&self.root).unwrap()),
            Retention::new(1000).unwrap(),
        )
        .unwrap();
        let completed = storage.completed();
        let (Some(&oldest), Some(&latest)) = (completed.first(), completed.last()) else {
            return;
        };
        let referenced = referenced_files(store, &completed);
        for file in files_under(&self.root) {
            let top = file.split('/').next().unwrap_or("");
            if let Some(id) = top
                .strip_prefix("chk-")
                .and_then(|id| id.parse::<u64>().ok())
            {
                assert!(
                    completed.contains(&id) || id > latest,
                    "{file}: checkpoint {id} never completed and is older than {latest}"
                );
            } else if top == "shared" {
                let name = file.rsplit('/').next().unwrap_or("");
                let name = match name.strip_prefix(".cairn-tmp-") {
                    Some(rest) => rest.split_once('-').map_or("", |(_, name)| name),
                    None => name,
                };
                let creator: Option<u64> = name.split('-').next().and_then(|id| id.parse().ok());
                assert!(
                    referenced.contains(&file) || creator.is_some_and(|c| c >= oldest),
                    "{file}: garbage that gc left (retained checkpoints {completed:?})"
                );
            }
        }
    }

    /// After a clean run, the root holds the retained checkpoints' files and nothing else.
    fn check_no_garbage(&self) {
        let store = LocalStore::new(&self.root).unwrap();
        let storage =
            CheckpointStorage::open(Arc::new(store.clone()), Retention::new(1000).unwrap())
                .unwrap();
        let completed = storage.completed();
        assert_eq!(completed.len(), RETAINED, "retained checkpoints");
        let mut expected = referenced_files(&store, &completed);
        for id in &completed {
            expected.insert(format!("chk-{id}/_metadata"));
        }
        let found: BTreeSet<String> = files_under(&self.root).into_iter().collect();
        let extra: Vec<_> = found.difference(&expected).collect();
        let missing: Vec<_> = expected.difference(&found).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{:?}: after a clean run the root holds {extra:?} besides its checkpoints' files, \
             and lacks {missing:?}",
            self.kind
        );
    }
}

/// The paths of every file the checkpoints `ids` reference.
fn referenced_files(store: &dyn SnapshotStore, ids: &[u64]) -> BTreeSet<String> {
    ids.iter()
        .flat_map(|&id| {
            cairn::read_checkpoint(store, id)
                .unwrap()
                .files()
                .map(|f| f.path.to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every file under `root`, temporary ones included, as `/`-separated relative paths.
fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

fn stderr_of(work: &Path) -> String {
    let text = std::fs::read_to_string(work.join("stderr")).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("its stderr ends with:\n{}", tail.join("\n"))
}

fn kills() -> u32 {
    std::env::var("CAIRN_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

fn seed() -> u64 {
    std::env::var("CAIRN_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| cairn::Clock::now_millis(&cairn::SystemClock))
}

#[test]
fn sigkill_at_random_moments_then_restore_the_latest_checkpoint() {
    let seed = seed();
    let kills = kills();
    eprintln!("CAIRN_CRASH_SEED={seed} CAIRN_CRASH_KILLS={kills}");
    let base = tempfile::tempdir().unwrap();
    let started = Instant::now();
    for (i, kind) in [Kind::RocksDb, Kind::Heap].into_iter().enumerate() {
        let mut chain = Chain::new(base.path(), kind, seed.wrapping_add(i as u64));
        let share = kills / 2 + if i == 0 { kills % 2 } else { 0 };
        for _ in 0..share {
            chain.kill_once();
        }
        chain.finish(3);
        eprintln!(
            "{kind:?}: {share} kills survived in {} runs, by the phase they hit: {:?}; \
             {} batches; gc removed {} files left by kills",
            chain.runs, chain.kills, chain.written, chain.collected
        );
    }
    eprintln!("{kills} kills in {:.1?}", started.elapsed());
}
