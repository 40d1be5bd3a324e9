// The dashboard: sign-in, the router (#/overview, #/jobs, #/jobs/ID,
// #/submit, #/nodes), the overview and the nodes view. The cluster comes
// pushed by /v1/cluster/events; each view subscribes to it.

import { get, post, stream, setToken, token, onRefusal, ApiError } from "./api.js";
import { el, fill, badge, ago, clock, num, Chart } from "./views.js";
import { jobsView, jobView, submitView } from "./jobs.js";

/** A member not heard from for this long (leader's view) counts as down. */
const DOWN_AFTER_MS = 5000;
/** A member this many entries behind the leader's commit index is lagging. */
const LAGGING_ENTRIES = 100;

// What the Content-Security-Policy refused, for a look in the console (and
// the tests): the page must never need anything from another origin.
window.droverCspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => window.droverCspViolations.push(e.blockedURI));

const main = document.getElementById("main");
const banner = document.getElementById("banner");
const who = document.getElementById("who");
const signin = document.getElementById("signin");

const state = {
  me: null, // the token's { accessor, name, role }
  cluster: null, // the latest `cluster` event
  clusterListeners: new Set(),
  streams: {}, // name -> "open" | "retrying" | "ended"
  stopCluster: () => {},
  leave: () => {},
};

// What each role may do (the API checks again; this only hides controls).
const ABILITIES = {
  admin: ["submit", "stop", "drain"],
  operator: ["submit", "stop", "drain"],
  submitter: ["submit", "stop-own"],
  viewer: [],
};

const ctx = {
  go: (hash) => { if (location.hash === hash) route(); else location.hash = hash; },
  cluster: () => state.cluster,
  onCluster: (fn) => { state.clusterListeners.add(fn); return () => state.clusterListeners.delete(fn); },
  can: (action, job) => {
    const abilities = ABILITIES[state.me ? state.me.role : "viewer"] || [];
    if (action === "stop" && abilities.includes("stop-own")) return !!job && job.owner === state.me.accessor;
    return abilities.includes(action);
  },
  streamState: (name, s, detail) => { state.streams[name] = { s, detail }; showBanner(); },
};

// ---- sign-in -------------------------------------------------------------

function askToken(message) {
  state.stopCluster();
  document.getElementById("signin-error").textContent = message || "";
  if (!signin.open) signin.showModal();
  document.getElementById("signin-token").focus();
}

document.getElementById("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = document.getElementById("signin-token");
  setToken(input.value.trim());
  try {
    await start();
    input.value = "";
    signin.close();
  } catch (err) {
    setToken("");
    document.getElementById("signin-error").textContent =
      err.signIn ? "That token was not accepted (unknown, revoked or mistyped)." : err.message;
  }
});
signin.addEventListener("cancel", (e) => e.preventDefault()); // nothing to show without a token

onRefusal((error) => {
  if (error.signIn) askToken(token() ? "Your token is no longer accepted; sign in again." : "");
  else showMessage(`Not allowed: ${error.message}`);
});

function showMessage(text) {
  const note = el("p", { class: "banner bad", role: "alert" }, text);
  main.prepend(note);
  setTimeout(() => note.remove(), 8000);
}

async function start() {
  state.me = await get("/v1/acl/token/self");
  fill(who,
    el("span", { id: "who-role" }, `${state.me.name} (${state.me.role})`),
    token() ? el("button", { type: "button", id: "sign-out", onclick: () => { setToken(""); location.reload(); } }, "Sign out") : null);
  document.querySelectorAll("[data-needs]").forEach((a) => { a.hidden = !ctx.can(a.dataset.needs); });
  followCluster();
  route();
}

// ---- the cluster stream and the banner -------------------------------------

function followCluster() {
  state.stopCluster();
  state.stopCluster = stream("/v1/cluster/events", {
    onEvent: (name, data) => {
      if (name !== "cluster") return;
      state.cluster = data;
      showBanner();
      state.clusterListeners.forEach((fn) => fn(data));
    },
    onState: (s, detail) => ctx.streamState("cluster", s, detail),
  });
}

function showBanner() {
  const lost = Object.entries(state.streams).find(([, v]) => v.s === "retrying");
  const c = state.cluster;
  let text = "";
  if (lost) text = `Lost the connection to this node (${lost[1].detail}); reconnecting…`;
  else if (c && !c.status.leader_id) text = "No leader: writes (submit, stop, drain) are paused until one is elected; reads keep working.";
  banner.hidden = !text;
  banner.textContent = text;
  banner.className = lost ? "banner bad" : "banner";
}

// ---- the router ------------------------------------------------------------

function route() {
  state.leave();
  const [path, search] = (location.hash.slice(1) || "/overview").split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  const view = parts[0] || "overview";
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  let leave;
  if (view === "jobs" && parts[1]) leave = jobView(main, ctx, parts[1]);
  else if (view === "jobs") leave = jobsView(main, ctx, params);
  else if (view === "submit") leave = ctx.can("submit") ? submitView(main, ctx, params) : denied("submit jobs");
  else if (view === "nodes") leave = nodesView();
  else leave = overview();
  state.leave = leave || (() => {});
  document.title = `Drover · ${view}`;
}
window.addEventListener("hashchange", route);
// Leaving the page (a reload, another site, the back-forward cache) ends
// its streams at once: over plain HTTP a browser keeps at most six
// connections to a node, and a frozen page must not hold any of them.
window.addEventListener("pagehide", () => {
  state.leave();
  state.leave = () => {};
  state.stopCluster();
});
window.addEventListener("pageshow", (e) => { if (e.persisted) { followCluster(); route(); } });

function denied(what) {
  fill(main, el("h1", {}, "Not allowed"), el("p", {}, `Your token's role (${state.me.role}) may not ${what}.`));
  return () => {};
}

// ---- overview -------------------------------------------------------------

const charts = {
  writes: new Chart("Writes/s (commit index)", [{ name: "writes/s", color: "--accent" }]),
  jobs: new Chart("Jobs by phase", [
    { name: "queued", color: "--muted" }, { name: "active", color: "--info" }, { name: "finished", color: "--ok" }]),
  queue: new Chart("Queue depth", [{ name: "queued", color: "--warn" }]),
};
let lastSample = null;
function sample(c) {
  const now = Date.now();
  const s = c.status;
  if (lastSample && now > lastSample.at) {
    const rate = Math.max(0, s.commit_index - lastSample.commit) / ((now - lastSample.at) / 1000);
    charts.writes.push([rate]);
  }
  lastSample = { at: now, commit: s.commit_index };
  charts.jobs.push([s.jobs.queued, s.jobs.active, s.jobs.finished]);
  charts.queue.push([s.jobs.queued]);
}
// Charts keep sampling whichever view is shown.
ctx.onCluster(sample);

function memberClass(m, c) {
  if (!c.leader_view || m.is_leader) return "";
  if (m.last_contact_ms === null || m.last_contact_ms > DOWN_AFTER_MS) return "down";
  if (m.match_index !== null && c.status.commit_index - m.match_index > LAGGING_ENTRIES) return "lagging";
  return "";
}

function overview() {
  const cards = el("div", { class: "grid", id: "overview-cards" });
  const members = el("tbody", { id: "members" });
  const nodes = el("tbody", { id: "overview-nodes" });
  const note = el("p", { class: "muted", id: "view-note" });
  fill(main, el("h1", {}, "Overview"), cards,
    el("div", { class: "charts" }, Object.values(charts).map((c) => c.node)),
    el("h2", {}, "Raft members"), note,
    el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, el("tr", {},
      ["Node", "Role", "Suffrage", "Match index", "Lag", "Last contact", "API", "Disk"].map((h) => el("th", { scope: "col" }, h)))), members)),
    el("h2", {}, "Nodes"), nodesTable(nodes));
  const show = (c) => {
    if (!c) return;
    const s = c.status;
    const card = (label, value, id) => el("div", { class: "card" }, el("div", { class: "label" }, label),
      el("div", { class: "value", id }, value));
    fill(cards,
      card("Leader", s.leader_id ? `node ${s.leader_id}` : "none", "leader"),
      card("Term", num(s.term), "term"),
      card("Commit index", num(s.commit_index), "commit"),
      card("Applied index", num(s.applied_index), "applied"),
      card("Queued", num(s.jobs.queued), "queued"),
      card("Active", num(s.jobs.active), "active"),
      card("Finished", num(s.jobs.finished), "finished"));
    note.textContent = c.leader_view
      ? `As the leader (node ${s.node_id}) sees it.`
      : `No leader answered: node ${s.node_id}'s own view (replication progress unknown).`;
    fill(members, s.members.map((m) => {
      const cls = memberClass(m, c);
      const lag = m.match_index === null ? "unknown" : num(Math.max(0, s.commit_index - m.match_index));
      return el("tr", { class: cls, dataset: { member: m.id, health: cls || "ok" } },
        el("td", {}, `node ${m.id}`),
        el("td", {}, m.is_leader ? badge("leader") : cls === "down" ? badge("DOWN") : "follower"),
        el("td", {}, m.suffrage),
        el("td", {}, m.match_index === null ? "unknown" : num(m.match_index)),
        el("td", {}, cls === "lagging" ? badge(lag, "warn") : lag),
        el("td", {}, m.is_leader && c.leader_view ? "–" : ago(m.last_contact_ms)),
        el("td", { class: "mono" }, m.api_addr),
        el("td", {}, m.disk_low ? badge("low", "bad") : "ok"));
    }));
    fillNodes(nodes, c.nodes, false);
  };
  show(state.cluster);
  return ctx.onCluster(show);
}

// ---- nodes ------------------------------------------------------------------

function nodesTable(tbody) {
  return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, el("tr", {},
    ["Node", "Status", "CPU (used / offered)", "Memory MiB", "Running", "Drain", "Labels", ""].map((h) => el("th", { scope: "col" }, h)))), tbody));
}

function fillNodes(tbody, nodes, controls) {
  if (!nodes.length) {
    fill(tbody, el("tr", {}, el("td", { colspan: 8, class: "empty" },
      "No node runs jobs: a node joins this table once its executor is on (executor.enabled).")));
    return;
  }
  fill(tbody, nodes.map((n) => el("tr", { class: n.status === "DOWN" ? "down" : "", dataset: { node: n.id } },
    el("td", {}, `node ${n.id}`),
    el("td", {}, badge(n.status)),
    el("td", {}, `${num(n.used_cpu_millis)} / ${num(n.cpu_millis)} m`),
    el("td", {}, `${num(n.used_memory_mib)} / ${num(n.memory_mib)}`),
    el("td", {}, String(n.active_jobs)),
    el("td", {}, n.draining ? badge(n.drain_deadline_ms ? `draining until ${clock(n.drain_deadline_ms)}` : "draining", "draining") : "–"),
    el("td", { class: "mono" }, Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(" ")),
    el("td", {}, controls && ctx.can("drain") ? drainControls(n) : null))));
}

function drainControls(n) {
  const error = el("span", { class: "error" });
  const act = async (body) => {
    error.textContent = "";
    try {
      await post(`/v1/nodes/${n.id}/drain`, body);
    } catch (e) {
      error.textContent = e.message;
    }
  };
  if (n.draining) return el("span", {}, el("button", { type: "button", class: "undrain", onclick: () => act({ disable: true }) }, "Undrain"), error);
  const deadline = el("input", { type: "number", min: 0, value: 300, size: 5, "aria-label": `Drain deadline of node ${n.id} (seconds)` });
  return el("span", {},
    el("button", { type: "button", class: "drain", onclick: () => act({ deadline_ms: Math.round(Number(deadline.value || 0) * 1000) }) }, "Drain"),
    " deadline ", deadline, " s ", error);
}

function nodesView() {
  const tbody = el("tbody", { id: "nodes" });
  fill(main, el("h1", {}, "Nodes"),
    el("p", { class: "muted" }, "Draining stops new work on a node; at the deadline its running jobs are stopped and queued again. 0 = wait for them."),
    nodesTable(tbody));
  let shown = "";
  const show = (c) => {
    if (!c) return;
    // Redraw only on a change: an open deadline field keeps its value.
    const text = JSON.stringify(c.nodes);
    if (text === shown) return;
    shown = text;
    fillNodes(tbody, c.nodes, true);
  };
  show(state.cluster);
  return ctx.onCluster(show);
}

// ---- go ------------------------------------------------------------------------

start().catch((e) => {
  if (e instanceof ApiError && e.signIn) askToken();
  else fill(main, el("h1", {}, "Cannot load"), el("p", { class: "error" }, e.message));
});

