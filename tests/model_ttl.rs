//! Model-based test of TTL: random programs of writes, reads, clock moves and purges, with a
//! random TTL policy, on both backends, against a model that keeps a timestamp per entry and
//! applies Flink's rules: an entry is expired once `stamp + ttl <= now`; a point read of an
//! expired entry removes it (returning it this once under `ReturnExpiredIfNotCleanedUp`);
//! `OnReadAndWrite` renews on reads; purges remove what has expired (lists: when every element
//! has); iteration and key listing have no side effects.
//!
//! `PROPTEST_CASES=2000 cargo test --test model_ttl` runs many more programs than CI does.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn::{
    BigEndian, KeyedStateStore, ListState, MapState, MapStateDescriptor, StateDescriptor,
    TtlConfig, TtlUpdate, TtlVisibility, ValueState,
};
use common::{Answer, Fixture, Kind, KINDS};
use proptest::prelude::*;

const TTL: u64 = 100;

#[derive(Debug, Clone)]
enum Op {
    ValueUpdate(u8, u64),
    ValueGet(u8),
    ListAdd(u8, u16),
    ListGet(u8),
    MapPut(u8, u8, u64),
    MapGet(u8, u8),
    MapContains(u8, u8),
    MapIter(u8),
    MapIsEmpty(u8),
    Keys(u8),
    Advance(u64),
    Purge,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..5;
    prop_oneof![
        3 => (key.clone(), any::<u64>()).prop_map(|(k, v)| Op::ValueUpdate(k, v)),
        3 => key.clone().prop_map(Op::ValueGet),
        3 => (key.clone(), any::<u16>()).prop_map(|(k, e)| Op::ListAdd(k, e)),
        3 => key.clone().prop_map(Op::ListGet),
        3 => (key.clone(), 0u8..4, any::<u64>()).prop_map(|(k, u, v)| Op::MapPut(k, u, v)),
        2 => (key.clone(), 0u8..4).prop_map(|(k, u)| Op::MapGet(k, u)),
        1 => (key.clone(), 0u8..4).prop_map(|(k, u)| Op::MapContains(k, u)),
        2 => key.clone().prop_map(Op::MapIter),
        1 => key.prop_map(Op::MapIsEmpty),
        1 => (0u8..3).prop_map(Op::Keys),
        4 => (0u64..=150).prop_map(Op::Advance),
        1 => Just(Op::Purge),
    ]
}

fn policy() -> impl Strategy<Value = TtlConfig> {
    (any::<bool>(), any::<bool>()).prop_map(|(renew_on_read, return_expired)| {
        TtlConfig::new(Duration::from_millis(TTL))
            .update(if renew_on_read {
                TtlUpdate::OnReadAndWrite
            } else {
                TtlUpdate::OnCreateAndWrite
            })
            .visibility(if return_expired {
                TtlVisibility::ReturnExpiredIfNotCleanedUp
            } else {
                TtlVisibility::NeverReturnExpired
            })
    })
}

/// A stored item and the time of its last renewal.
#[derive(Debug, Clone, Copy)]
struct Stamped<T> {
    item: T,
    stamp: u64,
}

struct Model {
    ttl: TtlConfig,
    now: u64,
    values: BTreeMap<u8, Stamped<u64>>,
    lists: BTreeMap<u8, Vec<Stamped<u16>>>,
    maps: BTreeMap<u8, BTreeMap<u8, Stamped<u64>>>,
}

impl Model {
    fn expired<T>(&self, s: &Stamped<T>) -> bool {
        s.stamp + TTL <= self.now
    }

    fn renews(&self) -> bool {
        self.ttl.update == TtlUpdate::OnReadAndWrite
    }

    fn returns_expired(&self) -> bool {
        self.ttl.visibility == TtlVisibility::ReturnExpiredIfNotCleanedUp
    }

    /// A point read of one stamped entry, with its side effects; `None` removes the entry.
    fn point_read(&self, entry: Stamped<u64>) -> (Option<u64>, Option<Stamped<u64>>) {
        if self.expired(&entry) {
            (self.returns_expired().then_some(entry.item), None)
        } else if self.renews() {
            (
                Some(entry.item),
                Some(Stamped {
                    stamp: self.now,
                    ..entry
                }),
            )
        } else {
            (Some(entry.item), Some(entry))
        }
    }

    fn apply(&mut self, op: &Op) -> Answer {
        let now = self.now;
        match *op {
            Op::ValueUpdate(k, v) => {
                self.values.insert(
                    k,
                    Stamped {
                        item: v,
                        stamp: now,
                    },
                );
                Answer::None
            }
            Op::ValueGet(k) => match self.values.get(&k).copied() {
                None => Answer::Value(None),
                Some(entry) => {
                    let (answer, kept) = self.point_read(entry);
                    match kept {
                        Some(kept) => self.values.insert(k, kept),
                        None => self.values.remove(&k),
                    };
                    Answer::Value(answer)
                }
            },
            Op::ListAdd(k, e) => {
                self.lists.entry(k).or_default().push(Stamped {
                    item: e,
                    stamp: now,
                });
                Answer::None
            }
            Op::ListGet(k) => {
                let Some(list) = self.lists.get(&k).cloned() else {
                    return Answer::List(Vec::new());
                };
                let visible = list
                    .iter()
                    .filter(|e| !self.expired(e) || self.returns_expired())
                    .map(|e| e.item)
                    .collect();
                let kept: Vec<_> = list
                    .iter()
                    .filter(|e| !self.expired(e))
                    .map(|e| {
                        if self.renews() {
                            Stamped { stamp: now, ..*e }
                        } else {
                            *e
                        }
                    })
                    .collect();
                if kept.is_empty() {
                    self.lists.remove(&k);
                } else {
                    self.lists.insert(k, kept);
                }
                Answer::List(visible)
            }
            Op::MapPut(k, u, v) => {
                self.maps.entry(k).or_default().insert(
                    u,
                    Stamped {
                        item: v,
                        stamp: now,
                    },
                );
                Answer::None
            }
            Op::MapGet(k, u) | Op::MapContains(k, u) => {
                let entry = self.maps.get(&k).and_then(|m| m.get(&u)).copied();
                let answer = match entry {
                    None => None,
                    Some(entry) => {
                        let (answer, kept) = self.point_read(entry);
                        let map = self.maps.entry(k).or_default();
                        match kept {
                            Some(kept) => map.insert(u, kept),
                            None => map.remove(&u),
                        };
                        if map.is_empty() {
                            self.maps.remove(&k);
                        }
                        answer
                    }
                };
                if matches!(op, Op::MapContains(..)) {
                    Answer::Bool(answer.is_some())
                } else {
                    Answer::Value(answer)
                }
            }
            Op::MapIter(k) => Answer::Entries(self.visible_map(k)),
            Op::MapIsEmpty(k) => Answer::Bool(self.visible_map(k).is_empty()),
            Op::Keys(state) => Answer::Keys(match state {
                0 => self.values.keys().copied().collect(),
                1 => self.lists.keys().copied().collect(),
                _ => self.maps.keys().copied().collect(),
            }),
            Op::Advance(ms) => {
                self.now += ms;
                Answer::None
            }
            Op::Purge => {
                let now = self.now;
                let live = |stamp: u64| stamp + TTL > now;
                self.values.retain(|_, e| live(e.stamp));
                self.lists.retain(|_, l| l.iter().any(|e| live(e.stamp)));
                for map in self.maps.values_mut() {
                    map.retain(|_, e| live(e.stamp));
                }
                self.maps.retain(|_, m| !m.is_empty());
                Answer::None
            }
        }
    }

    fn visible_map(&self, k: u8) -> Vec<(u8, u64)> {
        self.maps
            .get(&k)
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| !self.expired(e) || self.returns_expired())
                    .map(|(u, e)| (*u, e.item))
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Handles {
    store: KeyedStateStore,
    value: ValueState<u8, u64>,
    list: ListState<u8, u16>,
    map: MapState<u8, u8, u64>,
}

impl Handles {
    fn open(fixture: &Fixture, ttl: TtlConfig) -> Self {
        let store = fixture.open();
        Handles {
            value: store
                .value_state(&StateDescriptor::new("value", BigEndian, BigEndian).with_ttl(ttl))
                .unwrap(),
            list: store
                .list_state(&StateDescriptor::new("list", BigEndian, BigEndian).with_ttl(ttl))
                .unwrap(),
            map: store
                .map_state(
                    &MapStateDescriptor::new("map", BigEndian, BigEndian, BigEndian).with_ttl(ttl),
                )
                .unwrap(),
            store,
        }
    }

    fn apply(&mut self, fixture: &Fixture, op: &Op) -> Answer {
        match *op {
            Op::ValueUpdate(k, v) => {
                self.value.update(&k, &v).unwrap();
                Answer::None
            }
            Op::ValueGet(k) => Answer::Value(self.value.get(&k).unwrap()),
            Op::ListAdd(k, e) => {
                self.list.add(&k, &e).unwrap();
                Answer::None
            }
            Op::ListGet(k) => Answer::List(self.list.get(&k).unwrap().collect()),
            Op::MapPut(k, u, v) => {
                self.map.put(&k, &u, &v).unwrap();
                Answer::None
            }
            Op::MapGet(k, u) => Answer::Value(self.map.get(&k, &u).unwrap()),
            Op::MapContains(k, u) => Answer::Bool(self.map.contains(&k, &u).unwrap()),
            Op::MapIter(k) => Answer::Entries(
                self.map
                    .iter(&k)
                    .unwrap()
                    .collect::<cairn::Result<_>>()
                    .unwrap(),
            ),
            Op::MapIsEmpty(k) => Answer::Bool(self.map.is_empty(&k).unwrap()),
            Op::Keys(state) => Answer::Keys(
                match state {
                    0 => self.value.keys().collect::<cairn::Result<_>>(),
                    1 => self.list.keys().collect::<cairn::Result<_>>(),
                    _ => self.map.state_keys().collect::<cairn::Result<_>>(),
                }
                .unwrap(),
            ),
            Op::Advance(ms) => {
                fixture.clock.advance(ms);
                Answer::None
            }
            Op::Purge => {
                self.store.backend().purge_expired().unwrap();
                Answer::None
            }
        }
    }
}

fn run(kind: Kind, ttl: TtlConfig, program: &[Op]) -> Result<(), TestCaseError> {
    let fixture = Fixture::new(kind);
    let mut model = Model {
        ttl,
        now: fixture.clock_now(),
        values: BTreeMap::new(),
        lists: BTreeMap::new(),
        maps: BTreeMap::new(),
    };
    let mut handles = Handles::open(&fixture, ttl);
    for (step, op) in program.iter().enumerate() {
        let expected = model.apply(op);
        let actual = handles.apply(&fixture, op);
        prop_assert_eq!(
            actual,
            expected,
            "{:?} backend, {:?}, step {}: {:?}",
            kind,
            ttl,
            step,
            op
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases()))]

    #[test]
    fn ttl_agrees_with_the_model(ttl in policy(), program in prop::collection::vec(op(), 1..100)) {
        for kind in KINDS {
            run(kind, ttl, &program)?;
        }
    }
}
