// batchgate console: a little progressive JavaScript. The pages work without it (confirm steps are
// then pages of their own, and a reload shows the latest state); with it, the live parts of a page
// refresh every 2 seconds and each change is confirmed in a dialog.
"use strict";

const POLL_MS = 2000;
const SLOW_POLL_MS = 10000; // for a page too large to fetch every 2 s (a big batch with big bodies)
const LARGE_PAGE = 1000000;

// Live parts ------------------------------------------------------------------------------------
// Elements marked data-live-part="name" are re-rendered by the server when the page's own URL is
// asked for with the header X-Live: 1; a part marked data-live-stop has reached its final state.
const live = {
  timer: null,
  interval: POLL_MS,
  busy: false,
  paused: false,
  state: document.querySelector("[data-live-state]"),

  start() {
    if (!document.querySelector("[data-live-part]") || document.querySelector("[data-live-stop]")) return;
    this.show("live");
    this.every(document.documentElement.outerHTML.length > LARGE_PAGE ? SLOW_POLL_MS : POLL_MS);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.refresh();
    });
  },

  every(ms) {
    clearInterval(this.timer);
    this.interval = ms;
    this.timer = setInterval(() => this.refresh(), ms);
  },

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.show(null);
  },

  show(text, kind) {
    if (!this.state) return;
    this.state.hidden = !text;
    this.state.textContent = text || "";
    this.state.className = "live-state" + (kind ? " " + kind : "");
  },

  async refresh() {
    if (this.busy || this.paused || document.hidden || !this.timer) return;
    this.busy = true;
    try {
      const answer = await fetch(location.href, {
        headers: { "X-Live": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (answer.status === 401) {
        location.reload(); // the session ended: the console asks to log in again
        return;
      }
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const html = await answer.text();
      this.apply(html);
      const wanted = html.length > LARGE_PAGE ? SLOW_POLL_MS : POLL_MS;
      if (this.timer && wanted !== this.interval) this.every(wanted);
      this.show("live · " + new Date().toLocaleTimeString());
    } catch (error) {
      this.show("not updating", "stale");
    } finally {
      this.busy = false;
    }
  },

  apply(html) {
    const fresh = new DOMParser().parseFromString(html, "text/html");
    for (const part of fresh.querySelectorAll("[data-live-part]")) {
      const current = document.querySelector(`[data-live-part="${part.dataset.livePart}"]`);
      if (!current) continue;
      const open = new Set([...current.querySelectorAll("details[open][id]")].map((d) => d.id));
      current.replaceWith(part);
      for (const id of open) document.getElementById(id)?.setAttribute("open", "");
    }
    if (document.querySelector("[data-live-stop]")) this.stop();
  },
};

// Confirm steps -----------------------------------------------------------------------------------
// A form marked data-confirm="question" asks first; the server asks again (a page) without this.
const confirmer = {
  dialog: null,
  form: null,

  build() {
    const dialog = document.createElement("dialog");
    dialog.className = "confirm";
    dialog.innerHTML =
      '<form method="dialog"><h2></h2><p></p><div class="buttons">' +
      '<button class="btn ghost" value="no">Go back</button>' +
      '<button class="btn primary" value="yes" data-confirm-yes>Confirm</button></div></form>';
    document.body.append(dialog);
    dialog.addEventListener("close", () => this.closed(dialog.returnValue));
    return dialog;
  },

  ask(form) {
    this.dialog = this.dialog || this.build();
    this.form = form;
    this.dialog.querySelector("h2").textContent = form.dataset.confirmTitle || "Are you sure?";
    this.dialog.querySelector("p").textContent = form.dataset.confirm;
    const yes = this.dialog.querySelector("[data-confirm-yes]");
    yes.textContent = form.dataset.confirmButton || "Confirm";
    yes.className = "btn " + ("danger" in form.dataset ? "danger" : "primary");
    live.paused = true;
    this.dialog.returnValue = "";
    this.dialog.showModal();
  },

  closed(answer) {
    live.paused = false;
    const form = this.form;
    this.form = null;
    if (answer !== "yes" || !form) return;
    const confirmed = document.createElement("input");
    confirmed.type = "hidden";
    confirmed.name = "confirmed";
    confirmed.value = "yes";
    form.append(confirmed);
    form.submit();
  },
};

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
  if (form.querySelector('input[name="confirmed"]')) return;
  event.preventDefault();
  confirmer.ask(form);
});

// Copy buttons for secrets shown once ----------------------------------------------------------------
document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
  if (!button) return;
  event.preventDefault();
  try {
    await navigator.clipboard.writeText(button.dataset.copy);
    button.textContent = "Copied";
  } catch (error) {
    button.textContent = "Select and copy";
  }
});

live.start();
