//! The `_metadata` file: one job snapshot, checked end to end.
//!
//! ```text
//! [magic "CAIRN-MD"][version: u16 (1, or 2 with timers)][payload length: u32][payload][crc32: u32]
//! payload:
//!   [checkpoint id: u64][kind: u8 (0 checkpoint, 1 savepoint)][taken at ms: u64]
//!   [operator count: varint] operators
//! operator:
//!   [id: framed UTF-8][parallelism: u32][max parallelism: u32]
//!   [keyed handle count: varint (parallelism, or 0)] handles
//!   [operator state count: varint (parallelism, or 0)] operator states (operator_state.rs)
//! handle:
//!   [format: u8 (1 RocksDB incremental, 2 canonical)][first key group: u16][last key group: u16]
//!   [instance: 16 bytes][checkpoint id: u64]
//!   [state count: varint] ([framed state metadata])*
//!   [file count: varint] ([name: framed][path: framed][size: u64][crc32: u32])*
//! ```
//!
//! Integers are big endian, varints LEB128, framed strings `[varint length][bytes]`; the
//! CRC32 (IEEE) covers every byte before it. Decoding checks everything a restore relies
//! on (subtask count equals parallelism, key groups inside max parallelism, paths and file
//! names that cannot leave their directory) so that later code can trust a decoded value.

use std::collections::HashSet;

use crate::backend::key::{write_framed, write_varint};
use crate::backend::meta::Reader;
use crate::backend::StateMeta;
use crate::keygroup::{KeyGroupRange, MaxParallelism};
use crate::operator_state::OperatorStateSnapshot;
use crate::snapshot::{
    InstanceId, JobSnapshot, KeyedStateHandle, OperatorSnapshot, SnapshotFile, SnapshotFormat,
    SnapshotKind,
};
use crate::storage::StoragePath;

/// The magic bytes a `_metadata` file starts with.
pub const MAGIC: &[u8; 8] = b"CAIRN-MD";

/// The newest `_metadata` format version: this cairn reads 1 and 2. Version 2 has the
/// layout of version 1 and may hold state records of version 2 (timer sets); a snapshot
/// without timers is written as version 1, which older cairns read.
pub const METADATA_VERSION: u16 = 2;

/// The version a job snapshot is written with: the oldest that can hold it.
pub(crate) fn version_for(job: &JobSnapshot) -> u16 {
    let states = job
        .operators
        .iter()
        .flat_map(|o| &o.subtasks)
        .flat_map(|h| &h.states);
    states
        .map(|s| u16::from(s.record_version()))
        .max()
        .unwrap_or(1)
}

/// The largest `_metadata` file a reader accepts.
pub const MAX_METADATA_BYTES: u64 = 256 << 20;

const HEADER_LEN: usize = 8 + 2 + 4;

pub(crate) fn encode(job: &JobSnapshot) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&job.checkpoint_id.to_be_bytes());
    payload.push(match job.kind {
        SnapshotKind::Checkpoint => 0,
        SnapshotKind::Savepoint => 1,
    });
    payload.extend_from_slice(&job.taken_at_millis.to_be_bytes());
    write_count(&mut payload, job.operators.len());
    for operator in &job.operators {
        write_framed(&mut payload, operator.operator_id.as_bytes());
        payload.extend_from_slice(&operator.parallelism.to_be_bytes());
        payload.extend_from_slice(&operator.max_parallelism.get().to_be_bytes());
        write_count(&mut payload, operator.subtasks.len());
        for handle in &operator.subtasks {
            encode_handle(&mut payload, handle);
        }
        write_count(&mut payload, operator.operator_state.len());
        for state in &operator.operator_state {
            state.encode(&mut payload);
        }
    }
    seal(MAGIC, version_for(job), &payload)
}

/// Frames `payload` as `[magic][version: u16][payload length: u32][payload][crc32: u32]`,
/// the CRC32 (IEEE) covering every byte before it: the envelope of `_metadata` and of
/// acknowledgements.
pub(crate) fn seal(magic: &[u8; 8], version: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + 4);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_be_bytes());
    // Payloads are bounded far below 4 GiB by the size limits of their readers.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Checks a [`seal`]ed envelope of a `what` file (magic, a version in `1..=newest`, the
/// length, the CRC32) and returns its payload.
pub(crate) fn unseal<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    what: &str,
    newest: u16,
) -> Result<&'a [u8], String> {
    if bytes.len() < HEADER_LEN + 4 {
        return Err(format!(
            "{} bytes is too short for a {what} file",
            bytes.len()
        ));
    }
    if &bytes[..8] != magic {
        return Err(format!(
            "it does not start with the {what} magic '{}'",
            String::from_utf8_lossy(magic)
        ));
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version > newest || version == 0 {
        return Err(format!(
            "format version {version} is not supported: this cairn reads versions 1..={newest}; \
             use a newer cairn"
        ));
    }
    let payload_len = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    if bytes.len() != HEADER_LEN + payload_len + 4 {
        return Err(format!(
            "the header says {payload_len} payload bytes but the file has {}",
            bytes.len().saturating_sub(HEADER_LEN + 4)
        ));
    }
    let (body, crc) = bytes.split_at(HEADER_LEN + payload_len);
    let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(format!(
            "CRC32 mismatch (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    Ok(&body[HEADER_LEN..])
}

fn write_count(out: &mut Vec<u8>, count: usize) {
    // Counts are bounded far below u32::MAX by the metadata size limit.
    write_varint(out, count as u32);
}

pub(crate) fn encode_handle(out: &mut Vec<u8>, handle: &KeyedStateHandle) {
    out.push(handle.format.code());
    out.extend_from_slice(&handle.key_groups.start().to_be_bytes());
    out.extend_from_slice(&handle.key_groups.end().to_be_bytes());
    out.extend_from_slice(&handle.instance.0.to_be_bytes());
    out.extend_from_slice(&handle.checkpoint_id.to_be_bytes());
    write_count(out, handle.states.len());
    let mut meta = Vec::new();
    for state in &handle.states {
        meta.clear();
        state.encode(&mut meta);
        write_framed(out, &meta);
    }
    write_count(out, handle.files.len());
    for file in &handle.files {
        write_framed(out, file.name.as_bytes());
        write_framed(out, file.path.as_str().as_bytes());
        out.extend_from_slice(&file.size.to_be_bytes());
        out.extend_from_slice(&file.crc32.to_be_bytes());
    }
}

pub(crate) fn decode(bytes: &[u8]) -> Result<JobSnapshot, String> {
    let mut r = Reader(unseal(bytes, MAGIC, "_metadata", METADATA_VERSION)?);
    let checkpoint_id = u64::from_be_bytes(r.array("checkpoint id")?);
    let kind = match r.u8("kind")? {
        0 => SnapshotKind::Checkpoint,
        1 => SnapshotKind::Savepoint,
        other => return Err(format!("unknown snapshot kind {other}")),
    };
    let taken_at_millis = u64::from_be_bytes(r.array("timestamp")?);
    let operator_count = r.varint("operator count")?;
    let mut operators: Vec<OperatorSnapshot> = Vec::new();
    // Repeats are found with sets: a list scan per item is quadratic, and a hostile file
    // of millions of items would keep every reader busy for days.
    let mut ids = HashSet::new();
    for _ in 0..operator_count {
        let operator = decode_operator(&mut r)?;
        if !ids.insert(operator.operator_id.clone()) {
            return Err(format!("operator '{}' appears twice", operator.operator_id));
        }
        operators.push(operator);
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the last operator", r.0.len()));
    }
    Ok(JobSnapshot {
        checkpoint_id,
        kind,
        taken_at_millis,
        operators,
    })
}

fn decode_operator(r: &mut Reader<'_>) -> Result<OperatorSnapshot, String> {
    let operator_id = r.string("operator id")?;
    if operator_id.is_empty() {
        return Err("an operator id is empty".into());
    }
    let parallelism = u32::from_be_bytes(r.array("parallelism")?);
    let max = u32::from_be_bytes(r.array("max parallelism")?);
    let max_parallelism = MaxParallelism::new(max)
        .map_err(|_| format!("operator '{operator_id}': max parallelism {max} is out of range"))?;
    if parallelism == 0 || parallelism > max {
        return Err(format!(
            "operator '{operator_id}': parallelism {parallelism} is not in 1..={max}"
        ));
    }
    let count = r.varint("keyed handle count")?;
    if count != parallelism && count != 0 {
        return Err(format!(
            "operator '{operator_id}': {count} keyed state handles for parallelism {parallelism}"
        ));
    }
    let mut subtasks = Vec::new();
    for index in 0..count {
        let handle = decode_handle(r)
            .map_err(|e| format!("operator '{operator_id}', subtask {index}: {e}"))?;
        let expected = max_parallelism
            .subtask_range(index, parallelism)
            .map_err(|e| e.to_string())?;
        if handle.key_groups != expected {
            return Err(format!(
                "operator '{operator_id}', subtask {index}: {} instead of {expected}",
                handle.key_groups
            ));
        }
        subtasks.push(handle);
    }
    let count = r.varint("operator state count")?;
    if count != parallelism && count != 0 {
        return Err(format!(
            "operator '{operator_id}': {count} operator states for parallelism {parallelism}"
        ));
    }
    let mut operator_state = Vec::new();
    for index in 0..count {
        operator_state.push(
            OperatorStateSnapshot::decode(r)
                .map_err(|e| format!("operator '{operator_id}', subtask {index}: {e}"))?,
        );
    }
    Ok(OperatorSnapshot {
        operator_id,
        parallelism,
        max_parallelism,
        subtasks,
        operator_state,
    })
}

pub(crate) fn decode_handle(r: &mut Reader<'_>) -> Result<KeyedStateHandle, String> {
    let code = r.u8("format")?;
    let format = SnapshotFormat::from_code(code).ok_or(format!("unknown format {code}"))?;
    let start = u16::from_be_bytes(r.array("first key group")?);
    let end = u16::from_be_bytes(r.array("last key group")?);
    if start > end {
        return Err(format!("key groups {start}..={end} are reversed"));
    }
    let instance = InstanceId(u128::from_be_bytes(r.array("instance")?));
    let checkpoint_id = u64::from_be_bytes(r.array("checkpoint id")?);
    let state_count = r.varint("state count")?;
    let mut states: Vec<StateMeta> = Vec::new();
    let mut state_names = HashSet::new();
    for _ in 0..state_count {
        let meta = StateMeta::decode(r.framed("state metadata")?)?;
        if !state_names.insert(meta.name.clone()) {
            return Err(format!("state '{}' appears twice", meta.name));
        }
        states.push(meta);
    }
    let file_count = r.varint("file count")?;
    let mut files: Vec<SnapshotFile> = Vec::new();
    let mut file_names = HashSet::new();
    for _ in 0..file_count {
        let name = String::from_utf8(r.framed("file name")?.to_vec())
            .map_err(|_| "a file name is not UTF-8".to_string())?;
        if name.contains('/') || StoragePath::new(name.as_str()).is_err() {
            return Err(format!("file name '{name}' is not a plain file name"));
        }
        let path = String::from_utf8(r.framed("file path")?.to_vec())
            .map_err(|_| "a file path is not UTF-8".to_string())?;
        let path = StoragePath::new(path).map_err(|e| e.to_string())?;
        let size = u64::from_be_bytes(r.array("file size")?);
        let crc32 = u32::from_be_bytes(r.array("file crc32")?);
        if !file_names.insert(name.clone()) {
            return Err(format!("file '{name}' appears twice"));
        }
        files.push(SnapshotFile {
            name,
            path,
            size,
            crc32,
        });
    }
    Ok(KeyedStateHandle {
        format,
        key_groups: KeyGroupRange::new(start, end),
        instance,
        checkpoint_id,
        states,
        files,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::CodecInfo;
    use crate::StateKind;

    pub(crate) fn sample() -> JobSnapshot {
        let max = MaxParallelism::new(4).unwrap();
        let handle = |index: u32| KeyedStateHandle {
            format: SnapshotFormat::RocksDb,
            key_groups: max.subtask_range(index, 2).unwrap(),
            instance: InstanceId(0x0102 + u128::from(index)),
            checkpoint_id: 7,
            states: vec![StateMeta {
                name: "count".into(),
                kind: StateKind::Value,
                key_codec: CodecInfo::new("utf8", 1),
                value_codec: CodecInfo::new("u64-be", 1),
                user_key_codec: None,
                ttl: None,
            }],
            files: vec![SnapshotFile {
                name: "000009.sst".into(),
                path: StoragePath::new(format!("shared/7-{index}-000009.sst")).unwrap(),
                size: 1234,
                crc32: 0xdead_beef,
            }],
        };
        JobSnapshot {
            checkpoint_id: 7,
            kind: SnapshotKind::Checkpoint,
            taken_at_millis: 1_700_000_000_000,
            operators: vec![OperatorSnapshot {
                operator_id: "word-count".into(),
                parallelism: 2,
                max_parallelism: max,
                subtasks: vec![handle(0), handle(1)],
                operator_state: Vec::new(),
            }],
        }
    }

    #[test]
    fn round_trips() {
        let job = sample();
        let bytes = encode(&job);
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(&bytes[8..10], &[0, 1]);
        assert_eq!(decode(&bytes), Ok(job));
    }

    #[test]
    fn every_flipped_bit_and_truncation_is_caught() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn a_newer_version_is_refused_with_a_hint() {
        let mut bytes = encode(&sample());
        bytes[9] = 3;
        assert!(decode(&bytes).unwrap_err().contains("use a newer cairn"));
    }

    /// Re-encodes with a valid CRC, to reach the checks behind it.
    fn reseal(mut body: Vec<u8>) -> Vec<u8> {
        let len = (body.len() - HEADER_LEN) as u32;
        body[10..14].copy_from_slice(&len.to_be_bytes());
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        body
    }

    #[test]
    fn paths_that_leave_the_root_are_refused_even_with_a_valid_crc() {
        let bytes = encode(&sample());
        let body = bytes[..bytes.len() - 4].to_vec();
        let from = b"shared/7-0-000009.sst";
        let at = body.windows(from.len()).position(|w| w == from).unwrap();
        let mut evil = body.clone();
        evil[at..at + from.len()].copy_from_slice(b"../../../etc/passwd.s");
        assert!(decode(&reseal(evil)).unwrap_err().contains("'.' or '..'"));
    }
}
