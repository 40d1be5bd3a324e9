//! The peer protocol's wire format: how a core message is encoded, how big
//! a batch may be, and which messages carry replicated data. Shared by the
//! outbound (`transport`) and inbound (`peer_service`) sides.

use crate::raft::Message;

/// Version of the peer protocol; bumped on any incompatible message change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Upper bound of one encoded batch (a snapshot chunk is at most 8 MiB).
pub const MAX_RPC_BYTES: usize = 64 << 20;

/// Encodes a core message for the wire.
pub fn encode_message(msg: &Message) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(msg, bincode::config::standard())
}

/// Decodes a core message from the wire; bad bytes are an error, not a panic.
pub fn decode_message(bytes: &[u8]) -> Result<Message, bincode::error::DecodeError> {
    let limit = bincode::config::standard().with_limit::<{ MAX_RPC_BYTES }>();
    bincode::serde::decode_from_slice(bytes, limit).map(|(msg, _)| msg)
}

/// Whether a message writes replicated data (log entries, a snapshot chunk)
/// when stepped, as opposed to a vote, a heartbeat or a response.
pub(super) fn carries_data(msg: &Message) -> bool {
    match &msg.body {
        crate::raft::MessageBody::Append { entries, .. } => !entries.is_empty(),
        crate::raft::MessageBody::InstallSnapshot { .. } => true,
        _ => false,
    }
}
