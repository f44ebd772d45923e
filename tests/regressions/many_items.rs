//! Found by reading the decoders for "no infinite loop" (the fuzzers' inputs are too small
//! to show it): `_metadata` and the canonical stream's header refused repeated operators,
//! states and files by scanning the items decoded so far, once per item. Quadratic: a
//! `_metadata` of 20,000 files took 9 s to decode in a debug build, and the 256 MiB a
//! `_metadata` may have hold millions of items, days of work for every reader (a restore,
//! `latest_checkpoint`, every `cairn` command). Repeats are now found with sets; these
//! inputs decode at once and would take minutes with the scans.

use cairn::{
    CodecInfo, InstanceId, JobSnapshot, KeyGroupRange, KeyedStateHandle, MaxParallelism,
    OperatorSnapshot, SnapshotFile, SnapshotFormat, SnapshotKind, StateKind, StateMeta,
    StoragePath,
};

fn state(name: String) -> StateMeta {
    StateMeta {
        name,
        kind: StateKind::Value,
        key_codec: CodecInfo::new("utf8", 1),
        value_codec: CodecInfo::new("u64-be", 1),
        user_key_codec: None,
        ttl: None,
    }
}

fn handle(states: usize, files: usize) -> KeyedStateHandle {
    KeyedStateHandle {
        format: SnapshotFormat::RocksDb,
        key_groups: KeyGroupRange::new(0, 0),
        instance: InstanceId(1),
        checkpoint_id: 1,
        states: (0..states).map(|i| state(format!("s{i}"))).collect(),
        files: (0..files)
            .map(|i| SnapshotFile {
                name: format!("{i:06}.sst"),
                path: StoragePath::new(format!("shared/1-01-{i:06}.sst")).unwrap(),
                size: 1,
                crc32: 0,
            })
            .collect(),
    }
}

fn operator(id: String, subtasks: Vec<KeyedStateHandle>) -> OperatorSnapshot {
    OperatorSnapshot {
        operator_id: id,
        parallelism: 1,
        max_parallelism: MaxParallelism::new(1).unwrap(),
        subtasks,
        operator_state: Vec::new(),
    }
}

fn round_trip(operators: Vec<OperatorSnapshot>) {
    let job = JobSnapshot {
        checkpoint_id: 1,
        kind: SnapshotKind::Checkpoint,
        taken_at_millis: 0,
        operators,
    };
    let bytes = job.encode();
    let path = StoragePath::new("chk-1/_metadata").unwrap();
    assert_eq!(JobSnapshot::decode(&bytes, &path).unwrap(), job);
}

#[test]
fn a_metadata_with_many_files_states_and_operators_decodes() {
    round_trip(vec![operator("o".into(), vec![handle(0, 100_000)])]);
    round_trip(vec![operator("o".into(), vec![handle(50_000, 0)])]);
    round_trip(
        (0..50_000)
            .map(|i| operator(format!("op-{i}"), Vec::new()))
            .collect(),
    );
}

/// A canonical stream with no entries and a states table of 50,000 states, laid out by
/// hand as docs/format.md (section 8) specifies.
fn stream_with_states(count: u32) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&1u32.to_be_bytes());
    payload.extend_from_slice(&[0, 0, 0, 0]);
    cairn::layout::write_varint(&mut payload, count);
    let mut record = Vec::new();
    for i in 0..count {
        record.clear();
        state(format!("s{i}")).encode(&mut record);
        cairn::layout::write_framed(&mut payload, &record);
    }
    let mut out = b"CAIRN-KS".to_vec();
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    let index_offset = out.len() as u64;
    out.extend_from_slice(&index_offset.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&crc32(&[]).to_be_bytes());
    out.extend_from_slice(b"CAIRN-KS");
    out
}

/// CRC32 (IEEE), bit by bit: the test does not lean on the crate it checks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_canonical_stream_with_many_states_opens() {
    let stream = stream_with_states(50_000);
    assert_eq!(cairn::fuzzing::canonical(&stream), Ok(()));
}
