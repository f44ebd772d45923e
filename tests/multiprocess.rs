//! One job checkpoint written by many processes, on a real S3-compatible server.
//!
//! 64 subtasks of one operator (RocksDB backends, keyed state and operator state) run in 4
//! worker processes, 16 each: this test binary run again with `CAIRN_MULTIPROCESS_ROLE` set
//! (the same test, which then plays the role and returns). Each worker opens the bucket
//! from its URL and the `AWS_*` environment, snapshots its subtasks when told, and
//! publishes one acknowledgement object per subtask; this process coordinates (a
//! [`CheckpointCoordinator`] listing the acknowledgements) and commits `_metadata`.
//!
//! 1. Checkpoint 1: every subtask answers; it commits; the workers are told, so their next
//!    checkpoint is incremental.
//! 2. Checkpoint 2: one worker is killed (SIGKILL) after uploading its files and before
//!    acknowledging. The coordinator's timeout aborts checkpoint 2.
//! 3. A fresh process restores the latest completed checkpoint (1) at parallelism 3 and
//!    compares every key and the operator state with the model.
//!
//! Workers talk over stdin/stdout lines (`cairn-worker: …`) and exit when stdin closes, so
//! a failing test leaves none behind; the S3 server stops when this process exits.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::{
    BigEndian, CheckpointCoordinator, CheckpointStorage, KeyedStateStore, MaxParallelism,
    MemoryBudget, OperatorStateStore, Retention, RocksDbBackend, SnapshotStore, StateDescriptor,
    SubtaskAck, Utf8,
};
use common::s3::{server, url};

const ROLE: &str = "CAIRN_MULTIPROCESS_ROLE";
const URL: &str = "CAIRN_MULTIPROCESS_URL";
const TEST: &str = "sixty_four_subtasks_in_four_processes_write_one_checkpoint";
const OPERATOR: &str = "word-count";
const PROCESSES: u32 = 4;
const SUBTASKS: u32 = 64;
const RESTORED: u32 = 3;
const KEYS: u64 = 4_096;
/// Messages of the protocol start with this; the test harness prints other text.
const PREFIX: &str = "cairn-worker: ";

fn max() -> MaxParallelism {
    MaxParallelism::new(128).unwrap()
}

fn counts() -> StateDescriptor<String, u64> {
    StateDescriptor::new("counts", Utf8, BigEndian)
}

/// What key `n` holds once checkpoint `id`'s writes are done.
fn value(n: u64, id: u64) -> u64 {
    n * 10 + id
}

/// Each subtask's operator state after checkpoint `id`'s writes: one offset.
fn offset(subtask: u32, id: u64) -> u64 {
    u64::from(subtask) * 1_000 + id
}

fn owner(key: &str, parallelism: u32) -> u32 {
    let max = max();
    max.subtask_of(max.key_group_of(key.as_bytes()), parallelism)
        .unwrap()
}

#[test]
fn sixty_four_subtasks_in_four_processes_write_one_checkpoint() {
    match std::env::var(ROLE).as_deref() {
        Ok("restore") => return restore_role(),
        Ok(worker) => return worker_role(worker.parse().expect("a worker index")),
        Err(_) => {}
    }
    let started = Instant::now();
    let s3 = server();
    let bucket = s3.bucket("multiprocess");
    let root = url(&bucket, "jobs/word-count");
    let store = s3.store(&bucket, "jobs/word-count");
    let storage = CheckpointStorage::open(store.clone(), Retention::default()).unwrap();
    let mut workers: Vec<Worker> = (0..PROCESSES)
        .map(|i| Worker::start(&i.to_string(), &root))
        .collect();
    eprintln!("{:?}: {PROCESSES} workers started", started.elapsed());

    // Checkpoint 1: every subtask answers.
    let coordinator = CheckpointCoordinator::begin(&storage, 1, &[(OPERATOR, SUBTASKS)])
        .unwrap()
        .with_timeout(Duration::from_secs(120))
        .with_poll_interval(Duration::from_millis(50));
    for worker in &mut workers {
        worker.send("checkpoint 1");
    }
    let committed = coordinator.complete().unwrap();
    for worker in &mut workers {
        assert_eq!(worker.expect_line(), "acked 1");
        worker.send("complete 1");
        assert_eq!(worker.expect_line(), "notified 1");
    }
    let operator = committed.operator(OPERATOR).unwrap();
    assert_eq!(operator.subtasks.len(), SUBTASKS as usize);
    assert_eq!(operator.operator_state.len(), SUBTASKS as usize);
    let instances: BTreeSet<_> = operator.subtasks.iter().map(|h| h.instance).collect();
    assert_eq!(instances.len(), SUBTASKS as usize, "64 backends wrote it");
    eprintln!("{:?}: checkpoint 1 committed", started.elapsed());

    // Checkpoint 2: worker 3 is killed after uploading, before acknowledging.
    let coordinator = CheckpointCoordinator::begin(&storage, 2, &[(OPERATOR, SUBTASKS)])
        .unwrap()
        .with_timeout(Duration::from_secs(15))
        .with_poll_interval(Duration::from_millis(50));
    for (i, worker) in workers.iter_mut().enumerate() {
        worker.send(if i == 3 { "stall 2" } else { "checkpoint 2" });
    }
    let mut victim = workers.pop().unwrap();
    assert_eq!(victim.expect_line(), "uploaded 2");
    victim.kill();
    for worker in &mut workers {
        assert_eq!(worker.expect_line(), "acked 2");
    }
    let uploaded: Vec<String> = store
        .list(None)
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .filter(|p| p.starts_with("shared/2-") || p.starts_with("chk-2/"))
        .collect();
    assert!(
        uploaded.iter().any(|p| p.starts_with("shared/2-")),
        "checkpoint 2 uploaded files before it was aborted"
    );
    let e = coordinator.complete().unwrap_err();
    let message = e.to_string();
    assert!(
        matches!(
            e,
            cairn::Error::Checkpoint {
                checkpoint_id: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        message.contains("[48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63]"),
        "the killed worker's subtasks are named: {message}"
    );
    assert!(!store
        .list(None)
        .unwrap()
        .iter()
        .any(|p| p.as_str().starts_with("chk-2/")));
    assert_eq!(
        cairn::latest_checkpoint(store.as_ref())
            .unwrap()
            .map(|j| j.checkpoint_id),
        Some(1)
    );
    eprintln!("{:?}: checkpoint 2 aborted", started.elapsed());
    for mut worker in workers {
        worker.send("exit");
        worker.finish();
    }

    // A fresh process restores checkpoint 1 at parallelism 3 and checks it.
    let mut restorer = Worker::start("restore", &root);
    assert_eq!(restorer.expect_line(), format!("restored 1: {KEYS} keys"));
    restorer.finish();
    eprintln!("{:?}: restored in a fresh process", started.elapsed());
}

/// A worker process: this test binary, in one of its roles.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    name: String,
}

impl Worker {
    fn start(role: &str, root: &str) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env(URL, root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (key, value) in server().env() {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Worker {
            child,
            stdin,
            stdout,
            name: format!("worker {role}"),
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next protocol line (without its prefix); panics if the worker ends first.
    fn expect_line(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "{} ended: {:?}", self.name, self.child.try_wait());
            // The harness may print `test … ... ` before it, on the same line.
            if let Some((_, message)) = line.trim_end().split_once(PREFIX) {
                return message.to_string();
            }
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Closes stdin and waits for a successful exit.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{} exited with {status}", self.name);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A worker left behind by a failing test ends when its stdin closes.
        drop(self.stdin.take());
    }
}

fn say(line: &str) {
    println!("{PREFIX}{line}");
    std::io::stdout().flush().unwrap();
}

/// Subtasks `16 w .. 16 (w + 1)` of the operator, checkpointing when told.
fn worker_role(index: u32) {
    let store = cairn::open_store(&std::env::var(URL).unwrap()).unwrap();
    let per_process = SUBTASKS / PROCESSES;
    let subtasks: Vec<u32> = (index * per_process..(index + 1) * per_process).collect();
    let dirs = tempfile::tempdir().unwrap();
    let budget = MemoryBudget::new(64 << 20);
    let max = max();
    let backends: Vec<(KeyedStateStore, OperatorStateStore)> = subtasks
        .iter()
        .map(|&s| {
            let backend = RocksDbBackend::builder(
                dirs.path().join(s.to_string()),
                max,
                max.subtask_range(s, SUBTASKS).unwrap(),
            )
            .memory_budget(&budget)
            .open()
            .unwrap();
            (KeyedStateStore::new(backend), OperatorStateStore::new())
        })
        .collect();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        let (command, id) = line.split_once(' ').unwrap_or((line.as_str(), "0"));
        let id: u64 = id.parse().unwrap();
        match command {
            "checkpoint" | "stall" => {
                // The writes of this checkpoint's interval, then the barrier.
                for n in 0..KEYS {
                    let key = format!("key-{n}");
                    let subtask = owner(&key, SUBTASKS);
                    if let Some(i) = subtasks.iter().position(|&s| s == subtask) {
                        backends[i]
                            .0
                            .value_state(&counts())
                            .unwrap()
                            .update(&key, &value(n, id))
                            .unwrap();
                    }
                }
                let request = cairn::checkpoint_request(store.clone(), id).unwrap();
                let mut acks = Vec::new();
                for (i, (keyed, operator)) in backends.iter().enumerate() {
                    let mut offsets = operator.list_state("offsets", BigEndian).unwrap();
                    offsets.update(&[offset(subtasks[i], id)]).unwrap();
                    let task = keyed.backend().snapshot(&request).unwrap().spawn().unwrap();
                    acks.push((subtasks[i], task, operator.snapshot()));
                }
                let acks: Vec<SubtaskAck> = acks
                    .into_iter()
                    .map(|(s, task, state)| {
                        SubtaskAck::new(id, OPERATOR, SUBTASKS, max, s)
                            .with_keyed_state(task.wait().unwrap())
                            .with_operator_state(state)
                    })
                    .collect();
                if command == "stall" {
                    say(&format!("uploaded {id}"));
                    // Killed here, before any acknowledgement (or gone when stdin closes).
                    let _ = lines.next();
                    return;
                }
                for ack in &acks {
                    ack.publish(store.as_ref()).unwrap();
                }
                say(&format!("acked {id}"));
            }
            "complete" => {
                for (keyed, _) in &backends {
                    keyed.backend().notify_checkpoint_complete(id);
                }
                say(&format!("notified {id}"));
            }
            "exit" => break,
            other => panic!("unknown command {other}"),
        }
    }
    for (keyed, _) in backends {
        keyed.close().unwrap();
    }
}

/// Restores the latest checkpoint at parallelism 3 and checks it against the model.
fn restore_role() {
    let store: Arc<dyn SnapshotStore> = cairn::open_store(&std::env::var(URL).unwrap()).unwrap();
    let latest = cairn::latest_checkpoint(store.as_ref()).unwrap().unwrap();
    let id = latest.checkpoint_id;
    let max = max();
    let dirs = tempfile::tempdir().unwrap();
    let mut keys = 0;
    let mut offsets: Vec<u64> = Vec::new();
    for plan in latest.restore_plan(OPERATOR, RESTORED, max).unwrap() {
        let backend = RocksDbBackend::builder(
            dirs.path().join(plan.subtask.to_string()),
            max,
            plan.key_groups,
        )
        .restore_from(store.clone(), plan.handles)
        .open()
        .unwrap();
        let keyed = KeyedStateStore::new(backend);
        let mut state = keyed.value_state(&counts()).unwrap();
        let keys_held: Vec<String> = state.keys().collect::<cairn::Result<_>>().unwrap();
        let mut held: BTreeMap<String, u64> = BTreeMap::new();
        for key in keys_held {
            let value = state.get(&key).unwrap().unwrap();
            held.insert(key, value);
        }
        let expected: BTreeMap<String, u64> = (0..KEYS)
            .map(|n| (format!("key-{n}"), value(n, id)))
            .filter(|(key, _)| owner(key, RESTORED) == plan.subtask)
            .collect();
        assert_eq!(held, expected, "subtask {} of {RESTORED}", plan.subtask);
        keys += held.len();
        let operator = OperatorStateStore::restore(plan.operator_state);
        let restored: Vec<u64> = operator
            .list_state("offsets", BigEndian)
            .unwrap()
            .get()
            .unwrap();
        offsets.extend(restored);
        keyed.close().unwrap();
    }
    offsets.sort_unstable();
    let expected: Vec<u64> = (0..SUBTASKS).map(|s| offset(s, id)).collect();
    assert_eq!(offsets, expected, "every subtask's offset, dealt out once");
    say(&format!("restored {id}: {keys} keys"));
}
