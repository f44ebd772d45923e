//! `cairn`: offline tools for cairn's state and snapshots.
//!
//! Each subcommand calls a function of `cairn::tools` and prints what it returns, as a
//! table or, with `--json`, as one JSON document (field names in docs/cli.md). Exit codes:
//! 0 all is well, 1 a problem was found (verify), 2 bad usage or unreadable input.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;

use cairn::tools::{
    self, ConvertOptions, ConvertReport, DiffOptions, DiffReport, DumpEntry, DumpOptions, GcReport,
    Inspection, Progress, RootReport, SnapshotReport, Unit, VerifyReport,
};
use cairn::{Location, SavepointFormat};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Tools for cairn's keyed state and snapshots",
    after_help = "Every PATH is a local path or an object store URL: s3://bucket/prefix, \
                  gs://bucket/prefix, az://container/prefix (credentials and endpoint from \
                  AWS_*, GOOGLE_*, AZURE_* variables; docs/operations.md).\n\
                  Exit codes: 0 ok, 1 a problem was found, 2 bad usage or unreadable input.\n\
                  Field names of --json output: docs/cli.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Which key group a key belongs to, and which subtask owns it.
    ///
    /// The key is given as the bytes its key codec writes: UTF-8 text by default,
    /// or hex with --hex (e.g. a u64 key 42 is --hex 000000000000002a).
    ///
    /// Example: cairn keygroup hello --max-parallelism 128 --parallelism 3
    Keygroup {
        /// The serialized key.
        key: String,
        /// Read KEY as hex bytes.
        #[arg(long)]
        hex: bool,
        /// The operator's max parallelism (number of key groups).
        #[arg(long, default_value_t = 128)]
        max_parallelism: u32,
        /// The operator's parallelism.
        #[arg(long, default_value_t = 1)]
        parallelism: u32,
    },

    /// What a checkpoint or savepoint holds, or which ones a storage root holds.
    ///
    /// PATH is a checkpoint directory (chk-<id>), a savepoint directory, a _metadata file,
    /// or a storage root (then its checkpoints and savepoints are listed). Shows kind, id,
    /// time, operators, states, each subtask's key groups and files, and sizes: total, new
    /// in this snapshot, reused from earlier checkpoints.
    #[command(
        after_help = "Examples:\n  cairn inspect /data/checkpoints\n  cairn inspect /data/checkpoints/chk-42 --count\n  cairn inspect /data/checkpoints/chk-42/_metadata --json\n  cairn inspect s3://my-bucket/jobs/word-count/chk-42"
    )]
    Inspect {
        /// The snapshot or storage root.
        #[arg(value_parser = parse_location)]
        path: Location,
        /// Count every state's entries (reads every subtask's state: as long as a dump).
        #[arg(long)]
        count: bool,
        /// Print one JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },

    /// Checks that a snapshot is whole; exit code 1 lists every problem found.
    ///
    /// Checks that _metadata decodes, that every file it references exists with the
    /// recorded size and CRC32, and that every block of every canonical stream reads back.
    ///
    /// Example: cairn verify /data/checkpoints/chk-42
    #[command(
        after_help = "Examples:\n  cairn verify /data/checkpoints/chk-42\n  cairn verify /data/savepoints/savepoint-42-1a2b3c4d --json"
    )]
    Verify {
        /// The snapshot: a checkpoint or savepoint directory, or its _metadata.
        #[arg(value_parser = parse_location)]
        path: Location,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Prints the entries of one state: key, namespace, user key, value.
    ///
    /// Values are decoded by the codecs the state records (UTF-8 and integers as text,
    /// others as 0x-hex); TTL stamps are shown as expiry times; lists one element a row.
    #[command(
        after_help = "Examples:\n  cairn dump /data/checkpoints/chk-42 --operator word-count --state count --limit 20\n  cairn dump /data/checkpoints/chk-42 --operator word-count --state count --key hello\n  cairn dump savepoint-7-1a2b --operator sessions --state by-user --key-hex 000000000000002a"
    )]
    Dump {
        /// The snapshot: a checkpoint or savepoint directory, or its _metadata.
        #[arg(value_parser = parse_location)]
        path: Location,
        /// The operator's id.
        #[arg(long)]
        operator: String,
        /// The state's name.
        #[arg(long)]
        state: String,
        /// Only this key group.
        #[arg(long)]
        key_group: Option<u16>,
        /// Only this key, as UTF-8 text (its key group is computed from it).
        #[arg(long, conflicts_with = "key_hex")]
        key: Option<String>,
        /// Only this key, as the hex of its serialized bytes.
        #[arg(long)]
        key_hex: Option<String>,
        /// At most this many entries.
        #[arg(long)]
        limit: Option<u64>,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// What changed between two snapshots: files and bytes added, removed and shared.
    ///
    /// With --entries, also entries added, removed and changed per state (reads both
    /// snapshots whole).
    ///
    /// Example: cairn diff /data/checkpoints/chk-41 /data/checkpoints/chk-42 --entries
    #[command(
        after_help = "Examples:\n  cairn diff /data/checkpoints/chk-41 /data/checkpoints/chk-42\n  cairn diff /data/checkpoints/chk-42 /data/savepoints/savepoint-43-1a2b3c4d --entries"
    )]
    Diff {
        /// The older snapshot.
        #[arg(value_parser = parse_location)]
        a: Location,
        /// The newer snapshot.
        #[arg(value_parser = parse_location)]
        b: Location,
        /// Compare entries, state by state.
        #[arg(long)]
        entries: bool,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Deletes files under a storage root that no completed checkpoint needs.
    ///
    /// Uses the engine's own rule: shared files that no completed checkpoint references
    /// and that a checkpoint older than the oldest completed one wrote, and chk-<id>
    /// directories without _metadata older than the latest completed checkpoint.
    /// Completed checkpoints and savepoint directories are never touched.
    #[command(
        after_help = "Examples:\n  cairn gc /data/checkpoints --dry-run\n  cairn gc /data/checkpoints\n  cairn gc s3://my-bucket/jobs/word-count --dry-run"
    )]
    Gc {
        /// The storage root (the directory holding chk-<id>/ and shared/).
        #[arg(value_parser = parse_location)]
        root: Location,
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Writes a snapshot as a new self-contained savepoint, at the same or another parallelism.
    ///
    /// Reads a checkpoint or savepoint of either backend and writes a canonical savepoint
    /// (restores into any backend) or a native one (RocksDB's files) under the storage root
    /// OUT, in savepoint-<id>-<random>/, with every operator at --parallelism subtasks
    /// (default: each operator's own). Each new subtask's state is restored into a scratch
    /// backend and snapshotted, as a job restoring and taking a savepoint would; TTL'd
    /// entries are carried over as stored. The input is only read.
    #[command(
        after_help = "Examples:\n  cairn convert /data/checkpoints/chk-42 --to canonical --out /data/savepoints\n  cairn convert /data/savepoints/savepoint-42-1a2b3c4d --to native --out /data/native --parallelism 8\n  cairn convert s3://my-bucket/jobs/word-count/chk-42 --to canonical --out s3://my-bucket/savepoints"
    )]
    Convert {
        /// The snapshot: a checkpoint or savepoint directory, or its _metadata.
        #[arg(value_parser = parse_location)]
        path: Location,
        /// The format of the new savepoint.
        #[arg(long, value_enum)]
        to: Format,
        /// The storage root to write the savepoint under: a directory (created if missing)
        /// or an object store URL.
        #[arg(long, value_parser = parse_location)]
        out: Location,
        /// The parallelism of every operator in the new savepoint.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        parallelism: Option<u32>,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The format `convert` writes.
#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Backend-independent: restores into any backend, at any parallelism.
    Canonical,
    /// RocksDB's own files: restores into the RocksDB backend, at any parallelism.
    Native,
}

/// How a command ended when it did not fail.
enum Outcome {
    Ok,
    ProblemFound,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::ProblemFound) => ExitCode::from(1),
        Err(message) => {
            eprintln!("cairn: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<Outcome, String> {
    let bars = Bars::new();
    match command {
        Command::Keygroup {
            key,
            hex,
            max_parallelism,
            parallelism,
        } => {
            let bytes = if hex {
                parse_hex(&key)?
            } else {
                key.into_bytes()
            };
            let max = cairn::MaxParallelism::new(max_parallelism).map_err(|e| e.to_string())?;
            let key_group = max.key_group_of(&bytes);
            let subtask = max
                .subtask_of(key_group, parallelism)
                .map_err(|e| e.to_string())?;
            let range = max
                .subtask_range(subtask, parallelism)
                .map_err(|e| e.to_string())?;
            println!(
                "key group {key_group} of {max}; subtask {subtask} of {parallelism} ({range})"
            );
            Ok(Outcome::Ok)
        }
        Command::Inspect { path, count, json } => {
            let inspection = tools::inspect(&path, count, &bars).map_err(|e| e.to_string())?;
            let broken = match &inspection {
                Inspection::Root(root) => root
                    .checkpoints
                    .iter()
                    .chain(&root.savepoints)
                    .any(|e| e.error.is_some()),
                Inspection::Snapshot(_) => false,
            };
            if json {
                print_json(&inspection)?;
            } else {
                match &inspection {
                    Inspection::Snapshot(report) => print_snapshot(report),
                    Inspection::Root(report) => print_root(report),
                }
            }
            Ok(if broken {
                Outcome::ProblemFound
            } else {
                Outcome::Ok
            })
        }
        Command::Verify { path, json } => {
            let report = tools::verify(&path, &bars).map_err(|e| e.to_string())?;
            if json {
                print_json(&report)?;
            } else {
                print_verify(&report);
            }
            Ok(if report.ok {
                Outcome::Ok
            } else {
                Outcome::ProblemFound
            })
        }
        Command::Dump {
            path,
            operator,
            state,
            key_group,
            key,
            key_hex,
            limit,
            json,
        } => {
            let key = match (key, key_hex) {
                (Some(text), _) => Some(text.into_bytes()),
                (None, Some(hex)) => Some(parse_hex(&hex)?),
                (None, None) => None,
            };
            let options = DumpOptions {
                operator,
                state,
                key_group,
                key,
                limit,
            };
            let mut entries = Vec::new();
            let summary = tools::dump(&path, &options, &bars, &mut |entry| {
                entries.push(entry);
                Ok(std::ops::ControlFlow::Continue(()))
            })
            .map_err(|e| e.to_string())?;
            if json {
                print_json(&serde_json::json!({
                    "operator": summary.operator,
                    "state": summary.state,
                    "entries": entries,
                    "count": summary.entries,
                    "truncated": summary.truncated,
                }))?;
            } else {
                print_dump(&summary, &entries);
            }
            Ok(Outcome::Ok)
        }
        Command::Diff {
            a,
            b,
            entries,
            json,
        } => {
            let report =
                tools::diff(&a, &b, DiffOptions { entries }, &bars).map_err(|e| e.to_string())?;
            if json {
                print_json(&report)?;
            } else {
                print_diff(&report);
            }
            Ok(Outcome::Ok)
        }
        Command::Gc {
            root,
            dry_run,
            json,
        } => {
            let report = tools::collect_garbage(&root, dry_run).map_err(|e| e.to_string())?;
            if json {
                print_json(&report)?;
            } else {
                print_gc(&report);
            }
            Ok(Outcome::Ok)
        }
        Command::Convert {
            path,
            to,
            out,
            parallelism,
            json,
        } => {
            let options = ConvertOptions {
                format: match to {
                    Format::Canonical => SavepointFormat::Canonical,
                    Format::Native => SavepointFormat::Native,
                },
                out,
                parallelism,
            };
            let report = tools::convert(&path, &options, &bars).map_err(|e| e.to_string())?;
            if json {
                print_json(&report)?;
            } else {
                print_convert(&report);
            }
            Ok(Outcome::Ok)
        }
    }
}

/// A local path or an object store URL (`s3://bucket/prefix`, `gs://…`, `az://…`).
fn parse_location(text: &str) -> Result<Location, String> {
    Location::parse(text).map_err(|e| e.to_string())
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("'{text}' is not hex: odd number of digits"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("'{text}' is not hex"))
        })
        .collect()
}

/// Progress bars on stderr, drawn only when stderr is a terminal.
struct Bars {
    bar: Mutex<Option<ProgressBar>>,
    visible: bool,
}

impl Bars {
    fn new() -> Self {
        Bars {
            bar: Mutex::new(None),
            visible: std::io::stderr().is_terminal(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Progress for Bars {
    fn start(&self, message: &str, total: u64, unit: Unit) {
        let target = if self.visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let template = match unit {
            Unit::Bytes => "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            Unit::Items => "{msg} [{bar:30}] {pos}/{len} ({eta})",
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(total), target)
            .with_style(style)
            .with_message(message.to_string());
        if let Some(old) = self.lock().replace(bar) {
            old.finish_and_clear();
        }
    }

    fn advance(&self, units: u64) {
        if let Some(bar) = self.lock().as_ref() {
            bar.inc(units);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.lock().take() {
            bar.finish_and_clear();
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = writeln!(out, "{text}");
    Ok(())
}

/// Bytes as B, KiB, MiB or GiB.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Left-aligned columns separated by two spaces, each line indented by `indent`.
fn table(indent: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::from(indent);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn opt(value: Option<u64>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

fn print_snapshot(r: &SnapshotReport) {
    println!("{} {} taken {}", r.kind, r.id, r.taken_at);
    println!("  path        {}", r.path);
    println!("  files root  {}", r.files_root);
    println!(
        "  _metadata   version {}, {} bytes",
        r.metadata_version, r.metadata_bytes
    );
    println!(
        "  size        {} in {} files: {} new, {} reused from earlier checkpoints",
        size(r.total_bytes),
        r.file_count,
        size(r.new_bytes),
        size(r.reused_bytes)
    );
    for op in &r.operators {
        println!();
        println!(
            "operator {}: parallelism {}, max parallelism {}, {} ({} new, {} reused)",
            op.id,
            op.parallelism,
            op.max_parallelism,
            size(op.total_bytes),
            size(op.new_bytes),
            size(op.reused_bytes)
        );
        for state in &op.operator_state {
            let codecs = match &state.key_codec {
                Some(key) => format!("key {key}, value {}", state.value_codec),
                None => format!("element {}", state.value_codec),
            };
            println!(
                "  operator state {} ({}, {codecs}): {:?} items per subtask",
                state.name, state.kind, state.items_per_subtask
            );
        }
        if op.subtasks.is_empty() {
            println!("  no keyed state");
            continue;
        }
        let states: Vec<Vec<String>> = op
            .states
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.kind.clone(),
                    s.key_codec.clone(),
                    s.value_codec.clone(),
                    s.user_key_codec.clone().unwrap_or_else(|| "-".into()),
                    s.ttl.as_ref().map_or_else(
                        || "-".into(),
                        |t| format!("{} ms, {}", t.ttl_millis, t.update),
                    ),
                    opt(s.entries),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                "  ",
                &[
                    "STATE",
                    "KIND",
                    "KEY CODEC",
                    "VALUE CODEC",
                    "USER KEY CODEC",
                    "TTL",
                    "ENTRIES"
                ],
                &states
            )
        );
        println!();
        let subtasks: Vec<Vec<String>> = op
            .subtasks
            .iter()
            .map(|s| {
                vec![
                    s.subtask.to_string(),
                    format!("{}..={}", s.first_key_group, s.last_key_group),
                    s.format.clone(),
                    s.files.len().to_string(),
                    size(s.total_bytes),
                    size(s.new_bytes),
                    size(s.reused_bytes),
                    opt(s.entries),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                "  ",
                &[
                    "SUBTASK",
                    "KEY GROUPS",
                    "FORMAT",
                    "FILES",
                    "TOTAL",
                    "NEW",
                    "REUSED",
                    "ENTRIES"
                ],
                &subtasks
            )
        );
        println!();
        let files: Vec<Vec<String>> = op
            .subtasks
            .iter()
            .flat_map(|s| {
                s.files.iter().map(move |f| {
                    vec![
                        s.subtask.to_string(),
                        f.path.clone(),
                        f.size.to_string(),
                        f.crc32.clone(),
                        if f.new {
                            "this snapshot".into()
                        } else {
                            format!("reused from chk-{}", opt(f.created_by))
                        },
                    ]
                })
            })
            .collect();
        print!(
            "{}",
            table(
                "  ",
                &["SUBTASK", "FILE", "BYTES", "CRC32", "WRITTEN BY"],
                &files
            )
        );
    }
    if !r.entries_counted {
        println!();
        println!("entries: not counted (--count reads every subtask's state to count them)");
    }
}

fn print_root(r: &RootReport) {
    println!("storage root {}", r.path);
    let headers = [
        "DIRECTORY",
        "ID",
        "KIND",
        "TAKEN AT",
        "OPERATORS",
        "TOTAL",
        "NEW",
    ];
    for (what, entries) in [("checkpoint", &r.checkpoints), ("savepoint", &r.savepoints)] {
        println!();
        let readable: Vec<Vec<String>> = entries
            .iter()
            .filter(|e| e.error.is_none())
            .map(|e| {
                vec![
                    e.dir.clone(),
                    opt(e.id),
                    e.kind.clone().unwrap_or_default(),
                    e.taken_at.clone().unwrap_or_default(),
                    e.operators.join(","),
                    size(e.total_bytes),
                    size(e.new_bytes),
                ]
            })
            .collect();
        if entries.is_empty() {
            println!("no {what}");
        } else if !readable.is_empty() {
            print!("{}", table("", &headers, &readable));
        }
        for e in entries {
            if let Some(error) = &e.error {
                println!("{}: unreadable: {error}", e.dir);
            }
        }
    }
    println!();
    println!(
        "shared/: {} files, {}",
        r.shared_files,
        size(r.shared_bytes)
    );
    if !r.incomplete_checkpoints.is_empty() {
        println!(
            "without _metadata (aborted or in flight): {}",
            r.incomplete_checkpoints.join(", ")
        );
    }
}

fn print_verify(r: &VerifyReport) {
    match (&r.kind, r.id) {
        (Some(kind), Some(id)) => println!("{kind} {id} ({})", r.metadata),
        _ => println!("{}", r.metadata),
    }
    println!(
        "checked {} files ({}), read {} entries of canonical streams",
        r.files_checked,
        size(r.bytes_checked),
        r.canonical_entries
    );
    if r.ok {
        println!(
            "OK: _metadata decodes, every file is there with its size and CRC32, every \
             canonical block checks"
        );
        return;
    }
    println!(
        "{} problem{} found:",
        r.problems.len(),
        if r.problems.len() == 1 { "" } else { "s" }
    );
    for p in &r.problems {
        let kind = serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!("  {kind:<10}  {}: {}", p.file, p.detail);
    }
}

fn value_text(v: &tools::DecodedValue) -> (String, String) {
    let expires = match (&v.expires_at, v.expired) {
        (Some(at), Some(true)) => format!("{at} (expired)"),
        (Some(at), _) => at.clone(),
        _ => "-".into(),
    };
    (v.value.clone(), expires)
}

fn print_dump(summary: &tools::DumpSummary, entries: &[DumpEntry]) {
    let s = &summary.state;
    println!(
        "operator {}, state {}: {} state, key {}, value {}{}{}",
        summary.operator,
        s.name,
        s.kind,
        s.key_codec,
        s.value_codec,
        s.user_key_codec
            .as_ref()
            .map_or_else(String::new, |c| format!(", user key {c}")),
        s.ttl
            .as_ref()
            .map_or_else(String::new, |t| format!(", TTL {} ms", t.ttl_millis))
    );
    let is_map = s.user_key_codec.is_some();
    let is_list = s.kind == "list";
    let has_ttl = s.ttl.is_some();
    let mut headers = vec!["KEY GROUP", "KEY", "NAMESPACE"];
    if is_map {
        headers.push("USER KEY");
    }
    if is_list {
        headers.push("#");
    }
    let is_timers = s.kind == "timers";
    headers.push(if is_timers { "TIMESTAMP" } else { "VALUE" });
    if has_ttl {
        headers.push("EXPIRES");
    }
    let mut rows = Vec::new();
    for e in entries {
        let mut front = vec![
            e.key_group.to_string(),
            e.key.clone(),
            if e.namespace_hex.is_empty() {
                "-".into()
            } else {
                format!("0x{}", e.namespace_hex)
            },
        ];
        if is_map {
            front.push(e.user_key.clone().unwrap_or_default());
        }
        let mut values: Vec<(Option<usize>, String, String)> = Vec::new();
        if let Some(v) = &e.value {
            let (value, expires) = value_text(v);
            values.push((None, value, expires));
        }
        for (i, v) in e.elements.iter().flatten().enumerate() {
            let (value, expires) = value_text(v);
            values.push((Some(i), value, expires));
        }
        if let Some(timestamp) = e.timestamp {
            values.push((None, timestamp.to_string(), "-".into()));
        }
        if let Some(raw) = &e.raw_hex {
            values.push((None, format!("0x{raw} (undecodable)"), "-".into()));
        }
        for (index, value, expires) in values {
            let mut row = front.clone();
            if is_list {
                row.push(index.map_or_else(|| "-".into(), |i| i.to_string()));
            }
            row.push(value);
            if has_ttl {
                row.push(expires);
            }
            rows.push(row);
        }
    }
    print!("{}", table("", &headers, &rows));
    println!(
        "{} entr{}{}",
        summary.entries,
        if summary.entries == 1 { "y" } else { "ies" },
        if summary.truncated {
            " (limit reached; more may follow)"
        } else {
            ""
        }
    );
}

fn print_diff(r: &DiffReport) {
    println!("{} ({}) -> {} ({})", r.a, r.a_id, r.b, r.b_id);
    let f = &r.files;
    println!(
        "files: {} added ({}), {} removed ({}), {} shared ({})",
        f.added.len(),
        size(f.added_bytes),
        f.removed.len(),
        size(f.removed_bytes),
        f.shared,
        size(f.shared_bytes)
    );
    for file in &f.added {
        println!("  + {}  {}", file.path, size(file.size));
    }
    for file in &f.removed {
        println!("  - {}  {}", file.path, size(file.size));
    }
    if let Some(states) = &r.entries {
        println!();
        let rows: Vec<Vec<String>> = states
            .iter()
            .map(|s| {
                vec![
                    s.operator.clone(),
                    s.state.clone(),
                    match (s.in_a, s.in_b) {
                        (true, false) => "removed".into(),
                        (false, true) => "added".into(),
                        _ => "-".into(),
                    },
                    s.added.to_string(),
                    s.removed.to_string(),
                    s.changed.to_string(),
                    s.unchanged.to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                "",
                &[
                    "OPERATOR",
                    "STATE",
                    "STATE ITSELF",
                    "ADDED",
                    "REMOVED",
                    "CHANGED",
                    "UNCHANGED"
                ],
                &rows
            )
        );
    }
}

fn print_gc(r: &GcReport) {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    println!(
        "storage root {}: completed checkpoints {:?} and savepoints keep their files",
        r.root, r.checkpoints
    );
    if r.deleted.is_empty() {
        println!("no orphans: nothing to delete");
        return;
    }
    println!(
        "{verb} {} files, {}: {} shared file{}, {} unfinished upload{} and the directories of {} checkpoint{} that never completed {:?}",
        r.deleted.len(),
        size(r.deleted_bytes),
        r.shared_files,
        if r.shared_files == 1 { "" } else { "s" },
        r.unfinished_files,
        if r.unfinished_files == 1 { "" } else { "s" },
        r.abandoned_checkpoints.len(),
        if r.abandoned_checkpoints.len() == 1 { "" } else { "s" },
        r.abandoned_checkpoints
    );
    for file in &r.deleted {
        println!("  {}  {}", file.path, size(file.size));
    }
}

fn print_convert(r: &ConvertReport) {
    println!("{}", r.savepoint);
    println!(
        "{} {} written from {} {} ({}): {} in {} files",
        r.kind,
        r.id,
        r.source_kind,
        r.id,
        r.source,
        size(r.total_bytes),
        r.file_count
    );
    let rows: Vec<Vec<String>> = r
        .operators
        .iter()
        .map(|op| {
            vec![
                op.id.clone(),
                format!("{} -> {}", op.source_parallelism, op.parallelism),
                op.max_parallelism.to_string(),
                if op.keyed_state {
                    size(op.total_bytes)
                } else {
                    "-".into()
                },
                if op.operator_state { "yes" } else { "-" }.into(),
            ]
        })
        .collect();
    println!();
    print!(
        "{}",
        table(
            "",
            &[
                "OPERATOR",
                "PARALLELISM",
                "MAX PARALLELISM",
                "KEYED STATE",
                "OPERATOR STATE"
            ],
            &rows
        )
    );
}
