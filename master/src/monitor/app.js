// The monitor's entry: who is looking, then the page the path names. Every
// page has its own URL (filters live in the query), so any view can be
// pasted into chat and reloaded as it was.

import { api, el, toast } from "/monitor/api.js";
import { farmPage, jobsPage, enginesPage, limitsPage, usersPage } from "/monitor/pages.js";
import { jobPage } from "/monitor/job.js";
import { taskPage } from "/monitor/task.js";

const routes = [
  [/^\/$/, farmPage],
  [/^\/jobs$/, jobsPage],
  [/^\/jobs\/(\d+)$/, jobPage],
  [/^\/jobs\/(\d+)\/tasks\/(\d+)$/, taskPage],
  [/^\/engines$/, enginesPage],
  [/^\/limits$/, limitsPage],
  [/^\/users$/, usersPage],
];

async function signinPage(main) {
  document.title = "Sign in · DrQueue";
  const input = el("input", { type: "password", name: "token", autocomplete: "current-password",
    placeholder: "API token", "aria-label": "API token", required: true });
  const err = el("p", { class: "muted", role: "alert" });
  const form = el("form", { class: "panel signin", onsubmit: async (e) => {
    e.preventDefault();
    err.textContent = "";
    try {
      await api("POST", "/api/session", { token: input.value });
      const next = new URLSearchParams(location.search).get("next");
      location.href = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
    } catch (x) { err.textContent = x.message; }
  } },
    el("h1", { text: "Sign in to DrQueue" }),
    el("p", { class: "muted", text: "Paste the API token an admin gave you (drqueue user add / drqueue token create). It is exchanged for a session cookie; the page never keeps it." }),
    input, el("button", { class: "primary", type: "submit", text: "Sign in" }), err);
  main.replaceChildren(form);
  input.focus();
}

async function start() {
  const main = document.getElementById("main");
  const path = location.pathname.replace(/\/+$/, "") || "/";
  for (const a of document.querySelectorAll("#nav a")) {
    const href = a.getAttribute("href");
    if (href === path || (href !== "/" && path.startsWith(href))) a.setAttribute("aria-current", "page");
  }
  if (path === "/signin") return signinPage(main);
  let me;
  try {
    me = await api("GET", "/api/whoami");
  } catch (e) {
    if (e.status !== 401) main.replaceChildren(el("p", { role: "alert", text: "The master did not answer: " + e.message }));
    return;
  }
  const meBox = document.getElementById("me");
  meBox.replaceChildren(me.user + " (" + me.role + ")");
  if (me.user !== "local") {
    meBox.append(" · ", el("a", { href: "#", onclick: async (e) => {
      e.preventDefault();
      await api("DELETE", "/api/session");
      location.href = "/signin";
    }, text: "sign out" }));
  }
  if (me.role === "admin") document.querySelector("[data-admin]").hidden = false;
  for (const [re, page] of routes) {
    const m = path.match(re);
    if (m) {
      try {
        await page(main, { me, params: m.slice(1) });
      } catch (e) {
        main.replaceChildren(el("p", { role: "alert", text: e.message }));
      }
      return;
    }
  }
  main.replaceChildren(el("p", { text: "No such page. " }, el("a", { href: "/", text: "The farm" })));
}

window.addEventListener("unhandledrejection", (e) => toast(e.reason?.message || String(e.reason)));
start();
