// amtrace pages: log-in, the bearer token (sessionStorage, never in a URL), API calls, errors in words,
// automatic log-out after inactivity. No framework: plain DOM, so nothing needs the internet or a build step.
"use strict";

const amtrace = (() => {
  const body = document.body;
  const page = body.dataset.page;
  const roles = (body.dataset.roles || "").split(" ").filter(Boolean);
  const loginKind = body.dataset.login;
  const idleSeconds = Number(body.dataset.idleSeconds || 900);
  const KEY = "amtrace.session";  // sessionStorage: gone when the tab closes, not sent with any request
  let idleTimer = null;
  let onReady = () => {};
  let onLogout = () => {};

  function $(sel, root) { return (root || document).querySelector(sel); }
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  function session() { try { return JSON.parse(sessionStorage.getItem(KEY)); } catch { return null; } }

  // Errors as a person reads them: the server's own sentence, or what to do when there is none.
  function words(status, body) {
    if (body && typeof body.detail === "string") return body.detail;
    if (status === 422 && body && Array.isArray(body.detail)) {
      const d = body.detail[0];
      return `Please check ${d.loc.slice(1).join(" ")}: ${d.msg}`;
    }
    if (status === 0) return "The server cannot be reached. Check the network cable, then try again.";
    return `The server answered ${status}. Try again or call the supervisor.`;
  }

  class ApiError extends Error {
    constructor(status, body) { super(words(status, body)); this.status = status; this.body = body || {}; }
  }

  async function api(method, path, { json, form, query } = {}) {
    const s = session();
    const headers = {};
    if (s) headers.Authorization = `Bearer ${s.token}`;
    let bodyOut;
    if (json !== undefined) { headers["Content-Type"] = "application/json"; bodyOut = JSON.stringify(json); }
    if (form !== undefined) bodyOut = form;
    const url = "/api/v1" + path + (query ? "?" + new URLSearchParams(query) : "");
    let r;
    try { r = await fetch(url, { method, headers, body: bodyOut, cache: "no-store", credentials: "omit" }); }
    catch { throw new ApiError(0, null); }
    let data = null;
    const type = r.headers.get("content-type") || "";
    if (type.includes("application/json")) data = await r.json();
    if (r.status === 401 && s) {  // token expired or account changed: back to the log-in
      logout(data && data.code === "token_expired" ? "Your session ended. Please log in again." : words(401, data));
    }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }

  async function blob(path) {
    const s = session();
    const r = await fetch("/api/v1" + path, { headers: s ? { Authorization: `Bearer ${s.token}` } : {},
                                             credentials: "omit", cache: "no-store" });
    if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
    return r;
  }

  function say(target, text, kind) {
    const box = typeof target === "string" ? $(target) : target;
    box.textContent = text || "";
    box.className = "message " + (kind || "error");
    box.hidden = !text;
  }

  async function login(ev) {
    ev.preventDefault();
    const form = ev.target;
    const user = form.elements.username.value.trim();
    const secret = form.elements.secret.value;
    const data = new URLSearchParams({ username: user, password: secret });
    if (loginKind === "badge") data.set("scope", "kiosk");
    say("#login-message", "");
    let r;
    try { r = await fetch("/api/v1/auth/token", { method: "POST", body: data, credentials: "omit" }); }
    catch { say("#login-message", words(0)); return; }
    const out = await r.json().catch(() => null);
    form.elements.secret.value = "";
    if (!r.ok) { say("#login-message", words(r.status, out)); form.elements.secret.focus(); return; }
    sessionStorage.setItem(KEY, JSON.stringify({ token: out.access_token }));
    let me;
    try { me = await api("GET", "/auth/me"); } catch (e) { say("#login-message", e.message); return; }
    if (!roles.includes(me.role)) {
      sessionStorage.removeItem(KEY);
      say("#login-message", `This page is for ${roles.map(r => r.replace("_", " ")).join(", ")}; ` +
                            `you are logged in as ${me.role.replace("_", " ")}.`);
      return;
    }
    sessionStorage.setItem(KEY, JSON.stringify({ token: out.access_token, me,
                                                  change: !!out.password_change_required }));
    form.reset();
    show();
  }

  // The person's own password (21 CFR 11.300): required after an administrator set it, offered otherwise.
  function askPassword(required) {
    $("#login").hidden = true;
    $("#app").hidden = true;
    $("#password-card").hidden = false;
    $("#logout").hidden = false;  // one may leave instead
    $("#pw-cancel").hidden = required;
    $("#password-why").textContent = required ?
      "An administrator set your password: choose your own before you go on. Nobody else may know it: it is " +
      "also your electronic signature." : "Nobody else may know it: your password is also your electronic signature.";
    say("#password-message", "");
    $("#pw-current").focus();
  }

  async function changePassword(ev) {
    ev.preventDefault();
    const f = ev.target.elements;
    if (f.new.value !== f.repeat.value) { say("#password-message", "The two new passwords differ."); return; }
    let out;
    try {
      out = await api("POST", "/auth/password", { json: { current_password: f.current.value, new_password: f.new.value } });
    } catch (e) {
      say("#password-message", e.message);
      f.current.value = ""; f.current.focus();
      return;
    }
    const s = session();
    sessionStorage.setItem(KEY, JSON.stringify({ ...s, token: out.access_token, change: false }));
    ev.target.reset();
    $("#password-card").hidden = true;
    show();
    say(messageBox(), "Your password is changed; your other sessions have ended.", "ok");
  }

  function messageBox() {
    return document.querySelector("#app .message[role=status]") || $("#login-message");
  }

  function logout(message) {
    const s = session();
    if (s && s.token && message === "You are logged out.") {
      // Ends the session on the server too (every token of this person), not only in this tab.
      fetch("/api/v1/auth/logout", { method: "POST", headers: { Authorization: `Bearer ${s.token}` },
                                     credentials: "omit" }).catch(() => {});
    }
    sessionStorage.removeItem(KEY);
    clearTimeout(idleTimer);
    onLogout();
    $("#app").hidden = true;
    $("#login").hidden = false;
    $("#who").textContent = "";
    $("#logout").hidden = true;
    if ($("#change-password")) $("#change-password").hidden = true;
    $("#password-card").hidden = true;
    clearTimeout(noticeTimer);
    if (noticeStream) { noticeStream.abort(); noticeStream = null; }
    $("#notices").hidden = true;
    say("#login-message", message || "", "info");
    const first = $("#login input");
    if (first) first.focus();
  }

  function touch() {
    if (!session()) return;
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => logout("You were logged out after " + Math.round(idleSeconds / 60 * 10) / 10 +
                                        " minutes without activity."), idleSeconds * 1000);
  }

  function show() {
    const s = session();
    if (!s || !s.me) { logout(); return; }
    if (s.change) { askPassword(true); return; }  // an administrator's password: the person's own first
    $("#login").hidden = true;
    $("#app").hidden = false;
    $("#who").textContent = `${s.me.full_name} (${s.me.role.replace("_", " ")})`;
    $("#logout").hidden = false;
    if ($("#change-password")) $("#change-password").hidden = false;
    touch();
    notices();
    listenNotices();
    onReady(s.me);
  }

  // What the person must know (a nonconformity on their work): unread notices in the top bar until marked read.
  let noticeTimer = null;
  async function notices() {
    clearTimeout(noticeTimer);
    if (!session()) return;
    let items;
    try { items = await api("GET", "/notifications?unread=true"); } catch { items = null; }
    const box = $("#notices");
    if (items === null) {
      box.hidden = false;
      $("#notices-count").textContent = "Notices could not be loaded";
      $("#notices-list").replaceChildren();
    } else {
      box.hidden = items.length === 0;
      $("#notices-count").textContent = `${items.length} unread notice${items.length === 1 ? "" : "s"}`;
      $("#notices-list").replaceChildren(...items.map(n => el("li", { "data-notice": n.id },
        el("span", { class: "notice-text", text: `${fmtTime(n.created_at)} · ${n.message}` }),
        el("button", { type: "button", class: "button secondary", text: "Mark read", onclick: async () => {
          try { await api("POST", `/notifications/${n.id}/read`); } catch { /* shown on the next load */ }
          notices();
        } }))));
    }
    // The stream below refreshes the list as notices are raised; the timer is the fallback when it is down.
    noticeTimer = setTimeout(notices, noticeStream ? 300000 : 30000);
  }

  // Server-sent events over fetch (EventSource cannot send an Authorization header): onOpen(response) once
  // answered, then onEvent(name, data) for each event until the stream ends; resolves true when it ended by abort.
  // token: another bearer token than the person's session (the wall display's).
  async function sse(path, onEvent, signal, onOpen, token) {
    const bearer = token || (session() || {}).token;
    if (!bearer) return false;
    try {
      const r = await fetch(`/api/v1${path}`, { headers: { Authorization: `Bearer ${bearer}`,
        Accept: "text/event-stream" }, signal, cache: "no-store", credentials: "omit" });
      if (onOpen) onOpen(r);
      if (!r.ok) return false;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return false;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
          let name = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (data) onEvent(name, JSON.parse(data));
        }
      }
    } catch (e) {
      return e.name === "AbortError";
    }
  }

  // Notices as they are raised: each one refreshes the top bar at once.
  let noticeStream = null;
  async function listenNotices() {
    if (noticeStream) noticeStream.abort();
    const mine = noticeStream = new AbortController();
    const aborted = await sse("/notifications/stream", name => { if (name === "notification") notices(); },
                              mine.signal);
    if (noticeStream === mine) noticeStream = null;
    if (!aborted && session()) setTimeout(() => { if (session() && !noticeStream) listenNotices(); }, 5000);
  }

  function start(handlers) {
    onReady = handlers.ready || onReady;
    onLogout = handlers.logout || onLogout;
    $("#login-form").addEventListener("submit", login);
    $("#logout").addEventListener("click", () => logout("You are logged out."));
    $("#password-form").addEventListener("submit", changePassword);
    $("#pw-cancel").addEventListener("click", () => { $("#password-card").hidden = true; show(); });
    if ($("#change-password")) $("#change-password").addEventListener("click", () => askPassword(false));
    for (const ev of ["keydown", "pointerdown", "input"]) document.addEventListener(ev, touch, true);
    const s = session();
    // sessionStorage is shared by the pages of one tab: a session made on another page counts only for our roles.
    if (s && s.me && roles.includes(s.me.role)) show();
    else if (s && s.me) logout(`This page is for ${roles.map(r => r.replace("_", " ")).join(", ")}; ` +
                               `you are logged in as ${s.me.role.replace("_", " ")}. Please log in.`);
    else logout();
  }

  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toLocaleString("en-GB", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  }
  function fmtDay(iso) {
    if (!iso) return "–";
    return new Date(iso).toLocaleDateString("en-GB", { day: "numeric", month: "short", year: "numeric" });
  }

  return { $, el, api, blob, say, start, logout, session, fmtTime, fmtDay, ApiError, page, sse };
})();

// A signature as P11 §11.50 wants it on screen: printed name, date and time (UTC, to the second), meaning.
amtrace.fmtUtc = iso => {
  if (!iso) return "–";
  return new Date(iso).toISOString().slice(0, 19).replace("T", " ") + " UTC";
};
amtrace.signatureLine = sig =>
  `Signed by ${sig.printed_name} (${sig.signer_role.replaceAll("_", " ")}), meaning: ${sig.meaning}, ` +
  `on ${amtrace.fmtUtc(sig.signed_at)}`;
amtrace.signatureItem = sig => amtrace.el("li", { class: "signature", "data-signature": sig.id },
  amtrace.el("span", { class: "sig-line", text: amtrace.signatureLine(sig) }),
  amtrace.el("span", { class: "hint", text: ` · bound to SHA-256 ${sig.record_sha256}` }));
