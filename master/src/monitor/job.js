// One job: its frame strip (a cell per task, live), the actions its owner
// (or a wrangler) may take, its spec, dependencies and why it waits, and
// its thumbnails.

import { api, live, el, when, eta, status, bar, toast, mayAct } from "/monitor/api.js";

/// Cells drawn at most: past this the strip says how many it left out.
const MAX_CELLS = 5000;
/// Thumbnails in the filmstrip at most.
const MAX_THUMBS = 48;

export async function jobPage(main, { me, params }) {
  const id = Number(params[0]);
  let job = await api("GET", `/api/jobs/${id}`);
  document.title = `${job.name} (job ${id}) · DrQueue`;
  const head = el("div");
  const actions = el("div", { class: "actions" });
  const strip = el("div", { class: "strip", role: "grid", "aria-label": "tasks by status" });
  const stripNote = el("p", { class: "muted" });
  const selActions = el("div", { class: "actions" });
  const details = el("div");
  const newest = el("img", { class: "thumb newest", alt: "the newest rendered frame", hidden: true });
  const film = el("div", { class: "thumbs" });
  main.replaceChildren(head, actions,
    el("h2", { text: "Tasks" }), legend(), strip, stripNote, selActions,
    el("h2", { text: "Rendered frames" }), newest, film, details);

  // --- the strip -------------------------------------------------------
  const cells = new Map();
  const tasks = new Map();
  let anchor = null, dragFrom = null, dragged = false;
  const selection = new Set();
  const showSelection = () => {
    for (const [i, c] of cells) c.classList.toggle("selected", selection.has(i));
    drawSelActions();
  };
  const selectRange = (a, b) => {
    selection.clear();
    for (let i = Math.min(a, b); i <= Math.max(a, b); i++) if (cells.has(i)) selection.add(i);
    showSelection();
  };
  const drawCell = (t) => {
    tasks.set(t.index, t);
    let c = cells.get(t.index);
    if (!c) {
      if (cells.size >= MAX_CELLS) return;
      c = el("div", { class: "cell", role: "gridcell", tabindex: -1, "data-index": t.index });
      c.addEventListener("mousedown", (e) => { dragFrom = t.index; dragged = false; if (!e.shiftKey) e.preventDefault(); });
      c.addEventListener("mouseenter", (e) => { if (dragFrom !== null && e.buttons === 1) { dragged = true; selectRange(dragFrom, t.index); } });
      c.addEventListener("click", (e) => {
        if (e.shiftKey && anchor !== null) { selectRange(anchor, t.index); }
        else if (e.shiftKey || e.ctrlKey || e.metaKey) { anchor = t.index; selection.add(t.index); showSelection(); }
        else if (!dragged) { location.href = `/jobs/${id}/tasks/${t.index}`; }
        dragFrom = null;
      });
      cells.set(t.index, c);
      strip.append(c);
    }
    c.className = "cell " + t.status + (selection.has(t.index) ? " selected" : "");
    const frames = t.first === t.last ? `frame ${t.first}` : `frames ${t.first}-${t.last}`;
    c.title = `task ${t.index}, ${frames}: ${t.status}` + (t.progress != null ? ` ${t.progress.toFixed(0)}%` : "") + (t.outlier ? " (outlier)" : "");
    c.replaceChildren(t.status === "running" && t.progress != null ? el("i", { style: `width:${t.progress}%` }) : "");
  };
  document.addEventListener("mouseup", () => { dragFrom = null; });
  const allowed = mayAct(me, job.owner);
  const drawSelActions = () => {
    const picked = [...selection].sort((a, b) => a - b);
    selActions.replaceChildren(picked.length ? el("span", { class: "muted", text: `${picked.length} task(s) selected (${ranges(picked)})` }) :
      el("span", { class: "muted", text: "Shift-click or drag across cells to select tasks." }));
    if (!picked.length || !allowed) return;
    for (const action of ["retry", "cancel"]) {
      selActions.append(el("button", { class: action === "cancel" ? "danger" : null, "data-action": `${action}-selected`, onclick: async () => {
        try {
          job = await api("POST", `/api/jobs/${id}/${action}`, { tasks: ranges(picked) });
          drawHead();
          toast(`${action}: ${picked.length} task(s)`);
        } catch (e) { toast(e.message); }
      }, text: `${action} selected` }));
    }
    selActions.append(el("button", { onclick: () => { selection.clear(); showSelection(); }, text: "clear" }));
  };
  drawSelActions();
  const feed = live([`job:${id}`], {
    job: (ev) => {
      if (ev.deleted) { head.replaceChildren(el("h1", { text: `Job ${id} was deleted.` })); return; }
      job = ev.job;
      ev.tasks.forEach(drawCell);
      // The event does not carry every changed task (too many, or changed
      // together, as by a cancel): read the strip's tasks again.
      if (ev.tasks_truncated) loadCells().catch(() => {});
      drawHead();
      // Thumbnails land with the commit after the task's end: look again.
      if (ev.tasks.some((t) => t.status === "done")) setTimeout(() => thumbs().catch(() => {}), 300);
    },
  });
  // The strip's tasks, page by page (a task past MAX_CELLS gets no cell).
  async function loadCells() {
    let path = `/api/jobs/${id}/tasks?limit=1000`;
    let seen = 0;
    while (path && seen < MAX_CELLS) {
      const page = await api("GET", path);
      page.forEach(drawCell);
      seen += page.length;
      path = page.next;
    }
  }
  await loadCells();
  stripNote.textContent = job.tasks_total > MAX_CELLS ? `The first ${MAX_CELLS} of ${job.tasks_total} tasks.` : "";

  // --- header, actions, details -----------------------------------------
  const drawHead = () => {
    head.replaceChildren(
      el("h1", {}, `${job.name} `, el("span", { class: "muted", text: `job ${id}` }), " ", status(job.status)),
      el("div", { class: "cards" },
        card("Progress", bar(job.progress)), card("ETA", eta(job.eta)),
        card("Owner", job.owner), card("Priority", String(job.priority)),
        card("Tasks", `${job.counts.done} done · ${job.counts.running} running · ${job.counts.failed} failed · ${job.tasks_total} in all`)));
    actions.replaceChildren();
    if (!allowed) {
      actions.append(el("span", { class: "muted", text: me.role === "viewer" ? "You can look; changes need the artist role." : `Only ${job.owner} or a wrangler can change this job.` }));
    } else {
      const act = (a) => async () => {
        try { job = await api("POST", `/api/jobs/${id}/${a}`); drawHead(); toast(`${a}: done`); } catch (e) { toast(e.message); }
      };
      if (job.status === "paused") actions.append(el("button", { "data-action": "resume", onclick: act("resume"), text: "resume" }));
      else if (!["done", "failed", "cancelled"].includes(job.status)) actions.append(el("button", { "data-action": "pause", onclick: act("pause"), text: "pause" }));
      actions.append(el("button", { "data-action": "retry", onclick: act("retry"), text: "retry failed" }),
        el("button", { class: "danger", "data-action": "cancel", onclick: act("cancel"), text: "cancel" }));
      const prio = el("input", { type: "number", min: 0, max: 1000, value: job.priority, style: "width:5rem", "aria-label": "priority" });
      actions.append(prio, el("button", { onclick: async () => {
        try { job = await api("PATCH", `/api/jobs/${id}`, { priority: Number(prio.value) }); drawHead(); } catch (e) { toast(e.message); }
      }, text: "set priority" }));
    }
    details.replaceChildren(
      job.blocked.length ? [el("h2", { text: "Why tasks wait" }), el("ul", { class: "reasons" }, job.blocked.map((b) => el("li", { text: b })))] : [],
      el("h2", { text: "Spec and rules" }),
      el("dl", { class: "spec" },
        dt("Command"), el("dd", { text: job.command.join(" ") }),
        dt("Frames"), el("dd", { text: `${job.frames} (` + (job.target_task_minutes ? `blocksize auto, about ${job.target_task_minutes} min a task` : `blocksize ${job.blocksize}`) + ")" }),
        dt("Pool"), el("dd", { text: job.pool }),
        dt("Requirements"), el("dd", { text: requirements(job.requirements) }),
        dt("Attempts"), el("dd", { text: `at most ${job.max_attempts} a task` }),
        dt("Timeout"), el("dd", { text: job.timeout_secs ? job.timeout_secs + " s" : "none" }),
        dt("Engines at once"), el("dd", { text: job.max_engines || "no cap" }),
        dt("Limits"), el("dd", { text: job.limits.join(", ") || "none" }),
        dt("Submitted"), el("dd", { text: when(job.submitted_ms) }),
        dt("Started"), el("dd", { text: when(job.started_ms) }),
        dt("Finished"), el("dd", { text: when(job.finished_ms) }),
        dt("Depends on"), el("dd", {}, job.after.length ? job.after.map((d, i) => [i ? ", " : "", el("a", { href: `/jobs/${d.job}`, text: `job ${d.job}` }), ` (${d.on.join("/")})`]) : "nothing"),
        dt("Needed by"), el("dd", { "data-dependents": "" }, (job.dependents || []).length ? job.dependents.map((d, i) => [i ? ", " : "", el("a", { href: `/jobs/${d}`, text: `job ${d}` })]) : "nothing"),
        dt("Blacklisted engines"), el("dd", { text: job.blacklisted.join(", ") || "none" }),
        dt("Failures of the job itself"), el("dd", { text: (job.job_faults || []).join("; ") || "none" }),
        dt("Notify"), el("dd", { text: job.notification ? `${job.notification.to.join(", ")}: ${job.notification.state}` : "nobody" }),
        job.reason ? [dt("Reason"), el("dd", { text: job.reason })] : []));
  };
  drawHead();

  // --- thumbnails ---------------------------------------------------------
  // The frames with a thumbnail, as the store has them; the newest first.
  const shown = new Set();
  newest.addEventListener("load", () => { newest.hidden = false; });
  newest.addEventListener("error", () => { newest.hidden = true; });
  const thumbs = async () => {
    newest.src = `/api/jobs/${id}/thumbnail?t=${Date.now()}`;
    const frames = await api("GET", `/api/jobs/${id}/thumbnails`);
    for (const f of frames) {
      if (shown.has(f) || shown.size >= MAX_THUMBS) continue;
      shown.add(f);
      const fig = el("figure", { "data-frame": f },
        el("a", { href: `/api/jobs/${id}/frames/${f}/thumbnail` },
          el("img", { class: "thumb", loading: "lazy", alt: `frame ${f}`, src: `/api/jobs/${id}/frames/${f}/thumbnail` })),
        el("figcaption", { text: String(f) }));
      const after = [...film.children].find((c) => Number(c.dataset.frame) > f);
      film.insertBefore(fig, after || null);
    }
  };
  thumbs().catch(() => {});

  feed.ready();
}

function legend() {
  return el("p", { class: "legend" }, ["waiting", "ready", "assigned", "running", "done", "failed", "cancelled"].map((s) =>
    el("span", {}, el("i", { class: "cell " + s, style: "display:inline-block;height:.8rem" }), s)));
}

function card(title, body) {
  return el("div", { class: "card" }, el("div", { class: "muted", text: title }), el("div", {}, body));
}

function dt(text) { return el("dt", { text }); }

function requirements(r) {
  const parts = [];
  if (r.os) parts.push(r.os);
  if (r.min_cores) parts.push(`${r.min_cores}+ cores`);
  if (r.min_ram_mb) parts.push(`${r.min_ram_mb}+ MB RAM`);
  if (r.capabilities?.length) parts.push(r.capabilities.join(", "));
  return parts.join(", ") || "none";
}

/// Sorted task indices as the API's task list: "0-3,7,9-10".
export function ranges(sorted) {
  const out = [];
  for (let i = 0; i < sorted.length; i++) {
    const start = sorted[i];
    while (i + 1 < sorted.length && sorted[i + 1] === sorted[i] + 1) i++;
    out.push(start === sorted[i] ? `${start}` : `${start}-${sorted[i]}`);
  }
  return out.join(",");
}
