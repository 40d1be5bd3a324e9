//! Between the wire (`drover.v1` messages) and the model (`jobs`). One
//! place, so every front end fills the same defaults and shows the same
//! fields.

use tonic::Status;

use crate::jobs::{Job, JobSpec, NodeRecord, Reserved, Resources, RetryPolicy};
use crate::proto::v1 as pb;

/// A submitted spec in the model, with the node's defaults filled in
/// (image, resources, retry) so the committed record says what runs.
pub fn spec_from_proto(spec: Option<&pb::JobSpec>, default_image: &str) -> Result<JobSpec, Status> {
    let spec = spec.ok_or_else(|| Status::invalid_argument("spec is required"))?;
    // A field left at 0 takes its default, so a client sets only what it
    // cares about.
    fn or<T: PartialEq + Default>(value: T, default: T) -> T {
        if value == T::default() {
            default
        } else {
            value
        }
    }
    let resources = spec
        .resources
        .as_ref()
        .map_or_else(Resources::default, |r| {
            let d = Resources::default();
            Resources {
                cpu_millis: or(r.cpu_millis, d.cpu_millis),
                memory_mib: or(r.memory_mib, d.memory_mib),
                pids: or(r.pids, d.pids),
            }
        });
    let retry = spec.retry.as_ref().map_or_else(RetryPolicy::default, |r| {
        let d = RetryPolicy::default();
        RetryPolicy {
            max_attempts: or(r.max_attempts, d.max_attempts),
            initial_backoff_ms: or(r.initial_backoff_ms, d.initial_backoff_ms),
            max_backoff_ms: or(r.max_backoff_ms, d.max_backoff_ms.max(r.initial_backoff_ms)),
        }
    });
    Ok(JobSpec {
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        args: spec.args.clone(),
        image: if spec.image.is_empty() {
            default_image.to_string()
        } else {
            spec.image.clone()
        },
        env: spec
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        resources,
        timeout_ms: spec.timeout_ms,
        retry,
        priority: spec.priority,
        constraints: spec.constraints.clone().into_iter().collect(),
        idempotency_key: (!spec.idempotency_key.is_empty()).then(|| spec.idempotency_key.clone()),
        network: spec.network,
        labels: spec.labels.clone().into_iter().collect(),
        user: (!spec.user.is_empty()).then(|| spec.user.clone()),
    })
}

/// A job on the wire.
pub fn job_to_proto(job: &Job) -> pb::Job {
    let spec = &job.spec;
    pb::Job {
        id: job.id.to_string(),
        spec: Some(pb::JobSpec {
            command: spec.command.clone().unwrap_or_default(),
            args: spec.args.clone(),
            image: spec.image.clone(),
            env: spec
                .env
                .iter()
                .map(|(name, value)| pb::EnvVar {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            resources: Some(pb::Resources {
                cpu_millis: spec.resources.cpu_millis,
                memory_mib: spec.resources.memory_mib,
                pids: spec.resources.pids,
            }),
            timeout_ms: spec.timeout_ms,
            retry: Some(pb::RetryPolicy {
                max_attempts: spec.retry.max_attempts,
                initial_backoff_ms: spec.retry.initial_backoff_ms,
                max_backoff_ms: spec.retry.max_backoff_ms,
            }),
            priority: spec.priority,
            constraints: spec.constraints.clone().into_iter().collect(),
            idempotency_key: spec.idempotency_key.clone().unwrap_or_default(),
            network: spec.network,
            labels: spec.labels.clone().into_iter().collect(),
            user: spec.user.clone().unwrap_or_default(),
        }),
        state: job.state.as_str().to_string(),
        submitted_at_ms: job.submitted_at_ms,
        index: job.index,
        attempts: job
            .attempts
            .iter()
            .map(|a| pb::Attempt {
                number: a.number,
                node: a.node,
                assigned_at_ms: a.assigned_at_ms,
                started_at_ms: a.started_at_ms.unwrap_or(0),
                finished_at_ms: a.finished_at_ms.unwrap_or(0),
                exit_code: a.exit_code,
                reason: a
                    .reason
                    .as_ref()
                    .map(|r| r.as_str().to_string())
                    .unwrap_or_default(),
                signal: match a.reason {
                    Some(crate::jobs::EndReason::Signaled { signal }) => signal,
                    _ => 0,
                },
                message: a.message.clone(),
                output_tail: a.output_tail.clone(),
            })
            .collect(),
        not_before_ms: job.not_before_ms,
        finished_at_ms: job.finished_at_ms.unwrap_or(0),
        owner: job.owner.clone().unwrap_or_default(),
    }
}

/// A token on the wire (never its secret or hash).
pub fn token_to_proto(token: &crate::acl::Token) -> pb::AclToken {
    pb::AclToken {
        accessor: token.accessor.clone(),
        name: token.name.clone(),
        role: token.role.as_str().to_string(),
        created_at_ms: token.created_at_ms,
    }
}

/// A node on the wire, with its use as of the local table.
pub fn node_to_proto(record: &NodeRecord, used: Reserved, api_addr: String) -> pb::NodeInfo {
    pb::NodeInfo {
        id: record.id,
        status: record.status.as_str().to_string(),
        labels: record.labels.clone().into_iter().collect(),
        cpu_millis: record.capacity.cpu_millis,
        memory_mib: record.capacity.memory_mib,
        used_cpu_millis: used.cpu_millis,
        used_memory_mib: used.memory_mib,
        active_jobs: used.jobs,
        draining: record.drain.is_some(),
        drain_deadline_ms: record.drain.and_then(|d| d.deadline_ms).unwrap_or(0),
        api_addr,
    }
}
