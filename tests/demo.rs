//! The demo's story in CI, with short settings: a crash, a restart, a savepoint, a rescale,
//! counted exactly once, on both backends; then a run that goes on from its last savepoint.

#[allow(dead_code)]
#[path = "../examples/demo.rs"]
mod demo;

use clap::Parser;

fn options(args: &[&str]) -> demo::Options {
    demo::Options::try_parse_from(std::iter::once("demo").chain(args.iter().copied()))
        .expect("the demo's flags")
}

/// Runs the demo, returning its report and what it printed.
fn run(options: &demo::Options) -> (demo::Report, String) {
    let mut out = Vec::new();
    let report = demo::run(options, &mut out).expect("the demo runs");
    let text = String::from_utf8(out).expect("UTF-8 output");
    eprintln!("{text}");
    (report, text)
}

#[test]
fn the_story_counts_every_word_exactly_once_on_both_backends() {
    for backend in ["rocksdb", "heap"] {
        let dir = tempfile::tempdir().unwrap();
        let dir_arg = dir.path().to_str().unwrap();
        let (report, text) = run(&options(&[
            "--backend",
            backend,
            "--parallelism",
            "2",
            "--parallelism-after",
            "3",
            "--checkpoint-interval",
            "150",
            "--records",
            "400",
            "--dir",
            dir_arg,
        ]));
        assert!(report.exactly_once, "{backend}: {text}");
        assert!(text.contains("\nexactly once: OK\n"), "{backend}: {text}");
        assert!(!text.contains("MISMATCH"), "{backend}: {text}");
        // Three runs of 400 records. The first is checkpointed at 150 and 300, reads 100
        // more and 75 (half an interval) before the crash: those 175 are read again.
        assert_eq!(report.consumed, 300 + 400 + 400, "{backend}");
        assert_eq!(report.replayed, 175, "{backend}");
        assert_eq!(report.emitted, 475 + 400 + 400, "{backend}");
        assert_eq!(report.counts.values().sum::<u64>(), 1_100, "{backend}");
        assert_eq!(report.final_parallelism, 3);
        assert!(text.contains("(rescale 2 -> 3)"), "{text}");
        assert!(report.checkpoints.len() >= 6, "{:?}", report.checkpoints);
        assert!(
            report.checkpoints.windows(2).all(|w| w[0] < w[1]),
            "{:?}",
            report.checkpoints
        );
        // What it leaves behind for `cairn inspect`: the savepoint and the last checkpoints.
        assert!(report.savepoint.join("_metadata").is_file());
        let last = report.checkpoints.last().unwrap();
        assert!(report
            .storage
            .join(format!("chk-{last}"))
            .join("_metadata")
            .is_file());
        assert!(text.contains("cairn -- inspect"), "{text}");
        // Every restored or stopped job's counts were checked against a recount.
        assert_eq!(text.matches("   checked: ").count(), 3, "{text}");
    }
}

#[test]
fn a_run_goes_on_from_the_savepoint_it_stopped_with_in_another_backend() {
    let dir = tempfile::tempdir().unwrap();
    let first_dir = dir.path().join("first");
    let (first, _) = run(&options(&[
        "--backend",
        "rocksdb",
        "--checkpoint-interval",
        "100",
        "--records",
        "250",
        "--savepoint-on-stop",
        "--dir",
        first_dir.to_str().unwrap(),
    ]));
    assert!(first.exactly_once);
    let savepoint = first.final_savepoint.expect("a savepoint on stop");

    // A canonical savepoint restores into the heap backend, at any parallelism.
    let second_dir = dir.path().join("second");
    let (second, text) = run(&options(&[
        "--backend",
        "heap",
        "--parallelism",
        "1",
        "--parallelism-after",
        "4",
        "--checkpoint-interval",
        "100",
        "--records",
        "250",
        "--restore",
        savepoint.to_str().unwrap(),
        "--dir",
        second_dir.to_str().unwrap(),
    ]));
    assert!(second.exactly_once, "{text}");
    // Its ids go on above the savepoint's.
    let savepoint_id: u64 = savepoint
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('-').nth(1))
        .and_then(|id| id.parse().ok())
        .expect("savepoint-<id>-<random>");
    assert!(second.checkpoints[0] > savepoint_id, "{text}");
    // 200 (checkpointed before the crash) + 250 + 250 more words.
    assert_eq!(second.consumed, first.consumed + 700, "{text}");
    assert!(
        second
            .counts
            .iter()
            .all(|(word, n)| *n >= first.counts[word]),
        "{text}"
    );

    // A checkpoint goes on in its own storage root only.
    let chk = first
        .storage
        .join(format!("chk-{}", first.checkpoints.last().unwrap()));
    let elsewhere = dir.path().join("elsewhere");
    let err = demo::run(
        &options(&[
            "--restore",
            chk.to_str().unwrap(),
            "--dir",
            elsewhere.to_str().unwrap(),
        ]),
        &mut Vec::new(),
    )
    .expect_err("a checkpoint restored into another root is refused");
    assert!(err.to_string().contains("run without --dir"), "{err}");
}

#[test]
fn the_recount_reads_the_same_words_as_the_sources() {
    // The text is a pure function of (partition, offset): a recount needs only the offsets.
    assert_eq!(demo::word_at(3, 17), demo::word_at(3, 17));
    let counts = demo::recount(&[(0, 100), (5, 50)]);
    assert_eq!(counts.values().sum::<u64>(), 150);
    assert!(counts.keys().all(|w| !w.is_empty()));
}

#[test]
fn every_checkpoint_is_a_consistent_cut_under_frequent_barriers() {
    // Barriers every 25 records, 4 sources racing into 4 counters: each counter holds back
    // the records a source sends after its barrier until every barrier is in; each
    // checkpoint's offsets must then match the words counted (a MISMATCH line otherwise).
    let dir = tempfile::tempdir().unwrap();
    let (report, text) = run(&options(&[
        "--parallelism",
        "4",
        "--parallelism-after",
        "5",
        "--checkpoint-interval",
        "25",
        "--records",
        "400",
        "--dir",
        dir.path().to_str().unwrap(),
    ]));
    assert!(report.exactly_once, "{text}");
    assert!(!text.contains("MISMATCH"), "{text}");
    assert!(report.checkpoints.len() >= 40, "{:?}", report.checkpoints);
}
