//! Job output: a page of stored chunks, or a stream that follows the
//! attempt (from this node, from the node holding it, or the committed tail).

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::forward::FORWARDED;
use super::jobs::parse_job_id;
use super::DroverService;

use crate::acl::Action;
use crate::api::auth::forward_identity;
use crate::jobs::{Job, JobId};
use crate::node::Node;
use crate::proto::v1 as pb;

/// The attempt a request names (0 = the latest), if it exists yet.
pub(super) fn find_attempt(job: &Job, number: u32) -> Option<&crate::jobs::Attempt> {
    match number {
        0 => job.current_attempt(),
        n => job.attempts.iter().find(|a| a.number == n),
    }
}

/// The attempt a request names (0 = the latest); `None` if the job has none.
pub(super) fn pick_attempt(
    job: &Job,
    number: u32,
) -> Result<Option<&crate::jobs::Attempt>, Status> {
    match number {
        0 => Ok(job.current_attempt()),
        n => job
            .attempts
            .iter()
            .find(|a| a.number == n)
            .map(Some)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "job {} has no attempt {n} (it has {})",
                    job.id,
                    job.attempts.len()
                ))
            }),
    }
}

pub(super) fn chunk_to_proto(chunk: crate::jobs::OutputChunk, attempt: u32) -> pb::OutputChunk {
    use crate::jobs::OutputStream;
    pb::OutputChunk {
        seq: chunk.seq,
        stream: match chunk.stream {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
            OutputStream::Notice => "notice",
        }
        .to_string(),
        data: chunk.data,
        attempt,
    }
}

/// The output tail committed with an attempt's result: what is left when
/// the node that ran it is unreachable.
pub(super) fn committed_tail(attempt: &crate::jobs::Attempt) -> pb::GetJobOutputResponse {
    let chunks = if attempt.output_tail.is_empty() {
        Vec::new()
    } else {
        vec![pb::OutputChunk {
            seq: 0,
            stream: "tail".into(),
            data: attempt.output_tail.clone(),
            attempt: attempt.number,
        }]
    };
    pb::GetJobOutputResponse {
        chunks,
        attempt: attempt.number,
        source: "committed_tail".into(),
    }
}

/// Stored output of a local attempt, then (with `follow`) live chunks until
/// the attempt ends. A slow client never slows the job: the hub re-reads
/// from the store for followers that fall behind.
pub(super) fn async_stream_of(
    node: Arc<Node>,
    id: JobId,
    attempt: u32,
    after_seq: Option<u64>,
    follow: bool,
) -> impl futures::Stream<Item = Result<pb::OutputChunk, Status>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        // The attempt may be assigned here but not started yet: wait for
        // its writer (or its end) before subscribing.
        if follow {
            let mut applied = node.applied_watch();
            loop {
                if node.output.is_live(id, attempt) {
                    break;
                }
                let active = node
                    .job(&id)
                    .ok()
                    .flatten()
                    .is_some_and(|j| j.active_on().is_some_and(|(_, a)| a == attempt));
                if !active {
                    break;
                }
                // Woken by the Started report's apply, or re-checked shortly.
                let _ = tokio::time::timeout(Duration::from_millis(200), applied.changed()).await;
            }
        }
        let mut sub = node.output.subscribe(id, attempt, after_seq, follow);
        while let Some(item) = sub.next().await {
            let item = item
                .map(|c| chunk_to_proto(c, attempt))
                .map_err(|e| Status::internal(e.to_string()));
            if tx.send(item).await.is_err() {
                return; // the client went away
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

impl DroverService {
    /// Waits until the job has attempt `number` (0 = any) or has ended.
    pub(super) async fn wait_for_attempt(&self, id: &JobId, number: u32) -> Result<Job, Status> {
        let mut applied = self.node.applied_watch();
        let mut job = self.job(id)?;
        while find_attempt(&job, number).is_none() && !job.state.is_terminal() {
            if applied.changed().await.is_err() {
                return Err(Status::unavailable("the node is shutting down"));
            }
            job = self.job(id)?;
        }
        Ok(job)
    }

    /// The output of one attempt: from this node's store, from the node that
    /// holds it, or (that node being unreachable) the committed tail.
    pub(super) async fn attempt_output(
        &self,
        id: JobId,
        attempt: &crate::jobs::Attempt,
        after_seq: Option<u64>,
        follow: bool,
        forwarded: bool,
        auth: &tonic::metadata::MetadataMap,
    ) -> <Self as pb::drover_server::Drover>::StreamJobOutputStream {
        if attempt.node != self.node.config.node_id && !forwarded {
            if let Ok(mut client) = self.holder_client(attempt.node) {
                let mut forward = Request::new(pb::StreamJobOutputRequest {
                    id: id.to_string(),
                    attempt: attempt.number,
                    follow,
                    after_seq,
                });
                forward
                    .metadata_mut()
                    .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
                forward_identity(&self.node, auth, forward.metadata_mut());
                match client.stream_job_output(forward).await {
                    Ok(stream) => return Box::pin(stream.into_inner()),
                    Err(status) => tracing::debug!(
                        node = attempt.node,
                        "output holder unreachable: {}",
                        status.message()
                    ),
                }
            }
            // The holder is gone: what survives is the committed tail. A
            // running attempt there has none yet; it ends NODE_LOST.
            let tail = committed_tail(attempt).chunks;
            return Box::pin(futures::stream::iter(tail.into_iter().map(Ok)));
        }
        Box::pin(async_stream_of(
            self.node.clone(),
            id,
            attempt.number,
            after_seq,
            follow,
        ))
    }

    /// Streams every attempt of a job, in order, until the job ends.
    pub(super) async fn follow_job(
        self,
        id: JobId,
        mut after_seq: Option<u64>,
        auth: tonic::metadata::MetadataMap,
        tx: tokio::sync::mpsc::Sender<Result<pb::OutputChunk, Status>>,
    ) {
        use futures::StreamExt;
        let mut number = match self.known_job(&id).await {
            Ok(job) => job.current_attempt().map_or(1, |a| a.number),
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        loop {
            let job = match self.wait_for_attempt(&id, number).await {
                Ok(job) => job,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let Some(attempt) = find_attempt(&job, number).cloned() else {
                return; // ended without another attempt
            };
            let mut stream = self
                .attempt_output(id, &attempt, after_seq, true, false, &auth)
                .await;
            while let Some(item) = stream.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
            after_seq = None;
            // Its output ended; the next attempt, if the job retries.
            number += 1;
        }
    }

    pub(super) async fn output_page(
        &self,
        request: Request<pb::GetJobOutputRequest>,
    ) -> Result<Response<pb::GetJobOutputResponse>, Status> {
        let caller = self.authorize(&request, Action::ReadJobs)?;
        let forwarded = request.metadata().get(FORWARDED).is_some();
        let (metadata, _, mut req) = request.into_parts();
        let id = parse_job_id(&req.id)?;
        let job = self.known_job(&id).await?;
        caller.check_job(&job)?;
        let Some(attempt) = pick_attempt(&job, req.attempt)? else {
            return Ok(Response::new(pb::GetJobOutputResponse {
                chunks: Vec::new(),
                attempt: 0,
                source: "none".into(),
            }));
        };
        req.attempt = attempt.number;
        let max_bytes = match req.max_bytes {
            0 => 1 << 20,
            n => (n as usize).min(4 << 20),
        };
        if attempt.node != self.node.config.node_id && !forwarded {
            match self.holder_client(attempt.node) {
                Ok(mut client) => {
                    let mut forward = Request::new(req.clone());
                    forward
                        .metadata_mut()
                        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
                    forward_identity(&self.node, &metadata, forward.metadata_mut());
                    match client.get_job_output(forward).await {
                        Ok(response) => return Ok(response),
                        Err(status) => tracing::debug!(
                            node = attempt.node,
                            "output holder unreachable: {}",
                            status.message()
                        ),
                    }
                }
                Err(e) => {
                    tracing::debug!(node = attempt.node, "no address for the output holder: {e}")
                }
            }
            return Ok(Response::new(committed_tail(attempt)));
        }
        let chunks = self
            .node
            .output_page((&id, attempt.number, req.after_seq), max_bytes)
            .map_err(|e| Status::internal(e.to_string()))?;
        if chunks.is_empty() && !attempt.output_tail.is_empty() && req.after_seq.is_none() {
            // This node ran it but lost the output (e.g. its data dir was
            // replaced): the committed tail is what is left.
            return Ok(Response::new(committed_tail(attempt)));
        }
        Ok(Response::new(pb::GetJobOutputResponse {
            chunks: chunks
                .into_iter()
                .map(|c| chunk_to_proto(c, attempt.number))
                .collect(),
            attempt: attempt.number,
            source: "node".into(),
        }))
    }

    pub(super) async fn output_stream(
        &self,
        request: Request<pb::StreamJobOutputRequest>,
    ) -> Result<Response<<Self as pb::drover_server::Drover>::StreamJobOutputStream>, Status> {
        let caller = self.authorize(&request, Action::ReadJobs)?;
        let forwarded = request.metadata().get(FORWARDED).is_some();
        let (metadata, _, req) = request.into_parts();
        let id = parse_job_id(&req.id)?;
        let job = self.known_job(&id).await?;
        caller.check_job(&job)?;
        // A live stream holds a slot of its token's share for its life.
        let slot = match req.follow {
            true => self.output_streams.take(caller.client.as_ref())?,
            false => None,
        };
        if req.follow && req.attempt == 0 && !forwarded {
            // Follow the job, not one attempt: each attempt's output in
            // turn, through its retries, until the job ends.
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let service = self.clone();
            tokio::spawn(async move {
                let _held = slot;
                service.follow_job(id, req.after_seq, metadata, tx).await
            });
            return Ok(Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )));
        }
        let job = if req.follow {
            self.wait_for_attempt(&id, req.attempt).await?
        } else {
            job
        };
        let Some(attempt) = pick_attempt(&job, req.attempt)?.cloned() else {
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        };
        let chunks = self
            .attempt_output(
                id,
                &attempt,
                req.after_seq,
                req.follow,
                forwarded,
                &metadata,
            )
            .await;
        Ok(Response::new(Box::pin(futures::StreamExt::map(
            chunks,
            move |chunk| {
                let _held = &slot;
                chunk
            },
        ))))
    }
}
