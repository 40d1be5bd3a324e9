//! SaveSnapshot and RestoreSnapshot: backups of the state machine, taken
//! and restored through the leader (the node makes and verifies the file: `node::backup`).

use std::pin::Pin;

use tonic::{Request, Response, Status};

use super::{no_leader, raft_status, DroverService, FORWARDED, LEADER_WAIT};
use crate::acl::Action;
use crate::api::auth::forward_identity;
use crate::node::backup::RestoreError;
use crate::proto::v1 as pb;

/// The stream SaveSnapshot answers with.
pub(super) type SaveStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::SnapshotChunk, Status>> + Send + 'static>>;

/// Bytes per streamed message (far below the 4 MiB message bound).
const STREAM_CHUNK: usize = 1 << 20;
/// Largest backup file a node accepts to restore: it is held in memory.
pub const MAX_BACKUP_BYTES: usize = 2 << 30;

/// A file as a stream of messages, each copied out when it is sent (the
/// file is not held twice).
fn chunk_stream(
    file: Vec<u8>,
    total_bytes: u64,
) -> impl futures::Stream<Item = pb::SnapshotChunk> + Send + 'static {
    let len = file.len();
    futures::stream::iter(
        (0..len)
            .step_by(STREAM_CHUNK)
            .map(move |at| pb::SnapshotChunk {
                data: file[at..(at + STREAM_CHUNK).min(len)].to_vec(),
                total_bytes,
            }),
    )
}

impl DroverService {
    /// SaveSnapshot: on the leader, after a read barrier (so the backup
    /// holds every write acknowledged before the call); elsewhere,
    /// forwarded to it.
    pub(super) async fn save(
        &self,
        request: Request<pb::SaveSnapshotRequest>,
    ) -> Result<Response<SaveStream>, Status> {
        self.authorize(&request, Action::OperateRaft)?;
        if let Some(mut client) = self.route(&request).await? {
            let mut forward = Request::new(pb::SaveSnapshotRequest {});
            forward
                .metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
            forward_identity(&self.node, request.metadata(), forward.metadata_mut());
            let stream = client.save_snapshot(forward).await?.into_inner();
            return Ok(Response::new(Box::pin(stream)));
        }
        self.node.read_barrier().await.map_err(raft_status)?;
        let file = self.node.backup_file().await.map_err(raft_status)?;
        let total = file.len() as u64;
        use futures::StreamExt as _;
        Ok(Response::new(Box::pin(chunk_stream(file, total).map(Ok))))
    }

    /// RestoreSnapshot: the whole file is received and verified (checksums,
    /// format, decodable state) before anything is proposed; then, on the
    /// leader, staged in chunks and finished in one entry.
    pub(super) async fn restore(
        &self,
        request: Request<tonic::Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RestoreSnapshotResponse>, Status> {
        self.authorize(&request, Action::ManageTokens)?;
        let metadata = request.metadata().clone();
        let mut stream = request.into_inner();
        let mut file = Vec::new();
        // A client that stops sending holds the restore (and its buffer):
        // each part must arrive within limits.read_timeout.
        let patience = self.node.config.limits.read_timeout;
        loop {
            let Ok(next) = tokio::time::timeout(patience, stream.message()).await else {
                return Err(Status::deadline_exceeded(format!(
                    "no part of the backup arrived for {} (limits.read_timeout); nothing changed",
                    humantime::format_duration(patience)
                )));
            };
            let Some(chunk) = next? else {
                break;
            };
            if file.len() + chunk.data.len() > MAX_BACKUP_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "a backup over {MAX_BACKUP_BYTES} bytes cannot be restored online; restore it offline (--data-dir) and add nodes"
                )));
            }
            file.extend_from_slice(&chunk.data);
        }
        if !self.node.is_leader() {
            if metadata.get(FORWARDED).is_some() {
                return Err(Status::unavailable(
                    "this node is not the leader (forwarded request); retry",
                ));
            }
            let Some((leader, addr)) = self.node.wait_for_leader(LEADER_WAIT).await else {
                return Err(no_leader());
            };
            let mut client = self.client(leader, &addr)?;
            let mut forward = Request::new(chunk_stream(file, 0));
            forward
                .metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
            forward_identity(&self.node, &metadata, forward.metadata_mut());
            return client.restore_snapshot(forward).await;
        }

        // Verified where it is proposed: the leader (a follower forwards
        // the file as is), before anything is proposed.
        match self.node.restore_backup(file).await {
            Ok(restored) => Ok(Response::new(pb::RestoreSnapshotResponse {
                index: restored.index,
                jobs: restored.counts.jobs,
                tokens: restored.counts.tokens,
                backup_cluster_id: restored.backup_cluster_id,
                backup_index: restored.backup_index,
            })),
            Err(RestoreError::Invalid(why)) => Err(Status::invalid_argument(why)),
            Err(RestoreError::Refused(why)) => {
                Err(Status::aborted(format!("{why}; nothing changed")))
            }
            Err(RestoreError::Raft(e)) => Err(raft_status(e)),
        }
    }
}
