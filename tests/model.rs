//! Model-based test: random programs of state operations run on both backends (with RocksDB
//! reopened from its directory now and then) must answer exactly as a plain BTreeMap model.
//!
//! `PROPTEST_CASES=2000 cargo test --test model` runs many more programs than CI does.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use cairn::{
    BigEndian, KeyedStateStore, ListState, MapState, MapStateDescriptor, StateDescriptor,
    ValueState,
};
use common::{Answer, Fixture, Kind, KINDS};
use proptest::prelude::*;

type Ns = Vec<u8>;

#[derive(Debug, Clone)]
enum Op {
    ValueUpdate(u8, Ns, u64),
    ValueGet(u8, Ns),
    ValueClear(u8, Ns),
    ListAdd(u8, Ns, Vec<u16>),
    ListUpdate(u8, Ns, Vec<u16>),
    ListGet(u8, Ns),
    ListClear(u8, Ns),
    MapPut(u8, Ns, u8, u64),
    MapRemove(u8, Ns, u8),
    MapGet(u8, Ns, u8),
    MapContains(u8, Ns, u8),
    MapIter(u8, Ns),
    MapIsEmpty(u8, Ns),
    MapClear(u8, Ns),
    Keys(u8, Ns),
    /// Close and reopen the backend (RocksDB only; the heap backend keeps going).
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..8;
    let ns = prop::sample::select(vec![vec![], vec![1], vec![1, 0], vec![2]]);
    let elements = prop::collection::vec(any::<u16>(), 0..4);
    prop_oneof![
        3 => (key.clone(), ns.clone(), any::<u64>()).prop_map(|(k, n, v)| Op::ValueUpdate(k, n, v)),
        3 => (key.clone(), ns.clone()).prop_map(|(k, n)| Op::ValueGet(k, n)),
        1 => (key.clone(), ns.clone()).prop_map(|(k, n)| Op::ValueClear(k, n)),
        3 => (key.clone(), ns.clone(), elements.clone()).prop_map(|(k, n, e)| Op::ListAdd(k, n, e)),
        1 => (key.clone(), ns.clone(), elements).prop_map(|(k, n, e)| Op::ListUpdate(k, n, e)),
        3 => (key.clone(), ns.clone()).prop_map(|(k, n)| Op::ListGet(k, n)),
        1 => (key.clone(), ns.clone()).prop_map(|(k, n)| Op::ListClear(k, n)),
        3 => (key.clone(), ns.clone(), 0u8..6, any::<u64>()).prop_map(|(k, n, u, v)| Op::MapPut(k, n, u, v)),
        1 => (key.clone(), ns.clone(), 0u8..6).prop_map(|(k, n, u)| Op::MapRemove(k, n, u)),
        2 => (key.clone(), ns.clone(), 0u8..6).prop_map(|(k, n, u)| Op::MapGet(k, n, u)),
        1 => (key.clone(), ns.clone(), 0u8..6).prop_map(|(k, n, u)| Op::MapContains(k, n, u)),
        2 => (key.clone(), ns.clone()).prop_map(|(k, n)| Op::MapIter(k, n)),
        1 => (key.clone(), ns.clone()).prop_map(|(k, n)| Op::MapIsEmpty(k, n)),
        1 => (key, ns.clone()).prop_map(|(k, n)| Op::MapClear(k, n)),
        1 => (0u8..3, ns).prop_map(|(s, n)| Op::Keys(s, n)),
        1 => Just(Op::Reopen),
    ]
}

/// The model: what each state must hold.
#[derive(Default)]
struct Model {
    values: BTreeMap<(u8, Ns), u64>,
    lists: BTreeMap<(u8, Ns), Vec<u16>>,
    maps: BTreeMap<(u8, Ns), BTreeMap<u8, u64>>,
}

impl Model {
    fn apply(&mut self, op: &Op) -> Answer {
        match op.clone() {
            Op::ValueUpdate(k, n, v) => {
                self.values.insert((k, n), v);
                Answer::None
            }
            Op::ValueGet(k, n) => Answer::Value(self.values.get(&(k, n)).copied()),
            Op::ValueClear(k, n) => {
                self.values.remove(&(k, n));
                Answer::None
            }
            Op::ListAdd(k, n, e) => {
                if !e.is_empty() {
                    self.lists.entry((k, n)).or_default().extend(e);
                }
                Answer::None
            }
            Op::ListUpdate(k, n, e) => {
                if e.is_empty() {
                    self.lists.remove(&(k, n));
                } else {
                    self.lists.insert((k, n), e);
                }
                Answer::None
            }
            Op::ListGet(k, n) => Answer::List(self.lists.get(&(k, n)).cloned().unwrap_or_default()),
            Op::ListClear(k, n) => {
                self.lists.remove(&(k, n));
                Answer::None
            }
            Op::MapPut(k, n, u, v) => {
                self.maps.entry((k, n)).or_default().insert(u, v);
                Answer::None
            }
            Op::MapRemove(k, n, u) => {
                let key = (k, n);
                if let Some(map) = self.maps.get_mut(&key) {
                    map.remove(&u);
                    if map.is_empty() {
                        self.maps.remove(&key);
                    }
                }
                Answer::None
            }
            Op::MapGet(k, n, u) => {
                Answer::Value(self.maps.get(&(k, n)).and_then(|m| m.get(&u)).copied())
            }
            Op::MapContains(k, n, u) => {
                Answer::Bool(self.maps.get(&(k, n)).is_some_and(|m| m.contains_key(&u)))
            }
            Op::MapIter(k, n) => Answer::Entries(
                self.maps
                    .get(&(k, n))
                    .map(|m| m.iter().map(|(u, v)| (*u, *v)).collect())
                    .unwrap_or_default(),
            ),
            Op::MapIsEmpty(k, n) => Answer::Bool(!self.maps.contains_key(&(k, n))),
            Op::MapClear(k, n) => {
                self.maps.remove(&(k, n));
                Answer::None
            }
            Op::Keys(state, n) => {
                let keys = match state {
                    0 => self
                        .values
                        .keys()
                        .filter(|(_, ns)| *ns == n)
                        .map(|(k, _)| *k)
                        .collect(),
                    1 => self
                        .lists
                        .keys()
                        .filter(|(_, ns)| *ns == n)
                        .map(|(k, _)| *k)
                        .collect(),
                    _ => self
                        .maps
                        .keys()
                        .filter(|(_, ns)| *ns == n)
                        .map(|(k, _)| *k)
                        .collect(),
                };
                Answer::Keys(keys)
            }
            Op::Reopen => Answer::None,
        }
    }
}

struct Handles {
    store: KeyedStateStore,
    value: ValueState<u8, u64>,
    list: ListState<u8, u16>,
    map: MapState<u8, u8, u64>,
}

impl Handles {
    fn open(fixture: &Fixture) -> Self {
        let store = fixture.open();
        Handles {
            value: store
                .value_state(&StateDescriptor::new("value", BigEndian, BigEndian))
                .unwrap(),
            list: store
                .list_state(&StateDescriptor::new("list", BigEndian, BigEndian))
                .unwrap(),
            map: store
                .map_state(&MapStateDescriptor::new(
                    "map", BigEndian, BigEndian, BigEndian,
                ))
                .unwrap(),
            store,
        }
    }

    fn apply(&mut self, op: &Op) -> Answer {
        match op.clone() {
            Op::ValueUpdate(k, n, v) => {
                self.value.namespace(&n).update(&k, &v).unwrap();
                Answer::None
            }
            Op::ValueGet(k, n) => Answer::Value(self.value.namespace(&n).get(&k).unwrap()),
            Op::ValueClear(k, n) => {
                self.value.namespace(&n).clear(&k).unwrap();
                Answer::None
            }
            Op::ListAdd(k, n, e) => {
                self.list.namespace(&n).add_all(&k, &e).unwrap();
                Answer::None
            }
            Op::ListUpdate(k, n, e) => {
                self.list.namespace(&n).update(&k, &e).unwrap();
                Answer::None
            }
            Op::ListGet(k, n) => Answer::List(self.list.namespace(&n).get(&k).unwrap().collect()),
            Op::ListClear(k, n) => {
                self.list.namespace(&n).clear(&k).unwrap();
                Answer::None
            }
            Op::MapPut(k, n, u, v) => {
                self.map.namespace(&n).put(&k, &u, &v).unwrap();
                Answer::None
            }
            Op::MapRemove(k, n, u) => {
                self.map.namespace(&n).remove(&k, &u).unwrap();
                Answer::None
            }
            Op::MapGet(k, n, u) => Answer::Value(self.map.namespace(&n).get(&k, &u).unwrap()),
            Op::MapContains(k, n, u) => {
                Answer::Bool(self.map.namespace(&n).contains(&k, &u).unwrap())
            }
            Op::MapIter(k, n) => Answer::Entries(
                self.map
                    .namespace(&n)
                    .iter(&k)
                    .unwrap()
                    .collect::<cairn::Result<_>>()
                    .unwrap(),
            ),
            Op::MapIsEmpty(k, n) => Answer::Bool(self.map.namespace(&n).is_empty(&k).unwrap()),
            Op::MapClear(k, n) => {
                self.map.namespace(&n).clear(&k).unwrap();
                Answer::None
            }
            Op::Keys(state, n) => {
                let keys: cairn::Result<BTreeSet<u8>> = match state {
                    0 => self.value.namespace(&n).keys().collect(),
                    1 => self.list.namespace(&n).keys().collect(),
                    _ => self.map.namespace(&n).state_keys().collect(),
                };
                Answer::Keys(keys.unwrap())
            }
            Op::Reopen => Answer::None,
        }
    }
}

fn run(kind: Kind, program: &[Op]) -> Result<(), TestCaseError> {
    let fixture = Fixture::new(kind);
    let mut model = Model::default();
    let mut handles = Handles::open(&fixture);
    for (step, op) in program.iter().enumerate() {
        if matches!(op, Op::Reopen) && kind == Kind::RocksDb {
            handles.store.close().unwrap();
            drop(handles);
            handles = Handles::open(&fixture);
        }
        let expected = model.apply(op);
        let actual = handles.apply(op);
        prop_assert_eq!(
            actual,
            expected,
            "{:?} backend, step {}: {:?}",
            kind,
            step,
            op
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases()))]

    #[test]
    fn backends_agree_with_the_model(program in prop::collection::vec(op(), 1..120)) {
        for kind in KINDS {
            run(kind, &program)?;
        }
    }
}
