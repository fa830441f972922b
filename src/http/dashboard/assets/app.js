// HemoStat dashboard: plain JS, no framework, nothing from another origin.
// Every text that comes from a container is set with textContent (see el()), never as markup.
"use strict";

const MAX_ENVELOPES = 500;
const REFRESH_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  containers: [],
  usage: {},
  policies: [],
  reload: {},
  silences: [],
  envelopes: [],
  seen: new Set(),
  audit: [],
  boot: null,
  source: null,
  retryMs: 1000,
};

// el("div", {class: "x"}, "text", child): strings become text nodes, never HTML.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function replace(id, ...children) {
  const node = document.getElementById(id);
  if (node) node.replaceChildren(...children.flat());
}

function pct(v) {
  return v === null || v === undefined ? "–" : v.toFixed(1) + " %";
}

function time(ts) {
  // Wire timestamps are UTC without a zone.
  const d = new Date(ts.endsWith("Z") ? ts : ts + "Z");
  return isNaN(d) ? ts : d.toLocaleTimeString();
}

function ago(iso) {
  if (!iso) return "–";
  const s = Math.round((Date.now() - new Date(iso)) / 1000);
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function link(name) {
  return el("a", { href: "#/container/" + encodeURIComponent(name), class: "cname" }, name);
}

function sparkline(values, cls) {
  const w = 80, h = 20;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("class", "spark " + cls);
  svg.setAttribute("aria-hidden", "true");
  if (values && values.length > 1) {
    const step = w / (values.length - 1);
    const pts = values.map((v, i) => {
      const y = h - (Math.max(0, Math.min(100, v)) / 100) * (h - 2) - 1;
      return (i * step).toFixed(1) + "," + y.toFixed(1);
    });
    const line = document.createElementNS(SVG_NS, "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  }
  return svg;
}

async function getJSON(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (r.status === 401) {
    location.href = "/login";
    throw new Error("login needed");
  }
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

// ---- data ----

function envKey(e) {
  const d = e.data || {};
  return [e.timestamp, e.type, d.container, d.decision_id, d.result && d.result.status].join("|");
}

function addEnvelope(e) {
  const k = envKey(e);
  if (state.seen.has(k)) return false;
  state.seen.add(k);
  state.envelopes.push(e);
  if (state.envelopes.length > MAX_ENVELOPES) {
    const old = state.envelopes.shift();
    state.seen.delete(envKey(old));
  }
  return true;
}

async function loadContainers() {
  const [containers, usage, silences] = await Promise.all([
    getJSON("/api/v1/containers"),
    getJSON("/api/v1/usage"),
    // Silences live in the state store: when it cannot be read, the cards say nothing of them.
    getJSON("/api/v1/silences").catch(() => []),
  ]);
  state.containers = containers;
  state.usage = usage.containers;
  state.node = usage.node;
  state.silences = Array.isArray(silences) ? silences : [];
}

async function loadPolicies() {
  const [policies, reload] = await Promise.all([
    getJSON("/api/v1/policies"),
    getJSON("/api/v1/reload"),
  ]);
  state.policies = policies;
  state.reload = reload;
}

async function loadAll() {
  const [decisions] = await Promise.all([
    getJSON("/api/v1/decisions?limit=" + MAX_ENVELOPES),
    loadPolicies(),
    loadContainers(),
  ]);
  state.envelopes = [];
  state.seen = new Set();
  decisions.forEach(addEnvelope);
  render();
}

let refreshTimer = null;
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    try {
      await loadContainers();
      if (currentRoute().view === "container") await loadAudit();
      if (currentRoute().view === "policies") await loadPolicies();
      render();
    } catch (_) { /* shown by the connection state */ }
  }, 150);
}

// A burst of envelopes is drawn once (not with requestAnimationFrame: it stops in hidden tabs).
let timelineTimer = null;
function timelineSoon() {
  if (timelineTimer) return;
  timelineTimer = setTimeout(() => {
    timelineTimer = null;
    renderTimelines();
  }, 50);
}

async function loadAudit() {
  state.audit = await getJSON("/api/v1/audit?limit=1000");
}

// ---- live stream ----

function setConn(s, text) {
  const c = document.getElementById("conn");
  c.dataset.state = s;
  c.textContent = text;
}

function connect() {
  if (state.source) state.source.close();
  const es = new EventSource("/api/v1/events");
  state.source = es;
  es.addEventListener("hello", async (m) => {
    const { boot } = JSON.parse(m.data);
    state.retryMs = 1000;
    setConn("live", "live");
    // A new operator process, or the first connection: reload everything.
    if (boot !== state.boot) {
      state.boot = boot;
      try { await loadAll(); } catch (_) { /* retried on the next event */ }
    }
  });
  es.addEventListener("reset", () => loadAll().catch(() => {}));
  // A policy file was edited, broken or fixed, or the set in force changed.
  es.addEventListener("policies", () => loadPolicies().then(render).catch(() => {}));
  es.onmessage = (m) => {
    let e;
    try { e = JSON.parse(m.data); } catch (_) { return; }
    if (addEnvelope(e)) {
      timelineSoon();
      refreshSoon();
    }
  };
  es.onerror = () => {
    setConn("down", "reconnecting…");
    // The browser retries by itself while the stream is CONNECTING; once CLOSED (an answer
    // that is not a stream), start again with a growing delay.
    if (es.readyState === EventSource.CLOSED) {
      const wait = state.retryMs;
      state.retryMs = Math.min(state.retryMs * 2, 15000);
      setTimeout(connect, wait);
    }
  };
}

// ---- views ----

function currentRoute() {
  const h = location.hash.replace(/^#\/?/, "");
  if (h.startsWith("container/")) return { view: "container", name: decodeURIComponent(h.slice(10)) };
  if (h === "timeline") return { view: "timeline" };
  if (h === "policies") return { view: "policies" };
  return { view: "overview" };
}

function render() {
  const route = currentRoute();
  for (const v of ["overview", "timeline", "policies", "container"]) {
    document.getElementById("view-" + v).hidden = v !== route.view;
  }
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.view === route.view);
  }
  renderSummary();
  renderIssues();
  renderFleet();
  renderTimelines();
  renderPolicies();
  if (route.view === "container") renderContainer(route.name);
}

function renderSummary() {
  const cs = state.containers;
  const count = (f) => cs.filter(f).length;
  const item = (label, n, cls) => el("div", { class: "stat " + (cls || "") }, el("span", { class: "n" }, n), el("span", { class: "l" }, label));
  replace("summary",
    item("containers", cs.length),
    item("governed", count((c) => c.policy)),
    item("running", count((c) => c.state === "running"), "ok"),
    item("unhealthy", count((c) => c.health === "unhealthy"), count((c) => c.health === "unhealthy") ? "bad" : ""),
    item("breakers open", count((c) => c.safety && c.safety.breaker_open_until), count((c) => c.safety && c.safety.breaker_open_until) ? "bad" : ""),
    item("silenced", count((c) => silenceOf(c)), count((c) => silenceOf(c)) ? "warn" : ""),
    item("decisions", state.envelopes.length),
  );
}

// The newest envelope about each container.
function lastEnvelopes() {
  const last = new Map();
  for (const e of state.envelopes) {
    const name = (e.data || {}).container;
    if (name) last.set(name, e);
  }
  return last;
}

function issuesOf(c, last) {
  const out = [];
  if (!c.policy) return out;
  if (c.health === "unhealthy") out.push("unhealthy" + (c.unhealthy_since ? " since " + ago(c.unhealthy_since) : ""));
  if (c.state !== "running" && !c.manual_stop) out.push(c.state + (c.exit_code !== null && c.exit_code !== undefined ? " (exit " + c.exit_code + ")" : ""));
  if (c.oom_killed) out.push("OOM-killed");
  if (c.safety && c.safety.breaker_open_until) out.push("circuit breaker open until " + new Date(c.safety.breaker_open_until).toLocaleTimeString());
  // What HemoStat itself is doing about it, or could not do.
  const e = last.get(c.name);
  if (e) {
    const d = e.data || {};
    const r = d.result || {};
    if (e.type === "health_alert") out.push("alert: " + (d.issues || []).join("; "));
    else if (e.type === "remediation_needed") out.push((d.action || "acting") + " decided: " + (d.reason || ""));
    else if (e.type === "remediation_complete" && r.status && r.status !== "success")
      out.push(d.action + " " + r.status + (d.gate ? " (gate: " + d.gate + ")" : "") + ": " + (r.details || ""));
  }
  return out;
}

function renderIssues() {
  const items = [];
  const last = lastEnvelopes();
  for (const c of state.containers) {
    for (const i of issuesOf(c, last)) items.push(el("li", { class: "issue" }, link(c.name), " ", el("span", {}, i)));
  }
  if (!items.length) items.push(el("li", { class: "none" }, "No active issues."));
  replace("issues", items);
}

// A silence glob (`*`, `?`) as a whole-name pattern, as src/policy/select.rs matches it.
function globRegExp(glob) {
  const body = [...glob].map((ch) => ch === "*" ? "[\\s\\S]*" : ch === "?" ? "[\\s\\S]" : ch.replace(/[.+^${}()|[\]\\\/]/g, "\\$&")).join("");
  return new RegExp("^" + body + "$", "u");
}

// The active silence muting a container's notifications (as src/alert/silence.rs decides), or null.
function silenceOf(c) {
  const now = Date.now();
  return state.silences.find((s) =>
    new Date(s.starts_at) <= now && now < new Date(s.ends_at) &&
    (!s.container || globRegExp(s.container).test(c.name)) &&
    (!s.policy || s.policy === (c.policy || "")) &&
    (!s.node || s.node === state.node)) || null;
}

function silenceTitle(s) {
  return "notifications silenced until " + new Date(s.ends_at).toLocaleString() + " by " + s.created_by + ": " + s.comment + " (silence " + s.id + ")";
}

function badge(text, kind) {
  return el("span", { class: "badge " + (kind || text) }, text);
}

function cooldownText(c) {
  const s = c.safety || {};
  if (s.breaker_open_until) return "breaker open";
  if (s.last_action_at) return "last action " + ago(s.last_action_at);
  return "";
}

function card(c) {
  const u = state.usage[c.name] || { cpu: [], memory: [] };
  const silence = silenceOf(c);
  const silenced = silence ? el("span", { class: "badge silenced", title: silenceTitle(silence), "data-silence": silence.id }, "silenced") : null;
  return el("article", { class: "card state-" + c.state + " health-" + c.health + (silence ? " silenced" : ""), "data-container": c.name },
    el("header", {}, link(c.name), badge(c.state), c.health !== "none" ? badge(c.health) : null, c.manual_stop ? badge("stopped by hand", "manual") : null, c.protected ? badge("protected", "protected") : null, silenced),
    el("div", { class: "metric" }, el("span", { class: "k" }, "CPU"), el("span", { class: "v cpu" }, pct(c.cpu_percent)), sparkline(u.cpu, "cpu")),
    el("div", { class: "metric" }, el("span", { class: "k" }, "Mem"), el("span", { class: "v mem" }, pct(c.memory_percent)), sparkline(u.memory, "mem")),
    el("footer", {},
      el("span", { class: "restarts" }, "restarts " + (c.restarts_seen || 0)),
      el("span", { class: "safety" }, cooldownText(c)),
    ),
  );
}

function renderFleet() {
  // Group by node, then by policy.
  const byNode = new Map();
  for (const c of state.containers) {
    const node = state.node || "this node";
    const policy = c.policy || "(not governed)";
    if (!byNode.has(node)) byNode.set(node, new Map());
    const byPolicy = byNode.get(node);
    if (!byPolicy.has(policy)) byPolicy.set(policy, []);
    byPolicy.get(policy).push(c);
  }
  const sections = [];
  for (const [node, byPolicy] of byNode) {
    const groups = [];
    for (const [policy, cs] of [...byPolicy].sort((a, b) => a[0].localeCompare(b[0]))) {
      groups.push(el("section", { class: "group" },
        el("h3", {}, el("span", { class: "policy" }, policy), " ", el("span", { class: "count" }, cs.length + "")),
        el("div", { class: "grid" }, cs.map(card))));
    }
    sections.push(el("section", { class: "node" }, el("h2", {}, "Node ", node), groups));
  }
  if (!sections.length) sections.push(el("p", { class: "none" }, "No containers observed yet."));
  replace("fleet", sections);
}

function entry(e) {
  const d = e.data || {};
  const r = d.result || {};
  const status = r.status || "";
  const kind = { health_alert: "alert", remediation_needed: "decision", false_alarm: "noop", remediation_complete: "outcome" }[e.type] || "other";
  const reason = d.reason || (d.issues || []).join("; ") || r.details || "";
  return el("li", { class: "entry " + kind + (status ? " status-" + status : ""), "data-type": e.type, "data-container": d.container || "" },
    el("time", {}, time(e.timestamp)),
    el("span", { class: "type" }, e.type.replace(/_/g, " ")),
    d.container ? link(d.container) : null,
    d.action ? el("span", { class: "action" }, d.action) : null,
    status ? badge(status, "st-" + status) : null,
    d.gate ? el("span", { class: "gate" }, "gate: " + d.gate) : null,
    el("span", { class: "reason" }, reason),
    r.details && r.details !== reason ? el("span", { class: "details" }, r.details) : null,
    d.silenced ? el("span", { class: "badge silenced", title: "silence " + d.silenced }, "silenced") : null,
    aiNote(d),
  );
}

// What the model said about a decision: the AiNote flattened into the payloads
// (src/model/wire.rs): root_cause when its answer was used, fallback_reason when the rules
// decided instead, ai = {provider, model, rules, answer, cached, latency_ms}.
function aiNote(d) {
  const ai = d.ai || {};
  const model = ai.model ? (ai.provider ? ai.provider + " " : "") + ai.model : "model";
  const out = [];
  if (d.root_cause) {
    const answer = ai.answer || {};
    const rules = ai.rules || {};
    const sides = answer.action && rules.action !== undefined && answer.action !== (rules.action || "none")
      ? " (rules: " + (rules.action || "none") + ", model: " + answer.action + ")" : "";
    out.push(el("span", { class: "explanation", "data-ai": "root_cause" }, "AI (" + model + (ai.cached ? ", cached" : "") + "): " + d.root_cause + sides));
  }
  if (d.fallback_reason) {
    out.push(el("span", { class: "explanation fallback", "data-ai": "fallback" }, "rules decided, not the " + model + ": " + d.fallback_reason));
  }
  return out;
}

function renderTimelines() {
  const newest = state.envelopes.slice().reverse();
  replace("latest", newest.slice(0, 8).map(entry));
  replace("timeline", newest.map(entry));
  const route = currentRoute();
  if (route.view === "container") {
    const mine = newest.filter((e) => (e.data || {}).container === route.name);
    replace("c-decisions", mine.map(entry));
  }
}

function matches(p, c) {
  return c.policy === p.name;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() + " (" + ago(iso) + ")" : "–";
}

function condition(p, type) {
  return ((p.status || {}).conditions || []).find((c) => c.type === type) || null;
}

// The file source: what it reads, when it last did, and every problem of that read (a
// broken file holding no policy in force shows only here).
function renderReload() {
  const r = state.reload || {};
  if (!r.paths || !r.paths.length) {
    return el("article", { class: "panel reload", id: "reload" }, el("h3", {}, "Policy files"),
      el("p", { class: "none" }, "No --policies files: the built-in policy or policies applied through Redis."));
  }
  const problems = r.problems || [];
  return el("article", { class: "panel reload" + (problems.length ? " degraded" : ""), id: "reload" },
    el("h3", {}, "Policy files"),
    el("dl", { class: "kv" },
      el("dt", {}, "paths"), el("dd", {}, r.paths.join(", ")),
      el("dt", {}, "last read"), el("dd", { class: "last-scan" }, when(r.lastScan) + (r.trigger ? " on " + r.trigger : "")),
      el("dt", {}, "last reload"), el("dd", { class: "last-change" }, when(r.lastChange)),
    ),
    problems.length
      ? el("ul", { class: "problems" }, problems.map((m) => el("li", { class: "problem" }, m)))
      : el("p", { class: "none no-problems" }, "Every policy file is valid."));
}

function renderPolicies() {
  const loaded = (state.reload || {}).loadedAt || {};
  const rows = state.policies.map((p) => {
    const matched = state.containers.filter((c) => matches(p, c));
    const degraded = condition(p, "Degraded");
    const ready = condition(p, "Ready");
    const broken = degraded && degraded.status === "True";
    return el("article", { class: "panel policy-card" + (broken ? " degraded" : ""), "data-policy": p.name },
      el("h3", {}, p.name, " ", broken ? badge("last good version kept", "st-failed") : null),
      broken ? el("ul", { class: "problems" }, degraded.message.split("\n").map((m) => el("li", { class: "problem" }, m))) : null,
      el("dl", {},
        el("dt", {}, "source"), el("dd", {}, p.source || "(built in, or applied through Redis)"),
        el("dt", {}, "in force since"), el("dd", { class: "loaded" }, when(loaded[p.name])),
        el("dt", {}, "status"), el("dd", {}, ready ? ready.reason + (ready.message ? ": " + ready.message : "") : "–"),
        el("dt", {}, "priority"), el("dd", {}, String(p.priority)),
        el("dt", {}, "selector"), el("dd", {}, el("code", {}, JSON.stringify(p.selector))),
        el("dt", {}, "actions"), el("dd", {}, (p.actions || []).join(", ") || "none"),
        el("dt", {}, "dry run"), el("dd", {}, p.dryRun ? "yes" : "no"),
        el("dt", {}, "matched"), el("dd", {}, matched.length ? matched.map((c) => [link(c.name), " "]) : "none"),
      ));
  });
  if (!rows.length) rows.push(el("p", { class: "none" }, "No policy in force."));
  replace("policies", renderReload(), rows);
}

function kv(obj) {
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of Object.entries(obj)) {
    dl.append(el("dt", {}, k), el("dd", {}, v === null || v === undefined || v === "" ? "–" : String(v)));
  }
  return dl;
}

function renderContainer(name) {
  const c = state.containers.find((x) => x.name === name);
  if (!c) {
    replace("container", el("h2", {}, name), el("p", { class: "none" }, "Not observed (yet)."));
    return;
  }
  const u = state.usage[c.name] || { cpu: [], memory: [] };
  const s = c.safety || {};
  const findings = state.envelopes.filter((e) => e.type === "health_alert" && (e.data || {}).container === name).slice(-20).reverse();
  const audit = state.audit.filter((a) => a.container === name).slice(-50).reverse();
  replace("container",
    el("h2", {}, c.name, " ", badge(c.state), c.health !== "none" ? badge(c.health) : null),
    el("div", { class: "cols" },
      el("section", { class: "panel" }, el("h3", {}, "State"), kv({
        id: c.id.slice(0, 12), image: c.image, policy: c.policy || "(not governed)", health: c.health,
        "exit code": c.exit_code, "OOM-killed": c.oom_killed ? "yes" : "no", "Docker restarts": c.restart_count,
        "restarts seen": c.restarts_seen, "stopped by hand": c.manual_stop ? "yes" : "no", protected: c.protected ? "yes" : "no",
        "health-check output": c.health_output,
      })),
      el("section", { class: "panel" }, el("h3", {}, "Usage"),
        el("div", { class: "metric big" }, el("span", { class: "k" }, "CPU"), el("span", { class: "v cpu" }, pct(c.cpu_percent)), sparkline(u.cpu, "cpu")),
        el("div", { class: "metric big" }, el("span", { class: "k" }, "Mem"), el("span", { class: "v mem" }, pct(c.memory_percent)), sparkline(u.memory, "mem")),
        el("h3", {}, "Safety"), kv({
          "last action": s.last_action_at ? new Date(s.last_action_at).toLocaleString() + " (" + ago(s.last_action_at) + ")" : null,
          "actions in window": s.actions_in_window, "failed repairs": s.failures,
          "breaker open until": s.breaker_open_until ? new Date(s.breaker_open_until).toLocaleString() : "closed",
        })),
    ),
    el("section", { class: "panel" }, el("h3", {}, "Labels"), kv(c.labels || {})),
    el("section", { class: "panel" }, el("h3", {}, "Findings"),
      el("ul", { class: "findings" }, findings.length ? findings.map((e) => el("li", {}, el("time", {}, time(e.timestamp)), " ", ((e.data || {}).issues || []).join("; "))) : el("li", { class: "none" }, "none"))),
    el("section", { class: "panel" }, el("h3", {}, "Decisions"), el("ol", { id: "c-decisions", class: "timeline" })),
    el("section", { class: "panel" }, el("h3", {}, "Audit"),
      el("ul", { class: "audit" }, audit.length ? audit.map((a) => el("li", {}, el("time", {}, new Date(a.timestamp).toLocaleTimeString()), " ", badge(a.status, "st-" + a.status), " ", a.action, a.gate ? " (gate: " + a.gate + ")" : "", ": ", a.details, a.root_cause ? " — AI root cause: " + a.root_cause : "", a.fallback_reason ? " — rules decided: " + a.fallback_reason : "")) : el("li", { class: "none" }, "none"))),
  );
  renderTimelines();
}

// ---- theme ----

function applyTheme() {
  const t = localStorage.getItem("hemostat-theme");
  if (t) document.documentElement.dataset.theme = t;
  else delete document.documentElement.dataset.theme;
}

function toggleTheme() {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : matchMedia("(prefers-color-scheme: dark)").matches;
  localStorage.setItem("hemostat-theme", dark ? "light" : "dark");
  applyTheme();
}

// ---- start ----

window.addEventListener("DOMContentLoaded", () => {
  applyTheme();
  document.getElementById("theme").addEventListener("click", toggleTheme);
  window.addEventListener("hashchange", async () => {
    if (currentRoute().view === "container") await loadAudit().catch(() => {});
    render();
  });
  render();
  connect();
  // A browser opens at most 6 connections to one host over HTTP/1.1 and each open page holds
  // one for its event stream: a hidden tab lets go of it, and catches up when shown again.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      if (state.source) state.source.close();
      state.source = null;
      setConn("down", "paused");
    } else if (!state.source) {
      state.boot = null; // reload everything on the next hello
      connect();
    }
  });
  setInterval(() => {
    if (state.source && state.source.readyState === EventSource.OPEN) refreshSoon();
  }, REFRESH_MS);
  if (currentRoute().view === "container") loadAudit().then(render).catch(() => {});
});
