//! Criterion benchmarks of keyed state operations on cairn's RocksDB backend, cairn's heap
//! backend and a raw RocksDB baseline doing the same reads and writes of the same bytes.
//!
//! One group per operation (`value_update`, `value_get`, `list_get`, `list_add`, `map_put`,
//! `map_get`, `map_iter`), one function per side (`cairn-rocksdb`, `cairn-heap`,
//! `raw-rocksdb`). The workload and the sides are those of `benches/compare.rs` (the ratio
//! harness, `cargo bench --bench compare`): `CAIRN_BENCH_KEYS` keys (1,000,000 by default;
//! e.g. 20000 for a smoke run) are loaded once per side, outside the timed part, and every
//! iteration is one operation on a uniformly random existing key. Both DBs are compacted to
//! the same shape before each group, as in the ratio harness. `list_get` runs before
//! `list_add`, because criterion runs a different number of iterations per side and the
//! lists would otherwise grow by different amounts.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[expect(
    dead_code,
    reason = "the ratio harness's main and table are not used by the criterion benches"
)]
#[path = "compare.rs"]
mod compare;

use compare::{accesses, key_count, load, Access, Cairn, Op, RawDb, Side};

/// Random accesses per side, cycled through; more than any group uses in one sample.
const ACCESSES: usize = 1 << 20;

/// The criterion groups run in this order.
const ORDER: [Op; 7] = [
    Op::ValueUpdate,
    Op::ValueGet,
    Op::ListGet,
    Op::ListAdd,
    Op::MapPut,
    Op::MapGet,
    Op::MapIter,
];

/// Benchmarks `op` on `side`, one random access per iteration.
fn bench_side<S: Side>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    op: Op,
    side: &mut S,
    accesses: &[Access],
) {
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        let mut next = 0;
        b.iter(|| {
            op.apply(side, accesses[next], next as u64);
            next = (next + 1) % accesses.len();
        });
    });
}

fn state_ops(c: &mut Criterion) {
    let keys = key_count();
    let accesses = accesses(keys, ACCESSES, 0x00CA_1127);

    let mut cairn = Cairn::rocksdb();
    let mut raw_db = RawDb::open();
    let mut heap = Cairn::heap();
    for (name, took) in [
        ("cairn-rocksdb", load(&mut cairn, keys)),
        ("raw-rocksdb", load(&mut raw_db.side(), keys)),
        ("cairn-heap", load(&mut heap, keys)),
    ] {
        eprintln!(
            "loaded {keys} keys into {name} in {:.1} s",
            took.as_secs_f64()
        );
    }

    for op in ORDER {
        // Both LSM trees in the same shape before each group (see `Cairn::compact`).
        cairn = cairn.compact();
        raw_db = raw_db.compact();
        let mut raw = raw_db.side();
        let mut group = c.benchmark_group(op.name());
        group.throughput(Throughput::Elements(1));
        bench_side(&mut group, "cairn-rocksdb", op, &mut cairn, &accesses);
        bench_side(&mut group, "raw-rocksdb", op, &mut raw, &accesses);
        bench_side(&mut group, "cairn-heap", op, &mut heap, &accesses);
        group.finish();
    }
    cairn.close();
    heap.close();
}

criterion_group! {
    name = benches;
    // 7 groups x 3 sides x ~5 s, after loading: a few minutes in all with 1M keys.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = state_ops
}
criterion_main!(benches);
