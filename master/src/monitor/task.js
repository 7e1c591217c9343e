// One task: its attempts, the log with a live tail (carriage returns
// redraw a line, as in a terminal), lines coloured by its renderer's rules,
// the first error a click away, its outputs and the log to download.

import { api, live, el, when, duration, status, toast } from "/monitor/api.js";

/// Log bytes the page keeps at most (the head is dropped past it).
const MAX_LOG_CHARS = 2_000_000;

export async function taskPage(main, { params }) {
  const [id, index] = params.map(Number);
  const [job, rows] = await Promise.all([api("GET", `/api/jobs/${id}`),
    api("GET", `/api/jobs/${id}/tasks?limit=1` + (index > 0 ? `&after=${index - 1}` : ""))]);
  const task = rows.find((t) => t.index === index);
  if (!task) throw new Error(`job ${id} has no task ${index}`);
  document.title = `Task ${index} of ${job.name} · DrQueue`;
  const rules = await logRules(job.command[0] || "");
  const names = new Map((await api("GET", "/api/engines")).map((e) => [e.id, e.name]));
  const engineName = (id) => names.get(id) || id;
  const head = el("div");
  const attemptsBox = el("div", { class: "scroll" });
  const log = el("pre", { class: "log", tabindex: 0, "aria-label": "log" });
  const firstError = el("button", { disabled: true, text: "first error" });
  const outputs = el("div");
  const download = el("a", { class: "btn", href: `/api/jobs/${id}/tasks/${index}/log?download=true`, text: "download log" });
  main.replaceChildren(head, el("h2", { text: "Attempts" }), attemptsBox,
    el("h2", {}, "Log ", el("span", { class: "muted", "data-attempt": "" })), el("div", { class: "actions" }, firstError, download), log,
    el("h2", { text: "Outputs" }), outputs);

  const drawHead = (t) => head.replaceChildren(
    el("h1", {}, el("a", { href: `/jobs/${id}`, text: job.name }), ` · task ${index} `, status(t.status)),
    el("p", { class: "muted", text: `frames ${t.first}-${t.last} · attempt ${t.attempts} · ` +
      (t.progress != null ? `${t.progress.toFixed(0)}% · ` : "") + (t.engine ? `on ${engineName(t.engine)}` : "not on an engine") }));
  drawHead(task);

  const drawAttempts = async () => {
    const list = await api("GET", `/api/jobs/${id}/tasks/${index}/attempts`);
    attemptsBox.replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, ["Attempt", "Engine", "Started", "Took", "CPU", "Peak RSS", "Reached", "Ended"].map((h) => el("th", { text: h })))),
      el("tbody", {}, list.map((a) => {
        const o = a.outcome;
        return el("tr", {}, el("td", { class: "num", text: a.attempt.attempt }), el("td", { text: engineName(a.engine) }),
          el("td", { text: when(a.ended_ms - o.wall_ms) }), el("td", { class: "num", text: duration(o.wall_ms / 1000) }),
          el("td", { class: "num", text: duration(o.cpu_ms / 1000) }), el("td", { class: "num", text: `${Math.round(o.peak_rss_kb / 1024)} MB` }),
          el("td", { class: "num", text: o.progress != null ? o.progress.toFixed(0) + "%" : "—" }),
          el("td", {}, o.exit_code === 0 && !o.error && !o.cancelled ? status("done") : el("span", { text: describe(o) })));
      }))));
    outputs.replaceChildren(el("ul", {}, list.flatMap((a) => (a.outcome.outputs || []).map((f) =>
      el("li", { text: `${f.path} (${f.size} bytes, attempt ${a.attempt.attempt})` })))));
    if (!outputs.querySelector("li")) outputs.replaceChildren(el("p", { class: "muted", text: "None recorded yet." }));
  };
  drawAttempts().catch((e) => toast(e.message));

  // --- the log ----------------------------------------------------------
  let text = "", offset = 0, attempt = null;
  const render = () => {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const lines = screenLines(text);
    const frag = document.createDocumentFragment();
    let first = null;
    for (const line of lines) {
      const kind = rules.errors.some((r) => r.test(line)) ? "error" : rules.warnings.some((r) => r.test(line)) ? "warning" : null;
      const span = el("span", { class: kind }, line + "\n");
      if (kind === "error" && !first) first = span;
      frag.append(span);
    }
    log.replaceChildren(frag);
    firstError.disabled = !first;
    firstError.onclick = () => first?.scrollIntoView({ block: "center" });
    if (atBottom) log.scrollTop = log.scrollHeight;
  };
  const append = (chunk) => {
    text += chunk;
    if (text.length > MAX_LOG_CHARS) text = text.slice(text.length - MAX_LOG_CHARS);
    render();
  };
  // Anything the live events missed (a gap, or bytes that came before the
  // feed opened) is read from where the page is.
  const catchUp = async () => {
    const q = attempt ? `?attempt=${attempt}&offset=${offset}` : "";
    const resp = await fetch(`/api/jobs/${id}/tasks/${index}/log${q}`, { credentials: "same-origin" });
    if (!resp.ok) return;
    const a = Number(resp.headers.get("x-drqueue-attempt")) || null;
    if (a !== attempt) { attempt = a; text = ""; offset = 0; }
    if (attempt) download.href = `/api/jobs/${id}/tasks/${index}/log?download=true&attempt=${attempt}`;
    const bytes = new Uint8Array(await resp.arrayBuffer());
    offset += bytes.length;
    main.querySelector("[data-attempt]").textContent = attempt ? `(attempt ${attempt})` : "";
    append(new TextDecoder().decode(bytes));
  };
  const feed = live([`log:${id}.${index}`, `job:${id}`], {
    log: (ev) => {
      if (ev.attempt !== attempt) { attempt = ev.attempt; text = ""; offset = 0; }
      if (ev.offset > offset) { catchUp().catch(() => {}); return; }
      const bytes = new TextEncoder().encode(ev.text);
      const skip = offset - ev.offset;
      if (skip >= bytes.length) return;
      offset += bytes.length - skip;
      main.querySelector("[data-attempt]").textContent = `(attempt ${attempt})`;
      append(new TextDecoder().decode(bytes.slice(skip)));
    },
    job: (ev) => {
      const t = (ev.tasks || []).find((x) => x.index === index);
      if (!t) return;
      drawHead(t);
      if (["done", "failed", "cancelled"].includes(t.status)) {
        drawAttempts().catch(() => {});
        catchUp().catch(() => {});
      }
    },
  });
  await catchUp();
  feed.ready();
}

/// The lines a terminal would show: `\r` returns to the line's start, so
/// only the last redraw of a line stays.
export function screenLines(text) {
  return text.split("\n").map((l) => { const parts = l.split("\r").filter((p) => p.length); return parts.length ? parts[parts.length - 1] : ""; })
    .filter((l, i, all) => i < all.length - 1 || l.length);
}

function describe(o) {
  if (o.cancelled) return "cancelled";
  if (o.timed_out) return "timed out";
  if (o.error) return o.error;
  if (o.fatal) return "fatal: " + o.fatal;
  if (o.signal) return `killed by signal ${o.signal}`;
  return `exit ${o.exit_code}`;
}

async function logRules(command) {
  const program = command.split("/").pop();
  const all = await api("GET", "/api/log-rules");
  const row = all.renderers.find((r) => r.programs.includes(program)) || all.default;
  const compile = (list) => list.map((p) => { try { return new RegExp(p.source, p.flags); } catch (_) { return /$^/; } });
  return { errors: compile(row.errors), warnings: compile(row.warnings) };
}
