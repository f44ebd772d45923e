//! The conformance suite: every operation of every state kind, namespaces, TTL and the
//! errors, run with the same bodies on the heap and the RocksDB backend.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cairn::{
    AggregateFunction, BigEndian, Bincode, Bytes, Error, KeyGroupRange, MapStateDescriptor,
    MaxParallelism, StateDescriptor, TtlConfig, TtlUpdate, TtlVisibility, Utf8,
};
use common::{on_every_backend, stored_entries, Fixture, Kind};

fn s(text: &str) -> String {
    text.to_string()
}

fn counts() -> StateDescriptor<String, u64> {
    StateDescriptor::new("counts", Utf8, BigEndian)
}

/// The names of the states a backend holds, sorted.
fn state_names(store: &cairn::KeyedStateStore) -> Vec<String> {
    let mut names: Vec<String> = store
        .backend()
        .states()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    names
}

fn collect<T>(iter: impl Iterator<Item = cairn::Result<T>>) -> Vec<T> {
    iter.collect::<cairn::Result<Vec<T>>>().expect("iteration")
}

#[test]
fn value_state_get_update_clear() {
    on_every_backend(|f| {
        let store = f.open();
        let mut v = store.value_state(&counts()).unwrap();
        assert_eq!(v.get(&s("a")).unwrap(), None);
        v.update(&s("a"), &1).unwrap();
        v.update(&s("b"), &2).unwrap();
        v.update(&s("a"), &3).unwrap();
        assert_eq!(v.get(&s("a")).unwrap(), Some(3));
        assert_eq!(v.get(&s("b")).unwrap(), Some(2));
        v.clear(&s("a")).unwrap();
        assert_eq!(v.get(&s("a")).unwrap(), None);
        assert_eq!(v.get(&s("b")).unwrap(), Some(2));
        // A second handle on the same state sees the same entries.
        let mut again = store.value_state(&counts()).unwrap();
        assert_eq!(again.get(&s("b")).unwrap(), Some(2));
    });
}

#[test]
fn namespaces_are_separate() {
    on_every_backend(|f| {
        let store = f.open();
        let mut v = store.value_state(&counts()).unwrap();
        let (w1, w2) = (1u64.to_be_bytes(), 2u64.to_be_bytes());
        v.update(&s("k"), &10).unwrap();
        v.namespace(&w1).update(&s("k"), &11).unwrap();
        v.namespace(&w2).update(&s("k"), &12).unwrap();
        assert_eq!(v.get(&s("k")).unwrap(), Some(10));
        assert_eq!(v.namespace(&w1).get(&s("k")).unwrap(), Some(11));
        v.namespace(&w1).clear(&s("k")).unwrap();
        assert_eq!(v.namespace(&w1).get(&s("k")).unwrap(), None);
        assert_eq!(v.namespace(&w2).get(&s("k")).unwrap(), Some(12));
        assert_eq!(v.get(&s("k")).unwrap(), Some(10));

        // A namespace that is a prefix of another, and keys that are prefixes of each other,
        // stay apart thanks to the length prefixes.
        let mut m = store
            .map_state(&MapStateDescriptor::new("m", Bytes, Bytes, Bytes))
            .unwrap();
        m.namespace(b"a")
            .put(&b"k".to_vec(), &b"1".to_vec(), &b"x".to_vec())
            .unwrap();
        m.namespace(b"ab")
            .put(&b"k".to_vec(), &b"2".to_vec(), &b"y".to_vec())
            .unwrap();
        m.namespace(b"a")
            .put(&b"kk".to_vec(), &b"3".to_vec(), &b"z".to_vec())
            .unwrap();
        let in_a = collect(m.namespace(b"a").iter(&b"k".to_vec()).unwrap());
        assert_eq!(in_a, [(b"1".to_vec(), b"x".to_vec())]);
    });
}

#[test]
fn list_state_operations() {
    on_every_backend(|f| {
        let store = f.open();
        let mut l = store
            .list_state(&StateDescriptor::new("list", BigEndian, Utf8))
            .unwrap();
        assert_eq!(l.get(&1u32).unwrap().count(), 0);
        l.add(&1, &s("a")).unwrap();
        l.add_all(&1, &[s("b"), s(""), s("c")]).unwrap();
        l.add_all(&1, &[]).unwrap();
        assert_eq!(l.get(&1).unwrap().collect::<Vec<_>>(), ["a", "b", "", "c"]);
        l.update(&1, &[s("x"), s("y")]).unwrap();
        assert_eq!(l.get(&1).unwrap().collect::<Vec<_>>(), ["x", "y"]);
        l.add(&1, &s("z")).unwrap();
        assert_eq!(l.get(&1).unwrap().collect::<Vec<_>>(), ["x", "y", "z"]);
        l.namespace(b"w").add(&1, &s("n")).unwrap();
        l.clear(&1).unwrap();
        assert_eq!(l.get(&1).unwrap().count(), 0);
        assert_eq!(
            l.namespace(b"w").get(&1).unwrap().collect::<Vec<_>>(),
            ["n"]
        );
        l.namespace(b"w").update(&1, &[]).unwrap();
        assert_eq!(l.namespace(b"w").get(&1).unwrap().count(), 0);
        assert_eq!(
            stored_entries(&store, "list"),
            0,
            "empty update removes the entry"
        );
    });
}

#[test]
fn map_state_operations() {
    on_every_backend(|f| {
        let store = f.open();
        let mut m = store
            .map_state(&MapStateDescriptor::new("map", Utf8, BigEndian, Utf8))
            .unwrap();
        let k = s("key");
        assert!(m.is_empty(&k).unwrap());
        m.put(&k, &2u32, &s("two")).unwrap();
        m.put_all(&k, &[(1, s("one")), (3, s("three"))]).unwrap();
        m.put(&s("other"), &1, &s("x")).unwrap();
        assert_eq!(m.get(&k, &1).unwrap(), Some(s("one")));
        assert_eq!(m.get(&k, &9).unwrap(), None);
        assert!(m.contains(&k, &3).unwrap());
        assert!(!m.contains(&k, &4).unwrap());
        assert!(!m.is_empty(&k).unwrap());
        assert_eq!(
            collect(m.iter(&k).unwrap()),
            [(1, s("one")), (2, s("two")), (3, s("three"))]
        );
        assert_eq!(collect(m.keys(&k).unwrap()), [1, 2, 3]);
        assert_eq!(collect(m.values(&k).unwrap()), ["one", "two", "three"]);
        m.remove(&k, &2).unwrap();
        assert_eq!(collect(m.keys(&k).unwrap()), [1, 3]);
        m.put(&k, &1, &s("uno")).unwrap();
        assert_eq!(m.get(&k, &1).unwrap(), Some(s("uno")));
        m.clear(&k).unwrap();
        assert!(m.is_empty(&k).unwrap());
        assert_eq!(
            m.get(&s("other"), &1).unwrap(),
            Some(s("x")),
            "clear is per key"
        );
    });
}

#[test]
fn map_iteration_spans_batches_and_tolerates_writes() {
    on_every_backend(|f| {
        let store = f.open();
        let big = MapStateDescriptor::<u64, u32, u64>::new("big", BigEndian, BigEndian, BigEndian);
        let mut m = store.map_state(&big).unwrap();
        for uk in 0..1000u32 {
            m.put(&7u64, &uk, &(u64::from(uk) * 2)).unwrap();
        }
        let entries = collect(m.iter(&7).unwrap());
        assert_eq!(entries.len(), 1000);
        assert!(entries
            .iter()
            .enumerate()
            .all(|(i, (uk, uv))| *uk as usize == i && *uv == 2 * i as u64));
        // Removing while iterating (through another handle) is allowed.
        let mut writer = store.map_state(&big).unwrap();
        let mut seen = 0;
        for entry in m.iter(&7).unwrap() {
            let (uk, _) = entry.unwrap();
            writer.remove(&7, &uk).unwrap();
            seen += 1;
        }
        assert_eq!(seen, 1000);
        assert!(m.is_empty(&7).unwrap());
    });
}

#[test]
fn reducing_and_aggregating_state() {
    struct Average;
    impl AggregateFunction<u64, (u64, u64), f64> for Average {
        fn create_accumulator(&self) -> (u64, u64) {
            (0, 0)
        }
        fn add(&self, value: &u64, (sum, n): (u64, u64)) -> (u64, u64) {
            (sum + value, n + 1)
        }
        fn get_result(&self, (sum, n): &(u64, u64)) -> f64 {
            *sum as f64 / *n as f64
        }
    }
    on_every_backend(|f| {
        let store = f.open();
        let mut sum = store
            .reducing_state(
                &StateDescriptor::new("sum", Utf8, BigEndian),
                |a: &u64, b: &u64| a + b,
            )
            .unwrap();
        assert_eq!(sum.get(&s("a")).unwrap(), None);
        for n in [1, 2, 3] {
            sum.add(&s("a"), &n).unwrap();
        }
        sum.namespace(b"w").add(&s("a"), &100).unwrap();
        assert_eq!(sum.get(&s("a")).unwrap(), Some(6));
        assert_eq!(sum.namespace(b"w").get(&s("a")).unwrap(), Some(100));
        sum.clear(&s("a")).unwrap();
        assert_eq!(sum.get(&s("a")).unwrap(), None);

        let mut avg = store
            .aggregating_state(
                &StateDescriptor::new("avg", Utf8, Bincode::<(u64, u64)>::new()),
                Average,
            )
            .unwrap();
        for n in [2, 4, 9] {
            avg.add(&s("a"), &n).unwrap();
        }
        assert_eq!(avg.get(&s("a")).unwrap(), Some(5.0));
        avg.clear(&s("a")).unwrap();
        assert_eq!(avg.get(&s("a")).unwrap(), None);
    });
}

#[test]
fn keys_of_a_state_per_namespace() {
    on_every_backend(|f| {
        let store = f.open();
        let mut v = store.value_state(&counts()).unwrap();
        let words: BTreeSet<String> = (0..300).map(|i| format!("w{i}")).collect();
        for w in &words {
            v.update(w, &1).unwrap();
        }
        v.namespace(b"ns").update(&s("only-in-ns"), &1).unwrap();
        let keys: BTreeSet<String> = collect(v.keys()).into_iter().collect();
        assert_eq!(keys, words);
        assert_eq!(collect(v.namespace(b"ns").keys()), [s("only-in-ns")]);

        // A map key with many entries is listed once.
        let mut m = store
            .map_state(&MapStateDescriptor::new("m", Utf8, BigEndian, BigEndian))
            .unwrap();
        for uk in 0..200u32 {
            m.put(&s("a"), &uk, &0u8).unwrap();
            m.put(&s("b"), &uk, &0u8).unwrap();
        }
        let mut map_keys = collect(m.state_keys());
        map_keys.sort();
        assert_eq!(map_keys, [s("a"), s("b")]);
    });
}

fn ttl(update: TtlUpdate, visibility: TtlVisibility) -> TtlConfig {
    TtlConfig::new(Duration::from_millis(100))
        .update(update)
        .visibility(visibility)
}

#[test]
fn ttl_value_expires_on_create_and_write() {
    on_every_backend(|f| {
        let store = f.open();
        let desc = counts().with_ttl(ttl(
            TtlUpdate::OnCreateAndWrite,
            TtlVisibility::NeverReturnExpired,
        ));
        let mut v = store.value_state(&desc).unwrap();
        v.update(&s("a"), &1).unwrap();
        f.clock.advance(99);
        assert_eq!(v.get(&s("a")).unwrap(), Some(1), "a read does not renew");
        f.clock.advance(1);
        assert_eq!(v.get(&s("a")).unwrap(), None, "expired at stamp + ttl");
        assert_eq!(stored_entries(&store, "counts"), 0, "the read removed it");
        v.update(&s("a"), &2).unwrap();
        f.clock.advance(60);
        v.update(&s("a"), &3).unwrap();
        f.clock.advance(60);
        assert_eq!(v.get(&s("a")).unwrap(), Some(3), "a write renews");
    });
}

#[test]
fn ttl_read_renews_on_read_and_write() {
    on_every_backend(|f| {
        let store = f.open();
        let desc = counts().with_ttl(ttl(
            TtlUpdate::OnReadAndWrite,
            TtlVisibility::NeverReturnExpired,
        ));
        let mut v = store.value_state(&desc).unwrap();
        v.update(&s("a"), &1).unwrap();
        for _ in 0..5 {
            f.clock.advance(80);
            assert_eq!(v.get(&s("a")).unwrap(), Some(1));
        }
        f.clock.advance(100);
        assert_eq!(v.get(&s("a")).unwrap(), None);
    });
}

#[test]
fn ttl_return_expired_if_not_cleaned_up() {
    on_every_backend(|f| {
        let store = f.open();
        let desc = counts().with_ttl(ttl(
            TtlUpdate::OnCreateAndWrite,
            TtlVisibility::ReturnExpiredIfNotCleanedUp,
        ));
        let mut v = store.value_state(&desc).unwrap();
        v.update(&s("a"), &1).unwrap();
        f.clock.advance(500);
        assert_eq!(
            v.get(&s("a")).unwrap(),
            Some(1),
            "still stored, so returned"
        );
        assert_eq!(
            v.get(&s("a")).unwrap(),
            None,
            "the first read cleaned it up"
        );
    });
}

#[test]
fn ttl_list_elements_and_map_entries_expire_one_by_one() {
    on_every_backend(|f| {
        let store = f.open();
        let t = ttl(
            TtlUpdate::OnCreateAndWrite,
            TtlVisibility::NeverReturnExpired,
        );
        let mut l = store
            .list_state(&StateDescriptor::new("l", Utf8, BigEndian).with_ttl(t))
            .unwrap();
        let mut m = store
            .map_state(&MapStateDescriptor::new("m", Utf8, BigEndian, BigEndian).with_ttl(t))
            .unwrap();
        l.add(&s("k"), &1u64).unwrap();
        m.put(&s("k"), &1u32, &10u64).unwrap();
        f.clock.advance(60);
        l.add(&s("k"), &2).unwrap();
        m.put(&s("k"), &2, &20).unwrap();
        f.clock.advance(60);
        assert_eq!(l.get(&s("k")).unwrap().collect::<Vec<_>>(), [2]);
        assert_eq!(collect(m.iter(&s("k")).unwrap()), [(2, 20)]);
        assert_eq!(m.get(&s("k"), &1).unwrap(), None);
        assert!(!m.contains(&s("k"), &1).unwrap());
        f.clock.advance(60);
        assert_eq!(l.get(&s("k")).unwrap().count(), 0);
        assert!(m.is_empty(&s("k")).unwrap());
        assert_eq!(
            stored_entries(&store, "l"),
            0,
            "a fully expired list is removed on read"
        );
    });
}

#[test]
fn purge_expired_removes_entries_from_storage() {
    on_every_backend(|f| {
        let store = f.open();
        let t = ttl(
            TtlUpdate::OnCreateAndWrite,
            TtlVisibility::NeverReturnExpired,
        );
        let mut v = store.value_state(&counts().with_ttl(t)).unwrap();
        let mut l = store
            .list_state(&StateDescriptor::new("l", Utf8, BigEndian).with_ttl(t))
            .unwrap();
        let mut m = store
            .map_state(&MapStateDescriptor::new("m", Utf8, BigEndian, BigEndian).with_ttl(t))
            .unwrap();
        for i in 0..50u64 {
            let k = format!("old{i}");
            v.update(&k, &i).unwrap();
            l.add(&k, &i).unwrap();
            m.put(&k, &(i as u32), &i).unwrap();
        }
        f.clock.advance(200);
        for i in 0..10u64 {
            let k = format!("new{i}");
            v.update(&k, &i).unwrap();
            l.add(&k, &i).unwrap();
            m.put(&k, &(i as u32), &i).unwrap();
        }
        assert_eq!(stored_entries(&store, "counts"), 60);
        store.backend().purge_expired().unwrap();
        assert_eq!(stored_entries(&store, "counts"), 10);
        assert_eq!(stored_entries(&store, "l"), 10);
        assert_eq!(stored_entries(&store, "m"), 10);
        assert_eq!(v.get(&s("new3")).unwrap(), Some(3));
    });
}

#[test]
fn registering_a_state_again_differently_is_refused_and_changes_nothing() {
    on_every_backend(|f| {
        let store = f.open();
        let mut v = store.value_state(&counts()).unwrap();
        v.update(&s("a"), &1).unwrap();
        let as_list = store.list_state(&StateDescriptor::<String, u64>::new(
            "counts", Utf8, BigEndian,
        ));
        assert!(
            matches!(as_list, Err(Error::StateMismatch { ref state, .. }) if state == "counts")
        );
        // Another value codec, or version, with no migration from the held one.
        let other_codec = store.value_state(&StateDescriptor::<String, String>::new(
            "counts", Utf8, Utf8,
        ));
        assert!(matches!(other_codec, Err(Error::SchemaIncompatible { .. })));
        let other_version = store.value_state(&StateDescriptor::<String, u64>::new(
            "counts",
            Utf8,
            Bincode::with_version(2),
        ));
        assert!(matches!(
            other_version,
            Err(Error::SchemaIncompatible { .. })
        ));
        let other_key = store.value_state(&StateDescriptor::<u64, u64>::new(
            "counts", BigEndian, BigEndian,
        ));
        assert!(matches!(other_key, Err(Error::StateMismatch { .. })));
        let with_ttl =
            store.value_state(&counts().with_ttl(TtlConfig::new(Duration::from_secs(1))));
        assert!(matches!(with_ttl, Err(Error::StateMismatch { .. })));
        let message = store
            .list_state(&StateDescriptor::<String, u64>::new(
                "counts", Utf8, BigEndian,
            ))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("value state") && message.contains("list state"),
            "{message}"
        );
        assert_eq!(v.get(&s("a")).unwrap(), Some(1));
        assert_eq!(store.backend().states().unwrap().len(), 1);
    });
}

#[test]
fn reserved_state_names_are_refused() {
    on_every_backend(|f| {
        let store = f.open();
        for name in ["", "default", "_cairn_meta", "_cairn_anything"] {
            let result =
                store.value_state(&StateDescriptor::<String, u64>::new(name, Utf8, BigEndian));
            assert!(
                matches!(result, Err(Error::InvalidStateName { .. })),
                "name {name:?}"
            );
        }
        assert!(store.backend().states().unwrap().is_empty());
    });
}

#[test]
fn keys_of_other_subtasks_are_refused_and_nothing_is_written() {
    for kind in common::KINDS {
        let max = MaxParallelism::DEFAULT;
        let range = max.subtask_range(0, 2).unwrap();
        let f = Fixture::with_range(kind, max, range);
        let store = f.open();
        let mut v = store.value_state(&counts()).unwrap();
        let mut l = store
            .list_state(&StateDescriptor::new("l", Utf8, BigEndian))
            .unwrap();
        let mut m = store
            .map_state(&MapStateDescriptor::new("m", Utf8, BigEndian, BigEndian))
            .unwrap();
        let foreign = (0..)
            .map(|i| format!("key{i}"))
            .find(|k| !range.contains(max.key_group_of(k.as_bytes())))
            .unwrap();
        let owned = (0..)
            .map(|i| format!("key{i}"))
            .find(|k| range.contains(max.key_group_of(k.as_bytes())))
            .unwrap();
        let not_owned = |r: cairn::Result<()>| matches!(r, Err(Error::KeyGroupNotOwned { .. }));
        assert!(not_owned(v.update(&foreign, &1)), "{kind:?}");
        assert!(not_owned(l.add(&foreign, &1)));
        assert!(not_owned(m.put(&foreign, &1u32, &1)));
        assert!(matches!(
            v.get(&foreign),
            Err(Error::KeyGroupNotOwned { .. })
        ));
        v.update(&owned, &1).unwrap();
        assert_eq!(stored_entries(&store, "counts"), 1);
        assert_eq!(stored_entries(&store, "l"), 0);
        assert_eq!(stored_entries(&store, "m"), 0);
    }
}

#[test]
fn use_after_close_is_an_error() {
    on_every_backend(|f| {
        let store = f.open();
        let mut v = store.value_state(&counts()).unwrap();
        v.update(&s("a"), &1).unwrap();
        store.close().unwrap();
        assert!(matches!(v.get(&s("a")), Err(Error::Closed)));
        assert!(matches!(v.update(&s("a"), &2), Err(Error::Closed)));
        assert!(matches!(store.value_state(&counts()), Err(Error::Closed)));
        assert!(v
            .keys()
            .next()
            .is_some_and(|r| matches!(r, Err(Error::Closed))));
        store.close().unwrap();
    });
}

#[test]
fn undecodable_bytes_are_an_error_naming_the_state() {
    on_every_backend(|f| {
        let store = f.open();
        let mut v = store.value_state(&counts()).unwrap();
        v.update(&s("a"), &1).unwrap();
        // Overwrite the stored value with three bytes a u64 codec cannot read.
        let backend = store.backend();
        let id = backend.register(&backend.states().unwrap()[0]).unwrap();
        let mut key = Vec::new();
        cairn::layout::write_prefix(&mut key, f.max.key_group_of(b"a"), b"a", b"");
        backend.put(id, &key, &[1, 2, 3]).unwrap();
        let err = v.get(&s("a")).unwrap_err();
        assert!(
            matches!(err, Error::Codec { ref state, action: "decode", .. } if state == "counts")
        );
        assert!(err.to_string().contains("counts"), "{err}");
    });
}

#[test]
fn rocksdb_backend_reopens_with_its_states() {
    let f = Fixture::new(Kind::RocksDb);
    {
        let store = f.open();
        let mut v = store.value_state(&counts()).unwrap();
        let mut l = store
            .list_state(&StateDescriptor::new("l", Utf8, BigEndian))
            .unwrap();
        let mut m = store
            .map_state(&MapStateDescriptor::new("m", Utf8, BigEndian, Utf8))
            .unwrap();
        let t = TtlConfig::new(Duration::from_millis(100));
        let mut expiring = store
            .value_state(&StateDescriptor::new("expiring", Utf8, BigEndian).with_ttl(t))
            .unwrap();
        v.update(&s("a"), &1).unwrap();
        v.namespace(b"w").update(&s("a"), &2).unwrap();
        l.add_all(&s("a"), &[1u64, 2, 3]).unwrap();
        m.put(&s("a"), &1u32, &s("x")).unwrap();
        expiring.update(&s("a"), &5u64).unwrap();
        store.close().unwrap();
    }
    let store = f.open();
    let names = state_names(&store);
    assert_eq!(names, ["counts", "expiring", "l", "m"]);
    let mut v = store.value_state(&counts()).unwrap();
    let mut l = store
        .list_state(&StateDescriptor::<String, u64>::new("l", Utf8, BigEndian))
        .unwrap();
    let mut m = store
        .map_state(&MapStateDescriptor::<String, u32, String>::new(
            "m", Utf8, BigEndian, Utf8,
        ))
        .unwrap();
    assert_eq!(v.get(&s("a")).unwrap(), Some(1));
    assert_eq!(v.namespace(b"w").get(&s("a")).unwrap(), Some(2));
    assert_eq!(l.get(&s("a")).unwrap().collect::<Vec<_>>(), [1, 2, 3]);
    l.add(&s("a"), &4).unwrap();
    assert_eq!(
        l.get(&s("a")).unwrap().collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "merge operator back"
    );
    assert_eq!(m.get(&s("a"), &1).unwrap(), Some(s("x")));
    // The TTL compaction filter is set up again from the recorded metadata.
    f.clock.advance(1_000);
    store.backend().purge_expired().unwrap();
    assert_eq!(stored_entries(&store, "expiring"), 0);
    assert_eq!(stored_entries(&store, "counts"), 2);
    // A mismatched registration is still refused after reopening.
    assert!(matches!(
        store.value_state(&StateDescriptor::<String, String>::new(
            "counts", Utf8, Utf8
        )),
        Err(Error::SchemaIncompatible { .. })
    ));
    assert!(matches!(
        store.list_state(&StateDescriptor::<String, u64>::new(
            "counts", Utf8, BigEndian
        )),
        Err(Error::StateMismatch { .. })
    ));
}

#[test]
fn rocksdb_directory_of_another_configuration_is_refused() {
    let f = Fixture::new(Kind::RocksDb);
    f.open().close().unwrap();
    let other = Fixture {
        kind: Kind::RocksDb,
        dir: tempfile::tempdir().unwrap(),
        clock: f.clock.clone(),
        max: MaxParallelism::new(256).unwrap(),
        range: KeyGroupRange::all(MaxParallelism::new(256).unwrap()),
    };
    let result = cairn::RocksDbBackend::builder(f.dir.path(), other.max, other.range).open();
    assert!(matches!(result, Err(Error::BackendMismatch { .. })));
    let half = f.max.subtask_range(1, 2).unwrap();
    let result = cairn::RocksDbBackend::builder(f.dir.path(), f.max, half).open();
    assert!(matches!(result, Err(Error::BackendMismatch { .. })));
    // The original configuration still opens it.
    f.open().close().unwrap();
}

#[test]
fn memory_budget_is_shared_by_backends() {
    let budget = cairn::MemoryBudget::new(64 << 20);
    assert_eq!(budget.cache_capacity(), (64usize << 20) * 5 / 6);
    assert_eq!(budget.write_buffer_capacity(), (64usize << 20) / 3);
    assert!(cairn::MemoryBudget::with_write_buffer_ratio(64 << 20, 1.5).is_err());
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let max = MaxParallelism::DEFAULT;
    let stores: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let range = max.subtask_range(i as u32, 2).unwrap();
            cairn::KeyedStateStore::new(
                cairn::RocksDbBackend::builder(dir.path(), max, range)
                    .memory_budget(&budget)
                    .open()
                    .unwrap(),
            )
        })
        .collect();
    let before = budget.write_buffer_usage();
    for store in &stores {
        let mut v = store
            .value_state(&StateDescriptor::new("v", BigEndian, Bytes))
            .unwrap();
        for k in 0u64..20_000 {
            if store
                .key_group_range()
                .contains(max.key_group_of(&k.to_be_bytes()))
            {
                v.update(&k, &vec![7u8; 100]).unwrap();
            }
        }
    }
    let after = budget.write_buffer_usage();
    assert!(
        after > before + 1_000_000,
        "memtables of both backends are charged: {before} -> {after}"
    );
    assert!(
        budget.cache_usage() >= after,
        "write buffers are charged to the shared cache"
    );
}

#[test]
fn rocksdb_reopens_after_a_registration_interrupted_before_its_record() {
    let f = Fixture::new(Kind::RocksDb);
    {
        let store = f.open();
        store
            .value_state(&counts())
            .unwrap()
            .update(&s("a"), &1)
            .unwrap();
        store.close().unwrap();
    }
    // What a crash between creating a column family and recording the state leaves.
    {
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), f.dir.path()).unwrap();
        let mut db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), f.dir.path(), names).unwrap();
        db.create_cf("half-registered", &rocksdb::Options::default())
            .unwrap();
    }
    let store = f.open();
    let names = state_names(&store);
    assert_eq!(names, ["counts"]);
    assert_eq!(
        store.value_state(&counts()).unwrap().get(&s("a")).unwrap(),
        Some(1)
    );
    // The name can be registered afresh.
    let mut again = store
        .list_state(&StateDescriptor::<String, u64>::new(
            "half-registered",
            Utf8,
            BigEndian,
        ))
        .unwrap();
    again.add(&s("a"), &7).unwrap();
    assert_eq!(again.get(&s("a")).unwrap().collect::<Vec<_>>(), [7]);
}
