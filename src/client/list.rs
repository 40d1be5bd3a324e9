//! `drover job list` and the shortened job ids every command takes: the
//! table newest first and as wide as the terminal (`-o wide` for every
//! column), and an id prefix resolved to the one job it names.

use serde_json::json;

use super::{
    call, describe_spec, job_json, truncate, Client, Failure, Output, CALL_TIMEOUT, EXIT_FAILED,
};
use crate::proto::v1 as pb;

/// A job id as typed: the whole 26 characters, or a prefix naming exactly
/// one job (as Nomad and docker accept). Malformed: exit 2; no job or
/// several: the ones found, to type more of.
pub async fn resolve_id(client: &mut Client, typed: &str) -> Result<String, Failure> {
    let typed = typed.trim();
    if typed.len() == 26 {
        return Ok(typed.to_ascii_uppercase());
    }
    if crate::jobs::JobId::prefix_range(typed).is_none() {
        return Err(Failure::usage(format!(
            "`{typed}` is not a job id or the start of one (job ids are 26 characters \
             such as 01JD8X3QK7Y5N2VGQ4WZC9TB6M, and any unique start of one will do)"
        )));
    }
    let request = pb::ListJobsRequest {
        page_size: 3,
        id_prefix: typed.to_string(),
        ..Default::default()
    };
    let found = client
        .list_jobs(call(request, CALL_TIMEOUT))
        .await?
        .into_inner()
        .jobs;
    match found.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(Failure {
            message: format!("no job id starts with `{typed}`"),
            code: EXIT_FAILED,
        }),
        several => Err(Failure::usage(format!(
            "`{typed}` is the start of more than one job id ({}{}): type more of it",
            several
                .iter()
                .take(2)
                .map(|j| j.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if several.len() > 2 { ", …" } else { "" }
        ))),
    }
}

/// Prints one page of jobs, or with `all` every page (as one table or one
/// JSON array).
pub async fn list_jobs(
    client: &mut Client,
    output: Output,
    mut request: pb::ListJobsRequest,
    all: bool,
) -> Result<(), Failure> {
    let mut jobs = Vec::new();
    // The first page's: every later page reflects at least as much.
    let mut index = None;
    let next = loop {
        let page = client
            .list_jobs(call(request.clone(), CALL_TIMEOUT))
            .await?
            .into_inner();
        index = index.or(Some(page.index));
        jobs.extend(page.jobs);
        if !all || page.next_page_token.is_empty() {
            break page.next_page_token;
        }
        request.page_token = page.next_page_token;
    };
    if output == Output::Json {
        let jobs: Vec<_> = jobs.iter().map(job_json).collect();
        let index = index.unwrap_or_default();
        println!(
            "{}",
            json!({ "jobs": jobs, "next_page_token": next, "index": index })
        );
        return Ok(());
    }
    if jobs.is_empty() {
        let filtered = !request.states.is_empty()
            || !request.labels.is_empty()
            || request.node != 0
            || !request.owner.is_empty();
        match filtered {
            true => eprintln!("no jobs match"),
            false => eprintln!("no jobs yet: `drover job run -- echo hello` runs one"),
        }
        return Ok(());
    }
    print!(
        "{}",
        render(&jobs, output == Output::Wide, terminal_width())
    );
    if !next.is_empty() {
        println!("(more: --page-token {next}, or --all)");
    }
    Ok(())
}

/// One column of the table: its heading and each job's cell.
struct Column {
    heading: &'static str,
    cell: fn(&pb::Job) -> String,
    /// Shown only with `-o wide`.
    wide_only: bool,
}

/// Columns left out, in this order, when the terminal is too narrow for
/// the command to keep [`MIN_COMMAND`] columns.
const DROPPED_WHEN_NARROW: [&str; 3] = ["NODE", "AGE", "EXIT"];
/// Columns the command keeps before others are left out.
const MIN_COMMAND: usize = 12;

const COLUMNS: [Column; 9] = [
    Column {
        heading: "ID",
        cell: |j| j.id.clone(),
        wide_only: false,
    },
    Column {
        heading: "STATE",
        cell: |j| j.state.clone(),
        wide_only: false,
    },
    Column {
        heading: "NODE",
        cell: |j| j.attempts.last().map_or("-".into(), |a| a.node.to_string()),
        wide_only: false,
    },
    Column {
        heading: "EXIT",
        cell: exit_cell,
        wide_only: false,
    },
    Column {
        heading: "AGE",
        cell: |j| super::human_time(j.submitted_at_ms).replace(" ago", ""),
        wide_only: false,
    },
    Column {
        heading: "DURATION",
        cell: duration_cell,
        wide_only: true,
    },
    Column {
        heading: "ATTEMPTS",
        cell: |j| j.attempts.len().to_string(),
        wide_only: true,
    },
    Column {
        heading: "IMAGE",
        cell: |j| j.spec.as_ref().map_or(String::new(), |s| s.image.clone()),
        wide_only: true,
    },
    Column {
        heading: "COMMAND",
        cell: |j| describe_spec(j.spec.as_ref()),
        wide_only: false,
    },
];

/// How the job ended, in a few characters: its exit code, `sig N`, or the
/// reason (`OOM_KILLED`, `NODE_LOST`, …); `-` while it has not.
fn exit_cell(job: &pb::Job) -> String {
    match job.attempts.last() {
        Some(a) if a.reason == "EXIT_CODE" => a.exit_code.map_or("-".into(), |c| c.to_string()),
        Some(a) if a.reason == "SIGNAL" => format!("sig {}", a.signal),
        Some(a) if !a.reason.is_empty() => a.reason.clone(),
        _ => "-".into(),
    }
}

/// How long the latest attempt ran (or has run so far).
fn duration_cell(job: &pb::Job) -> String {
    let Some(a) = job.attempts.last().filter(|a| a.started_at_ms > 0) else {
        return "-".into();
    };
    let end = match a.finished_at_ms {
        0 => crate::jobs::now_ms(),
        ms => ms,
    };
    let secs = (end - a.started_at_ms).max(0) as f64 / 1000.0;
    match secs {
        s if s < 60.0 => format!("{s:.1}s"),
        s if s < 3600.0 => format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
        s => format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        ),
    }
}

/// The table, each column as wide as its widest cell, the command cut to
/// what is left of `width` (never cut with `wide`).
fn render(jobs: &[pb::Job], wide: bool, width: usize) -> String {
    // Each column with its cells (heading first) and its width, made once.
    let mut table: Vec<(&Column, Vec<String>, usize)> = COLUMNS
        .iter()
        .filter(|c| wide || !c.wide_only)
        .map(|c| {
            let cells: Vec<String> = std::iter::once(c.heading.to_string())
                .chain(jobs.iter().map(c.cell))
                .collect();
            let w = cells.iter().map(|t| t.chars().count()).max().unwrap_or(0);
            (c, cells, w)
        })
        .collect();
    // What the columns before the command (the last) take, with their gaps.
    let used = |table: &[(&Column, Vec<String>, usize)]| -> usize {
        table[..table.len() - 1].iter().map(|(_, _, w)| w + 2).sum()
    };
    for heading in DROPPED_WHEN_NARROW {
        if wide || used(&table) + MIN_COMMAND <= width {
            break;
        }
        table.retain(|(c, _, _)| c.heading != heading);
    }
    let room = match wide {
        true => usize::MAX,
        false => width.saturating_sub(used(&table)).max(1),
    };
    let last = table.len() - 1;
    let mut out = String::new();
    for row in 0..=jobs.len() {
        let mut text = String::new();
        for (i, (_, cells, w)) in table.iter().enumerate() {
            match i == last {
                true => text += &truncate(&cells[row], room),
                false => text += &format!("{:<w$}  ", cells[row]),
            }
        }
        out += text.trim_end();
        out.push('\n');
    }
    out
}

/// Columns of the terminal: `COLUMNS` if set, else the terminal's own
/// width, else 80 (a pipe).
pub fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .or_else(|| {
            console::Term::stdout()
                .size_checked()
                .map(|(_, cols)| usize::from(cols))
        })
        .filter(|&c: &usize| c >= 20)
        .unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, state: &str, command: &str) -> pb::Job {
        pb::Job {
            id: id.into(),
            state: state.into(),
            spec: Some(pb::JobSpec {
                command: command.into(),
                image: "drover-job:latest".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_table_fits_the_width_and_wide_shows_every_column() {
        let jobs = [
            job(
                "01JD8X3QK7Y5N2VGQ4WZC9TB6M",
                "QUEUED",
                &"echo x; ".repeat(30),
            ),
            job("01JD8X3QK7Y5N2VGQ4WZC9TB6N", "SUCCEEDED", "true"),
        ];
        for width in [60, 80, 120] {
            let text = render(&jobs, false, width);
            for line in text.lines() {
                assert!(line.chars().count() <= width, "{width}: {line:?}");
            }
            assert!(text.starts_with("ID "), "{text}");
            assert!(!text.contains("IMAGE"), "{text}");
        }
        let wide = render(&jobs, true, 60);
        assert!(wide.contains("IMAGE") && wide.contains("DURATION") && wide.contains("ATTEMPTS"));
        assert!(
            wide.contains(&"echo x; ".repeat(29)),
            "wide cuts nothing: {wide}"
        );
    }
}
