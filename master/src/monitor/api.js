// The API as the pages call it: the same documented endpoints as the CLI,
// with the session's CSRF value on every change, and the live feed.

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)drqueue_csrf=([^;]+)/);
  return m ? m[1] : null;
}

// Calls the API; answers JSON (or text), or throws ApiError with the
// server's own words. A 401 sends the viewer to sign in.
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const write = method !== "GET";
  // Changes travel as JSON (the master refuses anything a plain form could
  // send), with the session's CSRF value.
  if (write) headers["Content-Type"] = "application/json";
  const token = csrf();
  if (token && write) headers["X-DrQueue-CSRF"] = token;
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body !== undefined ? JSON.stringify(body) : method === "POST" ? "{}" : undefined,
  });
  if (resp.status === 401 && location.pathname !== "/signin") {
    location.href = "/signin?next=" + encodeURIComponent(location.pathname + location.search);
    throw new ApiError(401, "sign in first");
  }
  if (!resp.ok) {
    let msg = resp.statusText;
    try { msg = (await resp.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new ApiError(resp.status, msg);
  }
  if (resp.status === 204) return null;
  const type = resp.headers.get("content-type") || "";
  const data = type.includes("json") ? await resp.json() : await resp.text();
  return withNext(data, resp);
}

// A listing's next page (from its Link header) rides on the array.
function withNext(data, resp) {
  const next = nextLink(resp.headers.get("link"));
  if (next && Array.isArray(data)) data.next = next;
  return data;
}

function nextLink(link) {
  const m = link && link.match(/<([^>]+)>;\s*rel="next"/);
  return m ? m[1] : null;
}

// Subscribes to feed topics; `on` maps event names to handlers. Open it
// before the first read of what it updates, then call ready() once that
// read is drawn: events that came meanwhile are applied then, in order, so
// nothing falls between the read and the feed. A `reload` (the feed lost
// track) calls on.reload, or reloads the page.
export function live(topics, on) {
  const es = new EventSource("/api/events?topics=" + encodeURIComponent(topics.join(",")));
  let queue = [];
  for (const [name, fn] of Object.entries(on)) {
    if (name === "reload") continue;
    es.addEventListener(name, (e) => {
      const data = JSON.parse(e.data);
      if (queue) queue.push(() => fn(data)); else fn(data);
    });
  }
  es.addEventListener("reload", () => (on.reload ? on.reload() : location.reload()));
  window.addEventListener("pagehide", () => es.close());
  return {
    ready() { const q = queue; queue = null; q.forEach((f) => f()); },
    close() { es.close(); },
  };
}

// --- small helpers every page uses ---------------------------------------

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "style") {
      // Through the CSSOM: the pages' CSP allows no style attributes.
      for (const decl of String(v).split(";")) {
        const at = decl.indexOf(":");
        if (at > 0) node.style.setProperty(decl.slice(0, at).trim(), decl.slice(at + 1).trim());
      }
    }
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Times in the viewer's own time zone.
export function when(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

export function duration(secs) {
  if (secs === null || secs === undefined) return "—";
  secs = Math.round(secs);
  if (secs < 60) return secs + "s";
  const m = Math.floor(secs / 60), s = secs % 60;
  if (m < 60) return m + "m" + (s ? String(s).padStart(2, "0") + "s" : "");
  const h = Math.floor(m / 60);
  return h + "h" + String(m % 60).padStart(2, "0") + "m";
}

export function eta(e) {
  if (!e) return "—";
  return e.low_s === e.high_s ? duration(e.high_s) : duration(e.low_s) + "–" + duration(e.high_s);
}

export function status(s) {
  return el("span", { class: "status " + s, text: s });
}

export function bar(percent) {
  if (percent === null || percent === undefined) return el("span", { class: "muted", text: "—" });
  const p = Math.max(0, Math.min(100, percent));
  return el("span", { title: p.toFixed(0) + "%" },
    el("span", { class: "bar" }, el("span", { style: `width:${p}%` })), " " + p.toFixed(0) + "%");
}

export function toast(msg) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 5000);
}

// Arrow keys move between a table's rows; Enter follows the row's link.
export function keyboardRows(table) {
  table.addEventListener("keydown", (e) => {
    const row = e.target.closest("tr[tabindex]");
    if (!row) return;
    if (e.key === "ArrowDown" || e.key === "j") { row.nextElementSibling?.focus(); e.preventDefault(); }
    if (e.key === "ArrowUp" || e.key === "k") { row.previousElementSibling?.focus(); e.preventDefault(); }
    if (e.key === "Enter") { const a = row.querySelector("a[href]"); if (a) location.href = a.getAttribute("href"); }
  });
}

// Whether `me` may act on a job of `owner` (the server decides; the page
// only hides what would be refused).
export function mayAct(me, owner) {
  return me.role === "admin" || me.role === "wrangler" || (me.role === "artist" && me.user === owner);
}
