// The page's entry: sign in with an API key, then one view at a time by the URL's hash (#/search ...).
import { $, api, ApiError, forgetKey, saveKey, savedKey, session, whenUnauthorized } from "./lib.js";
import * as upload from "./upload.js";
import * as documents from "./documents.js";
import * as search from "./search.js";
import * as review from "./review.js";
import * as status from "./status.js";

const VIEWS = { upload, documents, search, review, status };
const TENANT_ONLY = new Set(["upload", "documents", "search"]);
let current = null;

function allowed(name) {
  return name in VIEWS && !(session.keyType === "admin" && TENANT_ONLY.has(name));
}

function route() {
  if (!session.key) return show("signin");
  const match = location.hash.match(/^#\/(\w+)/);
  let name = match ? match[1] : "";
  if (!allowed(name)) {
    if (match || !location.hash || location.hash === "#") {
      name = session.keyType === "admin" ? "review" : "search";
      history.replaceState(null, "", `#/${name}`);
    } else {
      return; // an in-page anchor (the skip link): stay on the view
    }
  }
  show(name);
}

function show(name) {
  if (current && current !== name && VIEWS[current]?.hide) VIEWS[current].hide();
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.id !== `view-${name}`;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#/${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const changed = current !== name;
  current = name;
  document.title = name === "signin" ? "Sign in · Sieve" : `${name[0].toUpperCase()}${name.slice(1)} · Sieve`;
  const focused = VIEWS[name] ? VIEWS[name].show() === "focused" : false;
  if (changed && name !== "signin" && !focused) {
    const heading = $(`#view-${name} h1`);
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
}

async function signIn(key) {
  const who = await api("/v1/web/session", { key });
  Object.assign(session, { key, tenant: who.tenant, keyType: who.key_type, rules: who.review_rules || {} });
  saveKey(key);
  $("#who-name").textContent = who.tenant ?? "admin";
  const type = $("#who-type");
  type.textContent = who.key_type === "admin" ? "admin key" : "tenant key";
  type.className = `badge ${who.key_type === "admin" ? "warn" : "info"}`;
  $("#who").hidden = false;
  $("#nav").hidden = false;
  for (const el of document.querySelectorAll("[data-for=tenant]")) el.hidden = who.key_type === "admin";
  for (const el of document.querySelectorAll("[data-for=admin]")) el.hidden = who.key_type !== "admin";
  route();
}

function signOut(message = "") {
  forgetKey();
  Object.assign(session, { key: null, tenant: null, keyType: null, rules: {} });
  // A fresh page: nothing of the previous key's views (results, uploads, review items) stays in memory.
  if (message) sessionStorage.setItem("sieve-signout-reason", message);
  location.hash = "";
  location.reload();
}

function start() {
  whenUnauthorized((message) => signOut(`Signed out: ${message}`));
  $("#signout").addEventListener("click", () => signOut());
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("#signin-key");
    const msg = $("#signin-msg");
    msg.textContent = "Checking the key…";
    msg.dataset.kind = "info";
    try {
      await signIn(input.value.trim());
      input.value = "";
      msg.textContent = "";
    } catch (err) {
      const text = err instanceof ApiError && err.status === 401
        ? `Wrong key: the service does not know this API key (${err.message}).`
        : `Could not sign in: ${err.message}`;
      msg.textContent = text;
      msg.dataset.kind = "error";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      input.select();
    }
  });
  window.addEventListener("hashchange", route);
  const reason = sessionStorage.getItem("sieve-signout-reason");
  sessionStorage.removeItem("sieve-signout-reason");
  const key = savedKey();
  if (key) {
    signIn(key).catch(() => { forgetKey(); route(); });
  } else {
    route();
    if (reason) { $("#signin-msg").textContent = reason; $("#signin-msg").dataset.kind = "error"; }
    $("#signin-key").focus();
  }
}

start();
