//! Jobs: submit (idempotency, queue capacity), get (a read barrier before
//! NOT_FOUND), list (filters and cursor paging), stop, watch.

use tonic::{Request, Response, Status};

use super::{raft_status, DroverService};

use crate::acl::Action;
use crate::api::convert::{job_to_proto, spec_from_proto};
use crate::jobs::{Command, Job, JobId, JobScan};
use crate::node::writes::Change;
use crate::node::{now_ms, Node};
use crate::proto::v1 as pb;

/// Page sizes of ListJobs.
pub(super) const DEFAULT_PAGE: usize = 100;
pub(super) const MAX_PAGE: usize = 1000;

/// Rows a filtered ListJobs reads per page at most: a page may come back
/// short (even empty) with a token to continue, so a rare filter never
/// makes one call scan the whole table.
pub(super) const MAX_FILTER_SCAN: usize = 10_000;

/// ListJobs filters.
pub(super) struct JobFilter {
    states: Vec<crate::jobs::JobState>,
    labels: Vec<(String, String)>,
    node: u64,
    /// Accessor id of the submitting token.
    owner: Option<String>,
}

impl JobFilter {
    /// The part of the table a request walks, and which way.
    pub(super) fn scan_of(req: &pb::ListJobsRequest) -> Result<JobScan, Status> {
        let (first, last) = match req.id_prefix.as_str() {
            "" => (None, None),
            prefix => {
                let (first, last) = JobId::prefix_range(prefix).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "id_prefix `{prefix}` is not the start of a job id (ULID letters, at most 26)"
                    ))
                })?;
                (Some(first), Some(last))
            }
        };
        Ok(JobScan {
            newest_first: req.newest_first,
            first,
            last,
        })
    }

    pub(super) fn from_request(req: &pb::ListJobsRequest) -> Result<JobFilter, Status> {
        use crate::jobs::JobState;
        let states = req
            .states
            .iter()
            .map(|name| {
                JobState::parse(name).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown state `{name}` (one of {})",
                        JobState::names()
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(JobFilter {
            states,
            labels: req
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            node: req.node,
            owner: (!req.owner.is_empty()).then(|| req.owner.clone()),
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.states.is_empty() && self.labels.is_empty() && self.node == 0 && self.owner.is_none()
    }

    pub(super) fn matches(&self, job: &Job) -> bool {
        (self.states.is_empty() || self.states.contains(&job.state))
            && self
                .labels
                .iter()
                .all(|(k, v)| job.spec.labels.get(k) == Some(v))
            && (self.node == 0 || job.current_attempt().is_some_and(|a| a.node == self.node))
            && self
                .owner
                .as_ref()
                .is_none_or(|owner| job.owner.as_ref() == Some(owner))
    }
}

/// One page of a filtered listing, and where the next starts (if anywhere).
pub(super) fn filtered_page(
    node: &Node,
    scan: &JobScan,
    mut after: Option<JobId>,
    page_size: usize,
    filter: &JobFilter,
) -> Result<(Vec<Job>, Option<JobId>), Status> {
    let mut page = Vec::new();
    let mut scanned = 0;
    while scanned < MAX_FILTER_SCAN {
        let batch = node
            .jobs_after(scan, after.as_ref(), 500)
            .map_err(|e| Status::internal(e.to_string()))?;
        let Some(last) = batch.last().map(|j| j.id) else {
            return Ok((page, None)); // the end of the table
        };
        for job in batch {
            scanned += 1;
            after = Some(job.id);
            if filter.matches(&job) {
                page.push(job);
                if page.len() == page_size {
                    return Ok((page, after));
                }
            }
        }
        after = Some(last);
    }
    Ok((page, after))
}

/// Carries the caller's token on a call this node makes on its behalf
/// (forwarding to the leader, fetching output from the node holding it), so
/// the other node checks the same caller.
pub(super) fn parse_job_id(id: &str) -> Result<JobId, Status> {
    id.parse::<JobId>().map_err(|_| {
        Status::invalid_argument(format!("`{id}` is not a job id (26-character ULID)"))
    })
}

impl DroverService {
    pub(super) fn job(&self, id: &JobId) -> Result<Job, Status> {
        self.node
            .job(id)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no job with id {id}")))
    }

    /// The job, for a request naming it: what this node has applied, or,
    /// when it has not (yet) applied it, what it finds after a read barrier.
    /// A node that restarted after `kill -9` may not have applied the tail
    /// of its durable log yet, so a miss here is not proof that the job does
    /// not exist: NotFound only once the leader confirmed this node is
    /// current, UNAVAILABLE (retry) when no leader can say.
    pub(super) async fn known_job(&self, id: &JobId) -> Result<Job, Status> {
        if let Some(job) = self.lookup_job(id)? {
            return Ok(job);
        }
        if let Err(e) = self.node.read_barrier().await {
            return Err(Status::unavailable(format!(
                "job {id} is not in this node's table and no leader could confirm that it does                  not exist ({e}); the node may be catching up after a restart: retry, or ask                  another node"
            )));
        }
        self.job(id)
    }

    pub(super) fn lookup_job(&self, id: &JobId) -> Result<Option<Job>, Status> {
        self.node
            .job(id)
            .map_err(|e| Status::internal(e.to_string()))
    }

    pub(super) async fn consistent_read(&self, consistent: bool) -> Result<(), Status> {
        if consistent {
            self.node.read_barrier().await.map_err(raft_status)?;
        }
        Ok(())
    }

    pub(super) async fn submit(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let caller = self.authorize(&request, Action::SubmitJob)?;
        let mut spec = spec_from_proto(
            request.get_ref().spec.as_ref(),
            &self.node.config.executor.default_image,
        )?;
        spec.validate()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // The sandbox asks: this node's image policy, and a user or a
        // network some node offers; the node that runs the job applies its
        // own policy again.
        if let Err(refusal) = self.node.admit_sandbox(caller.role, &mut spec) {
            return Err(match refusal.by_role {
                true => Status::permission_denied(refusal.message),
                false => Status::invalid_argument(refusal.message),
            });
        }
        self.node.admit_new_work().map_err(raft_status)?;
        self.write(
            request,
            move |node, _req| {
                let spec = spec.clone();
                let caller = caller.clone();
                async move {
                    // A resubmission answers with the first job, without a
                    // log entry (the state machine checks again on apply).
                    if let Some(key) = &spec.idempotency_key {
                        if let Some(job) = node
                            .job_by_idempotency_key(caller.owner(), key)
                            .map_err(|e| Status::internal(e.to_string()))?
                        {
                            caller.check_job(&job)?;
                            return Ok(pb::SubmitJobResponse {
                                job: Some(job_to_proto(&job)),
                            });
                        }
                    }
                    if let Some(refusal) = node.quota_refusal(caller.owner(), caller.role, &spec) {
                        return Err(Status::resource_exhausted(refusal));
                    }
                    let (id, submitted_at_ms) = (node.next_job_id(), now_ms());
                    let command = match caller.owner() {
                        Some(owner) => Command::SubmitAs {
                            id,
                            spec,
                            owner: owner.to_string(),
                            submitted_at_ms,
                        },
                        None => Command::Submit {
                            id,
                            spec,
                            submitted_at_ms,
                        },
                    };
                    let job = node.submit_job(command).await.map_err(raft_status)?;
                    caller.check_job(&job)?;
                    Ok(pb::SubmitJobResponse {
                        job: Some(job_to_proto(&job)),
                    })
                }
            },
            |mut client, req| async move { client.submit_job(req).await },
        )
        .await
    }

    pub(super) async fn get(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let caller = self.authorize(&request, Action::ReadJobs)?;
        let req = request.into_inner();
        let id = parse_job_id(&req.id)?;
        self.consistent_read(req.consistent).await?;
        let job = if req.consistent {
            self.job(&id)?
        } else {
            self.known_job(&id).await?
        };
        caller.check_job(&job)?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job_to_proto(&job)),
        }))
    }

    pub(super) async fn list(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = self.authorize(&request, Action::ReadJobs)?;
        let req = request.into_inner();
        let page_size = match req.page_size as usize {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "page_size {n} exceeds the maximum of {MAX_PAGE}"
                )))
            }
            n => n,
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(req.page_token.parse::<JobId>().map_err(|_| {
                Status::invalid_argument(
                    "page_token is not a token returned by ListJobs; start again without it",
                )
            })?)
        };
        let mut filter = JobFilter::from_request(&req)?;
        let scan = JobFilter::scan_of(&req)?;
        if let Some(scope) = caller.list_scope() {
            // A submitter sees its own jobs only: asking for another
            // owner's finds none.
            if filter.owner.as_deref().is_some_and(|o| o != scope) {
                return Ok(Response::new(pb::ListJobsResponse::default()));
            }
            filter.owner = Some(scope.to_string());
        }
        self.consistent_read(req.consistent).await?;
        // Read before the page: every row then reflects at least this
        // index, so a watch from it misses nothing (read after, a change
        // between the page and the index would be in neither).
        let index = self.node.applied_index();
        let (jobs, next) = if filter.is_empty() {
            let jobs = self
                .node
                .jobs_after(&scan, after.as_ref(), page_size + 1)
                .map_err(|e| Status::internal(e.to_string()))?;
            let more = jobs.len() > page_size;
            let jobs: Vec<Job> = jobs.into_iter().take(page_size).collect();
            let next = if more {
                jobs.last().map(|j| j.id)
            } else {
                None
            };
            (jobs, next)
        } else {
            filtered_page(&self.node, &scan, after, page_size, &filter)?
        };
        let next_page_token = next.map(|id| id.to_string()).unwrap_or_default();
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(listed).collect(),
            next_page_token,
            index,
        }))
    }

    pub(super) async fn stop(
        &self,
        request: Request<pb::StopJobRequest>,
    ) -> Result<Response<pb::StopJobResponse>, Status> {
        let caller = self.authorize(&request, Action::StopJob)?;
        let id = parse_job_id(&request.get_ref().id)?;
        // Checked here too, so a follower refuses without a round trip
        // (the leader checks again against its own table).
        if let Some(job) = self
            .node
            .job(&id)
            .map_err(|e| Status::internal(e.to_string()))?
        {
            caller.check_job(&job)?;
        }
        self.write(
            request,
            move |node, req| {
                let caller = caller.clone();
                async move {
                    let id = parse_job_id(&req.id)?;
                    // An unknown id is refused without a log entry. A new leader
                    // may not have applied its predecessor's last entries yet:
                    // a read barrier first, before saying "no such job".
                    let known =
                        |node: &Node| node.job(&id).map_err(|e| Status::internal(e.to_string()));
                    let job = match known(&node)? {
                        Some(job) => job,
                        None => {
                            node.read_barrier().await.map_err(raft_status)?;
                            known(&node)?
                                .ok_or_else(|| Status::not_found(format!("no job with id {id}")))?
                        }
                    };
                    caller.check_job(&job)?;
                    match node.cancel_job(id, now_ms()).await.map_err(raft_status)? {
                        Change::Done(job) => Ok(pb::StopJobResponse {
                            job: Some(job_to_proto(&job)),
                        }),
                        Change::Refused(_) => {
                            Err(Status::not_found(format!("no job with id {id}")))
                        }
                    }
                }
            },
            |mut client, req| async move { client.stop_job(req).await },
        )
        .await
    }

    pub(super) async fn watch(
        &self,
        request: Request<pb::WatchJobsRequest>,
    ) -> Result<Response<<Self as pb::drover_server::Drover>::WatchJobsStream>, Status> {
        let caller = self.authorize(&request, Action::ReadJobs)?;
        let req = request.into_inner();
        let job = match req.job_id.as_str() {
            "" => None,
            id => Some(parse_job_id(id)?),
        };
        if let Some(id) = &job {
            if let Some(job) = self
                .node
                .job(id)
                .map_err(|e| Status::internal(e.to_string()))?
            {
                caller.check_job(&job)?;
            }
        }
        let scope = caller.list_scope().map(str::to_string);
        // One token may not take every watch slot of the node.
        let slot = self.watches.take(caller.client.as_ref())?;
        // Served from this node's own applies: any node, no forwarding.
        let from = (req.from_index > 0).then_some(req.from_index);
        let subscription = self
            .node
            .events
            .subscribe(from)
            .map_err(crate::api::watch::watch_status)?;
        let events = crate::api::watch::event_stream(subscription, job, scope);
        // The slot lives as long as the stream.
        let events = futures::StreamExt::map(events, move |event| {
            let _held = &slot;
            event
        });
        Ok(Response::new(Box::pin(events)))
    }
}

/// A job as a list shows it: its attempts without their output tails
/// (up to 64 KiB each, so a page of 1,000 jobs could carry 64 MiB of
/// them); GetJob and the output calls give them, per job.
fn listed(mut job: Job) -> pb::Job {
    // Dropped before the conversion, so no tail is copied only to go.
    for attempt in &mut job.attempts {
        attempt.output_tail = Vec::new();
    }
    job_to_proto(&job)
}
