//! SaveSnapshot and RestoreSnapshot: backups of the state machine, taken
//! and restored through the leader (file format: `store::backup`).

use std::pin::Pin;

use tonic::{Request, Response, Status};

use super::{no_leader, raft_status, DroverService, FORWARDED, LEADER_WAIT};
use crate::acl::Action;
use crate::api::auth::{authorize, forward_identity};
use crate::jobs::Command;
use crate::node::now_ms;
use crate::proto::v1 as pb;
use crate::store::{backup, Applied};

/// The stream SaveSnapshot answers with.
pub(super) type SaveStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::SnapshotChunk, Status>> + Send + 'static>>;

/// Bytes per streamed message (far below the 4 MiB message bound).
const STREAM_CHUNK: usize = 1 << 20;
/// Bytes per staged log entry (below the 1 MiB command bound).
const STAGE_CHUNK: usize = 512 << 10;
/// Largest backup file a node accepts to restore: it is held in memory.
pub const MAX_BACKUP_BYTES: usize = 2 << 30;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

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
        authorize(&self.node, &request, Action::OperateRaft)?;
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
        let node = self.node.clone();
        let file = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, Status> {
            let (meta, state) = node.store.export_state().map_err(internal)?;
            backup::write(
                &node.config.cluster_id,
                meta.index,
                meta.term,
                now_ms(),
                &state,
            )
            .map_err(internal)
        })
        .await
        .map_err(internal)??;
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
        authorize(&self.node, &request, Action::ManageTokens)?;
        let metadata = request.metadata().clone();
        let mut stream = request.into_inner();
        let mut file = Vec::new();
        while let Some(chunk) = stream.message().await? {
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
        // the file as is), before anything is proposed, without copying it.
        let verified = backup::read(&file).map_err(|e| Status::invalid_argument(e.to_string()))?;
        drop(file);
        let header = verified.header;
        let body = std::sync::Arc::new(verified.body);
        let checked = body.clone();
        tokio::task::spawn_blocking(move || backup::decode_state(&checked).map(|_| ()))
            .await
            .map_err(internal)?
            .map_err(|e| Status::invalid_argument(format!("the backup does not decode: {e}")))?;

        let id = ulid::Ulid::new().to_string();
        let pieces: Vec<&[u8]> = body.chunks(STAGE_CHUNK).collect();
        let propose = |command: Command| async move {
            self.node
                .propose_command(&command)
                .await
                .map_err(raft_status)
        };
        let begin = Command::RestoreBegin {
            id: id.clone(),
            chunks: u32::try_from(pieces.len()).map_err(internal)?,
            sha256: backup::sha256(&body),
        };
        propose(begin).await?;
        for (seq, data) in pieces.iter().enumerate() {
            let chunk = Command::RestoreChunk {
                id: id.clone(),
                seq: u32::try_from(seq).map_err(internal)?,
                data: data.to_vec(),
            };
            if let Applied::Refused { reason } = propose(chunk).await? {
                return Err(Status::aborted(format!(
                    "the restore was interrupted (another restore started?): {reason}; nothing changed"
                )));
            }
        }
        let finish = Command::RestoreFinish {
            id,
            at_ms: now_ms(),
        };
        match propose(finish).await? {
            Applied::Restored { jobs, tokens } => {
                tracing::warn!(
                    jobs,
                    tokens,
                    backup_index = header.index,
                    backup_cluster = %header.cluster_id,
                    "restored a backup: the job table and tokens were replaced"
                );
                Ok(Response::new(pb::RestoreSnapshotResponse {
                    index: self.node.store.applied_index(),
                    jobs,
                    tokens,
                    backup_cluster_id: header.cluster_id,
                    backup_index: header.index,
                }))
            }
            Applied::Refused { reason } => Err(Status::aborted(format!(
                "the restore was refused: {reason}; nothing changed"
            ))),
            other => Err(internal(format!("unexpected apply result {other:?}"))),
        }
    }
}
