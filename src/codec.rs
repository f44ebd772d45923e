//! Codecs turn typed keys and values into the bytes the backends store, and back.
//!
//! A codec has a stable identity ([`CodecInfo`]: an id and a version) that state metadata and
//! snapshots record, so a state written with one codec is never read with another by mistake.
//! The byte layouts of the built-in codecs are specified in docs/format.md.
//!
//! | codec | type | bytes |
//! |---|---|---|
//! | [`Bytes`] | `Vec<u8>` | the bytes as they are |
//! | [`Utf8`] | `String` | UTF-8, no terminator |
//! | [`BigEndian`] | `u8`..`u64`, `i8`..`i64` | fixed width, big endian, two's complement |
//! | [`Bincode`] | any serde type | bincode 1.3 with fixed-width little-endian integers |

use std::fmt;
use std::marker::PhantomData;

use bincode::Options as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A codec's failure to encode or decode; the state layer adds which state it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// The identity of a codec as recorded with a state: its id and its version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CodecInfo {
    /// A stable name, e.g. `utf8` or `bincode-1.3`.
    pub id: String,
    /// The version of the encoding; bump it when the bytes change.
    pub version: u32,
}

impl CodecInfo {
    /// A codec identity.
    pub fn new(id: impl Into<String>, version: u32) -> Self {
        CodecInfo {
            id: id.into(),
            version,
        }
    }
}

impl fmt::Display for CodecInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.id, self.version)
    }
}

/// Encodes values of `T` to bytes and decodes them back.
///
/// `encode` appends to a buffer the caller reuses, so the hot path does not allocate.
/// `decode` must reject bad bytes with an error, never panic.
pub trait Codec<T>: Send + Sync {
    /// Appends the encoding of `value` to `out`.
    ///
    /// # Errors
    /// When the value cannot be represented.
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Decodes a value from exactly `bytes`.
    ///
    /// # Errors
    /// When the bytes are not a valid encoding.
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;

    /// The codec's identity, recorded in state metadata and snapshots.
    fn info(&self) -> CodecInfo;

    /// Whether this codec decodes, as they are, the bytes that the codec `written_by`
    /// encoded: a state held with `written_by` is then registered with this codec without
    /// rewriting anything, and its record takes this codec's identity (schema evolution,
    /// "compatible as is"). By default only its own id and version; a codec whose new
    /// version still reads an older one's bytes says so here.
    fn can_read(&self, written_by: &CodecInfo) -> bool {
        *written_by == self.info()
    }
}

/// Raw bytes, stored as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;

impl Codec<Vec<u8>> for Bytes {
    fn encode(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(value);
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        Ok(bytes.to_vec())
    }

    fn info(&self) -> CodecInfo {
        CodecInfo::new("bytes", 1)
    }
}

/// UTF-8 strings, stored as their bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Codec<String> for Utf8 {
    fn encode(&self, value: &String, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<String, CodecError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| CodecError(format!("not UTF-8: {e}")))
    }

    fn info(&self) -> CodecInfo {
        CodecInfo::new("utf8", 1)
    }
}

/// Fixed-width integers, big endian (two's complement for signed types).
#[derive(Debug, Clone, Copy, Default)]
pub struct BigEndian;

macro_rules! big_endian_codec {
    ($($ty:ty => $id:literal),* $(,)?) => {$(
        impl Codec<$ty> for BigEndian {
            fn encode(&self, value: &$ty, out: &mut Vec<u8>) -> Result<(), CodecError> {
                out.extend_from_slice(&value.to_be_bytes());
                Ok(())
            }

            fn decode(&self, bytes: &[u8]) -> Result<$ty, CodecError> {
                let array = bytes.try_into().map_err(|_| {
                    CodecError(format!(
                        "{} needs {} bytes, found {}",
                        stringify!($ty),
                        std::mem::size_of::<$ty>(),
                        bytes.len()
                    ))
                })?;
                Ok(<$ty>::from_be_bytes(array))
            }

            fn info(&self) -> CodecInfo {
                CodecInfo::new($id, 1)
            }
        }
    )*};
}

big_endian_codec!(
    u8 => "u8", u16 => "u16-be", u32 => "u32-be", u64 => "u64-be",
    i8 => "i8", i16 => "i16-be", i32 => "i32-be", i64 => "i64-be",
);

/// Any serde type, through bincode 1.3 (pinned): fixed-width little-endian integers, `u64`
/// lengths, no trailing bytes. The version is the caller's: bump it when `T` changes shape.
pub struct Bincode<T> {
    version: u32,
    _type: PhantomData<fn() -> T>,
}

impl<T> Bincode<T> {
    /// A codec at version 1.
    pub fn new() -> Self {
        Self::with_version(1)
    }

    /// A codec whose recorded version is `version` (the schema version of `T`).
    pub fn with_version(version: u32) -> Self {
        Bincode {
            version,
            _type: PhantomData,
        }
    }
}

impl<T> Default for Bincode<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Bincode<T> {
    fn clone(&self) -> Self {
        Self::with_version(self.version)
    }
}

impl<T> fmt::Debug for Bincode<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bincode(v{})", self.version)
    }
}

/// The one bincode configuration cairn persists with; see docs/format.md.
fn bincode_options() -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

impl<T: Serialize + DeserializeOwned + 'static> Codec<T> for Bincode<T> {
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        bincode_options()
            .serialize_into(out, value)
            .map_err(|e| CodecError(e.to_string()))
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        // The limit stops a corrupt length prefix from allocating more than the input holds.
        bincode_options()
            .with_limit(bytes.len() as u64)
            .deserialize(bytes)
            .map_err(|e| CodecError(e.to_string()))
    }

    fn info(&self) -> CodecInfo {
        CodecInfo::new("bincode-1.3", self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: PartialEq + fmt::Debug>(codec: &impl Codec<T>, value: T, bytes: &[u8]) {
        let mut out = vec![0xAA];
        codec.encode(&value, &mut out).unwrap();
        assert_eq!(&out[1..], bytes, "encoding of {value:?}");
        assert_eq!(codec.decode(bytes).unwrap(), value);
    }

    #[test]
    fn built_in_encodings_are_pinned() {
        roundtrip(&Bytes, vec![1, 2, 3], &[1, 2, 3]);
        roundtrip(&Utf8, "héllo".to_string(), "héllo".as_bytes());
        roundtrip(
            &BigEndian,
            0x0102_0304_0506_0708u64,
            &[1, 2, 3, 4, 5, 6, 7, 8],
        );
        roundtrip(&BigEndian, -2i32, &[0xFF, 0xFF, 0xFF, 0xFE]);
        roundtrip(&BigEndian, 7u8, &[7]);
        // bincode 1.3, fixint little endian: (u32, String) = 4 bytes + u64 length + bytes.
        roundtrip(
            &Bincode::<(u32, String)>::new(),
            (1, "ab".to_string()),
            &[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'a', b'b'],
        );
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        assert!(Codec::<String>::decode(&Utf8, &[0xFF]).is_err());
        assert!(Codec::<u64>::decode(&BigEndian, &[1, 2, 3]).is_err());
        // A length prefix of 2^60 must fail without allocating it.
        let huge = [0, 0, 0, 0, 0, 0, 0, 0x10];
        assert!(Bincode::<Vec<u8>>::new().decode(&huge).is_err());
        // Trailing bytes are rejected.
        assert!(Bincode::<u8>::new().decode(&[1, 2]).is_err());
    }

    #[test]
    fn infos_are_stable() {
        assert_eq!(Codec::<u64>::info(&BigEndian), CodecInfo::new("u64-be", 1));
        assert_eq!(
            Bincode::<u8>::with_version(3).info().to_string(),
            "bincode-1.3 v3"
        );
    }
}
