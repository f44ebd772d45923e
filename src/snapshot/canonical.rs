//! The canonical keyed-state stream: one subtask's keyed state, backend-independent, in
//! key-group order. Heap checkpoints are written in it, and canonical savepoints reuse it.
//!
//! The bytes are specified in docs/format.md ("Canonical keyed-state stream"); in short,
//! integers big endian, varints LEB128 of at most 5 bytes, `framed` = `[varint len][bytes]`:
//!
//! ```text
//! header   [magic "CAIRN-KS"][version: u16 (1, or 2 with timers)][payload length: u32][payload][crc32: u32]
//!          payload = [max parallelism: u32][first key group: u16][last key group: u16]
//!                    [state count: varint] ([framed StateMeta encoding])*
//! sections one per key group with entries, increasing key group; each is one or more
//!          blocks [compressed len: u32][uncompressed len: u32][crc32 of compressed: u32][zstd]
//!          the blocks' uncompressed bytes, concatenated, are
//!          ([state index: varint][entry count: varint] ([framed key][framed value]){count})*
//! index    ([key group: u16][section offset: u64][section length: u64])*
//! footer   [index offset: u64][index length: u32][index crc32: u32][magic "CAIRN-KS"]
//! ```
//!
//! A key is the composite key without its 2-byte key group (the section says which); a
//! value is the backend's stored bytes. Within a section, entries are strictly increasing
//! by (state index, key). Blocks cut a section's payload every [`BLOCK_CAP`] bytes, even
//! inside an entry, so a block never decompresses to more than 1 MiB however large an
//! entry is, and a reader holds one block plus the entry it is assembling.
//!
//! A reader finds the index from the fixed-size footer, then reads only the sections of the
//! key groups it needs, in one ranged read per call. Every length it reads is checked
//! against the file size or the block cap before anything is allocated from it, and every
//! CRC is checked: a corrupted or hostile stream is an [`Error::Corrupted`], never a panic.

use std::collections::HashSet;
use std::io::{self, BufReader, Read, Write};

use zstd::zstd_safe;

use crate::backend::key::{read_varint, write_framed, write_varint};
use crate::backend::meta::Reader;
use crate::backend::StateMeta;
use crate::error::{Error, Result};
use crate::keygroup::{KeyGroup, KeyGroupRange, MaxParallelism};
use crate::snapshot::SnapshotFile;
use crate::storage::{SnapshotStore, StoragePath};

/// The magic bytes at the start and at the very end of a stream.
pub(crate) const MAGIC: &[u8; 8] = b"CAIRN-KS";

/// The name of a subtask's canonical stream, in its handle and at the end of its path.
pub(crate) const STREAM_NAME: &str = "keyed-state";

/// The newest stream version: this cairn reads 1 and 2. Version 2 has the layout of
/// version 1 and may hold state records of version 2 (timer sets); a stream without timers
/// is written as version 1, which older cairns read.
pub(crate) const VERSION: u16 = 2;

/// The most uncompressed payload bytes one block carries.
pub(crate) const BLOCK_CAP: usize = 1 << 20;

/// The zstd level blocks are compressed with (any level decodes the same).
const ZSTD_LEVEL: i32 = 1;

/// Magic, version and header payload length.
const PREFIX_LEN: u64 = 8 + 2 + 4;

/// Index offset, index length, index CRC32, magic.
const FOOTER_LEN: u64 = 8 + 4 + 4 + 8;

/// Key group, offset, length.
const INDEX_ENTRY_LEN: usize = 2 + 8 + 8;

/// Compressed length, uncompressed length, CRC32.
const BLOCK_HEADER_LEN: u64 = 4 + 4 + 4;

/// The largest header payload a reader accepts: far more than any states table needs.
const MAX_HEADER_PAYLOAD: u64 = 16 << 20;

/// What a reader calls for each entry: (state index, full composite key, value).
pub(crate) type EntryVisitor<'v> = dyn FnMut(u32, &[u8], &[u8]) -> Result<()> + 'v;

/// What [`Error::Corrupted`] names.
const WHAT: &str = "canonical keyed-state stream";

fn invalid_input(detail: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, detail)
}

/// Writes a canonical stream to `W`; entries must come in (key group, state, key) order.
///
/// Memory stays bounded by about two blocks plus the largest entry, whatever the size of a
/// key group. Dropping the writer without [`finish`](Self::finish) leaves an incomplete
/// stream that no reader accepts.
pub(crate) struct CanonicalWriter<W: Write> {
    out: W,
    /// Bytes written to `out` so far: the offset of the next byte.
    written: u64,
    range: KeyGroupRange,
    state_count: u32,
    compressor: zstd::bulk::Compressor<'static>,
    /// The current key group and the offset its section starts at.
    section: Option<(KeyGroup, u64)>,
    /// Payload of the current section not yet cut into blocks.
    payload: Vec<u8>,
    /// The current group: its state, its encoded entries, and how many.
    group_state: u32,
    group: Vec<u8>,
    group_count: u32,
    /// The key (without key group) of the last entry added, for the order check.
    last_key: Vec<u8>,
    /// Compressed bytes of the block being written.
    compressed: Vec<u8>,
    index: Vec<u8>,
}

impl<W: Write> CanonicalWriter<W> {
    /// Writes the header: the stream holds key groups `range` of `max`, with `states`
    /// (state index = position in `states`).
    pub(crate) fn new(
        mut out: W,
        max: MaxParallelism,
        range: KeyGroupRange,
        states: &[StateMeta],
    ) -> io::Result<Self> {
        if u32::from(range.end()) >= max.get() {
            return Err(invalid_input(format!(
                "{range} is not inside max parallelism {max}"
            )));
        }
        let state_count = u32::try_from(states.len())
            .map_err(|_| invalid_input(format!("{} states is too many", states.len())))?;
        let mut payload = Vec::new();
        payload.extend_from_slice(&max.get().to_be_bytes());
        payload.extend_from_slice(&range.start().to_be_bytes());
        payload.extend_from_slice(&range.end().to_be_bytes());
        write_varint(&mut payload, state_count);
        let mut meta = Vec::new();
        for state in states {
            meta.clear();
            state.encode(&mut meta);
            write_framed(&mut payload, &meta);
        }
        let payload_len = u32::try_from(payload.len())
            .ok()
            .filter(|&len| u64::from(len) <= MAX_HEADER_PAYLOAD)
            .ok_or_else(|| invalid_input("the states table is too large".into()))?;
        let version = states
            .iter()
            .map(|s| u16::from(s.record_version()))
            .max()
            .unwrap_or(1);
        let mut header = Vec::with_capacity(payload.len() + 18);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&version.to_be_bytes());
        header.extend_from_slice(&payload_len.to_be_bytes());
        header.extend_from_slice(&payload);
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_be_bytes());
        out.write_all(&header)?;
        Ok(CanonicalWriter {
            out,
            written: header.len() as u64,
            range,
            state_count,
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)?,
            section: None,
            payload: Vec::new(),
            group_state: 0,
            group: Vec::new(),
            group_count: 0,
            last_key: Vec::new(),
            compressed: Vec::new(),
            index: Vec::new(),
        })
    }

    /// Adds one entry. `key` is the full composite key, starting with its 2-byte key group;
    /// entries must come in strictly increasing (key group, state index, key) order.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] for an entry out of order, a key group outside the
    /// stream's range, an unknown state index or a key or value over 4 GiB (the entry is
    /// not written); the writer's I/O errors.
    pub(crate) fn add(&mut self, state_index: u32, key: &[u8], value: &[u8]) -> io::Result<()> {
        let Some((key_group, rest)) = key.split_first_chunk::<2>() else {
            return Err(invalid_input("a key shorter than its key group".into()));
        };
        let key_group = KeyGroup::from_be_bytes(*key_group);
        if !self.range.contains(key_group) {
            return Err(invalid_input(format!(
                "key group {key_group} is outside the stream's {}",
                self.range
            )));
        }
        if state_index >= self.state_count {
            return Err(invalid_input(format!(
                "state index {state_index} with {} states",
                self.state_count
            )));
        }
        if u32::try_from(rest.len()).is_err() || u32::try_from(value.len()).is_err() {
            return Err(invalid_input("a key or value over 4 GiB".into()));
        }
        match self.section {
            Some((current, _)) if key_group < current => {
                return Err(invalid_input(format!(
                    "key group {key_group} after key group {current}"
                )))
            }
            Some((current, _)) if key_group == current => {
                let previous = (self.group_state, self.last_key.as_slice());
                if (state_index, rest) <= previous {
                    return Err(invalid_input(format!(
                        "in key group {key_group}, entries are not in strictly increasing \
                         (state, key) order"
                    )));
                }
                if state_index != self.group_state {
                    self.close_group();
                }
            }
            _ => {
                self.finish_section()?;
                self.section = Some((key_group, self.written));
            }
        }
        self.group_state = state_index;
        write_framed(&mut self.group, rest);
        write_framed(&mut self.group, value);
        self.group_count += 1;
        self.last_key.clear();
        self.last_key.extend_from_slice(rest);
        if self.payload.len() + self.group.len() >= BLOCK_CAP {
            self.close_group();
            self.write_blocks(false)?;
        }
        Ok(())
    }

    /// Moves the current group, with its header, into the section's payload.
    fn close_group(&mut self) {
        if self.group_count > 0 {
            write_varint(&mut self.payload, self.group_state);
            write_varint(&mut self.payload, self.group_count);
            self.payload.extend_from_slice(&self.group);
            self.group.clear();
            self.group_count = 0;
        }
    }

    /// Writes the payload as full blocks, and with `all` the partial last one too.
    fn write_blocks(&mut self, all: bool) -> io::Result<()> {
        let mut start = 0;
        while self.payload.len() - start >= BLOCK_CAP || (all && start < self.payload.len()) {
            let end = (start + BLOCK_CAP).min(self.payload.len());
            let chunk = &self.payload[start..end];
            self.compressed.clear();
            self.compressed.reserve(zstd::compress_bound(chunk.len()));
            self.compressor
                .compress_to_buffer(chunk, &mut self.compressed)?;
            // Both lengths are below 2 MiB: the cap and zstd's bound for it.
            let mut header = [0u8; BLOCK_HEADER_LEN as usize];
            header[..4].copy_from_slice(&(self.compressed.len() as u32).to_be_bytes());
            header[4..8].copy_from_slice(&(chunk.len() as u32).to_be_bytes());
            header[8..].copy_from_slice(&crc32fast::hash(&self.compressed).to_be_bytes());
            self.out.write_all(&header)?;
            self.out.write_all(&self.compressed)?;
            self.written += BLOCK_HEADER_LEN + self.compressed.len() as u64;
            start = end;
        }
        self.payload.drain(..start);
        Ok(())
    }

    /// Writes what is left of the current section and its index entry.
    fn finish_section(&mut self) -> io::Result<()> {
        let Some((key_group, start)) = self.section.take() else {
            return Ok(());
        };
        self.close_group();
        self.write_blocks(true)?;
        self.index.extend_from_slice(&key_group.to_be_bytes());
        self.index.extend_from_slice(&start.to_be_bytes());
        self.index
            .extend_from_slice(&(self.written - start).to_be_bytes());
        Ok(())
    }

    /// Writes the last section, the index and the footer, flushes, and returns the output.
    ///
    /// # Errors
    /// The writer's I/O errors.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.finish_section()?;
        let index_offset = self.written;
        // At most 32768 entries of 18 bytes.
        let index_len = self.index.len() as u32;
        self.out.write_all(&self.index)?;
        let mut footer = [0u8; FOOTER_LEN as usize];
        footer[..8].copy_from_slice(&index_offset.to_be_bytes());
        footer[8..12].copy_from_slice(&index_len.to_be_bytes());
        footer[12..16].copy_from_slice(&crc32fast::hash(&self.index).to_be_bytes());
        footer[16..].copy_from_slice(MAGIC);
        self.out.write_all(&footer)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Where one key group's blocks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Section {
    key_group: KeyGroup,
    offset: u64,
    len: u64,
}

/// Reads a canonical stream from a [`SnapshotStore`], a key-group range at a time.
///
/// Opening reads the header, the footer and the index (three small ranged reads plus one
/// for the header's length); [`read`](Self::read) reads only the sections it is asked for.
pub(crate) struct CanonicalReader<'a> {
    store: &'a dyn SnapshotStore,
    path: &'a StoragePath,
    max: MaxParallelism,
    range: KeyGroupRange,
    states: Vec<StateMeta>,
    /// Sections in increasing key group order, contiguous in the file.
    index: Vec<Section>,
}

impl<'a> CanonicalReader<'a> {
    /// Opens the stream `file` in `store`: checks its size against the one recorded, then
    /// reads and checks its header, footer and index.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the file is missing; [`Error::Corrupted`] if its size differs
    /// from `file.size`, or any check fails (a newer version says to use a newer cairn);
    /// the store's errors.
    pub(crate) fn open(store: &'a dyn SnapshotStore, file: &'a SnapshotFile) -> Result<Self> {
        let path = &file.path;
        let size = match store.size(path)? {
            None => {
                return Err(Error::NotFound {
                    what: WHAT,
                    location: store.location(),
                    path: path.to_string(),
                })
            }
            Some(size) if size != file.size => {
                return Err(corrupted(
                    path,
                    format!("{size} bytes where the snapshot records {}", file.size),
                ))
            }
            Some(size) => size,
        };
        let mut reader = CanonicalReader {
            store,
            path,
            max: MaxParallelism::DEFAULT,
            range: KeyGroupRange::new(0, 0),
            states: Vec::new(),
            index: Vec::new(),
        };
        if size < PREFIX_LEN + 4 + FOOTER_LEN {
            return Err(reader.corrupted(format!("{size} bytes is too short for a stream")));
        }
        let header_end = reader.read_header(size)?;
        reader.read_index(size, header_end)?;
        Ok(reader)
    }

    /// Reads and checks the header; returns the offset where it ends.
    fn read_header(&mut self, size: u64) -> Result<u64> {
        let prefix = self.read_at(0, PREFIX_LEN as usize)?;
        if prefix[..8] != MAGIC[..] {
            return Err(self.corrupted("it does not start with the magic 'CAIRN-KS'".into()));
        }
        let version = u16::from_be_bytes([prefix[8], prefix[9]]);
        if version == 0 || version > VERSION {
            return Err(self.corrupted(format!(
                "format version {version} is not supported: this cairn reads versions \
                 1..={VERSION}; use a newer cairn"
            )));
        }
        let payload_len = u64::from(u32::from_be_bytes([
            prefix[10], prefix[11], prefix[12], prefix[13],
        ]));
        let header_end = PREFIX_LEN + payload_len + 4;
        if payload_len > MAX_HEADER_PAYLOAD || header_end + FOOTER_LEN > size {
            return Err(self.corrupted(format!(
                "a header of {payload_len} bytes does not fit in a {size}-byte stream"
            )));
        }
        // Bounded just above by MAX_HEADER_PAYLOAD.
        let rest = self.read_at(PREFIX_LEN, payload_len as usize + 4)?;
        let (payload, crc) = rest.split_at(payload_len as usize);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&prefix);
        hasher.update(payload);
        check_crc(crc, hasher.finalize(), "header").map_err(|d| self.corrupted(d))?;
        self.decode_header(payload).map_err(|d| self.corrupted(d))?;
        Ok(header_end)
    }

    fn decode_header(&mut self, payload: &[u8]) -> std::result::Result<(), String> {
        let mut r = Reader(payload);
        let max = u32::from_be_bytes(r.array("max parallelism")?);
        self.max = MaxParallelism::new(max)
            .map_err(|_| format!("max parallelism {max} is out of range"))?;
        let start = u16::from_be_bytes(r.array("first key group")?);
        let end = u16::from_be_bytes(r.array("last key group")?);
        if start > end || u32::from(end) >= max {
            return Err(format!(
                "key groups {start}..={end} are not a range of max parallelism {max}"
            ));
        }
        self.range = KeyGroupRange::new(start, end);
        let count = r.varint("state count")?;
        // A set, not a scan of the list: 16 MiB of states would take a quadratic scan days.
        let mut names = HashSet::new();
        for _ in 0..count {
            let meta = StateMeta::decode(r.framed("state metadata")?)?;
            if !names.insert(meta.name.clone()) {
                return Err(format!("state '{}' appears twice", meta.name));
            }
            self.states.push(meta);
        }
        if !r.0.is_empty() {
            return Err(format!("{} bytes after the states table", r.0.len()));
        }
        Ok(())
    }

    /// Reads the footer and the index, and checks that the sections tile the file.
    fn read_index(&mut self, size: u64, header_end: u64) -> Result<()> {
        let footer = self.read_at(size - FOOTER_LEN, FOOTER_LEN as usize)?;
        let index_offset = u64::from_be_bytes(sub_array(&footer, 0));
        let index_len = u32::from_be_bytes(sub_array(&footer, 8));
        let index_crc = sub_array::<4>(&footer, 12);
        if footer[16..] != MAGIC[..] {
            return Err(self.corrupted("it does not end with the magic 'CAIRN-KS'".into()));
        }
        let max_len = self.range.len() as usize * INDEX_ENTRY_LEN;
        let index_len = index_len as usize;
        if !index_len.is_multiple_of(INDEX_ENTRY_LEN)
            || index_len > max_len
            || index_offset < header_end
            || index_offset.checked_add(index_len as u64 + FOOTER_LEN) != Some(size)
        {
            return Err(self.corrupted(format!(
                "the footer places a {index_len}-byte index at offset {index_offset} of a \
                 {size}-byte stream whose header ends at {header_end}"
            )));
        }
        // At most 18 bytes for each of the stream's key groups.
        let bytes = self.read_at(index_offset, index_len)?;
        check_crc(&index_crc, crc32fast::hash(&bytes), "index").map_err(|d| self.corrupted(d))?;
        let mut expected_offset = header_end;
        let mut index = Vec::with_capacity(index_len / INDEX_ENTRY_LEN);
        for entry in bytes.chunks_exact(INDEX_ENTRY_LEN) {
            let section = Section {
                key_group: u16::from_be_bytes(sub_array(entry, 0)),
                offset: u64::from_be_bytes(sub_array(entry, 2)),
                len: u64::from_be_bytes(sub_array(entry, 10)),
            };
            let ordered = index
                .last()
                .is_none_or(|last: &Section| last.key_group < section.key_group);
            if !ordered || !self.range.contains(section.key_group) {
                return Err(self.corrupted(format!(
                    "the index lists key group {} out of order or outside {}",
                    section.key_group, self.range
                )));
            }
            if section.offset != expected_offset || section.len == 0 {
                return Err(self.corrupted(format!(
                    "the index places key group {} at {}+{} where its section must start at \
                     {expected_offset}",
                    section.key_group, section.offset, section.len
                )));
            }
            expected_offset = match section.offset.checked_add(section.len) {
                Some(end) if end <= index_offset => end,
                _ => {
                    return Err(self.corrupted(format!(
                        "key group {}'s section runs past the index",
                        section.key_group
                    )))
                }
            };
            index.push(section);
        }
        if expected_offset != index_offset {
            return Err(self.corrupted(format!(
                "{} bytes between the last section and the index",
                index_offset - expected_offset
            )));
        }
        self.index = index;
        Ok(())
    }

    /// The states, in the order the stream's state indexes refer to.
    pub(crate) fn states(&self) -> &[StateMeta] {
        &self.states
    }

    /// The key groups the writer owned.
    pub(crate) fn key_groups(&self) -> KeyGroupRange {
        self.range
    }

    /// The max parallelism of the operator the stream was written for.
    pub(crate) fn max_parallelism(&self) -> MaxParallelism {
        self.max
    }

    /// Visits every entry of the key groups in `range`, in (key group, state index, key)
    /// order: `visit(state index, full composite key, value)`. Key groups outside the
    /// stream are skipped; only the sections of `range` are read, in one ranged read.
    ///
    /// # Errors
    /// [`Error::Corrupted`] for a block or entry that fails a check (entries before it have
    /// been visited); the store's errors; the first error `visit` returns.
    pub(crate) fn read(&self, range: KeyGroupRange, visit: &mut EntryVisitor<'_>) -> Result<()> {
        let Some(range) = range.intersect(&self.range) else {
            return Ok(());
        };
        let first = self.index.partition_point(|s| s.key_group < range.start());
        let last = self.index.partition_point(|s| s.key_group <= range.end());
        let sections = &self.index[first..last];
        let (Some(head), Some(tail)) = (sections.first(), sections.last()) else {
            return Ok(());
        };
        let start = head.offset;
        // Sections tile the file (checked on open), so this is inside it.
        let len = tail.offset + tail.len - start;
        let input = self.store.read_range(self.path, start, len)?;
        let mut input = BufReader::with_capacity(64 << 10, input);
        let mut context = zstd_safe::DCtx::try_create()
            .ok_or_else(|| self.corrupted("cannot allocate a zstd decompression context".into()))?;
        let mut buffers = Buffers::default();
        for section in sections {
            self.read_section(&mut input, *section, &mut context, &mut buffers, visit)?;
        }
        Ok(())
    }

    fn read_section(
        &self,
        input: &mut impl Read,
        section: Section,
        context: &mut zstd_safe::DCtx<'static>,
        buffers: &mut Buffers,
        visit: &mut EntryVisitor<'_>,
    ) -> Result<()> {
        let kg = section.key_group;
        let mut decoder = SectionDecoder::new(kg, self.states.len());
        buffers.pending.clear();
        let mut remaining = section.len;
        while remaining > 0 {
            let mut header = [0u8; BLOCK_HEADER_LEN as usize];
            if remaining < BLOCK_HEADER_LEN {
                return Err(self.corrupted(format!(
                    "key group {kg}: {remaining} bytes left in its section, too few for a block"
                )));
            }
            self.read_exact(input, &mut header)?;
            remaining -= BLOCK_HEADER_LEN;
            let compressed_len = u32::from_be_bytes(sub_array(&header, 0));
            let uncompressed_len = u32::from_be_bytes(sub_array(&header, 4));
            let crc = sub_array::<4>(&header, 8);
            if u64::from(compressed_len) > remaining
                || compressed_len as usize > zstd::compress_bound(BLOCK_CAP)
                || uncompressed_len == 0
                || uncompressed_len as usize > BLOCK_CAP
            {
                return Err(self.corrupted(format!(
                    "key group {kg}: a block of {compressed_len} bytes decompressing to \
                     {uncompressed_len} does not fit its section or the 1 MiB block cap"
                )));
            }
            remaining -= u64::from(compressed_len);
            // Bounded just above by zstd's bound for the block cap.
            buffers.compressed.resize(compressed_len as usize, 0);
            self.read_exact(input, &mut buffers.compressed)?;
            check_crc(&crc, crc32fast::hash(&buffers.compressed), "block")
                .map_err(|d| self.corrupted(format!("key group {kg}: {d}")))?;
            self.decompress(kg, context, buffers, uncompressed_len as usize)?;
            decoder
                .feed(&mut buffers.pending, visit)
                .map_err(|e| match e {
                    Failure::Corrupt(d) => self.corrupted(format!("key group {kg}: {d}")),
                    Failure::Visit(e) => e,
                })?;
        }
        decoder
            .finish(&buffers.pending)
            .map_err(|d| self.corrupted(format!("key group {kg}: {d}")))
    }

    /// Decompresses the block in `buffers.compressed`, which must be one zstd frame, and
    /// appends its `len` bytes (at most [`BLOCK_CAP`]) to `buffers.pending`.
    ///
    /// In one call, into the pending buffer itself: a frame's header says how large a
    /// window its decoder needs (up to 2 GiB), and a streaming decoder allocates that much
    /// before it reads the data; decoding into a buffer of exactly `len` bytes needs no
    /// window of its own, so nothing a frame claims is allocated.
    fn decompress(
        &self,
        kg: KeyGroup,
        context: &mut zstd_safe::DCtx<'static>,
        buffers: &mut Buffers,
        len: usize,
    ) -> Result<()> {
        let compressed = buffers.compressed.as_slice();
        if zstd_safe::find_frame_compressed_size(compressed) != Ok(compressed.len()) {
            return Err(self.corrupted(format!(
                "key group {kg}: a block is not exactly one zstd frame"
            )));
        }
        let before = buffers.pending.len();
        buffers.pending.resize(before + len, 0);
        let decompressed = context.decompress(&mut buffers.pending[before..], compressed);
        if decompressed == Ok(len) {
            return Ok(());
        }
        buffers.pending.truncate(before);
        let detail = match decompressed {
            Ok(n) => format!("a block decompresses to {n} bytes where its header says {len}"),
            Err(code) if zstd_safe::get_error_name(code).contains("too small") => {
                format!("a block decompresses to more bytes than the {len} its header says")
            }
            Err(code) => format!("zstd: {}", zstd_safe::get_error_name(code)),
        };
        Err(self.corrupted(format!("key group {kg}: {detail}")))
    }

    /// Reads exactly `len` bytes at `offset`; callers bound `len` first.
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; len];
        let mut input = self.store.read_range(self.path, offset, len as u64)?;
        self.read_exact(&mut input, &mut bytes)?;
        Ok(bytes)
    }

    fn read_exact(&self, input: &mut impl Read, buf: &mut [u8]) -> Result<()> {
        input.read_exact(buf).map_err(|source| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                self.corrupted("the file ends early: it changed after it was opened".into())
            } else {
                Error::Storage {
                    op: "read",
                    location: self.store.location(),
                    path: self.path.to_string(),
                    source,
                }
            }
        })
    }

    fn corrupted(&self, detail: String) -> Error {
        corrupted(self.path, detail)
    }
}

fn corrupted(path: &StoragePath, detail: String) -> Error {
    Error::Corrupted {
        what: WHAT,
        path: path.as_str().into(),
        detail,
    }
}

fn check_crc(stored: &[u8], computed: u32, what: &str) -> std::result::Result<(), String> {
    let stored = u32::from_be_bytes(sub_array(stored, 0));
    if stored == computed {
        Ok(())
    } else {
        Err(format!(
            "{what} CRC32 mismatch (stored {stored:08x}, computed {computed:08x})"
        ))
    }
}

/// `N` bytes of `bytes` from `at`; callers pass slices of fixed-size arrays that hold them.
fn sub_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

/// Buffers reused across the blocks of one read.
#[derive(Default)]
struct Buffers {
    compressed: Vec<u8>,
    /// Decompressed bytes of the current section not decoded yet (an entry's start).
    pending: Vec<u8>,
}

/// Why decoding stopped: bad bytes, or the visitor's own error.
enum Failure {
    Corrupt(String),
    Visit(Error),
}

/// Decodes one section's payload as its blocks arrive, checking its structure and order.
struct SectionDecoder {
    state_count: usize,
    /// The state of the current group, and its entries still to come.
    group: Option<(u32, u32)>,
    /// The state and key of the last entry.
    last_state: Option<u32>,
    last_key: Vec<u8>,
    /// The key group, then the key: the full composite key handed to the visitor.
    key: Vec<u8>,
}

impl SectionDecoder {
    fn new(key_group: KeyGroup, state_count: usize) -> Self {
        SectionDecoder {
            state_count,
            group: None,
            last_state: None,
            last_key: Vec::new(),
            key: key_group.to_be_bytes().to_vec(),
        }
    }

    /// Decodes and visits every complete item at the front of `pending`, then removes them;
    /// an incomplete item stays for the next block.
    fn feed(
        &mut self,
        pending: &mut Vec<u8>,
        visit: &mut EntryVisitor<'_>,
    ) -> std::result::Result<(), Failure> {
        let mut pos = 0;
        loop {
            let rest = &pending[pos..];
            match self.group {
                None => {
                    if rest.is_empty() {
                        break;
                    }
                    let Some((state, a)) = partial_varint(rest)? else {
                        break;
                    };
                    let Some((count, b)) = partial_varint(&rest[a..])? else {
                        break;
                    };
                    if state as usize >= self.state_count {
                        return Err(Failure::Corrupt(format!(
                            "state index {state} with {} states",
                            self.state_count
                        )));
                    }
                    if count == 0 || self.last_state.is_some_and(|last| state < last) {
                        return Err(Failure::Corrupt(format!(
                            "a group of {count} entries of state index {state} is empty or \
                             out of order"
                        )));
                    }
                    self.group = Some((state, count));
                    pos += a + b;
                }
                Some((state, left)) => {
                    let Some((key, a)) = partial_framed(rest)? else {
                        break;
                    };
                    let Some((value, b)) = partial_framed(&rest[a..])? else {
                        break;
                    };
                    let increasing = match self.last_state {
                        None => true,
                        Some(last) => (state, key) > (last, self.last_key.as_slice()),
                    };
                    if !increasing {
                        return Err(Failure::Corrupt(
                            "entries are not in strictly increasing (state, key) order".into(),
                        ));
                    }
                    self.key.truncate(2);
                    self.key.extend_from_slice(key);
                    visit(state, &self.key, value).map_err(Failure::Visit)?;
                    self.last_state = Some(state);
                    self.last_key.clear();
                    self.last_key.extend_from_slice(key);
                    self.group = (left > 1).then_some((state, left - 1));
                    pos += a + b;
                }
            }
        }
        pending.drain(..pos);
        Ok(())
    }

    /// Checks that the section ended between two groups.
    fn finish(&self, pending: &[u8]) -> std::result::Result<(), String> {
        if let Some((state, left)) = self.group {
            return Err(format!(
                "the section ends with {left} entries of a group of state index {state} missing"
            ));
        }
        if !pending.is_empty() {
            return Err(format!(
                "the section ends inside a group header ({} bytes left)",
                pending.len()
            ));
        }
        if self.last_state.is_none() {
            return Err("the section holds no entry".into());
        }
        Ok(())
    }
}

/// A varint at the front of `bytes`: `Ok(None)` if it may continue in the next block.
fn partial_varint(bytes: &[u8]) -> std::result::Result<Option<(u32, usize)>, Failure> {
    if let Some(parsed) = read_varint(bytes) {
        return Ok(Some(parsed));
    }
    // Up to 4 bytes that all say "more follows" are the start of a varint.
    if bytes.len() < 5 && bytes.iter().all(|b| b & 0x80 != 0) {
        Ok(None)
    } else {
        Err(Failure::Corrupt("a malformed varint".into()))
    }
}

/// A framed byte string at the front of `bytes` and the bytes it used, or `Ok(None)` if it
/// continues in the next block.
fn partial_framed(bytes: &[u8]) -> std::result::Result<Option<(&[u8], usize)>, Failure> {
    let Some((len, used)) = partial_varint(bytes)? else {
        return Ok(None);
    };
    let end = used.saturating_add(len as usize);
    Ok(bytes.get(used..end).map(|framed| (framed, end)))
}

#[cfg(test)]
mod tests;
