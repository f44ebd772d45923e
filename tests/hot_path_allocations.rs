//! The hot path allocates nothing: once a handle's buffers have grown, value get/update,
//! list add and map put/get on the RocksDB backend make no heap allocation on the Rust side
//! (RocksDB's own C++ allocations are not Rust's and are not counted).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cairn::{BigEndian, MapStateDescriptor, StateDescriptor};
use common::{Fixture, Kind};

/// Counts the allocations of the current thread.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed unchanged to the system allocator; counting uses a
// thread-local `Cell` with a const initializer, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn value_list_and_map_operations_do_not_allocate() {
    let fixture = Fixture::new(Kind::RocksDb);
    let store = fixture.open();
    let mut value = store
        .value_state(&StateDescriptor::<u64, u64>::new(
            "value", BigEndian, BigEndian,
        ))
        .unwrap();
    let mut list = store
        .list_state(&StateDescriptor::<u64, u64>::new(
            "list", BigEndian, BigEndian,
        ))
        .unwrap();
    let mut map = store
        .map_state(&MapStateDescriptor::<u64, u64, u64>::new(
            "map", BigEndian, BigEndian, BigEndian,
        ))
        .unwrap();
    // Warm up: grow every buffer to its working size.
    for key in 0..100u64 {
        value.update(&key, &key).unwrap();
        value.get(&key).unwrap();
        list.add(&key, &key).unwrap();
        map.put(&key, &1, &key).unwrap();
        map.get(&key, &1).unwrap();
    }
    let ops = 1_000u64;
    let counted = [
        (
            "value update",
            allocations_during(|| (0..ops).for_each(|k| value.update(&(k % 100), &k).unwrap())),
        ),
        (
            "value get",
            allocations_during(|| {
                (0..ops).for_each(|k| assert!(value.get(&(k % 100)).unwrap().is_some()))
            }),
        ),
        (
            "list add",
            allocations_during(|| (0..ops).for_each(|k| list.add(&(k % 100), &k).unwrap())),
        ),
        (
            "map put",
            allocations_during(|| {
                (0..ops).for_each(|k| map.put(&(k % 100), &(k % 10), &k).unwrap())
            }),
        ),
        (
            "map get",
            allocations_during(|| {
                (0..ops).for_each(|k| assert!(map.get(&(k % 100), &1).unwrap().is_some()))
            }),
        ),
    ];
    for (operation, allocations) in counted {
        assert_eq!(
            allocations, 0,
            "{operation}: {allocations} allocations in {ops} operations"
        );
    }
    // The counter does count: a list read returns an owned Vec.
    assert!(allocations_during(|| drop(list.get(&1).unwrap())) > 0);
}
