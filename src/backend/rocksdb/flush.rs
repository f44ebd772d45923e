//! The one RocksDB call the Rust binding does not offer: a flush that may stall writes.
//!
//! A snapshot's synchronous phase must flush every column family's memtable, since the WAL
//! is off and a RocksDB checkpoint holds only SST files. RocksDB's own checkpoint flushes
//! with default `FlushOptions`, whose `allow_write_stall = false` makes the flush first
//! *wait* until one more L0 file would not slow writes down: after a burst of writes, with
//! L0 files piling up faster than compaction takes them, the synchronous phase then waits
//! for compaction — seconds, growing with the state (20 s measured at 1 GB right after a
//! bulk load). That is the wrong trade for a checkpoint barrier, which holds up the whole
//! operator. So the synchronous phase flushes here with `allow_write_stall = true`, then
//! takes the checkpoint without a second flush: the flush costs the memtables' size, and
//! if the new L0 file crosses RocksDB's slowdown trigger, it is the writes after the
//! barrier that slow down (RocksDB's normal back pressure), not the barrier itself.
//!
//! The binding keeps its flush options' pointer private, so this module builds its own
//! through the C API, on the DB's raw pointer (the binding's `raw-ptr` feature).
#![expect(
    unsafe_code,
    reason = "rust-rocksdb 0.25 has no FlushOptions::set_allow_write_stall; the C API does"
)]

use std::ffi::{c_char, c_int, c_void, CStr};

use librocksdb_sys as ffi;
use rocksdb::{AsColumnFamilyRef, AsRawPtr, DB};

/// Flushes the memtables of `column_families` (atomically, as the DB is opened with atomic
/// flush) and waits for the flush to finish, even if the new L0 files stall writes.
///
/// # Errors
/// RocksDB's message.
pub(super) fn flush_allowing_write_stall(
    db: &DB,
    column_families: &[&impl AsColumnFamilyRef],
) -> Result<(), String> {
    let mut handles: Vec<*mut ffi::rocksdb_column_family_handle_t> =
        column_families.iter().map(|cf| cf.inner()).collect();
    let count = c_int::try_from(handles.len())
        .map_err(|_| format!("{} column families are too many to flush", handles.len()))?;
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: `db` and the column family handles are alive for the whole call (borrowed);
    // the options are created, used and destroyed here; `handles` outlives the call and
    // holds `count` pointers; `error` is either left null or set to a string that RocksDB
    // allocated and that is freed below, once.
    unsafe {
        let options = ffi::rocksdb_flushoptions_create();
        ffi::rocksdb_flushoptions_set_wait(options, 1);
        ffi::rocksdb_flushoptions_set_allow_write_stall(options, 1);
        ffi::rocksdb_flush_cfs(
            db.as_raw_ptr(),
            options,
            handles.as_mut_ptr(),
            count,
            &mut error,
        );
        ffi::rocksdb_flushoptions_destroy(options);
        if error.is_null() {
            Ok(())
        } else {
            let message = CStr::from_ptr(error).to_string_lossy().into_owned();
            ffi::rocksdb_free(error.cast::<c_void>());
            Err(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use rocksdb::compaction_filter::Decision;
    use rocksdb::{ColumnFamilyDescriptor, Options, DB};

    use crate::backend::rocksdb::checkpoint::stage;
    use crate::backend::rocksdb::META_CF;

    /// A gate that compaction waits at until the test opens it.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: Condvar,
    }

    impl Gate {
        fn wait(&self) {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            while !*open {
                open = self.opened.wait(open).unwrap_or_else(|e| e.into_inner());
            }
        }

        fn release(&self) {
            *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
            self.opened.notify_all();
        }
    }

    /// With L0 files past the slowdown trigger and compaction stuck, RocksDB's own
    /// checkpoint flush would wait until compaction clears them; the synchronous phase
    /// must not wait, and must still hold what was written last.
    #[test]
    fn the_synchronous_phase_does_not_wait_for_compaction() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let gate = Arc::new(Gate::default());
        let compaction_gate = gate.clone();
        let mut state_options = Options::default();
        state_options.set_level_zero_file_num_compaction_trigger(2);
        state_options.set_level_zero_slowdown_writes_trigger(3);
        state_options.set_level_zero_stop_writes_trigger(100);
        state_options.set_compaction_filter("stuck", move |_, _, _| {
            compaction_gate.wait();
            Decision::Keep
        });
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_atomic_flush(true);
        let db = DB::open_cf_descriptors(
            &db_options,
            dir.path(),
            [
                ColumnFamilyDescriptor::new(META_CF, Options::default()),
                ColumnFamilyDescriptor::new("counts", state_options),
            ],
        )
        .expect("open the DB");
        let cf = db.cf_handle("counts").expect("the state's column family");
        // Two overlapping L0 files: compaction starts (it cannot just move them down) and
        // gets stuck; one more L0 file would reach the slowdown trigger.
        for i in 0u8..2 {
            db.put_cf(cf, b"a", [i]).expect("put");
            db.put_cf(cf, b"z", [i]).expect("put");
            db.flush_cf(cf).expect("flush");
        }
        db.put_cf(cf, b"last", b"written").expect("put");
        let states = [crate::StateMeta {
            name: "counts".into(),
            kind: crate::StateKind::Value,
            key_codec: crate::CodecInfo::new("bytes", 1),
            value_codec: crate::CodecInfo::new("bytes", 1),
            user_key_codec: None,
            ttl: None,
        }];

        let db = Arc::new(db);
        let (done, finished) = mpsc::channel();
        let staging_db = db.clone();
        let staging_dir = dir.path().to_path_buf();
        // Not joined: if the phase waited for compaction, the test fails at the timeout
        // instead of hanging.
        std::thread::spawn(move || {
            let _ = done.send(stage(&staging_db, &staging_dir, &states, 1));
        });
        let staged = finished.recv_timeout(Duration::from_secs(30));
        gate.release();
        let staging = staged
            .expect("the synchronous phase returns while compaction is stuck")
            .expect("the synchronous phase succeeds");
        let copy =
            DB::open_cf_for_read_only(&Options::default(), &staging, [META_CF, "counts"], false)
                .expect("open the staged checkpoint");
        let cf = copy.cf_handle("counts").expect("the state's column family");
        assert_eq!(
            copy.get_cf(cf, b"last").expect("get").as_deref(),
            Some(&b"written"[..]),
            "the checkpoint holds the write made just before it"
        );
    }
}
