//! The `cairn` binary on `s3://` URLs: every subcommand (inspect, verify, dump, diff, gc,
//! convert with `--out`) on checkpoints a job wrote to a real S3-compatible server (moto's,
//! started by `common::s3`), with the credentials and endpoint in the environment as a user
//! would set them.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::Arc;

use cairn::{CheckpointStorage, JobSnapshot, MaxParallelism, Retention, StoragePath};
use common::job::{Job, Model, Rng, OPERATOR};
use common::listing;
use common::s3::{server, url};
use common::Kind;
use serde_json::Value;

fn cairn(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command.args(args);
    for (key, value) in server().env() {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn run(args: &[&str], code: i32) -> String {
    let output = cairn(args);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert_eq!(
        output.status.code(),
        Some(code),
        "cairn {args:?}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn json(args: &[&str], code: i32) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let text = run(&args, code);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The stored entries of every state, as `cairn inspect --count` counts them: a value or a
/// list per key, a map entry per user key.
fn entries(model: &Model) -> u64 {
    model
        .0
        .values()
        .map(|(value, list, map)| {
            u64::from(value.is_some()) + u64::from(!list.is_empty()) + map.len() as u64
        })
        .sum()
}

#[test]
fn every_subcommand_works_on_s3_urls() {
    let s3 = server();
    let bucket = s3.bucket("cli");
    let root = url(&bucket, "jobs/wc");
    let store = s3.store(&bucket, "jobs/wc");
    let storage = CheckpointStorage::open(store.clone(), Retention::new(2).unwrap()).unwrap();
    let max = MaxParallelism::new(16).unwrap();
    let job = Job::new(Kind::RocksDb, max, 2);
    let (mut model, mut rng) = (Model::default(), Rng(9));
    job.write(&mut model, &mut rng, 200, 600);
    job.checkpoint(&storage, 1).unwrap();
    let at_one = model.clone();
    job.write(&mut model, &mut rng, 200, 300);
    let chk2: Arc<JobSnapshot> = job.checkpoint(&storage, 2).unwrap();
    let (chk1_url, chk2_url) = (format!("{root}/chk-1"), format!("{root}/chk-2"));

    // inspect: the root, then one checkpoint with its entries counted.
    let report = json(&["inspect", &root], 0);
    assert_eq!(report["type"], "root");
    assert_eq!(report["path"], root.as_str());
    let ids: Vec<u64> = report["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2]);
    assert!(report["shared_files"].as_u64().unwrap() > 0, "{report}");
    let text = run(&["inspect", &root], 0);
    assert!(text.contains(&format!("storage root {root}")), "{text}");
    let report = json(&["inspect", &chk2_url, "--count"], 0);
    assert_eq!(report["type"], "snapshot");
    assert_eq!(report["id"], 2);
    assert_eq!(report["files_root"], root.as_str());
    assert_eq!(report["path"], chk2_url.as_str());
    let counted: u64 = report["operators"][0]["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["entries"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, entries(&model));
    let same = json(&["inspect", &format!("{chk2_url}/_metadata")], 0);
    assert_eq!(same["id"], 2, "a URL may name the _metadata object");

    // verify: whole.
    let report = json(&["verify", &chk2_url], 0);
    assert_eq!(report["ok"], true);
    assert_eq!(
        report["files_checked"].as_u64().unwrap(),
        chk2.files().count() as u64
    );

    // dump: one key's count, as the model has it.
    let (key, (value, _, _)) = model
        .0
        .iter()
        .find(|(_, (value, _, _))| value.is_some())
        .unwrap();
    let dumped = json(
        &[
            "dump",
            &chk2_url,
            "--operator",
            OPERATOR,
            "--state",
            "count",
            "--key",
            key,
        ],
        0,
    );
    let rows = dumped["entries"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{dumped}");
    assert_eq!(rows[0]["value"]["value"], value.unwrap().to_string());

    // diff: checkpoint 2 against 1, files and entries.
    let diff = json(&["diff", &chk1_url, &chk2_url, "--entries"], 0);
    assert!(
        diff["files"]["shared"].as_u64().unwrap() > 0,
        "incremental: {diff}"
    );
    let changed_keys = model
        .0
        .iter()
        .filter(|(k, state)| at_one.0.get(*k) != Some(*state))
        .count();
    let changes: u64 = diff["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["added"].as_u64().unwrap()
                + s["removed"].as_u64().unwrap()
                + s["changed"].as_u64().unwrap()
        })
        .sum();
    assert!(changed_keys > 0 && changes > 0, "{diff}");

    // convert: a canonical savepoint at parallelism 3, written to another prefix.
    let out = url(&bucket, "savepoints");
    let converted = json(
        &[
            "convert",
            &chk2_url,
            "--to",
            "canonical",
            "--out",
            &out,
            "--parallelism",
            "3",
        ],
        0,
    );
    let savepoint = converted["savepoint"].as_str().unwrap().to_string();
    assert!(
        savepoint.starts_with(&format!("{out}/savepoint-2-")),
        "{savepoint}"
    );
    assert_eq!(json(&["verify", &savepoint], 0)["ok"], true);
    let savepoint_store = s3.store(&bucket, &savepoint[format!("s3://{bucket}/").len()..]);
    let restored = cairn::read_savepoint(savepoint_store.as_ref()).unwrap();
    assert_eq!(restored.operator(OPERATOR).unwrap().parallelism, 3);
    Job::restore(Kind::Heap, &savepoint_store, &restored, max, 2)
        .unwrap()
        .check(&model);

    // gc: what a crash left after the last commit, by the engine's rule.
    let stray_chk = StoragePath::new("chk-1/acks/word-count.0.ack").unwrap();
    let stray_shared =
        StoragePath::new("shared/1-00000000000000000000000000000000-000099.sst").unwrap();
    let expected = listing(store.as_ref());
    job.write(&mut model, &mut rng, 200, 100);
    job.checkpoint(&storage, 3).unwrap();
    let expected_after: BTreeSet<String> = listing(store.as_ref());
    assert_ne!(expected, expected_after);
    store.put(&stray_shared, b"orphan").unwrap();
    // A late acknowledgement of subsumed checkpoint 1, written after it was collected.
    store.put(&stray_chk, b"late").unwrap();
    let dry = json(&["gc", &root, "--dry-run"], 0);
    let listed: BTreeSet<String> = dry["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from([stray_chk.to_string(), stray_shared.to_string()])
    );
    assert!(
        store.exists(&stray_shared).unwrap(),
        "a dry run deletes nothing"
    );
    let done = json(&["gc", &root], 0);
    assert_eq!(done["deleted"].as_array().unwrap().len(), 2);
    assert_eq!(listing(store.as_ref()), expected_after);

    // verify again after damage: a shared file of checkpoint 3 with other bytes.
    let latest = cairn::latest_checkpoint(store.as_ref()).unwrap().unwrap();
    let victim = latest
        .files()
        .find(|f| f.is_shared() && f.size > 8)
        .unwrap()
        .clone();
    let mut bytes = store.get(&victim.path, u64::MAX).unwrap();
    bytes[0] ^= 0xff;
    store.put(&victim.path, &bytes).unwrap();
    let report = json(&["verify", &format!("{root}/chk-3")], 1);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["kind"], "crc32");
    assert_eq!(problems[0]["file"], format!("{root}/{}", victim.path));

    // Not a snapshot nor a root: one line, exit code 2.
    let output = cairn(&["inspect", &url(&bucket, "nothing/here")]);
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("nothing is stored under it"), "{message}");
}
