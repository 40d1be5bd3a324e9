//! The web dashboard in a real headless Chromium against real agents:
//! what a person sees and does, with no reload (a mark set in the page
//! survives every check), and nothing requested from another origin.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::{wait_for, Cluster, RaftSettings};
use serde_json::Value;

const ELECTION: Duration = Duration::from_secs(15);
/// A job's whole life in the tests' cluster, placement included.
const JOB: Duration = Duration::from_secs(60);
const PRINTS_FIVE_LINES: &str = "for i in 1 2 3 4 5; do echo line$i; sleep 1; done";

/// The state the page shows in `css`'s `data-state`.
const STATE_OF_JOB_VIEW: &str =
    "return (document.querySelector('#job-state') || {dataset: {}}).dataset.state || ''";

fn row_state(id: &str) -> String {
    format!(
        "const r = document.querySelector('tr[data-job-id=\"{id}\"]'); return r ? r.dataset.state : ''"
    )
}

/// `seen` starts with the first of `order`, ends with its last, and keeps
/// its order (a state may pass too fast to be seen).
fn assert_in_order(seen: &[String], order: &[&str]) {
    let positions: Vec<Option<usize>> = seen
        .iter()
        .map(|s| order.iter().position(|o| o == s))
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]),
        "states {seen:?} out of the order {order:?}"
    );
    assert_eq!(
        seen.first().map(String::as_str),
        order.first().copied(),
        "{seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        order.last().copied(),
        "{seen:?}"
    );
}

/// Polls the page's job-state script until `last` shows; every distinct
/// state seen on the way, in order.
async fn states_until(browser: &Browser, script: &str, last: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + JOB;
    loop {
        let state = browser.js(script, vec![]).await;
        let state = state.as_str().unwrap_or_default().to_string();
        if !state.is_empty() && seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if state == last {
            return seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {last} within {JOB:?}; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rest_post(url: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("REST call");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

/// Every request the page made went to its own origin, and the policy
/// refused nothing.
async fn assert_same_origin(browser: &Browser, origin: &str) {
    let urls = browser.requested_urls().await;
    assert!(
        !urls.is_empty(),
        "resource timing recorded the page's calls"
    );
    let foreign: Vec<&String> = urls.iter().filter(|u| !u.starts_with(origin)).collect();
    assert!(foreign.is_empty(), "requests left {origin}: {foreign:?}");
    let refused = browser
        .js("return window.droverCspViolations", vec![])
        .await;
    assert_eq!(refused, Value::Array(vec![]), "CSP refused {refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_from_the_form_runs_live_in_the_list_and_its_output_streams_and_downloads() {
    let Some(cluster) = Cluster::start_running_jobs(1, RaftSettings::default()) else {
        return;
    };
    cluster.wait_leader(ELECTION).await;
    let base = cluster.http_url(0);
    let browser = Browser::start(1280, 900).await;

    // `/` sends a browser to the dashboard; the overview shows the leader.
    browser.goto(&format!("{base}/")).await;
    let url = browser.client.current_url().await.expect("url");
    assert_eq!(url.path(), "/ui/", "{url}");
    browser.mark_page().await;
    browser
        .wait_js(
            "the leader on the overview",
            ELECTION,
            "const e = document.querySelector('#leader'); return e && e.textContent === 'node 1'",
        )
        .await;
    browser.screenshot("overview").await;

    // Drain the only node from the Nodes view, so the job waits in QUEUED
    // where the list can show it.
    browser.click("nav a[data-view=nodes]").await;
    browser.click("tr[data-node='1'] button.drain").await;
    browser
        .wait_js(
            "node 1 draining",
            ELECTION,
            "return !!document.querySelector(\"tr[data-node='1'] button.undrain\")",
        )
        .await;
    browser.screenshot("nodes").await;

    // Submit through the form: the page goes to the new job.
    browser.click("nav a[data-view=submit]").await;
    browser.type_into("#f-command", PRINTS_FIVE_LINES).await;
    browser.type_into("#f-labels", "team=web").await;
    browser.screenshot("submit").await;
    browser.click("#submit-button").await;
    let id = browser
        .wait_js(
            "the job view after submitting",
            ELECTION,
            "const m = location.hash.match(/^#\\/jobs\\/([0-9A-Z]{26})$/); return m ? m[1] : ''",
        )
        .await;
    let id = id.as_str().expect("job id").to_string();

    // In the list, live: QUEUED until the node is undrained, then RUNNING
    // and SUCCEEDED, with no reload.
    browser.click("nav a[data-view=jobs]").await;
    let in_list = row_state(&id);
    browser
        .wait_js(
            "the job QUEUED in the list",
            ELECTION,
            &format!("{in_list} === 'QUEUED'"),
        )
        .await;
    rest_post(
        &format!("{base}/v1/nodes/1/drain"),
        serde_json::json!({ "disable": true }),
    )
    .await;
    let mut seen = vec!["QUEUED".to_string()];
    for state in states_until(&browser, &in_list, "SUCCEEDED").await {
        if seen.last() != Some(&state) {
            seen.push(state);
        }
    }
    assert_in_order(&seen, &["QUEUED", "ASSIGNED", "RUNNING", "SUCCEEDED"]);
    assert!(seen.iter().any(|s| s == "RUNNING"), "{seen:?}");
    // The counts by state are pushed too.
    browser
        .wait_js(
            "one SUCCEEDED in the counts",
            ELECTION,
            "const c = document.querySelector('[data-count-state=SUCCEEDED] .value'); return c && c.textContent === '1'",
        )
        .await;
    browser.screenshot("jobs").await;

    // "Submit again" opens the form filled from the job; submitted, its
    // view shows the output line by line while it runs.
    browser.click(&format!("tr[data-job-id='{id}'] a")).await;
    browser.click("#job-again").await;
    browser
        .wait_js(
            "the form filled from the job",
            ELECTION,
            &format!(
                "const c = document.querySelector('#f-command'); return c && c.value === {} && document.querySelector('#f-labels').value === 'team=web'",
                serde_json::to_string(PRINTS_FIVE_LINES).expect("json")
            ),
        )
        .await;
    browser.click("#submit-button").await;
    browser
        .wait_js(
            "the second job's view",
            ELECTION,
            &format!("const m = location.hash.match(/^#\\/jobs\\/([0-9A-Z]{{26}})$/); return m && m[1] !== '{id}'"),
        )
        .await;
    let lines = "return document.querySelectorAll('#output .line').length";
    let mut counts: Vec<u64> = Vec::new();
    let deadline = std::time::Instant::now() + JOB;
    loop {
        let n = browser.js(lines, vec![]).await.as_u64().unwrap_or(0);
        let state = browser.js(STATE_OF_JOB_VIEW, vec![]).await;
        if counts.last() != Some(&n) {
            counts.push(n);
            if n == 3 {
                browser.screenshot("job").await;
            }
        }
        if n == 5 && state == "SUCCEEDED" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "output lines seen: {counts:?}, state {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One line a second: the page showed at least three partial outputs.
    let partial = counts.iter().filter(|n| (1..5).contains(*n)).count();
    assert!(partial >= 3, "line by line, not all at the end: {counts:?}");
    let text = browser
        .js(
            "return document.querySelector('#output').textContent",
            vec![],
        )
        .await;
    assert_eq!(text, "line1\nline2\nline3\nline4\nline5\n");

    // The filter hides what does not match; the download holds everything.
    browser.type_into("#output-filter", "/line[24]/").await;
    browser
        .wait_js(
            "two lines left by the filter",
            ELECTION,
            "return document.querySelectorAll('#output .line:not(.hidden)').length === 2",
        )
        .await;
    browser.click("#output-download").await;
    let downloads = browser.downloads.clone();
    let file = wait_for("the downloaded output", Duration::from_secs(15), || {
        let found = std::fs::read_dir(&downloads).ok().and_then(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "log"))
        });
        async move { found }
    })
    .await;
    let saved = std::fs::read_to_string(&file).expect("read download");
    assert_eq!(saved, "line1\nline2\nline3\nline4\nline5\n");

    assert!(browser.same_page().await, "the page was never reloaded");
    assert_same_origin(&browser, &base).await;

    // On a phone's width nothing runs off the screen: wide tables scroll
    // inside their own box.
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("phone width");
    for view in ["overview", "jobs", "submit"] {
        browser.goto(&format!("{base}/ui/#/{view}")).await;
        let overflow = browser
            .wait_js(
                "the view laid out",
                ELECTION,
                "return document.querySelector('main h1') ? [document.documentElement.scrollWidth, innerWidth] : null",
            )
            .await;
        assert!(
            overflow[0].as_u64() <= overflow[1].as_u64(),
            "{view} is wider than the screen: {overflow}"
        );
        browser.screenshot(&format!("phone-{view}")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_job_stopped_from_the_page_ends_cancelled() {
    let Some(cluster) = Cluster::start_running_jobs(1, RaftSettings::default()) else {
        return;
    };
    cluster.wait_leader(ELECTION).await;
    let base = cluster.http_url(0);
    let job = rest_post(
        &format!("{base}/v1/jobs"),
        serde_json::json!({ "command": "echo started; sleep 300" }),
    )
    .await;
    let id = job["id"].as_str().expect("id");
    let browser = Browser::start(1024, 768).await;
    browser.goto(&format!("{base}/ui/#/jobs/{id}")).await;
    browser.mark_page().await;
    browser
        .wait_js(
            "the job RUNNING",
            JOB,
            &format!("{STATE_OF_JOB_VIEW} === 'RUNNING'"),
        )
        .await;
    browser
        .wait_js(
            "its first line",
            JOB,
            "return document.querySelector('#output').textContent === 'started\\n'",
        )
        .await;
    browser.click("#job-stop").await;
    let seen = states_until(&browser, STATE_OF_JOB_VIEW, "CANCELLED").await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("CANCELLED"),
        "{seen:?}"
    );
    // A finished job offers no stop.
    browser
        .wait_js(
            "no stop button",
            ELECTION,
            "return !document.querySelector('#job-stop')",
        )
        .await;
    let reason = browser
        .wait_js(
            "the attempt's reason",
            ELECTION,
            "return [...document.querySelectorAll('td .badge')].map(b => b.textContent).find(t => t === 'CANCELLED') || ''",
        )
        .await;
    assert_eq!(reason, "CANCELLED");
    assert!(browser.same_page().await, "no reload");
}

async fn sign_in(browser: &Browser, secret: &str) {
    browser
        .wait_js(
            "the sign-in dialog",
            ELECTION,
            "return document.querySelector('#signin').open",
        )
        .await;
    browser.type_into("#signin-token", secret).await;
    browser.click("#signin-form button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_acls_the_page_asks_for_a_token_and_offers_only_what_its_role_may_do() {
    let settings = RaftSettings {
        acl: true,
        ..RaftSettings::default()
    };
    let mut cluster = Cluster::start(1, settings);
    cluster.bootstrap_over_socket(ELECTION).await;
    let admin = cluster.create_token("ops", "admin").1;
    let viewer = cluster.create_token("dash", "viewer").1;
    let base = cluster.http_url(0);
    let http = reqwest::Client::new();
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "command": "sleep 300" }))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("job");
    // No executor here: the job stays QUEUED, which is stoppable.
    let id = job["id"].as_str().expect("id").to_string();

    let browser = Browser::start(1024, 768).await;
    browser.goto(&format!("{base}/ui/")).await;
    // A bad token gets the sign-in message, not a broken page.
    sign_in(&browser, "drv_not-a-real-token").await;
    let message = browser
        .wait_js(
            "the refusal",
            ELECTION,
            "return document.querySelector('#signin-error').textContent",
        )
        .await;
    assert!(
        message
            .as_str()
            .unwrap_or_default()
            .contains("not accepted"),
        "{message}"
    );
    browser.screenshot("sign-in").await;

    // A viewer sees no submit and no stop.
    browser.type_into("#signin-token", &viewer).await;
    browser.click("#signin-form button[type=submit]").await;
    browser
        .wait_js(
            "signed in as viewer",
            ELECTION,
            "const w = document.querySelector('#who-role'); return w && w.textContent.includes('viewer')",
        )
        .await;
    let submit_hidden = browser
        .js(
            "return document.querySelector('nav a[data-view=submit]').hidden",
            vec![],
        )
        .await;
    assert_eq!(submit_hidden, Value::Bool(true), "no Submit for a viewer");
    browser.goto(&format!("{base}/ui/#/jobs/{id}")).await;
    browser
        .wait_js(
            "the job view",
            ELECTION,
            &format!("{STATE_OF_JOB_VIEW} === 'QUEUED'"),
        )
        .await;
    let controls = browser
        .js("return [!!document.querySelector('#job-stop'), !!document.querySelector('#job-again')]", vec![])
        .await;
    assert_eq!(
        controls,
        serde_json::json!([false, false]),
        "a viewer gets no controls"
    );
    // Its token stays in the tab (sessionStorage), never in the URL.
    let url = browser.client.current_url().await.expect("url");
    assert!(!url.as_str().contains(&viewer), "{url}");

    // An admin does, and its validation errors land next to the field.
    browser.click("#sign-out").await;
    sign_in(&browser, &admin).await;
    browser
        .wait_js(
            "signed in as admin",
            ELECTION,
            "const w = document.querySelector('#who-role'); return w && w.textContent.includes('admin')",
        )
        .await;
    browser.goto(&format!("{base}/ui/#/jobs/{id}")).await;
    browser.element("#job-stop").await;
    browser.element("#job-again").await;
    browser.goto(&format!("{base}/ui/#/submit")).await;
    browser.type_into("#f-command", "true").await;
    browser.type_into("#f-priority", "5000").await;
    browser.click("#submit-button").await;
    let error = browser
        .wait_js(
            "the error next to the priority field",
            ELECTION,
            "return document.querySelector('#f-priority-error').textContent",
        )
        .await;
    assert!(
        error.as_str().unwrap_or_default().contains("priority"),
        "{error}"
    );
    let invalid = browser
        .js(
            "return document.querySelector('#f-priority').getAttribute('aria-invalid')",
            vec![],
        )
        .await;
    assert_eq!(invalid, "true");
    assert_same_origin(&browser, &base).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_kill_9_of_the_leader_the_overview_shows_the_new_leader_and_the_dead_member() {
    let mut cluster = Cluster::start(3, RaftSettings::default());
    let leader = cluster.wait_leader(ELECTION).await;
    let watcher = (leader + 1) % 3;
    let base = cluster.http_url(watcher);
    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{base}/ui/")).await;
    browser.mark_page().await;
    let old = cluster.nodes[leader].id;
    browser
        .wait_js(
            "the leader and its view of three members",
            ELECTION,
            &format!(
                "return document.querySelector('#leader')?.textContent === 'node {old}' && \
                 document.querySelectorAll('#members tr[data-health=ok]').length === 3"
            ),
        )
        .await;

    cluster.kill(leader);
    let shown = browser
        .wait_js(
            "a new leader and the old one DOWN",
            ELECTION,
            &format!(
                "const l = document.querySelector('#leader')?.textContent || ''; \
                 const dead = document.querySelector('#members tr[data-member=\"{old}\"]'); \
                 return l.startsWith('node ') && l !== 'node {old}' && dead && dead.dataset.health === 'down' ? l : ''"
            ),
        )
        .await;
    let new_leader = cluster.wait_leader(ELECTION).await;
    assert_eq!(shown, format!("node {}", cluster.nodes[new_leader].id));
    browser.screenshot("overview-after-failover").await;

    // Without a quorum there is no leader: a banner says writes are
    // paused, and reads (the job list) keep working. (The page's node may
    // be the new leader: the other survivor goes.)
    let other = (0..3)
        .find(|&i| i != leader && i != watcher)
        .expect("a third node");
    cluster.kill(other);
    browser
        .wait_js(
            "the no-leader banner",
            ELECTION,
            "const b = document.querySelector('#banner'); return !b.hidden && b.textContent.includes('No leader')",
        )
        .await;
    browser.click("nav a[data-view=jobs]").await;
    browser
        .wait_js(
            "the job list without a leader",
            ELECTION,
            "return document.querySelector('#jobs-table td.empty')?.textContent.includes('No jobs yet')",
        )
        .await;
    browser.screenshot("no-leader").await;
    assert!(browser.same_page().await, "no reload");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_is_embedded_and_served_under_a_same_origin_policy() {
    let cluster = Cluster::start(1, RaftSettings::default());
    cluster.wait_leader(ELECTION).await;
    let base = cluster.http_url(0);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let root = http.get(format!("{base}/")).send().await.expect("GET /");
    assert_eq!(root.status(), reqwest::StatusCode::FOUND);
    assert_eq!(root.headers()["location"], "/ui/");
    let index: Value = root.json().await.expect("the index in the body");
    assert_eq!(index["ui"], "/ui/");
    for file in [
        "",
        "app.js",
        "api.js",
        "jobs.js",
        "views.js",
        "app.css",
        "favicon.svg",
    ] {
        let response = http
            .get(format!("{base}/ui/{file}"))
            .send()
            .await
            .expect("asset");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{file}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .expect("ascii");
        assert!(csp.starts_with("default-src 'self'"), "{file}: {csp}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
    let missing = http
        .get(format!("{base}/ui/nope.js"))
        .send()
        .await
        .expect("missing asset");
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    // Bound to loopback, a node answers only for loopback names: a page
    // whose DNS name was rebound to 127.0.0.1 gets nothing.
    let port = cluster.nodes[0].http.rsplit(':').next().expect("port");
    let rebound = http
        .get(format!("{base}/v1/jobs"))
        .header("host", format!("evil.example:{port}"))
        .send()
        .await
        .expect("rebound request");
    assert_eq!(rebound.status(), reqwest::StatusCode::MISDIRECTED_REQUEST);
    let problem: Value = rebound.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("DNS rebinding"),
        "{problem}"
    );
    let by_name = http
        .get(format!("{base}/v1/jobs"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .expect("request by name");
    assert_eq!(by_name.status(), reqwest::StatusCode::OK);
    assert_eq!(by_name.headers()["x-content-type-options"], "nosniff");
    assert_eq!(by_name.headers()["x-frame-options"], "DENY");

    // The form's errors name their field.
    let bad = http
        .post(format!("{base}/v1/jobs"))
        .json(&serde_json::json!({ "command": "true", "priority": 5000 }))
        .send()
        .await
        .expect("submit");
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);
    let problem: Value = bad.json().await.expect("problem");
    assert_eq!(problem["field"], "priority", "{problem}");
}
