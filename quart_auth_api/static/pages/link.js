// The pages that mailed links open (/reset-password, /verify-email,
// /confirm-email-change). The one-time token rides in the URL's fragment, which
// the browser never sends to a server: read it, clear it from the address bar,
// and POST it to the API only when the user submits (never on load: mail
// scanners open links). Everything shown is set with textContent.
"use strict";

(function () {
  const page = document.getElementById("link-page");
  const form = document.getElementById("link-form");
  const result = document.getElementById("link-result");
  const submit = document.getElementById("link-submit");
  const password = document.getElementById("password");
  const repeat = document.getElementById("password-repeat");

  const NO_TOKEN =
    "This link is incomplete: open the whole link from your mail again, or ask for a new one.";
  const UNREACHABLE = "The service could not be reached. Check your connection and try again.";
  const MIN_PASSWORD = 8;

  let token = new URLSearchParams(window.location.hash.slice(1)).get("token") || "";
  if (window.location.hash) {
    // the token leaves the address bar (and the history entry) at once
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  function show(text, kind) {
    result.textContent = text;
    result.className = kind;
    result.hidden = false;
  }

  function problemText(body) {
    if (!body || typeof body !== "object") {
      return "Something went wrong; try again later.";
    }
    const messages = Array.isArray(body.errors)
      ? body.errors.map((error) => error && error.message).filter(Boolean)
      : [];
    return messages.length ? messages.join(" ") : String(body.detail || body.title);
  }

  async function send(body) {
    const response = await fetch(page.dataset.action, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      credentials: "omit", // the token is the credential: no cookie, no session
      cache: "no-store",
      redirect: "error",
      referrerPolicy: "no-referrer",
    });
    let answer = null;
    try {
      answer = await response.json();
    } catch {
      answer = null;
    }
    return { ok: response.ok, answer };
  }

  async function onSubmit(event) {
    event.preventDefault();
    const body = { token };
    if (password) {
      if (password.value.length < MIN_PASSWORD) {
        show(`The password needs at least ${MIN_PASSWORD} characters.`, "problem");
        return;
      }
      if (password.value !== repeat.value) {
        show("The two passwords differ: type the same password twice.", "problem");
        return;
      }
      body.password = password.value;
    }
    submit.disabled = true;
    result.hidden = true;
    let outcome;
    try {
      outcome = await send(body);
    } catch {
      submit.disabled = false;
      show(UNREACHABLE, "problem");
      return;
    }
    if (outcome.ok) {
      token = "";
      form.hidden = true;
      show(page.dataset.success, "success");
      return;
    }
    if (outcome.answer && outcome.answer.code === "invalid_link_token") {
      token = "";
      form.hidden = true; // a dead link cannot be tried again
    } else {
      submit.disabled = false;
    }
    show(problemText(outcome.answer), "problem");
  }

  if (!token) {
    show(NO_TOKEN, "problem");
    return;
  }
  form.addEventListener("submit", onSubmit);
  form.hidden = false;
  (password || submit).focus();
})();
