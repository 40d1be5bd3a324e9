// The job views: the list (server-side filters, cursor paging, rows that
// change live), one job (spec, attempts, live output with follow/pause,
// line filter and download, stop, submit again) and the submit form.

import { get, post, query, stream, ApiError } from "./api.js";
import { el, fill, badge, clock, duration, commandOf, num } from "./views.js";

const ACTIVE = ["QUEUED", "ASSIGNED", "RUNNING"];
const STATES = ["QUEUED", "ASSIGNED", "RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "LOST"];
const PAGE_SIZE = 50;

const isActive = (state) => ACTIVE.includes(state);

function lastAttempt(job) {
  return job.attempts && job.attempts.length ? job.attempts[job.attempts.length - 1] : null;
}

function exitOf(attempt) {
  if (!attempt || !attempt.reason) return "";
  if (attempt.reason === "EXIT_CODE") return String(attempt.exit_code);
  if (attempt.reason === "SIGNAL") return `signal ${attempt.signal}`;
  return attempt.reason;
}

function runTime(job) {
  const a = lastAttempt(job);
  if (!a || !a.started_at_ms) return "";
  return duration((a.finished_at_ms || Date.now()) - a.started_at_ms);
}

// ---- the list ----------------------------------------------------------

/** `#/jobs?state=…&owner=…&label=…&node=…`: one page, kept live. */
export function jobsView(main, ctx, params) {
  const filters = {
    state: params.get("state") || "",
    owner: params.get("owner") || "",
    label: params.get("label") || "",
    node: params.get("node") || "",
  };
  const tokens = (params.get("pages") || "").split("~").filter(Boolean); // cursors of earlier pages
  const pageToken = params.get("page") || "";
  const rows = new Map(); // job id -> { tr, job }
  const tbody = el("tbody");
  const status = el("p", { class: "muted", "aria-live": "polite" });
  const pager = el("div", { class: "pager" });
  const counts = el("div", { class: "grid", id: "job-counts" });
  let stopEvents = () => {};

  const stateSelect = el("select", { name: "state", "aria-label": "State" },
    el("option", { value: "" }, "any state"),
    el("option", { value: ACTIVE.join(",") }, "active"),
    STATES.map((s) => el("option", { value: s }, s)));
  stateSelect.value = filters.state;
  const input = (name, label, placeholder) =>
    el("label", {}, label, el("input", { name, value: filters[name], placeholder, size: 14 }));
  const form = el("form", { class: "toolbar", role: "search", onsubmit: (e) => {
    e.preventDefault();
    const data = new FormData(form);
    ctx.go(`#/jobs${query(Object.fromEntries(data.entries()))}`);
  } },
  el("label", {}, "State", stateSelect),
  input("owner", "Owner (accessor)", "any"),
  input("label", "Labels", "team=a,env=prod"),
  input("node", "Node", "any"),
  el("button", { type: "submit", class: "primary" }, "Filter"),
  el("button", { type: "button", onclick: () => ctx.go("#/jobs") }, "Clear"));

  fill(main,
    el("h1", {}, "Jobs"),
    counts,
    el("h2", {}, "Newest first"),
    form,
    el("div", { class: "table-wrap" }, el("table", { id: "jobs-table" },
      el("thead", {}, el("tr", {},
        ["Job", "State", "Command", "Node", "Attempt", "Exit", "Submitted", "Run time"].map((h, i) =>
          el("th", { scope: "col", class: i === 6 || i === 7 ? "hide-narrow" : "" }, h)))),
      tbody)),
    pager, status);

  // Jobs in each state, pushed with the cluster; each card filters by it.
  const showCounts = (cluster) => {
    const j = cluster && cluster.status.jobs;
    if (!j) return;
    const by = j.by_state || {};
    fill(counts, STATES.map((state) => el("a", {
      class: "card", href: `#/jobs${query({ state })}`, dataset: { countState: state },
      "aria-label": `${by[state] || 0} jobs ${state}, show them`,
    }, el("div", { class: "label" }, state), el("div", { class: "value" }, num(by[state] || 0)))),
    el("div", { class: "card" }, el("div", { class: "label" }, "In the table"), el("div", { class: "value" }, num(j.total))));
  };
  showCounts(ctx.cluster());
  const unwatch = ctx.onCluster(showCounts);

  const render = (tr, job) => {
    const a = lastAttempt(job);
    tr.dataset.state = job.state;
    fill(tr,
      el("td", { class: "mono" }, el("a", { href: `#/jobs/${job.id}`, title: job.id }, job.id.slice(0, 10))),
      el("td", { class: "state" }, badge(job.state)),
      el("td", { class: "cmd", title: commandOf(job) }, commandOf(job)),
      el("td", {}, a ? String(a.node) : ""),
      el("td", {}, a ? `${a.number}/${job.retry.max_attempts || 1}` : ""),
      el("td", {}, exitOf(a)),
      el("td", { class: "hide-narrow" }, clock(job.submitted_at_ms)),
      el("td", { class: "hide-narrow" }, runTime(job)));
  };
  const add = (job, first) => {
    const tr = el("tr", { dataset: { jobId: job.id } });
    render(tr, job);
    rows.set(job.id, { tr, job, text: JSON.stringify(job) });
    if (first) tbody.prepend(tr); else tbody.append(tr);
  };

  // Events arrive in bursts. They are applied once per frame, each to its
  // own row: the state badge at once, the rest from a re-read of the job.
  // A new job (or many changed ones) costs a re-read of the first page,
  // merged row by row: a row is redrawn only when its job changed, so a
  // burst never re-renders the table.
  const pending = new Map();
  let frame = 0;
  let left = false;
  const applyPending = () => {
    frame = 0;
    const changed = [];
    let created = false;
    for (const [id, event] of pending) {
      const row = rows.get(id);
      if (event.kind === "DELETED") {
        if (row) { row.tr.remove(); rows.delete(id); }
        continue;
      }
      if (row) {
        row.job.state = event.state;
        row.tr.dataset.state = event.state;
        fill(row.tr.querySelector(".state"), badge(event.state));
        if (event.node) row.tr.children[3].textContent = String(event.node);
        changed.push(id);
      } else if (event.kind === "CREATED") {
        created = true;
      }
    }
    pending.clear();
    if (!pageToken && (created || changed.length > 5)) {
      refreshPage();
      return;
    }
    for (const id of changed) {
      get(`/v1/jobs/${id}`).then((job) => {
        const row = rows.get(id);
        if (row) update(row, job);
      }).catch(() => {});
    }
  };
  const update = (row, job) => {
    const text = JSON.stringify(job);
    if (row.text === text) return;
    row.text = text;
    row.job = job;
    render(row.tr, job);
  };
  // One page read in flight at a time; events that arrive meanwhile ask
  // for exactly one more once it is done.
  let reading = false;
  let readAgain = false;
  const refreshPage = async () => {
    if (reading) { readAgain = true; return; }
    reading = true;
    do {
      readAgain = false;
      try {
        const page = await get(`/v1/jobs${query({ newest_first: true, page_size: PAGE_SIZE, ...filters })}`);
        merge(page.jobs);
      } catch { /* the next event or reconnect tries again */ }
    } while (readAgain && !left);
    reading = false;
  };
  const merge = (jobs) => {
    const keep = new Set(jobs.map((j) => j.id));
    for (const [id, row] of rows) {
      if (!keep.has(id)) { row.tr.remove(); rows.delete(id); }
    }
    let before = tbody.firstElementChild;
    for (const job of jobs) {
      let row = rows.get(job.id);
      if (row) update(row, job);
      else {
        add(job, false);
        row = rows.get(job.id);
      }
      if (row.tr !== before) tbody.insertBefore(row.tr, before);
      else before = before.nextElementSibling;
    }
    const empty = tbody.querySelector("td.empty");
    if (empty && rows.size) empty.parentElement.remove();
  };

  const load = async () => {
    status.textContent = "Loading…";
    try {
      const page = await get(`/v1/jobs${query({
        newest_first: true, page_size: PAGE_SIZE, page_token: pageToken, ...filters,
      })}`);
      tbody.replaceChildren();
      rows.clear();
      page.jobs.forEach((job) => add(job, false));
      // For the browser bench: when the first page was on screen.
      performance.mark("drover:jobs-first-page");
      status.textContent = "";
      if (!page.jobs.length) tbody.append(el("tr", {}, el("td", { colspan: 8, class: "empty" },
        filters.state || filters.owner || filters.label || filters.node ? "No job matches these filters."
          : "No jobs yet. Submit one from the Submit view or with `drover job run`.")));
      const base = { ...filters };
      fill(pager,
        tokens.length || pageToken ? el("a", { href: `#/jobs${query(base)}` }, "« Newest") : null,
        pageToken ? el("a", { href: `#/jobs${query({ ...base, page: tokens[tokens.length - 1] || "", pages: tokens.slice(0, -1).join("~") })}` }, "‹ Newer") : null,
        page.next_page_token ? el("a", { href: `#/jobs${query({ ...base, page: page.next_page_token, pages: [...tokens, pageToken].filter(Boolean).join("~") })}`, rel: "next" }, "Older ›") : null,
        el("span", {}, `read at log index ${num(page.index)}`));
      stopEvents();
      stopEvents = stream(`/v1/events${query({ from_index: page.index })}`, {
        onEvent: (name, event) => {
          if (name !== "job") return;
          pending.set(event.job_id, event);
          if (!frame) frame = requestAnimationFrame(applyPending);
        },
        onError: (error) => {
          // 410: the node no longer holds the events after our index.
          if (error.status === 410) load();
        },
        onState: (state, detail) => ctx.streamState("jobs", state, detail),
      });
    } catch (e) {
      status.textContent = "";
      fill(tbody, el("tr", {}, el("td", { colspan: 8, class: "error" }, e.message)));
    }
  };
  load();
  return () => {
    stopEvents();
    unwatch();
    if (frame) cancelAnimationFrame(frame);
    left = true;
  };
}

// ---- one job -------------------------------------------------------------

/** `#/jobs/ID`: the spec, every attempt, the live output. */
export function jobView(main, ctx, id) {
  const header = el("div");
  const spec = el("dl", { class: "spec" });
  const attempts = el("tbody");
  const outputBox = el("pre", { class: "output", id: "output", tabindex: 0, "aria-label": "Output", "aria-live": "off" });
  const outputNote = el("span", { class: "muted", id: "output-state" });
  const filter = el("input", { type: "search", id: "output-filter", placeholder: "filter lines (text or /regex/)", "aria-label": "Filter output lines", size: 30 });
  const follow = el("button", { type: "button", id: "output-follow", "aria-pressed": "true" }, "Pause");
  const download = el("button", { type: "button", id: "output-download" }, "Download");
  const attemptSelect = el("select", { id: "output-attempt", "aria-label": "Attempt" });
  let job = null;
  let shownAttempt = 0;
  let stopOutput = () => {};
  let following = true;
  let held = []; // lines that arrived while paused
  let partial = null; // the unfinished last line
  let matcher = () => true;

  fill(main, header,
    el("h2", {}, "Spec"), spec,
    el("h2", {}, "Attempts"),
    el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, el("tr", {},
      ["#", "Node", "Assigned", "Started", "Ended", "Duration", "Exit", "Reason", "Message"].map((h) => el("th", { scope: "col" }, h)))), attempts)),
    el("h2", {}, "Output"),
    el("div", { class: "toolbar" }, el("label", {}, "Attempt", attemptSelect), filter, follow, download, outputNote),
    outputBox);

  const lineNode = (text, stream) => {
    const node = el("span", { class: `line ${stream}` }, text + "\n");
    if (!matcher(text)) node.classList.add("hidden");
    return node;
  };
  const showLines = (lines) => {
    const atBottom = outputBox.scrollHeight - outputBox.scrollTop - outputBox.clientHeight < 40;
    const fragment = document.createDocumentFragment();
    lines.forEach(([text, s]) => fragment.append(lineNode(text, s)));
    if (partial && partial.node) partial.node.before(fragment); else outputBox.append(fragment);
    if (following && atBottom) outputBox.scrollTop = outputBox.scrollHeight;
  };
  const addText = (text, s) => {
    const pieces = ((partial ? partial.text : "") + text).split("\n");
    const rest = pieces.pop();
    if (partial && partial.node) partial.node.remove();
    const lines = pieces.map((p) => [p, s]);
    if (following) showLines(lines); else held.push(...lines);
    partial = rest ? { text: rest, node: following ? lineNode(rest, s) : null } : null;
    if (partial && partial.node) {
      partial.node.textContent = rest; // no newline yet
      outputBox.append(partial.node);
    }
  };

  filter.addEventListener("input", () => {
    const f = filter.value;
    let test = (line) => line.includes(f);
    const re = /^\/(.+)\/([a-z]*)$/.exec(f);
    if (re) {
      try { const r = new RegExp(re[1], re[2]); test = (line) => r.test(line); } catch { /* typing */ }
    }
    matcher = f ? test : () => true;
    for (const node of outputBox.children) {
      node.classList.toggle("hidden", !matcher(node.textContent.replace(/\n$/, "")));
    }
  });
  follow.addEventListener("click", () => {
    following = !following;
    follow.textContent = following ? "Pause" : "Follow";
    follow.setAttribute("aria-pressed", String(following));
    if (following) {
      showLines(held);
      held = [];
      outputBox.scrollTop = outputBox.scrollHeight;
    }
  });
  download.addEventListener("click", () => downloadOutput(id, shownAttempt, outputNote));
  let pickedLatest = true;
  attemptSelect.addEventListener("change", () => {
    const picked = Number(attemptSelect.value);
    pickedLatest = picked === (lastAttempt(job) || { number: 0 }).number;
    watchOutput(picked);
  });

  const watchOutput = (attempt) => {
    stopOutput();
    shownAttempt = attempt;
    outputBox.replaceChildren();
    held = [];
    partial = null;
    outputNote.textContent = "waiting for output…";
    stopOutput = stream(`/v1/jobs/${id}/output${query({ follow: true, attempt })}`, {
      onEvent: (name, data) => {
        if (name === "chunk") {
          if (!shownAttempt) shownAttempt = data.attempt;
          addText(data.text, data.stream);
          outputNote.textContent = "live";
        } else if (name === "end") {
          outputNote.textContent = `attempt ${data.attempt} ended`;
        }
      },
      onError: (e) => { outputNote.textContent = e.message; },
      onState: (state, detail) => {
        if (state === "retrying") outputNote.textContent = `reconnecting… (${detail})`;
      },
    });
  };

  const showJob = (fresh) => {
    const first = !job;
    job = fresh;
    const a = lastAttempt(job);
    const can = isActive(job.state) && ctx.can("stop", job);
    fill(header,
      el("h1", {}, "Job ", el("span", { class: "mono" }, job.id), " ", el("span", { id: "job-state", dataset: { state: job.state } }, badge(job.state))),
      el("div", { class: "actions" },
        can ? el("button", { type: "button", class: "danger", id: "job-stop", onclick: () => stopJob(job.id, header) }, "Stop") : null,
        ctx.can("submit") ? el("a", { href: `#/submit?from=${job.id}`, id: "job-again" }, el("button", { type: "button", tabindex: -1 }, "Submit again")) : null,
        el("a", { href: "#/jobs" }, "All jobs")),
      el("p", { class: "error", id: "job-error", role: "alert" }));
    const r = job.resources || {};
    const kv = (map) => Object.entries(map || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–";
    fill(spec, [
      ["Command", job.command !== null ? job.command : ""], ["Args", job.args.length ? JSON.stringify(job.args) : ""],
      ["Image", job.image || "(node default)"], ["Resources", `${r.cpu_millis} mCPU, ${r.memory_mib} MiB, ${r.pids} pids`],
      ["Timeout", job.timeout_ms ? duration(job.timeout_ms) : "none"],
      ["Retry", `${job.retry.max_attempts || 1} attempts, backoff ${duration(job.retry.initial_backoff_ms)}–${duration(job.retry.max_backoff_ms)}`],
      ["Priority", job.priority], ["Env", kv(job.env)], ["Labels", kv(job.labels)], ["Constraints", kv(job.constraints)],
      ["Network", job.network ? "yes" : "no"], ["Owner", job.owner || "–"], ["Idempotency key", job.idempotency_key || "–"],
      ["Submitted", clock(job.submitted_at_ms)], ["Finished", clock(job.finished_at_ms) || "–"],
    ].filter(([, v]) => v !== "").map(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
    fill(attempts, job.attempts.length ? job.attempts.map((t) => el("tr", {},
      el("td", {}, String(t.number)), el("td", {}, String(t.node)), el("td", {}, clock(t.assigned_at_ms)),
      el("td", {}, clock(t.started_at_ms)), el("td", {}, clock(t.finished_at_ms)),
      el("td", {}, t.started_at_ms ? duration((t.finished_at_ms || Date.now()) - t.started_at_ms) : ""),
      el("td", {}, t.reason === "EXIT_CODE" ? String(t.exit_code) : t.reason === "SIGNAL" ? `signal ${t.signal}` : ""),
      el("td", {}, t.reason ? badge(t.reason, t.reason === "EXIT_CODE" && t.exit_code === 0 ? "ok" : "bad") : badge("active", "info")),
      el("td", { class: "cmd", title: t.message }, t.message)))
      : el("tr", {}, el("td", { colspan: 9, class: "empty" }, "Not placed yet.")));
    const latest = a ? a.number : 0;
    if (attemptSelect.options.length !== Math.max(1, job.attempts.length)) {
      fill(attemptSelect, (job.attempts.length ? job.attempts : [{ number: 0 }]).map((t) =>
        el("option", { value: t.number }, t.number ? `attempt ${t.number}` : "latest")));
    }
    // Follow the newest attempt (a retry starts one) unless one was picked.
    if (first || (pickedLatest && latest !== shownAttempt && latest > 0)) {
      attemptSelect.value = String(latest);
      watchOutput(latest);
    } else {
      attemptSelect.value = String(shownAttempt);
    }
  };

  let shownText = "";
  const refresh = () => get(`/v1/jobs/${id}`).then((fresh) => {
    // Redrawn only when the job changed: controls stay put under the pointer.
    const text = JSON.stringify(fresh);
    if (text !== shownText) { shownText = text; showJob(fresh); }
  }).catch((e) => {
    if (!job) fill(main, el("h1", {}, "Job"), el("p", { class: "error" }, e.message), el("a", { href: "#/jobs" }, "All jobs"));
  });
  refresh();
  const stopEvents = stream(`/v1/events${query({ job_id: id })}`, {
    onEvent: (name) => { if (name === "job") refresh(); },
    onState: (state) => { if (state === "open") refresh(); },
  });
  return () => { stopEvents(); stopOutput(); };
}

async function stopJob(id, header) {
  const error = header.querySelector("#job-error");
  try {
    await post(`/v1/jobs/${id}/stop`, {});
  } catch (e) {
    if (error) error.textContent = e.message;
  }
}

/** Reads every stored chunk of one attempt and saves it as a file. */
async function downloadOutput(id, attempt, note) {
  const parts = [];
  let after = undefined;
  try {
    for (let pages = 0; pages < 100000; pages++) {
      const page = await get(`/v1/jobs/${id}/output${query({ attempt, after_seq: after })}`);
      if (!page.chunks.length) break;
      for (const c of page.chunks) {
        const bytes = Uint8Array.from(atob(c.data_base64), (ch) => ch.charCodeAt(0));
        parts.push(bytes);
        after = c.seq;
      }
    }
  } catch (e) {
    note.textContent = `download failed: ${e.message}`;
    return;
  }
  const blob = new Blob(parts, { type: "text/plain" });
  const a = el("a", { href: URL.createObjectURL(blob), download: `${id}${attempt ? `-attempt-${attempt}` : ""}.log` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---- submit --------------------------------------------------------------

const FIELDS = [
  // [input name, label, problem field, kind]
  ["command", "Command (run by /bin/sh -c)", "command", "textarea"],
  ["args", "Or arguments, one per line (no shell)", "args", "textarea"],
  ["image", "Image (empty: the node's default)", "image", "text"],
  ["cpu_millis", "CPU (milli-cores)", "resources.cpu_millis", "number"],
  ["memory_mib", "Memory (MiB)", "resources.memory_mib", "number"],
  ["pids", "Processes (pids limit)", "resources.pids", "number"],
  ["timeout_s", "Timeout (seconds, 0 = none)", "timeout", "number"],
  ["max_attempts", "Attempts (retries + 1)", "retry.max_attempts", "number"],
  ["initial_backoff_ms", "First retry after (ms)", "retry", "number"],
  ["max_backoff_ms", "Longest backoff (ms)", "retry", "number"],
  ["priority", "Priority (-1000…1000)", "priority", "number"],
  ["env", "Environment, KEY=VALUE per line", "env", "textarea"],
  ["labels", "Labels, key=value per line", "labels", "textarea"],
  ["constraints", "Node constraints, key=value per line", "constraints", "textarea"],
  ["idempotency_key", "Idempotency key", "idempotency_key", "text"],
];

function parseMap(text, what) {
  const map = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new FieldError(what, `"${line}" is not KEY=VALUE`);
    map[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return map;
}

class FieldError extends Error {
  constructor(field, message) { super(message); this.field = field; }
}

/** `#/submit[?from=ID]`: the form, pre-filled from job ID. */
export function submitView(main, ctx, params) {
  const inputs = {};
  const errors = {};
  const general = el("p", { class: "error", role: "alert", id: "submit-error" });
  const network = el("input", { type: "checkbox", name: "network", id: "f-network" });
  const form = el("form", { class: "form", id: "submit-form", novalidate: true },
    FIELDS.map(([name, label, , kind]) => {
      const id = `f-${name}`;
      const input = kind === "textarea"
        ? el("textarea", { id, name, rows: name === "command" ? 3 : 2, spellcheck: "false" })
        : el("input", { id, name, type: kind, inputmode: kind === "number" ? "numeric" : undefined, autocomplete: "off" });
      const error = el("span", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
      input.setAttribute("aria-describedby", error.id);
      inputs[name] = input;
      errors[name] = error;
      const wide = name === "command" || name === "args";
      return el("label", { for: id, class: wide ? "wide" : undefined }, label, input, error);
    }),
    el("label", { for: "f-network" }, "Network", el("span", {}, network, " give the container a network")),
    el("div", { class: "wide actions" }, el("button", { type: "submit", class: "primary", id: "submit-button" }, "Submit job"), general));
  // The API's defaults, shown; an empty field sends 0, which means the default.
  const defaults = { cpu_millis: 100, memory_mib: 128, pids: 256, timeout_s: 0, max_attempts: 1, priority: 0 };
  for (const [k, v] of Object.entries(defaults)) inputs[k].value = v;
  inputs.initial_backoff_ms.placeholder = "default";
  inputs.max_backoff_ms.placeholder = "default";
  fill(main, el("h1", {}, "Submit a job"), form);

  const from = params.get("from");
  if (from) {
    get(`/v1/jobs/${from}`).then((job) => {
      const text = (map) => Object.entries(map || {}).map(([k, v]) => `${k}=${v}`).join("\n");
      inputs.command.value = job.command !== null ? job.command : "";
      inputs.args.value = job.command === null ? job.args.join("\n") : "";
      inputs.image.value = job.image || "";
      inputs.cpu_millis.value = job.resources.cpu_millis;
      inputs.memory_mib.value = job.resources.memory_mib;
      inputs.pids.value = job.resources.pids;
      inputs.timeout_s.value = job.timeout_ms / 1000;
      inputs.max_attempts.value = job.retry.max_attempts || 1;
      inputs.initial_backoff_ms.value = job.retry.initial_backoff_ms;
      inputs.max_backoff_ms.value = job.retry.max_backoff_ms;
      inputs.priority.value = job.priority;
      inputs.env.value = text(job.env);
      inputs.labels.value = text(job.labels);
      inputs.constraints.value = text(job.constraints);
      network.checked = job.network;
    }).catch((e) => { general.textContent = `cannot pre-fill from ${from}: ${e.message}`; });
  }

  const clearErrors = () => {
    general.textContent = "";
    for (const [name, node] of Object.entries(errors)) {
      node.textContent = "";
      inputs[name].classList.remove("invalid");
      inputs[name].removeAttribute("aria-invalid");
    }
  };
  const markField = (problemField, message) => {
    const names = FIELDS.filter(([, , f]) => f === problemField || problemField.startsWith(`${f}.`)).map(([n]) => n);
    if (!names.length) { general.textContent = message; return; }
    names.forEach((name) => {
      errors[name].textContent = message;
      inputs[name].classList.add("invalid");
      inputs[name].setAttribute("aria-invalid", "true");
    });
    inputs[names[0]].focus();
  };

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors();
    const n = (name) => Number(inputs[name].value || 0);
    let body;
    try {
      const args = inputs.args.value.split("\n").filter((l) => l !== "");
      const command = inputs.command.value;
      body = {
        ...(command.trim() || !args.length ? { command } : { args }),
        image: inputs.image.value.trim() || undefined,
        resources: { cpu_millis: n("cpu_millis"), memory_mib: n("memory_mib"), pids: n("pids") },
        timeout_ms: Math.round(n("timeout_s") * 1000),
        retry: { max_attempts: n("max_attempts"), initial_backoff_ms: n("initial_backoff_ms"), max_backoff_ms: n("max_backoff_ms") },
        priority: n("priority"),
        env: parseMap(inputs.env.value, "env"),
        labels: parseMap(inputs.labels.value, "labels"),
        constraints: parseMap(inputs.constraints.value, "constraints"),
        idempotency_key: inputs.idempotency_key.value.trim() || undefined,
        network: network.checked,
      };
    } catch (err) {
      if (err instanceof FieldError) { markField(err.field, err.message); return; }
      throw err;
    }
    const button = form.querySelector("#submit-button");
    button.disabled = true;
    try {
      const job = await post("/v1/jobs", body);
      ctx.go(`#/jobs/${job.id}`);
    } catch (err) {
      if (err instanceof ApiError && err.problem.field) markField(err.problem.field, err.message);
      else general.textContent = err.message;
    } finally {
      button.disabled = false;
    }
  });
  return () => {};
}
