//! How values are encoded in sled: bincode 2 (serde) with a size limit.
//! What is stored under which key is `layout`'s.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;

/// Upper bound on one decoded record. A corrupt length prefix inside a record
/// makes the decoder fail instead of allocating without bound.
pub(crate) const MAX_RECORD_BYTES: usize = 64 << 20;

type Codec = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_RECORD_BYTES>,
>;

fn codec() -> Codec {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// Serializes a record.
pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, codec())
        .map_err(|source| StoreError::Encode { what, source })
}

/// Deserializes a whole record; trailing bytes are an error. The error is a
/// description for [`StoreError::Corrupt`].
pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, String> {
    match bincode::serde::decode_from_slice::<T, _>(bytes, codec()) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        Ok((_, used)) => Err(format!(
            "{what}: {} trailing bytes after the record",
            bytes.len() - used
        )),
        Err(e) => Err(format!("{what}: {e}")),
    }
}
