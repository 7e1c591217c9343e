// The farm, jobs, engines, limits and users pages.

import { api, live, el, when, duration, eta, status, bar, toast, keyboardRows, mayAct } from "/monitor/api.js";

// --- Farm -------------------------------------------------------------------

export async function farmPage(main) {
  document.title = "Farm · DrQueue";
  const box = el("div");
  main.replaceChildren(el("h1", { text: "Farm" }), box);
  const draw = (t) => {
    const cards = el("div", { class: "cards" },
      card("Slots busy", `${t.slots_busy} / ${t.slots}`, `${t.slots - t.slots_busy} free`),
      card("Engines", Object.values(t.engines).reduce((a, b) => a + b, 0),
        Object.entries(t.engines).map(([k, v]) => `${v} ${k}`).join(", ") || "none"),
      card("Jobs running", t.jobs.running || 0,
        ["queued", "waiting", "paused", "failed"].map((k) => `${t.jobs[k] || 0} ${k}`).join(", ")),
      card("Next to end", t.next_to_end ? el("a", { href: `/jobs/${t.next_to_end.job}`, text: `job ${t.next_to_end.job}` }) : "—",
        t.next_to_end ? "within " + duration(t.next_to_end.eta_high_s) : "nothing running"));
    const max = Math.max(1, ...t.done_per_minute);
    const chart = el("div", { class: "chart", role: "img",
      "aria-label": `tasks done per minute over the last hour, at most ${max}` },
      t.done_per_minute.map((n, i) => el("span", { style: `height:${(100 * n) / max}%`, title: `${n} tasks, ${60 - i} min ago` })));
    box.replaceChildren(cards, el("h2", { text: "Tasks done per minute, last hour" }), el("div", { class: "panel" }, chart));
  };
  const feed = live(["farm"], { farm: draw });
  draw(await api("GET", "/api/farm"));
  feed.ready();
}

function card(title, big, small) {
  return el("div", { class: "card" }, el("div", { class: "muted", text: title }),
    el("div", { class: "big" }, big), el("div", { class: "muted" }, small));
}

// --- Jobs -------------------------------------------------------------------

const FILTERS = ["status", "owner", "pool", "name"];

export async function jobsPage(main, { me }) {
  document.title = "Jobs · DrQueue";
  const q = new URLSearchParams(location.search);
  const form = el("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const f of FILTERS) { const v = form.elements[f].value.trim(); if (v) next.set(f, v); }
    location.search = next.toString();
  } },
    el("select", { name: "status", "aria-label": "status" },
      ["", "waiting", "queued", "running", "paused", "done", "failed", "cancelled"].map((s) =>
        el("option", { value: s, selected: q.get("status") === s, text: s || "any status" }))),
    el("input", { name: "owner", placeholder: "owner", value: q.get("owner") || "", "aria-label": "owner" }),
    el("input", { name: "pool", placeholder: "pool", value: q.get("pool") || "", "aria-label": "pool" }),
    el("input", { name: "name", placeholder: "name (glob)", value: q.get("name") || "", "aria-label": "name" }),
    el("button", { type: "submit", text: "Filter" }));
  const tbody = el("tbody");
  const table = el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, el("input", { type: "checkbox", "aria-label": "select all",
      onchange: (e) => tbody.querySelectorAll("input[type=checkbox]").forEach((c) => { if (!c.disabled) c.checked = e.target.checked; }) })),
      ["ID", "Name", "Owner", "Status", "Progress", "ETA", "Priority", "Pool", "Blocked"].map((h) =>
        el("th", { class: h === "Pool" || h === "Blocked" ? "hide-narrow" : null, text: h })))),
    tbody);
  keyboardRows(table);
  const rows = new Map();
  const selected = () => [...tbody.querySelectorAll("input[type=checkbox]:checked")].map((c) => Number(c.value));
  const bulk = async (action, body) => {
    const ids = selected();
    if (!ids.length) return toast("select jobs first");
    const fails = [];
    for (const id of ids) {
      try {
        if (action === "priority") await api("PATCH", `/api/jobs/${id}`, body);
        else await api("POST", `/api/jobs/${id}/${action}`);
      } catch (e) { fails.push(`job ${id}: ${e.message}`); }
    }
    toast(fails.length ? fails.join("; ") : `${action}: ${ids.length} job(s)`);
  };
  const prio = el("input", { type: "number", min: 0, max: 1000, value: 500, style: "width:5rem", "aria-label": "priority" });
  const actions = me.role === "viewer" ? el("p", { class: "muted", text: "You can look; changes need the artist role." }) :
    el("div", { class: "actions" }, el("span", { class: "muted", text: "Selected:" }),
      ["pause", "resume", "retry", "cancel"].map((a) => el("button", { class: a === "cancel" ? "danger" : null, onclick: () => bulk(a), text: a })),
      prio, el("button", { onclick: () => bulk("priority", { priority: Number(prio.value) }), text: "set priority" }));
  const more = el("button", { hidden: true, text: "More jobs" });
  main.replaceChildren(el("h1", { text: "Jobs" }), form, actions, el("div", { class: "scroll" }, table), more);

  const params = new URLSearchParams({ limit: "50" });
  for (const f of FILTERS) if (q.get(f)) params.set(f, q.get(f));
  const matches = (j) => (!q.get("status") || j.status === q.get("status")) && (!q.get("owner") || j.owner === q.get("owner")) &&
    (!q.get("pool") || j.pool === q.get("pool"));
  const drawRow = (j) => {
    const mine = mayAct(me, j.owner);
    const tr = el("tr", { tabindex: 0, "data-job": j.id },
      el("td", {}, el("input", { type: "checkbox", value: j.id, disabled: !mine, "aria-label": `select job ${j.id}` })),
      el("td", { class: "num" }, el("a", { href: `/jobs/${j.id}`, text: j.id })),
      el("td", { text: j.name }), el("td", { text: j.owner }), el("td", {}, status(j.status)),
      el("td", {}, bar(j.progress)), el("td", { class: "num", text: eta(j.eta) }),
      el("td", { class: "num", text: j.priority }), el("td", { class: "hide-narrow", text: j.pool }),
      el("td", { class: "wrap hide-narrow muted", text: (j.blocked || []).join("; ") }));
    const old = rows.get(j.id);
    if (old) {
      tr.querySelector("input").checked = old.querySelector("input").checked;
      old.replaceWith(tr);
    }
    rows.set(j.id, tr);
    return tr;
  };
  const load = async (path) => {
    const page = await api("GET", path);
    for (const j of page) if (!rows.has(j.id)) tbody.append(drawRow(j));
    more.hidden = !page.next;
    more.onclick = () => load(page.next);
    if (!rows.size) tbody.append(el("tr", {}, el("td", { colspan: 10, class: "muted", text: "No jobs match." })));
  };
  const feed = live(["jobs"], {
    jobs: (ev) => {
      for (const j of ev.changed) {
        if (rows.has(j.id)) drawRow(j);
        else if (matches(j) && !q.get("name")) tbody.prepend(drawRow(j));
      }
      for (const id of ev.deleted) { rows.get(id)?.remove(); rows.delete(id); }
    },
  });
  await load("/api/jobs?" + params);
  feed.ready();
}

// --- Engines ----------------------------------------------------------------

export async function enginesPage(main, { me }) {
  document.title = "Engines · DrQueue";
  const tbody = el("tbody");
  const table = el("table", {}, el("thead", {}, el("tr", {},
    ["Name", "State", "Running", "Tasks", "Load", "RAM free", "Speed", "Pools", "Capabilities", ""].map((h) => el("th", { text: h })))), tbody);
  keyboardRows(table);
  main.replaceChildren(el("h1", { text: "Engines" }), el("div", { class: "scroll" }, table));
  const wrangler = me.role === "wrangler" || me.role === "admin";
  const act = async (id, action) => {
    try { await api("POST", `/api/engines/${encodeURIComponent(id)}/${action}`); toast(`${action}: done`); } catch (e) { toast(e.message); }
    draw(await api("GET", "/api/engines"));
  };
  const row = (e) => el("tr", { tabindex: 0, "data-engine": e.id },
    el("td", { title: e.hostname, text: e.name }), el("td", {}, status(e.state), e.sick ? el("span", { class: "muted", text: " sick: " + e.sick }) : null),
    el("td", { class: "num", text: `${e.running} / ${e.slots}` }),
    el("td", { class: "wrap" }, (e.tasks || []).map((h, i) => [i ? ", " : "",
      el("a", { href: `/jobs/${h.job}/tasks/${h.task}`, title: `attempt ${h.attempt}, ${h.state}`, text: `${h.job}.${h.task}` }),
      h.state === "running" ? "" : el("span", { class: "muted", text: ` (${h.state})` })])),
    el("td", { class: "num", text: e.load.toFixed(2) }),
    el("td", { class: "num", text: `${e.free_ram_mb} / ${e.ram_mb} MB` }), el("td", { class: "num", text: e.speed ? e.speed.toFixed(2) + "×" : "—" }),
    el("td", { text: e.pools.join(", ") }), el("td", { class: "wrap muted", text: e.capabilities.join(", ") }),
    el("td", {}, wrangler ? (e.state === "pending"
      ? [el("button", { onclick: () => act(e.name, "accept"), text: "accept" })]
      : [e.state === "disabled" ? el("button", { onclick: () => act(e.id, "enable"), text: "enable" })
        : el("button", { onclick: () => act(e.id, "disable"), text: "disable" }),
        el("button", { onclick: () => act(e.id, "drain"), text: "drain" }),
        el("button", { class: "danger", onclick: () => confirm(`Revoke ${e.name}? It is refused from now on.`) && act(e.id, "revoke"), text: "revoke" })]) : null));
  const draw = (list) => tbody.replaceChildren(...list.map(row));
  const feed = live(["engines"], { engines: async () => draw(await api("GET", "/api/engines")) });
  draw(await api("GET", "/api/engines"));
  feed.ready();
}

// --- Limits and pools -------------------------------------------------------

export async function limitsPage(main, { me }) {
  document.title = "Limits & pools · DrQueue";
  const [limits, pools] = await Promise.all([api("GET", "/api/limits"), api("GET", "/api/pools")]);
  const wrangler = me.role === "wrangler" || me.role === "admin";
  const name = el("input", { placeholder: "name", "aria-label": "limit name" });
  const count = el("input", { type: "number", min: 0, placeholder: "count", style: "width:6rem", "aria-label": "count" });
  main.replaceChildren(
    el("h1", { text: "Limits & pools" }),
    el("h2", { text: "Limits" }),
    el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ["Name", "In use", "Count"].map((h) => el("th", { text: h })))),
      el("tbody", {}, limits.map((l) => el("tr", {}, el("td", { text: l.name }), el("td", { class: "num", text: l.in_use ?? "—" }), el("td", { class: "num", text: l.count })))))),
    wrangler ? el("form", { class: "filters", onsubmit: async (e) => {
      e.preventDefault();
      try { await api("PUT", `/api/limits/${encodeURIComponent(name.value)}`, { count: Number(count.value) }); location.reload(); } catch (x) { toast(x.message); }
    } }, name, count, el("button", { type: "submit", text: "set limit" })) : null,
    el("h2", { text: "Pools" }),
    el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ["Pool", "Engines"].map((h) => el("th", { text: h })))),
      el("tbody", {}, pools.map((p) => el("tr", {}, el("td", { text: p.name }), el("td", { class: "num", text: p.engines })))))));
}

// --- Users and audit (admins) -----------------------------------------------

export async function usersPage(main, { me }) {
  document.title = "Users & audit · DrQueue";
  if (me.role !== "admin") {
    main.replaceChildren(el("p", { text: "Users and the audit trail are for admins." }));
    return;
  }
  const [users, audit] = await Promise.all([api("GET", "/api/users"), api("GET", "/api/audit?limit=100")]);
  main.replaceChildren(
    el("h1", { text: "Users & audit" }),
    el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ["User", "Role", "Tokens"].map((h) => el("th", { text: h })))),
      el("tbody", {}, users.map((u) => el("tr", {}, el("td", { text: u.name }), el("td", { text: u.role }), el("td", { class: "num", text: (u.tokens || []).length })))))),
    el("h2", { text: "Audit trail (newest 100)" }),
    el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ["When", "User", "From", "Action", "Status", "Detail"].map((h) => el("th", { text: h })))),
      el("tbody", {}, audit.map((a) => el("tr", {}, el("td", { text: when(a.at_ms) }), el("td", { text: a.user }), el("td", { text: a.remote }),
        el("td", { text: a.action }), el("td", { class: "num", text: a.status }), el("td", { class: "wrap muted", text: a.detail })))))));
}
