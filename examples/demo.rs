//! The word count that tells cairn's story, end to end, in one process.
//!
//! A job of two operators, each with `--parallelism` subtasks on threads:
//!
//! - **`source`** reads words from [`PARTITIONS`] numbered partitions of a deterministic text
//!   ([`word_at`]). Each source subtask holds the read positions of its partitions as
//!   operator *list* state (`offsets`, one `(partition, offset)` element per partition), so a
//!   restore at another parallelism deals the partitions out again and every word is still
//!   read by exactly one subtask.
//! - **`word-count`** counts words in keyed *value* state (`counts`), one backend per subtask
//!   (RocksDB, or the heap with `--backend heap`). A source sends each word to the counter
//!   subtask owning its key group (`MaxParallelism::key_group_of` + `subtask_of`).
//!
//! Checkpoints are aligned, as Flink's are: the coordinator (the main thread) sends a
//! barrier into every source; a source copies its offsets (its part of the snapshot) and
//! forwards the barrier to every counter; a counter holds back a source's words after that
//! source's barrier until the barriers of all sources are in, then takes the synchronous
//! phase of its snapshot (`KeyedStateBackend::snapshot`) and spawns the asynchronous one
//! (`PendingSnapshot::spawn`) and counts on. The coordinator acknowledges every subtask,
//! commits the checkpoint (`chk-<id>/_metadata`) and notifies the backends.
//!
//! The story: count, checkpoint, crash with uncommitted progress, restart from the latest
//! checkpoint, stop with a canonical savepoint, restart from it at `--parallelism-after`,
//! and check that the counts equal a recount of the words the offsets say were read:
//! exactly once. The storage directory stays for `cairn inspect`.
//!
//! Run it with `./run demo` (`./run demo --help` lists the flags). `tests/demo.rs` runs
//! [`run`] with short settings.

use std::collections::{BTreeMap, VecDeque};
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cairn::tools::{locate, OpenSnapshot, Target};
use cairn::Location;
use cairn::{
    BigEndian, Bincode, CheckpointStorage, HeapBackend, JobSnapshot, KeyGroupRange,
    KeyedStateHandle, KeyedStateStore, LocalStore, MaxParallelism, MemoryBudget, OperatorListState,
    OperatorStateSnapshot, OperatorStateStore, PendingCheckpoint, Retention, RocksDbBackend,
    SavepointFormat, SnapshotKind, SnapshotRequest, SnapshotStore, SnapshotTask, StateDescriptor,
    StoragePath, SubStore, SystemClock, Utf8,
};
use clap::{Parser, ValueEnum};

/// Errors of the demo: any error, from any thread.
pub type DemoResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The source operator's id.
pub const SOURCE: &str = "source";
/// The counting operator's id.
pub const COUNTER: &str = "word-count";
/// The number of partitions of the source's text; it never changes, whatever the
/// parallelism (a source subtask with no partition reads nothing, as a Kafka source with
/// more subtasks than partitions).
pub const PARTITIONS: u32 = 8;
/// The words of the text, some more often than others.
const WORDS: [&str; 12] = [
    "hello", "flink", "hello", "cairn", "state", "hello", "rocks", "flink", "key", "group",
    "cairn", "hello",
];
/// Checkpoints kept in the storage root.
const RETAINED: usize = 2;
/// Records read, with each one printed, at the start.
const TRACED: u64 = 6;

/// The flags of the demo.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "demo",
    about = "A word count on cairn: checkpoints, a crash, a restart, a savepoint and a rescale, \
             checked exactly once"
)]
pub struct Options {
    /// Subtasks of each operator until the savepoint.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=128))]
    pub parallelism: u32,
    /// Subtasks of each operator after the restart from the savepoint (the rescale).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=128))]
    pub parallelism_after: u32,
    /// Records the job reads between two checkpoints.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_interval: u64,
    /// Records each of the three runs reads (the first then reads half an interval more
    /// and crashes, losing what it read after its last checkpoint).
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,
    /// Where checkpoints and savepoints go (DIR/checkpoints) and the subtasks work
    /// (DIR/work); a new temporary directory if not given. It is left behind.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Start from this checkpoint or savepoint of an earlier run (or the latest checkpoint of
    /// a storage root) instead of from the beginning of the text.
    #[arg(long)]
    pub restore: Option<PathBuf>,
    /// Take a canonical savepoint when the last run stops, to go on from later with
    /// --restore.
    #[arg(long)]
    pub savepoint_on_stop: bool,
    /// The keyed state backend of the counter.
    #[arg(long, value_enum, default_value_t = Backend::Rocksdb)]
    pub backend: Backend,
}

/// The counter's keyed state backend.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One RocksDB instance per subtask; incremental checkpoints.
    Rocksdb,
    /// In-memory maps; every checkpoint is a full canonical stream.
    Heap,
}

/// What a run of the demo found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Whether every check held: the counts equal a recount of the words read, every
    /// partition is read by exactly one subtask, after every restore and at the end.
    pub exactly_once: bool,
    /// The final counts.
    pub counts: BTreeMap<String, u64>,
    /// Words read according to the final offsets (those of a restored snapshot included).
    pub consumed: u64,
    /// Records the sources sent in this run of the demo, replays after the crash included.
    pub emitted: u64,
    /// Records read twice: read before the crash, lost with it, read again after.
    pub replayed: u64,
    /// The checkpoint storage root (checkpoints and savepoints).
    pub storage: PathBuf,
    /// The checkpoints committed, in order.
    pub checkpoints: Vec<u64>,
    /// The savepoint the job stopped with before the rescale.
    pub savepoint: PathBuf,
    /// The savepoint of the last stop (`--savepoint-on-stop`).
    pub final_savepoint: Option<PathBuf>,
    /// The subtasks of each operator in the last run.
    pub final_parallelism: u32,
}

fn main() {
    let options = Options::parse();
    let stdout = std::io::stdout();
    match run(&options, &mut stdout.lock()) {
        Ok(report) if report.exactly_once => {}
        Ok(_) => std::process::exit(1),
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(2);
        }
    }
}

/// The word at `offset` of `partition`: a pure function, so a recount needs only offsets.
pub fn word_at(partition: u32, offset: u64) -> &'static str {
    // splitmix64 of the position.
    let mut z = (u64::from(partition) << 40 | offset).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    WORDS[(z % WORDS.len() as u64) as usize]
}

/// The counts a straight recount of the words before each `(partition, offset)` gives.
pub fn recount(offsets: &[(u32, u64)]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for &(partition, end) in offsets {
        for offset in 0..end {
            *counts
                .entry(word_at(partition, offset).to_string())
                .or_insert(0) += 1;
        }
    }
    counts
}

fn counts_descriptor() -> StateDescriptor<String, u64> {
    StateDescriptor::new("counts", Utf8, BigEndian)
}

fn offsets_state(store: &OperatorStateStore) -> cairn::Result<OperatorListState<(u32, u64)>> {
    store.list_state("offsets", Bincode::new())
}

/// Runs the whole story, printing each step to `out`.
///
/// # Errors
/// Any error of cairn or of the file system; a failed exactly-once check is not an error
/// but `Report::exactly_once == false`.
pub fn run(options: &Options, out: &mut dyn Write) -> DemoResult<Report> {
    let started = Instant::now();
    let restore = options.restore.as_deref().map(open_restore).transpose()?;
    // A checkpoint shares files with the later checkpoints of its root, so a job restored
    // from one checkpoints into that root; anything else into DIR/checkpoints.
    let from_checkpoint = restore
        .as_ref()
        .filter(|r| r.snapshot.kind == SnapshotKind::Checkpoint);
    let (root, work) = match (&options.dir, from_checkpoint) {
        (Some(dir), from) => {
            let root = dir.join("checkpoints");
            if let Some(from) = from {
                check_same_root(from, &root)?;
            }
            (root, dir.join("work"))
        }
        (None, Some(from)) => (from.files_root.clone(), fresh_dir()?.join("work")),
        (None, None) => {
            let dir = fresh_dir()?;
            (dir.join("checkpoints"), dir.join("work"))
        }
    };
    let root_store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(&root)?);
    let (p, interval) = (options.parallelism, options.checkpoint_interval);
    let mut story = Story {
        out,
        options,
        root: root.clone(),
        root_store: root_store.clone(),
        work,
        checkpoints: Vec::new(),
        restored_id: restore.as_ref().map_or(0, |r| r.snapshot.checkpoint_id),
        emitted: 0,
        ok: true,
    };
    writeln!(
        story.out,
        "cairn demo: a word count of {p} source and {p} counter subtasks ({}), \
         a checkpoint every {interval} records",
        match options.backend {
            Backend::Rocksdb => "RocksDB",
            Backend::Heap => "heap",
        }
    )?;
    writeln!(
        story.out,
        "checkpoints and savepoints go to {}",
        root.display()
    )?;

    // 1. Count words.
    let storage = story.open_storage()?;
    match &restore {
        None => writeln!(story.out, "\n1. count words from the beginning of the text")?,
        Some(r) => writeln!(
            story.out,
            "\n1. count words, starting from {} ({:?} {})",
            r.path.display(),
            r.snapshot.kind,
            r.snapshot.checkpoint_id
        )?,
    }
    let mut job = story.start(p, restore.as_ref(), "1")?;
    let start_offsets = story.check_restored(&job, restore.is_some())?;
    let traced = TRACED.min(options.records);
    job.read(traced, true)?;
    for line in job.sync()? {
        writeln!(story.out, "   {line}")?;
    }
    writeln!(story.out, "   counts: {}", show(&job.counts()?))?;

    // 2. Checkpoints.
    writeln!(
        story.out,
        "\n2. count on, with a checkpoint every {interval} records \
         (aligned barriers; uploads run while the counting goes on)"
    )?;
    story.count(&mut job, &storage, options.records - traced)?;
    if storage.latest().is_none() {
        writeln!(story.out, "   no checkpoint completed yet")?;
    }

    // 3. Crash.
    let lost = (interval / 2).max(1);
    job.read(lost, false)?;
    job.sync()?;
    let uncommitted = job.since_checkpoint;
    writeln!(
        story.out,
        "\n3. crash: {uncommitted} records after the last checkpoint are counted ({}), \
         then the job dies before its next checkpoint; its working directories are not used again",
        show(&job.counts()?)
    )?;
    story.emitted += job.emitted;
    job.crash()?;
    drop(storage);

    // 4. Restart from the latest checkpoint at the same parallelism.
    let storage = story.open_storage()?;
    let latest = match cairn::latest_checkpoint(root_store.as_ref())? {
        Some(snapshot) => {
            let path = root.join(format!("chk-{}", snapshot.checkpoint_id));
            writeln!(
                story.out,
                "\n4. restart from the latest checkpoint, {}, at parallelism {p}",
                path.display()
            )?;
            Some(Restore {
                path,
                files_root: root.clone(),
                store: root_store.clone(),
                snapshot,
            })
        }
        None => {
            let from = match &restore {
                Some(r) => r.path.display().to_string(),
                None => "the beginning of the text".into(),
            };
            writeln!(
                story.out,
                "\n4. restart: no checkpoint completed, so from {from} again, at parallelism {p}"
            )?;
            restore.clone()
        }
    };
    let mut job = story.start(p, latest.as_ref(), "2")?;
    story.check_restored(&job, true)?;
    writeln!(
        story.out,
        "   the {uncommitted} uncommitted records are read again, and counted once"
    )?;
    story.count(&mut job, &storage, options.records)?;

    // 5. Stop with a savepoint.
    let (savepoint, _) = story.savepoint(&mut job)?;
    writeln!(
        story.out,
        "\n5. stop with a canonical savepoint: {}\n   counts: {}",
        savepoint.display(),
        show(&job.counts()?)
    )?;
    story.emitted += job.emitted;
    job.stop()?;
    drop(storage);

    // 6. Restart from the savepoint at another parallelism.
    let q = options.parallelism_after;
    let storage = story.open_storage()?;
    let from = open_restore(&savepoint)?;
    writeln!(
        story.out,
        "\n6. restart from the savepoint at parallelism {q} (rescale {p} -> {q})"
    )?;
    let mut job = story.start(q, Some(&from), "3")?;
    story.check_restored(&job, true)?;
    story.count(&mut job, &storage, options.records)?;

    // 7. Stop, and check.
    let final_savepoint = if options.savepoint_on_stop {
        let (dir, _) = story.savepoint(&mut job)?;
        writeln!(
            story.out,
            "\n7. stop with a canonical savepoint: {}",
            dir.display()
        )?;
        Some(dir)
    } else {
        job.sync()?;
        writeln!(story.out, "\n7. stop")?;
        None
    };
    let counts = job.counts()?;
    let offsets: Vec<(u32, u64)> = job.offsets()?.into_iter().flatten().collect();
    story.emitted += job.emitted;
    job.stop()?;
    drop(storage);
    writeln!(story.out, "   counts: {}", show(&counts))?;
    story.check(&counts, &offsets)?;
    let consumed: u64 = offsets.iter().map(|(_, o)| o).sum();
    let replayed = story
        .emitted
        .saturating_sub(consumed.saturating_sub(start_offsets));
    let ok = story.ok;
    if ok {
        writeln!(
            story.out,
            "   {consumed} words read by the offsets, {} counted; the sources sent {} records, \
             {replayed} of them twice (after the crash)",
            counts.values().sum::<u64>(),
            story.emitted
        )?;
        writeln!(story.out, "exactly once: OK")?;
    } else {
        writeln!(story.out, "exactly once: FAILED")?;
    }

    // The runs' working directories are gone; their parent too if nothing else is in it.
    let _ = fs::remove_dir(&story.work);
    let cairn = "cargo run --quiet --bin cairn --";
    let latest = story.checkpoints.last().copied();
    writeln!(
        story.out,
        "\ndone in {:.1} s; look inside (the directory stays):",
        started.elapsed().as_secs_f64()
    )?;
    writeln!(story.out, "  {cairn} inspect {}", root.display())?;
    writeln!(
        story.out,
        "  {cairn} inspect {} --count",
        savepoint.display()
    )?;
    if let Some(id) = latest {
        let chk = root.join(format!("chk-{id}"));
        writeln!(story.out, "  {cairn} verify {}", chk.display())?;
        writeln!(
            story.out,
            "  {cairn} dump {} --operator {COUNTER} --state counts --key hello",
            chk.display()
        )?;
    }
    writeln!(story.out, "  {cairn} gc {} --dry-run", root.display())?;
    if let Some(dir) = &final_savepoint {
        writeln!(
            story.out,
            "go on from where it stopped: ./run demo --restore {}",
            dir.display()
        )?;
    }
    Ok(Report {
        exactly_once: ok,
        counts,
        consumed,
        emitted: story.emitted,
        replayed,
        storage: root,
        checkpoints: story.checkpoints,
        savepoint,
        final_savepoint,
        final_parallelism: q,
    })
}

/// A snapshot to start from, and the store its file paths resolve against.
#[derive(Clone)]
struct Restore {
    snapshot: JobSnapshot,
    store: Arc<dyn SnapshotStore>,
    /// The directory holding its `_metadata`.
    path: PathBuf,
    /// The directory its file paths are relative to.
    files_root: PathBuf,
}

/// Opens a checkpoint or savepoint directory, or the latest checkpoint of a storage root.
fn open_restore(path: &Path) -> DemoResult<Restore> {
    let local = |location: Location| match location {
        Location::Local(path) => path,
        Location::Url(url) => PathBuf::from(url),
    };
    let restore = match locate(&Location::from(path))? {
        Target::Snapshot(metadata) => {
            let open = OpenSnapshot::open_metadata(&metadata)?;
            Restore {
                snapshot: open.job,
                store: open.store,
                path: local(open.dir),
                files_root: local(open.files_root),
            }
        }
        Target::Root(root) => {
            let root = local(root);
            let store: Arc<dyn SnapshotStore> = Arc::new(LocalStore::new(&root)?);
            let snapshot = cairn::latest_checkpoint(store.as_ref())?
                .ok_or_else(|| format!("{} holds no completed checkpoint", root.display()))?;
            Restore {
                path: root.join(format!("chk-{}", snapshot.checkpoint_id)),
                files_root: root,
                store,
                snapshot,
            }
        }
    };
    for operator in [SOURCE, COUNTER] {
        if restore.snapshot.operator(operator).is_none() {
            return Err(format!(
                "{} is not a snapshot of this demo: it has no operator '{operator}'",
                path.display()
            )
            .into());
        }
    }
    Ok(restore)
}

/// A checkpoint shares files with the later checkpoints of its root, so the job must go on
/// checkpointing into that root.
fn check_same_root(from: &Restore, root: &Path) -> DemoResult<()> {
    let files_root = &from.files_root;
    let same = match (fs::canonicalize(files_root), fs::canonicalize(root)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Ok(());
    }
    Err(format!(
        "{} is a checkpoint of the storage root {}, whose later checkpoints share its \
         files, so the job must go on checkpointing there, not in {}: run without --dir, or \
         restore from a savepoint (`cairn convert` makes one from a checkpoint)",
        from.path.display(),
        files_root.display(),
        root.display()
    )
    .into())
}

fn fresh_dir() -> DemoResult<PathBuf> {
    let millis = cairn::Clock::now_millis(&SystemClock);
    let dir = std::env::temp_dir().join(format!(
        "cairn-demo-{}-{:x}",
        std::process::id(),
        millis % 0x1_0000_0000
    ));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The highest checkpoint or savepoint id in `root` (savepoints do not count for
/// `CheckpointStorage`, which sees only `chk-<id>`, but their ids are not reused either).
fn highest_id(root: &Path) -> DemoResult<u64> {
    let mut highest = 0;
    for entry in fs::read_dir(root)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let id = name
            .strip_prefix("chk-")
            .or_else(|| name.strip_prefix("savepoint-")?.split('-').next())
            .and_then(|id| id.parse::<u64>().ok());
        highest = highest.max(id.unwrap_or(0));
    }
    Ok(highest)
}

/// Counts by word, most frequent first.
fn show(counts: &BTreeMap<String, u64>) -> String {
    let mut sorted: Vec<(&String, &u64)> = counts.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut text = String::new();
    for (word, n) in sorted {
        let _ = write!(text, "{}{word}={n}", if text.is_empty() { "" } else { " " });
    }
    if text.is_empty() {
        text.push_str("(none)");
    }
    text
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn read_counts(store: &KeyedStateStore) -> DemoResult<BTreeMap<String, u64>> {
    let mut state = store.value_state(&counts_descriptor())?;
    let words = state.keys().collect::<cairn::Result<Vec<String>>>()?;
    let mut counts = BTreeMap::new();
    for word in words {
        counts.insert(word.clone(), state.get(&word)?.unwrap_or(0));
    }
    Ok(counts)
}

/// The state of the story between its steps.
struct Story<'a> {
    out: &'a mut dyn Write,
    options: &'a Options,
    root: PathBuf,
    root_store: Arc<dyn SnapshotStore>,
    work: PathBuf,
    checkpoints: Vec<u64>,
    /// The id of the snapshot the demo started from: ids go on above it.
    restored_id: u64,
    emitted: u64,
    ok: bool,
}

impl Story<'_> {
    /// The job's checkpoints, as a job (re)starting opens them.
    fn open_storage(&self) -> DemoResult<CheckpointStorage> {
        Ok(CheckpointStorage::open(
            self.root_store.clone(),
            Retention::new(RETAINED)?,
        )?)
    }

    /// The next checkpoint or savepoint id: above every one in the root and the one the
    /// demo started from.
    fn next_id(&self) -> DemoResult<u64> {
        Ok(highest_id(&self.root)?.max(self.restored_id) + 1)
    }

    fn start(&mut self, p: u32, from: Option<&Restore>, run: &str) -> DemoResult<Job> {
        let job = Job::start(self.options.backend, p, from, self.work.join(run))?;
        let sources: Vec<String> = job
            .assigned
            .iter()
            .enumerate()
            .map(|(i, parts)| format!("{i}: {parts:?}"))
            .collect();
        writeln!(
            self.out,
            "   source subtasks read partitions  {}",
            sources.join(", ")
        )?;
        let counters: Vec<String> = job
            .counters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let range = c.key_group_range();
                format!("{i}: {}..={}", range.start(), range.end())
            })
            .collect();
        writeln!(
            self.out,
            "   counter subtasks own key groups  {}",
            counters.join(", ")
        )?;
        Ok(job)
    }

    /// After a restore: prints the state and checks that it is consistent. Returns the
    /// words read so far.
    fn check_restored(&mut self, job: &Job, restored: bool) -> DemoResult<u64> {
        let offsets: Vec<(u32, u64)> = job.offsets()?.into_iter().flatten().collect();
        let read: u64 = offsets.iter().map(|(_, o)| o).sum();
        if restored {
            let counts = job.counts()?;
            writeln!(
                self.out,
                "   restored: {read} words read, counts {}",
                show(&counts)
            )?;
            self.check(&counts, &offsets)?;
        }
        Ok(read)
    }

    /// Checks that every partition is read by exactly one subtask and that the counts are
    /// a recount of the words before the offsets.
    fn check(&mut self, counts: &BTreeMap<String, u64>, offsets: &[(u32, u64)]) -> DemoResult<()> {
        let mut partitions: Vec<u32> = offsets.iter().map(|(p, _)| *p).collect();
        partitions.sort_unstable();
        if partitions != (0..PARTITIONS).collect::<Vec<_>>() {
            writeln!(
                self.out,
                "   MISMATCH: the sources hold partitions {partitions:?}, not each of 0..{PARTITIONS} once"
            )?;
            self.ok = false;
        }
        let expected = recount(offsets);
        if *counts != expected {
            writeln!(
                self.out,
                "   MISMATCH: the counts are {}, a recount of the words read gives {}",
                show(counts),
                show(&expected)
            )?;
            self.ok = false;
        } else {
            writeln!(
                self.out,
                "   checked: the counts equal a recount of the {} words the offsets say were read",
                offsets.iter().map(|(_, o)| o).sum::<u64>()
            )?;
        }
        Ok(())
    }

    /// Checks that a snapshot is a consistent cut: the counters counted exactly the words
    /// the sources' offsets say were read before the barrier.
    fn check_cut(&mut self, id: u64, passed: &Passed) -> DemoResult<()> {
        if passed.read != passed.counted {
            writeln!(
                self.out,
                "   MISMATCH: snapshot {id} holds offsets past {} words but {} counted",
                passed.read, passed.counted
            )?;
            self.ok = false;
        }
        Ok(())
    }

    /// Reads `records` more, a checkpoint every interval; the asynchronous phase of each
    /// checkpoint runs while the next records are counted.
    fn count(
        &mut self,
        job: &mut Job,
        storage: &CheckpointStorage,
        records: u64,
    ) -> DemoResult<()> {
        let interval = self.options.checkpoint_interval;
        let mut left = records;
        let mut in_flight: Option<(PendingCheckpoint, Instant)> = None;
        loop {
            if left > 0 && job.since_checkpoint < interval {
                let n = (interval - job.since_checkpoint).min(left);
                job.read(n, false)?;
                left -= n;
            }
            // The previous checkpoint completes while those records are counted.
            if let Some((pending, begun)) = in_flight.take() {
                self.complete(job, storage, pending, begun)?;
            }
            if job.since_checkpoint >= interval {
                let pending = storage.begin(self.next_id()?)?;
                job.barrier(Some(pending.request().clone()), pending.id())?;
                job.since_checkpoint = 0;
                in_flight = Some((pending, Instant::now()));
            } else if left == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Acknowledges every subtask's part of `pending`, commits it and notifies the backends.
    fn complete(
        &mut self,
        job: &mut Job,
        storage: &CheckpointStorage,
        mut pending: PendingCheckpoint,
        begun: Instant,
    ) -> DemoResult<()> {
        let id = pending.id();
        let passed = match job.acknowledge(&mut pending) {
            Ok(passed) => passed,
            Err(e) => {
                storage.abort(pending)?;
                return Err(e);
            }
        };
        self.check_cut(id, &passed)?;
        let snapshot = storage.commit(pending)?;
        for counter in &job.counters {
            counter.backend().notify_checkpoint_complete(id);
        }
        self.checkpoints.push(id);
        // Shared files (RocksDB's SSTs) are uploaded once and referenced by later
        // checkpoints; private files (RocksDB's MANIFEST and OPTIONS, or a heap backend's
        // canonical stream) are written by every checkpoint.
        let (mut fresh, mut reused, mut private) = (0, 0, 0);
        for file in snapshot.files() {
            match cairn::shared_file_creator(&file.path) {
                Some(creator) if creator == id => fresh += file.size,
                Some(_) => reused += file.size,
                None => private += file.size,
            }
        }
        let files = if fresh + reused > 0 {
            format!(
                "SST files {} uploaded + {} reused, other files {}",
                kib(fresh),
                kib(reused),
                kib(private)
            )
        } else {
            format!("{} written", kib(private))
        };
        writeln!(
            self.out,
            "   checkpoint {id} at {} words: {files}; synchronous phase {} ms, committed {} ms \
             after the barrier",
            passed.read,
            passed.sync.as_millis(),
            begun.elapsed().as_millis()
        )?;
        Ok(())
    }

    /// Takes a canonical savepoint of the job, in a directory of its own in the root.
    fn savepoint(&mut self, job: &mut Job) -> DemoResult<(PathBuf, Arc<JobSnapshot>)> {
        let mut pending = cairn::begin_savepoint(
            self.root_store.clone(),
            self.next_id()?,
            SavepointFormat::Canonical,
            &SystemClock,
        )?;
        job.barrier(Some(pending.request().clone()), pending.id())?;
        let passed = job.acknowledge(&mut pending)?;
        self.check_cut(pending.id(), &passed)?;
        let dir: StoragePath = pending
            .savepoint_dir()
            .cloned()
            .ok_or("a savepoint without a directory")?;
        let snapshot = pending.commit_savepoint()?;
        // Read back from disk, as a restore from it will.
        let store = SubStore::new(self.root_store.clone(), dir.clone());
        if cairn::read_savepoint(&store)? != *snapshot {
            return Err("the savepoint read back differs from the one written".into());
        }
        Ok((self.root.join(dir.as_str()), snapshot))
    }
}

/// A barrier: a checkpoint or savepoint to take (`request`), or none, to wait until every
/// record sent before it is counted.
#[derive(Clone)]
struct Marker {
    id: u64,
    request: Option<SnapshotRequest>,
}

/// From the coordinator to a source subtask.
enum Command {
    /// Read `records` more, round-robin over the subtask's partitions.
    Read {
        records: u64,
        trace: bool,
    },
    Barrier(Marker),
    /// End of input: forward it and stop.
    Stop,
}

/// From a source subtask to a counter subtask.
enum Record {
    Word { from: usize, word: &'static str },
    Barrier { from: usize, marker: Marker },
    End { from: usize },
}

impl Record {
    fn from(&self) -> usize {
        match self {
            Record::Word { from, .. } | Record::Barrier { from, .. } | Record::End { from } => {
                *from
            }
        }
    }
}

/// From a subtask to the coordinator.
enum Event {
    /// A source passed marker `id` on; `state` is its snapshot if the marker takes one.
    Source {
        subtask: usize,
        id: u64,
        state: Option<OperatorStateSnapshot>,
        /// The words its offsets say it read, all partitions together.
        read: u64,
    },
    /// A counter aligned on marker `id`; `task` is its snapshot's asynchronous phase.
    Counter {
        subtask: usize,
        id: u64,
        task: Option<SnapshotTask>,
        sync: Duration,
        /// The words it counted, restored counts included.
        counted: u64,
    },
    /// A record read, to print.
    Trace {
        source: usize,
        line: String,
    },
    Failed(String),
}

/// What the subtasks answered to one barrier.
struct Passed {
    /// The sources' operator state, if the barrier takes a snapshot.
    states: Vec<Option<OperatorStateSnapshot>>,
    /// The counters' asynchronous phases, if the barrier takes a snapshot.
    tasks: Vec<Option<SnapshotTask>>,
    /// The longest synchronous phase.
    sync: Duration,
    /// Words read before the barrier, by the sources' offsets.
    read: u64,
    /// Words counted before the barrier, by the counters.
    counted: u64,
    /// The records traced, in each source's order.
    traces: Vec<String>,
}

/// A running job: its threads, and what the coordinator keeps of its subtasks.
struct Job {
    parallelism: u32,
    commands: Vec<Sender<Command>>,
    events: Receiver<Event>,
    threads: Vec<JoinHandle<()>>,
    counters: Vec<KeyedStateStore>,
    sources: Vec<OperatorStateStore>,
    /// The partitions each source subtask reads.
    assigned: Vec<Vec<u32>>,
    work: PathBuf,
    /// Records sent since the start, and since the last checkpoint was triggered.
    emitted: u64,
    since_checkpoint: u64,
}

impl Job {
    /// Starts `p` subtasks of each operator, fresh or from `from`, working in `work`.
    fn start(backend: Backend, p: u32, from: Option<&Restore>, work: PathBuf) -> DemoResult<Job> {
        let max = MaxParallelism::DEFAULT;
        if work.exists() {
            fs::remove_dir_all(&work)?;
        }
        // One memory budget for every RocksDB instance of the process.
        let budget = MemoryBudget::new(64 << 20);
        let mut counters = Vec::new();
        let mut sources = Vec::new();
        match from {
            None => {
                for i in 0..p {
                    let range = max.subtask_range(i, p)?;
                    counters.push(open_counter(backend, &work, i, range, None, &budget)?);
                    let state = OperatorStateStore::new();
                    let mine: Vec<(u32, u64)> = (0..PARTITIONS)
                        .filter(|k| k % p == i)
                        .map(|k| (k, 0))
                        .collect();
                    offsets_state(&state)?.update(&mine)?;
                    sources.push(state);
                }
            }
            Some(from) => {
                for plan in from.snapshot.restore_plan(COUNTER, p, max)? {
                    counters.push(open_counter(
                        backend,
                        &work,
                        plan.subtask,
                        plan.key_groups,
                        Some((&from.store, plan.handles)),
                        &budget,
                    )?);
                }
                for plan in from.snapshot.restore_plan(SOURCE, p, max)? {
                    sources.push(OperatorStateStore::restore(plan.operator_state));
                }
            }
        }
        let assigned = sources
            .iter()
            .map(|s| {
                Ok(offsets_state(s)?
                    .get()?
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect())
            })
            .collect::<DemoResult<Vec<Vec<u32>>>>()?;

        let (event_tx, events) = mpsc::channel();
        let mut threads = Vec::new();
        let mut inboxes = Vec::new();
        for (i, store) in counters.iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            inboxes.push(tx);
            let (store, events) = (store.clone(), event_tx.clone());
            let sources = p as usize;
            threads.push(
                thread::Builder::new()
                    .name(format!("{COUNTER}-{i}"))
                    .spawn(move || {
                        if let Err(e) = count(i, &store, &rx, sources, &events) {
                            let _ = events.send(Event::Failed(format!("counter {i}: {e}")));
                        }
                    })?,
            );
        }
        let mut commands = Vec::new();
        for (i, state) in sources.iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            commands.push(tx);
            let (state, outputs, events) = (state.clone(), inboxes.clone(), event_tx.clone());
            threads.push(thread::Builder::new().name(format!("{SOURCE}-{i}")).spawn(
                move || {
                    if let Err(e) = read(i, &state, &rx, &outputs, &events) {
                        let _ = events.send(Event::Failed(format!("source {i}: {e}")));
                    }
                },
            )?);
        }
        Ok(Job {
            parallelism: p,
            commands,
            events,
            threads,
            counters,
            sources,
            assigned,
            work,
            emitted: 0,
            since_checkpoint: 0,
        })
    }

    /// Has the sources read `records` more, dealt evenly over all partitions.
    fn read(&mut self, records: u64, trace: bool) -> DemoResult<()> {
        let partitions = self.assigned.iter().map(Vec::len).sum::<usize>() as u64;
        let mut j = 0;
        for (source, parts) in self.assigned.iter().enumerate() {
            let mut share = 0;
            for _ in parts {
                share += records / partitions + u64::from(j < records % partitions);
                j += 1;
            }
            if share > 0 {
                self.commands[source]
                    .send(Command::Read {
                        records: share,
                        trace,
                    })
                    .map_err(|_| "a source subtask is gone")?;
            }
        }
        self.emitted += records;
        self.since_checkpoint += records;
        Ok(())
    }

    /// Sends a barrier into every source.
    fn barrier(&mut self, request: Option<SnapshotRequest>, id: u64) -> DemoResult<()> {
        for command in &self.commands {
            command
                .send(Command::Barrier(Marker {
                    id,
                    request: request.clone(),
                }))
                .map_err(|_| "a source subtask is gone")?;
        }
        Ok(())
    }

    /// Waits until every subtask has passed the barrier `id` on.
    fn wait(&mut self, id: u64) -> DemoResult<Passed> {
        let p = self.parallelism as usize;
        let mut passed = Passed {
            states: vec![None; p],
            tasks: (0..p).map(|_| None).collect(),
            sync: Duration::ZERO,
            read: 0,
            counted: 0,
            traces: Vec::new(),
        };
        let mut traces = Vec::new();
        let mut waiting = 2 * p;
        while waiting > 0 {
            let event = self
                .events
                .recv_timeout(Duration::from_secs(120))
                .map_err(|_| format!("the job did not pass barrier {id} in 2 minutes"))?;
            match event {
                Event::Source {
                    subtask,
                    id: got,
                    state,
                    read,
                } if got == id => {
                    passed.states[subtask] = state;
                    passed.read += read;
                    waiting -= 1;
                }
                Event::Counter {
                    subtask,
                    id: got,
                    task,
                    sync,
                    counted,
                } if got == id => {
                    passed.tasks[subtask] = task;
                    passed.sync = passed.sync.max(sync);
                    passed.counted += counted;
                    waiting -= 1;
                }
                Event::Trace { source, line } => traces.push((source, line)),
                Event::Failed(e) => return Err(e.into()),
                Event::Source { id: got, .. } | Event::Counter { id: got, .. } => {
                    return Err(format!("barrier {got} passed while waiting for {id}").into())
                }
            }
        }
        // Each source's records in the order it read them.
        traces.sort_by_key(|(source, _)| *source);
        passed.traces = traces.into_iter().map(|(_, line)| line).collect();
        Ok(passed)
    }

    /// Waits until every record sent so far is counted; returns the records traced.
    fn sync(&mut self) -> DemoResult<Vec<String>> {
        self.barrier(None, 0)?;
        Ok(self.wait(0)?.traces)
    }

    /// Waits for every subtask's part of `pending` and acknowledges it.
    fn acknowledge(&mut self, pending: &mut PendingCheckpoint) -> DemoResult<Passed> {
        let (max, p) = (MaxParallelism::DEFAULT, self.parallelism);
        let mut passed = self.wait(pending.id())?;
        for (i, state) in passed.states.iter_mut().enumerate() {
            let state = state.take().ok_or("a source took no snapshot")?;
            pending.acknowledge_operator_state(SOURCE, p, max, i as u32, state)?;
        }
        for (i, task) in passed.tasks.iter_mut().enumerate() {
            let handle = task.take().ok_or("a counter took no snapshot")?.wait()?;
            pending.acknowledge(COUNTER, p, max, i as u32, handle)?;
        }
        Ok(passed)
    }

    /// Every count, read from the backends (call after `sync`, when the counters are idle).
    fn counts(&self) -> DemoResult<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        for store in &self.counters {
            counts.append(&mut read_counts(store)?);
        }
        Ok(counts)
    }

    /// Every source subtask's `(partition, offset)`s.
    fn offsets(&self) -> DemoResult<Vec<Vec<(u32, u64)>>> {
        self.sources
            .iter()
            .map(|s| Ok(offsets_state(s)?.get()?))
            .collect()
    }

    fn join(&mut self) -> DemoResult<()> {
        for thread in self.threads.drain(..) {
            thread.join().map_err(|_| "a subtask panicked")?;
        }
        Ok(())
    }

    /// Ends the input, waits for the subtasks and closes the backends.
    fn stop(mut self) -> DemoResult<()> {
        for command in &self.commands {
            command
                .send(Command::Stop)
                .map_err(|_| "a source subtask is gone")?;
        }
        self.join()?;
        for counter in &self.counters {
            counter.close()?;
        }
        drop(self.counters);
        remove_dir(&self.work)?;
        Ok(())
    }

    /// The job dies: the sources stop mid-stream, nothing is committed, and nothing of its
    /// working directories is used again.
    fn crash(mut self) -> DemoResult<()> {
        self.commands.clear();
        self.join()?;
        drop(self.counters);
        remove_dir(&self.work)?;
        Ok(())
    }
}

/// Removes a working directory, if there is one (the heap backend makes none).
fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn open_counter(
    backend: Backend,
    work: &Path,
    subtask: u32,
    range: KeyGroupRange,
    from: Option<(&Arc<dyn SnapshotStore>, Vec<KeyedStateHandle>)>,
    budget: &MemoryBudget,
) -> cairn::Result<KeyedStateStore> {
    let max = MaxParallelism::DEFAULT;
    Ok(match (backend, from) {
        (Backend::Rocksdb, from) => {
            let mut builder =
                RocksDbBackend::builder(work.join(format!("{COUNTER}-{subtask}")), max, range)
                    .memory_budget(budget);
            if let Some((store, handles)) = from {
                builder = builder.restore_from(store.clone(), handles);
            }
            KeyedStateStore::new(builder.open()?)
        }
        (Backend::Heap, None) => KeyedStateStore::new(HeapBackend::new(max, range)),
        (Backend::Heap, Some((store, handles))) => KeyedStateStore::new(HeapBackend::restore(
            max,
            range,
            Arc::new(SystemClock),
            store.as_ref(),
            &handles,
        )?),
    })
}

/// A source subtask: reads its partitions round-robin on command; at a barrier, copies
/// its offsets and forwards the barrier to every counter.
fn read(
    subtask: usize,
    state: &OperatorStateStore,
    commands: &Receiver<Command>,
    counters: &[Sender<Record>],
    events: &Sender<Event>,
) -> DemoResult<()> {
    let max = MaxParallelism::DEFAULT;
    let mut offsets = offsets_state(state)?;
    let mut positions = offsets.get()?;
    let mut next = 0;
    let gone = |_| "a counter subtask is gone";
    // Ends when the coordinator is gone: a crash.
    for command in commands {
        match command {
            Command::Read { records, trace } => {
                for _ in 0..records {
                    let Some((partition, offset)) = positions.get_mut(next) else {
                        break;
                    };
                    let word = word_at(*partition, *offset);
                    let key_group = max.key_group_of(word.as_bytes());
                    let owner = max.subtask_of(key_group, counters.len() as u32)? as usize;
                    if trace {
                        let line = format!(
                            "source {subtask} reads partition {partition} @{offset}: \
                             {word:<6} -> key group {key_group:>3} -> counter {owner}"
                        );
                        let _ = events.send(Event::Trace {
                            source: subtask,
                            line,
                        });
                    }
                    *offset += 1;
                    counters[owner]
                        .send(Record::Word {
                            from: subtask,
                            word,
                        })
                        .map_err(gone)?;
                    next = (next + 1) % positions.len();
                }
                // No barrier comes between two commands, so the state is exact at each.
                offsets.update(&positions)?;
            }
            Command::Barrier(marker) => {
                let snapshot = marker.request.is_some().then(|| state.snapshot());
                let id = marker.id;
                for counter in counters {
                    counter
                        .send(Record::Barrier {
                            from: subtask,
                            marker: marker.clone(),
                        })
                        .map_err(gone)?;
                }
                events
                    .send(Event::Source {
                        subtask,
                        id,
                        state: snapshot,
                        read: positions.iter().map(|(_, offset)| offset).sum(),
                    })
                    .map_err(|_| "the coordinator is gone")?;
            }
            Command::Stop => {
                for counter in counters {
                    counter.send(Record::End { from: subtask }).map_err(gone)?;
                }
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A counter subtask: counts words; aligns barriers (a source's records after its barrier
/// wait until every source's barrier is in), then snapshots.
fn count(
    subtask: usize,
    store: &KeyedStateStore,
    inbox: &Receiver<Record>,
    sources: usize,
    events: &Sender<Event>,
) -> DemoResult<()> {
    let mut counts = store.value_state(&counts_descriptor())?;
    let mut counted: u64 = read_counts(store)?.values().sum();
    let mut blocked = vec![false; sources];
    let mut held: Vec<VecDeque<Record>> = (0..sources).map(|_| VecDeque::new()).collect();
    let mut replay: VecDeque<Record> = VecDeque::new();
    let (mut aligned, mut ended) = (0, 0);
    loop {
        let record = match replay.pop_front() {
            Some(record) => record,
            // Every source is gone: a crash (or the end).
            None => match inbox.recv() {
                Ok(record) => record,
                Err(_) => return Ok(()),
            },
        };
        let from = record.from();
        if blocked[from] {
            held[from].push_back(record);
            continue;
        }
        match record {
            Record::Word { word, .. } => {
                let word = word.to_string();
                let n = counts.get(&word)?.unwrap_or(0) + 1;
                counts.update(&word, &n)?;
                counted += 1;
            }
            Record::Barrier { marker, .. } => {
                blocked[from] = true;
                aligned += 1;
                if aligned < sources {
                    continue;
                }
                let (task, sync) = match &marker.request {
                    Some(request) => {
                        let begun = Instant::now();
                        let pending = store.backend().snapshot(request)?;
                        let sync = begun.elapsed();
                        (Some(pending.spawn()?), sync)
                    }
                    None => (None, Duration::ZERO),
                };
                events
                    .send(Event::Counter {
                        subtask,
                        id: marker.id,
                        task,
                        sync,
                        counted,
                    })
                    .map_err(|_| "the coordinator is gone")?;
                // Held records come before any still to replay: each source's order stays.
                aligned = 0;
                blocked.fill(false);
                let rest = std::mem::take(&mut replay);
                for queue in &mut held {
                    replay.extend(queue.drain(..));
                }
                replay.extend(rest);
            }
            Record::End { .. } => {
                ended += 1;
                if ended == sources {
                    return Ok(());
                }
            }
        }
    }
}
