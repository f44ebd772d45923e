//! A subtask's acknowledgement of a checkpoint: its handles, as bytes another process reads.
//!
//! ```text
//! [magic "CAIRN-AK"][version: u16 = 1][payload length: u32][payload][crc32: u32]
//! payload:
//!   [checkpoint id: u64]
//!   [operator id: string][parallelism: u32][max parallelism: u32][subtask: u32]
//!   [has keyed state: u8 (0/1)]     1: a handle, as in _metadata
//!   [has operator state: u8 (0/1)]  1: an operator state, as in _metadata
//! ```
//!
//! The envelope and the handle and operator state encodings are `_metadata`'s
//! (docs/format.md, sections 7, 9 and 10), so an acknowledgement is checked as thoroughly
//! as a `_metadata` is.

use crate::backend::key::write_framed;
use crate::backend::meta::Reader;
use crate::error::{Error, Result};
use crate::keygroup::MaxParallelism;
use crate::operator_state::OperatorStateSnapshot;
use crate::snapshot::metadata::{decode_handle, encode_handle, seal, unseal, MAX_METADATA_BYTES};
use crate::snapshot::{CheckpointId, KeyedStateHandle};
use crate::storage::{SnapshotStore, StoragePath};

/// The magic bytes an acknowledgement starts with.
pub const ACK_MAGIC: &[u8; 8] = b"CAIRN-AK";

/// The acknowledgement format version this cairn writes, and the newest it reads.
pub const ACK_VERSION: u16 = 1;

/// The directory, inside `chk-<id>/`, that acknowledgement objects are written to.
pub const ACKS_DIR: &str = "acks";

/// Lowercase hex digits, for operator ids that are not written as they are.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The longest operator id written as it is in an acknowledgement's object name.
const MAX_PLAIN_OPERATOR_NAME: usize = 200;

/// What one subtask hands the coordinator for one checkpoint: who it is, and the handles
/// of its snapshots. It serializes to bytes ([`encode`](Self::encode), docs/format.md
/// section 10), to go through the caller's own channel, or is written as a small object
/// under `chk-<id>/acks/` ([`publish`](Self::publish)) that the coordinator lists.
///
/// # Examples
/// ```
/// use cairn::{MaxParallelism, SubtaskAck};
/// let max = MaxParallelism::DEFAULT;
/// let ack = SubtaskAck::new(7, "source", 4, max, 2); // no keyed state, no operator state
/// let bytes = ack.encode();
/// assert_eq!(SubtaskAck::decode(&bytes)?, ack);
/// assert_eq!(ack.object_path()?.as_str(), "chk-7/acks/source.2.ack");
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtaskAck {
    /// The checkpoint.
    pub checkpoint_id: CheckpointId,
    /// The operator the subtask belongs to.
    pub operator_id: String,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// The operator's number of key groups.
    pub max_parallelism: MaxParallelism,
    /// The subtask's index.
    pub subtask: u32,
    /// Its keyed state snapshot, if the operator has keyed state.
    pub keyed_state: Option<KeyedStateHandle>,
    /// Its operator state, if the operator has operator state.
    pub operator_state: Option<OperatorStateSnapshot>,
}

impl SubtaskAck {
    /// An acknowledgement of subtask `subtask` of operator `operator_id` with nothing in
    /// it yet: add the snapshots with [`with_keyed_state`](Self::with_keyed_state) and
    /// [`with_operator_state`](Self::with_operator_state).
    pub fn new(
        checkpoint_id: CheckpointId,
        operator_id: impl Into<String>,
        parallelism: u32,
        max_parallelism: MaxParallelism,
        subtask: u32,
    ) -> Self {
        SubtaskAck {
            checkpoint_id,
            operator_id: operator_id.into(),
            parallelism,
            max_parallelism,
            subtask,
            keyed_state: None,
            operator_state: None,
        }
    }

    /// With the subtask's keyed state snapshot (what its `SnapshotTask::wait` returned).
    pub fn with_keyed_state(mut self, handle: KeyedStateHandle) -> Self {
        self.keyed_state = Some(handle);
        self
    }

    /// With the subtask's operator state, taken at the same barrier.
    pub fn with_operator_state(mut self, state: OperatorStateSnapshot) -> Self {
        self.operator_state = Some(state);
        self
    }

    /// The bytes of this acknowledgement (docs/format.md, section 10).
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&self.checkpoint_id.to_be_bytes());
        write_framed(&mut payload, self.operator_id.as_bytes());
        payload.extend_from_slice(&self.parallelism.to_be_bytes());
        payload.extend_from_slice(&self.max_parallelism.get().to_be_bytes());
        payload.extend_from_slice(&self.subtask.to_be_bytes());
        match &self.keyed_state {
            Some(handle) => {
                payload.push(1);
                encode_handle(&mut payload, handle);
            }
            None => payload.push(0),
        }
        match &self.operator_state {
            Some(state) => {
                payload.push(1);
                state.encode(&mut payload);
            }
            None => payload.push(0),
        }
        seal(ACK_MAGIC, ACK_VERSION, &payload)
    }

    /// Decodes and checks an acknowledgement: envelope, CRC32, that the subtask exists,
    /// that its handle holds exactly the subtask's key groups and is for the same
    /// checkpoint, and every path (as `_metadata`'s are checked).
    ///
    /// # Errors
    /// [`Error::Corrupted`] saying what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode(bytes).map_err(|detail| Error::Corrupted {
            what: "checkpoint acknowledgement",
            path: "(bytes)".into(),
            detail,
        })
    }

    /// Where [`publish`](Self::publish) writes it: `chk-<id>/acks/<operator>.<subtask>.ack`,
    /// where `<operator>` is the operator id if it is made of letters, digits and `-` (and
    /// at most 200 bytes), and otherwise `_` followed by the hex of its UTF-8 bytes.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for an operator id too long for a path.
    pub fn object_path(&self) -> Result<StoragePath> {
        let id = &self.operator_id;
        let plain = !id.is_empty()
            && id.len() <= MAX_PLAIN_OPERATOR_NAME
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let name = if plain {
            id.clone()
        } else {
            id.bytes().fold(String::from("_"), |mut name, b| {
                name.push(char::from(HEX[usize::from(b >> 4)]));
                name.push(char::from(HEX[usize::from(b & 15)]));
                name
            })
        };
        StoragePath::new(format!(
            "chk-{}/{ACKS_DIR}/{name}.{}.ack",
            self.checkpoint_id, self.subtask
        ))
    }

    /// Writes it into `store` (the checkpoint storage root) as one object at
    /// [`object_path`](Self::object_path), which appears whole or not at all. Publish it
    /// only once the snapshot's files are written (after `SnapshotTask::wait` returned).
    ///
    /// # Errors
    /// The store's errors.
    pub fn publish(&self, store: &dyn SnapshotStore) -> Result<StoragePath> {
        let path = self.object_path()?;
        store.put(&path, &self.encode())?;
        Ok(path)
    }

    /// Reads and checks the acknowledgement object at `path` of `store`, which must be the
    /// object path of what it holds.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Corrupted`] naming the object if it does not decode,
    /// or holds another subtask's acknowledgement than its name says.
    pub fn read(store: &dyn SnapshotStore, path: &StoragePath) -> Result<Self> {
        let bytes = store.get(path, MAX_METADATA_BYTES)?;
        let corrupted = |detail: String| Error::Corrupted {
            what: "checkpoint acknowledgement",
            path: format!("{}/{path}", store.location()).into(),
            detail,
        };
        let ack = decode(&bytes).map_err(corrupted)?;
        let expected = ack.object_path()?;
        if &expected != path {
            return Err(corrupted(format!(
                "it holds the acknowledgement of operator '{}', subtask {} of checkpoint {}, \
                 which belongs at {expected}",
                ack.operator_id, ack.subtask, ack.checkpoint_id
            )));
        }
        Ok(ack)
    }
}

fn decode(bytes: &[u8]) -> std::result::Result<SubtaskAck, String> {
    let mut r = Reader(unseal(bytes, ACK_MAGIC, "acknowledgement", ACK_VERSION)?);
    let checkpoint_id = u64::from_be_bytes(r.array("checkpoint id")?);
    let operator_id = r.string("operator id")?;
    if operator_id.is_empty() {
        return Err("the operator id is empty".into());
    }
    let parallelism = u32::from_be_bytes(r.array("parallelism")?);
    let max = u32::from_be_bytes(r.array("max parallelism")?);
    let subtask = u32::from_be_bytes(r.array("subtask")?);
    let max_parallelism = MaxParallelism::new(max)
        .map_err(|_| format!("operator '{operator_id}': max parallelism {max} is out of range"))?;
    if parallelism == 0 || parallelism > max || subtask >= parallelism {
        return Err(format!(
            "operator '{operator_id}': subtask {subtask} of parallelism {parallelism} is not a \
             subtask of max parallelism {max}"
        ));
    }
    let keyed_state = match r.u8("keyed state flag")? {
        0 => None,
        1 => {
            let handle = decode_handle(&mut r).map_err(|e| format!("keyed state: {e}"))?;
            let range = max_parallelism
                .subtask_range(subtask, parallelism)
                .map_err(|e| e.to_string())?;
            if handle.key_groups != range {
                return Err(format!(
                    "the handle holds {} but subtask {subtask} of {parallelism} owns {range}",
                    handle.key_groups
                ));
            }
            if handle.checkpoint_id != checkpoint_id {
                return Err(format!(
                    "the handle is for checkpoint {}, the acknowledgement for {checkpoint_id}",
                    handle.checkpoint_id
                ));
            }
            Some(handle)
        }
        other => return Err(format!("keyed state flag {other} is not 0 or 1")),
    };
    let operator_state = match r.u8("operator state flag")? {
        0 => None,
        1 => Some(
            OperatorStateSnapshot::decode(&mut r).map_err(|e| format!("operator state: {e}"))?,
        ),
        other => return Err(format!("operator state flag {other} is not 0 or 1")),
    };
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the operator state", r.0.len()));
    }
    Ok(SubtaskAck {
        checkpoint_id,
        operator_id,
        parallelism,
        max_parallelism,
        subtask,
        keyed_state,
        operator_state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::metadata::tests::sample;

    fn ack_with_everything() -> SubtaskAck {
        let job = sample();
        let op = &job.operators[0];
        let mut state = OperatorStateSnapshot::default();
        state.states.insert(
            "offsets".into(),
            crate::OperatorStateEntry {
                kind: crate::OperatorStateKind::List,
                value_codec: crate::CodecInfo::new("u64-be", 1),
                key_codec: None,
                items: vec![(Vec::new(), 42u64.to_be_bytes().to_vec())],
            },
        );
        SubtaskAck::new(
            op.subtasks[1].checkpoint_id,
            op.operator_id.clone(),
            2,
            op.max_parallelism,
            1,
        )
        .with_keyed_state(op.subtasks[1].clone())
        .with_operator_state(state)
    }

    #[test]
    fn round_trips_and_the_layout_is_as_documented() {
        let ack = ack_with_everything();
        let bytes = ack.encode();
        assert_eq!(SubtaskAck::decode(&bytes).unwrap(), ack);
        assert_eq!(&bytes[..8], b"CAIRN-AK");
        assert_eq!(&bytes[8..10], &[0, 1]);
        // payload: checkpoint id 7, "word-count", parallelism 2, max 4, subtask 1, then 1.
        let mut head = 7u64.to_be_bytes().to_vec();
        head.push(10);
        head.extend_from_slice(b"word-count");
        for n in [2u32, 4, 1] {
            head.extend_from_slice(&n.to_be_bytes());
        }
        head.push(1);
        assert_eq!(&bytes[14..14 + head.len()], head.as_slice());
        let empty = SubtaskAck::new(3, "source", 1, MaxParallelism::DEFAULT, 0);
        assert_eq!(SubtaskAck::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn every_flipped_bit_and_truncation_is_caught() {
        let bytes = ack_with_everything().encode();
        for len in 0..bytes.len() {
            assert!(
                SubtaskAck::decode(&bytes[..len]).is_err(),
                "truncated to {len}"
            );
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(SubtaskAck::decode(&bad).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn a_handle_of_other_key_groups_or_another_checkpoint_is_refused() {
        let mut ack = ack_with_everything();
        ack.subtask = 0;
        let e = SubtaskAck::decode(&ack.encode()).unwrap_err().to_string();
        assert!(e.contains("owns"), "{e}");
        let mut ack = ack_with_everything();
        ack.checkpoint_id = 8;
        let e = SubtaskAck::decode(&ack.encode()).unwrap_err().to_string();
        assert!(e.contains("checkpoint 7"), "{e}");
        let mut ack = ack_with_everything();
        ack.subtask = 2;
        assert!(SubtaskAck::decode(&ack.encode()).is_err());
    }

    #[test]
    fn object_names_are_plain_or_hex() {
        let max = MaxParallelism::DEFAULT;
        let plain = SubtaskAck::new(12, "word-count", 4, max, 3);
        assert_eq!(
            plain.object_path().unwrap().as_str(),
            "chk-12/acks/word-count.3.ack"
        );
        let odd = SubtaskAck::new(12, "a b/é", 4, max, 0);
        assert_eq!(
            odd.object_path().unwrap().as_str(),
            "chk-12/acks/_6120622fc3a9.0.ack"
        );
        let underscore = SubtaskAck::new(12, "_x", 4, max, 0);
        assert_eq!(
            underscore.object_path().unwrap().as_str(),
            "chk-12/acks/_5f78.0.ack"
        );
    }
}
