//! A small word count on cairn: two subtasks, each with its own RocksDB backend, count words;
//! the backends close, open again from their directories, and print what they hold.
//!
//! Run it with `./run demo` (or `cargo run --example demo -- --dir DIR`).

use std::path::PathBuf;

use cairn::{
    BigEndian, KeyGroupRange, KeyedStateStore, MaxParallelism, RocksDbBackend, StateDescriptor,
    Utf8,
};

const TEXT: &str = "hello flink hello cairn state moves with its key group hello rocks";
const PARALLELISM: u32 = 2;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args().skip_while(|a| a != "--dir").nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("cairn-demo-{}", std::process::id())),
    };
    let max = MaxParallelism::DEFAULT;
    let counts = StateDescriptor::<String, u64>::new("counts", Utf8, BigEndian);
    println!(
        "cairn demo: counting words with {PARALLELISM} subtasks in {}",
        dir.display()
    );

    let open = |subtask: u32| -> cairn::Result<(KeyGroupRange, KeyedStateStore)> {
        let range = max.subtask_range(subtask, PARALLELISM)?;
        let backend =
            RocksDbBackend::builder(dir.join(format!("subtask-{subtask}")), max, range).open()?;
        Ok((range, KeyedStateStore::new(backend)))
    };

    // Count: each word goes to the subtask that owns its key group.
    let subtasks = (0..PARALLELISM)
        .map(open)
        .collect::<cairn::Result<Vec<_>>>()?;
    let mut handles = subtasks
        .iter()
        .map(|(_, store)| store.value_state(&counts))
        .collect::<cairn::Result<Vec<_>>>()?;
    for word in TEXT.split_whitespace() {
        let word = word.to_string();
        let key_group = max.key_group_of(word.as_bytes());
        let owner = max.subtask_of(key_group, PARALLELISM)? as usize;
        let n = handles[owner].get(&word)?.unwrap_or(0) + 1;
        handles[owner].update(&word, &n)?;
        println!("  subtask {owner} (key group {key_group:>3}): {word} = {n}");
    }
    for (_, store) in &subtasks {
        store.close()?;
    }
    drop((handles, subtasks));
    println!("closed both backends; opening them again from their directories");

    // Reopen and list what each subtask holds.
    let mut total = 0;
    for subtask in 0..PARALLELISM {
        let (range, store) = open(subtask)?;
        let mut state = store.value_state(&counts)?;
        let mut words = state.keys().collect::<cairn::Result<Vec<_>>>()?;
        words.sort();
        println!("subtask {subtask} ({range}):");
        for word in words {
            let n = state.get(&word)?.unwrap_or(0);
            total += n;
            println!("  {word} = {n}");
        }
        store.close()?;
    }
    let expected = TEXT.split_whitespace().count() as u64;
    println!(
        "{total} words counted, {expected} words read: {}",
        if total == expected {
            "all there"
        } else {
            "MISMATCH"
        }
    );
    if total != expected {
        return Err("the reopened state does not hold every count".into());
    }
    Ok(())
}
