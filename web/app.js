// Missive in the browser: the sign-in view, the chat view and the one drive
// loop that feeds the core's client state machine (the wasm WebClient) with
// WebSocket events and timer expiries, and acts on its outputs.
//
// Test hooks (data-testid) used by web/e2e — keep them stable:
//   signin-view, signin-user, signin-passphrase, signin-register-too,
//   signin-login, signin-create, signin-error, signin-busy, keygen-progress,
//   import-section (a <details>), import-pem, import-register, signin-import;
//   chat-view, me-user, me-fingerprint, connection-status (text; attribute
//   data-state = connecting | online | offline | stopped), logout,
//   export-open, export-dialog, export-passphrase, export-confirm,
//   export-error, export-pem, export-download, export-close;
//   contact-add-input, contact-add, contact-add-error, contact-list,
//   contact (one <li> per contact, data-contact = name, data-online =
//   true | false | unknown) with contact-open (its button), contact-presence,
//   contact-unread; conversation-title, conversation-presence,
//   contact-fingerprint, message-list, message (one <li> per message,
//   data-id, data-direction = in | out, data-status = sending | accepted |
//   delivered | failed | expired | received | undecryptable) with
//   message-text, message-mark, message-reason, message-retry;
//   composer-input, composer-send, composer-error;
//   key-dialog, key-dialog-pinned, key-dialog-offered, key-keep, key-trust.

import init, { WebClient, identity_from_pem, identity_to_pem } from "./pkg/missive_web.js";
import * as vault from "./vault.js";

const wasmReady = init();

const KEY_BITS = 2048;
const MIN_PASSPHRASE = 8;
const PRESENCE_EVERY_MS = 15_000;
const BACKOFF_FIRST_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;
const SERVER_URL = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/";
const SUBPROTOCOL = "missive.v1";

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- messages

function errorMessage(error) {
  const text = error instanceof Error ? error.message : String(error);
  return sentence(text);
}

/** A user-facing sentence: capitalised, ending with a full stop. */
function sentence(text) {
  const trimmed = String(text).trim();
  if (trimmed === "") return trimmed;
  const capital = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?…)]$/.test(capital) ? capital : capital + ".";
}

function loginFailure(user, event) {
  switch (event.reason) {
    case "not_registered":
      return `${user} is not registered on this server. Create an account — or, to register the key ` +
        `stored in this browser, tick “Register the name on this server too” and log in again.`;
    case "name_taken":
      return `The name ${user} is taken on this server (registered with another key). Choose another name.`;
    case "signature_rejected":
      return `The server refused your key: it is not the one registered for ${user}.`;
    default:
      return "Login failed: " + sentence(event.message);
  }
}

/** Fatal connection losses: reconnecting would not help (or would do harm). */
const FATAL_LOSSES = new Set(["session_replaced", "unsupported_version"]);

function lossMessage(event) {
  if (event.reason === "session_replaced") {
    return "You logged in somewhere else (another tab or device): this session was closed.";
  }
  return "Connection lost: " + sentence(event.message);
}

function formatTime(unixMs) {
  const date = new Date(unixMs);
  const today = new Date();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return date.toDateString() === today.toDateString()
    ? time
    : `${date.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
}

function lastSeenText(contact) {
  if (contact.known === false) return "unknown user";
  if (contact.online === true) return "online";
  if (contact.lastSeen != null) return `last seen ${formatTime(contact.lastSeen)}`;
  if (contact.online === false) return "offline";
  return "presence unknown";
}

function announce(text) {
  const announcer = $("announcer");
  announcer.textContent = "";
  // A fresh text node so screen readers announce repeated texts too.
  requestAnimationFrame(() => { announcer.textContent = text; });
}

// ---------------------------------------------------------------- the session

/** One user's session: the WebClient, its WebSocket, timers and the chat data. */
class Session {
  constructor({ user, vaultSession, identity, client }) {
    this.user = user;
    this.vault = vaultSession;
    this.identity = identity;
    this.client = client;
    this.url = SERVER_URL;
    this.ws = null;
    this.wsOpen = false;
    this.timer = undefined;
    this.reconnectTimer = undefined;
    this.presenceTimer = undefined;
    this.backoffMs = BACKOFF_FIRST_MS;
    this.stopped = false;
    this.loggedInOnce = false;
    this.unsavedState = undefined;
    /** @type {Map<string, {name: string, online: boolean|null, lastSeen: number|null, known: boolean|null, unread: number}>} */
    this.contacts = new Map();
    /** @type {Map<string, Array<{id: string, dir: string, text: string, at: number, status: string, reason?: string}>>} */
    this.history = new Map();
    this.selected = null;
    this.keyWarnings = [];
  }

  // ---- the drive loop

  connect() {
    if (this.stopped) return;
    clearTimeout(this.reconnectTimer);
    setConnectionStatus("connecting", "connecting…");
    let ws;
    try {
      ws = new WebSocket(this.url, SUBPROTOCOL);
    } catch (error) {
      this.connectFailed(`Cannot connect to ${this.url}: ${errorMessage(error)}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.wsOpen = false;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.wsOpen = true;
      this.client.connected();
      this.drain();
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      if (typeof event.data === "string") {
        // The protocol is binary only (PROTOCOL.md §2.6).
        this.dropSocket(1003, "text messages are not part of missive.v1");
        return;
      }
      this.client.receive(new Uint8Array(event.data));
      this.drain();
    };
    ws.onclose = () => {
      if (ws !== this.ws) return;
      const wasOpen = this.wsOpen;
      this.ws = null;
      this.wsOpen = false;
      if (wasOpen) {
        this.client.disconnected();
        this.drain();
      } else {
        this.connectFailed(`Cannot reach the server at ${this.url}.`);
      }
    };
  }

  /** Closes the socket on the page's side, then tells the core. */
  dropSocket(code, reason) {
    const ws = this.ws;
    if (ws === null) return;
    const wasOpen = this.wsOpen;
    this.ws = null;
    this.wsOpen = false;
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.close(code, reason);
    if (wasOpen) {
      this.client.disconnected();
      this.drain();
    }
  }

  /** Acts on everything the core has to say, then re-arms the one timer. */
  drain() {
    if (this.stopped) return;
    for (;;) {
      let output;
      try {
        output = this.client.poll_output();
      } catch (error) {
        // The core's output could not be turned into JavaScript: say so;
        // the rest is drained after the next input, and the timer re-armed.
        showNotice("Internal error: " + errorMessage(error));
        break;
      }
      if (output === undefined) break;
      switch (output.kind) {
        case "transmit":
          if (this.ws !== null && this.ws.readyState === WebSocket.OPEN) this.ws.send(output.bytes);
          break;
        case "close":
          this.dropSocket(1000, "");
          break;
        case "state":
          this.saveState(output.state);
          break;
        case "event":
          try {
            this.onEvent(output.event);
          } catch (error) {
            // A bug in showing one event must not stop the drive loop.
            console.error("missive: cannot show the event", output.event, error);
          }
          break;
      }
      if (this.stopped) return;
    }
    clearTimeout(this.timer);
    const ms = this.client.next_timeout_ms();
    if (ms !== undefined) {
      this.timer = setTimeout(() => {
        if (this.stopped) return;
        this.client.timeout();
        this.drain();
      }, ms);
    }
  }

  connectFailed(message) {
    if (!this.loggedInOnce) {
      this.stop();
      showSignIn(message);
      return;
    }
    this.scheduleReconnect(message);
  }

  scheduleReconnect(why) {
    if (this.stopped) return;
    clearTimeout(this.reconnectTimer);
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
    // A little jitter so that many pages do not come back in lockstep.
    const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
    setConnectionStatus("offline", `offline — reconnecting in ${Math.round(jittered / 1000)} s`);
    if (why) $("connection-status").title = why;
    this.reconnectTimer = setTimeout(() => this.connect(), jittered);
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.reconnectTimer);
    clearInterval(this.presenceTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws !== null) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.close(1000, "");
    }
    setConnectionStatus("stopped", "offline");
    const client = this.client;
    // Let the pending writes finish before the state machine goes away.
    this.vault.flushed().finally(() => client.free());
  }

  // ---- events

  onEvent(event) {
    switch (event.type) {
      case "registered":
        setBusy("Registered. Logging in…");
        break;
      case "logged_in":
        this.onLoggedIn();
        break;
      case "login_failed": {
        const message = loginFailure(this.user, event);
        this.stop();
        showSignIn(message);
        break;
      }
      case "message":
        this.onMessage(event);
        break;
      case "accepted":
        this.mark(event.to, event.id, "accepted");
        break;
      case "delivered":
        this.mark(event.to, event.id, "delivered");
        break;
      case "expired":
        this.mark(event.to, event.id, "expired", "Expired unread on the server.");
        break;
      case "send_failed":
        this.mark(event.to, event.id, "failed", sentence(event.message));
        break;
      case "presence":
        this.updateContact(event.user, { online: event.online, lastSeen: event.last_seen, known: true });
        break;
      case "presence_unknown":
        this.updateContact(event.user, { online: null, known: false });
        break;
      case "key_changed":
        this.keyWarnings.push(event);
        showNextKeyWarning();
        break;
      case "undecryptable":
        this.addMessage(event.from, {
          id: event.id, dir: "in", at: Date.now(), status: "undecryptable",
          text: "A message that could not be decrypted (it was not sealed for your key, or was damaged).",
        });
        break;
      case "connection_lost":
        if (FATAL_LOSSES.has(event.reason)) {
          const message = lossMessage(event);
          this.stop();
          showSignIn(message);
        } else {
          $("connection-status").title = lossMessage(event);
        }
        break;
      case "disconnected":
        if (!this.loggedInOnce) {
          this.stop();
          showSignIn("The connection closed before the login completed. Try again.");
        } else {
          this.scheduleReconnect("Disconnected.");
        }
        break;
      case "redirected":
        this.url = /^wss?:\/\//.test(event.address)
          ? event.address
          : (location.protocol === "https:" ? "wss://" : "ws://") + event.address + "/";
        this.backoffMs = 0;
        break;
      case "request_refused":
        console.warn("missive: the server refused a request", event);
        break;
      default:
        console.warn("missive: event", event);
        if (event.message) showNotice(sentence(event.message));
        break;
    }
  }

  async onLoggedIn() {
    const first = !this.loggedInOnce;
    this.loggedInOnce = true;
    this.backoffMs = BACKOFF_FIRST_MS;
    setConnectionStatus("online", "online");
    $("connection-status").title = "";
    // Called from drain(), which goes on polling: no drain() here.
    this.client.set_presence(true);
    for (const name of this.contacts.keys()) this.client.query_presence(name);
    clearInterval(this.presenceTimer);
    this.presenceTimer = setInterval(() => this.refreshPresence(), PRESENCE_EVERY_MS);
    if (!first) return;
    try {
      if (!this.vault.stored) {
        await this.vault.storeIdentity(this.identity);
        if (this.unsavedState !== undefined) await this.vault.saveBytes("state", this.unsavedState);
        this.unsavedState = undefined;
        await this.saveChat();
      }
    } catch (error) {
      showNotice("Your key could not be saved in this browser: " + errorMessage(error));
    }
    if (this.stopped) return;
    showChat(this);
  }

  refreshPresence() {
    if (this.stopped || !this.client.is_logged_in()) return;
    for (const name of this.contacts.keys()) this.client.query_presence(name);
    this.drain();
  }

  onMessage(event) {
    const text = event.text;
    this.addMessage(event.from, { id: event.id, dir: "in", text, at: event.sent_at, status: "received" });
    announce(`Message from ${event.from}: ${text}`);
  }

  // ---- chat data

  ensureContact(name) {
    let contact = this.contacts.get(name);
    if (contact === undefined) {
      contact = { name, online: null, lastSeen: null, known: null, unread: 0 };
      this.contacts.set(name, contact);
      this.history.set(name, this.history.get(name) ?? []);
      if (this.client.is_logged_in()) {
        this.client.query_presence(name);
        queueMicrotask(() => this.drain());
      }
    }
    return contact;
  }

  addMessage(peer, message) {
    const contact = this.ensureContact(peer);
    const messages = this.history.get(peer);
    if (messages.some((m) => m.id === message.id && m.dir === message.dir)) return;
    messages.push(message);
    if (message.dir === "in" && (this.selected !== peer || document.hidden)) contact.unread += 1;
    this.saveChat();
    render(this);
  }

  mark(peer, id, status, reason) {
    const message = this.history.get(peer)?.find((m) => m.id === id && m.dir === "out");
    if (message === undefined) return;
    // Marks only move forward: a late "accepted" never hides "delivered".
    if (status === "accepted" && message.status !== "sending") return;
    message.status = status;
    if (reason !== undefined) message.reason = reason;
    if (status === "failed" || status === "expired") announce(`Message to ${peer} ${status}: ${reason}`);
    this.saveChat();
    render(this);
  }

  updateContact(name, fields) {
    const contact = this.contacts.get(name);
    if (contact === undefined) return;
    Object.assign(contact, fields);
    render(this);
  }

  saveState(state) {
    if (!this.vault.stored) {
      this.unsavedState = state;
      return;
    }
    this.vault.saveBytes("state", state).catch((error) =>
      showNotice("Saving the client state failed: " + errorMessage(error)));
  }

  saveChat() {
    if (!this.vault.stored) return Promise.resolve();
    const contacts = [...this.contacts.values()].map(({ name, unread, lastSeen }) => ({ name, unread, lastSeen }));
    const history = Object.fromEntries(this.history);
    return Promise.all([this.vault.saveJson("contacts", contacts), this.vault.saveJson("history", history)])
      .catch((error) => showNotice("Saving the conversations failed: " + errorMessage(error)));
  }

  async loadChat() {
    const load = async (kind) => {
      try {
        return await this.vault.loadJson(kind);
      } catch (error) {
        console.warn(`missive: the stored ${kind} cannot be read`, error);
        return undefined;
      }
    };
    for (const { name, unread, lastSeen } of (await load("contacts")) ?? []) {
      this.contacts.set(name, { name, online: null, lastSeen: lastSeen ?? null, known: null, unread: unread ?? 0 });
    }
    for (const [name, messages] of Object.entries((await load("history")) ?? {})) {
      this.history.set(name, messages);
    }
  }

  // ---- user actions

  addContact(name) {
    if (name === this.user) throw new Error("That is you: add someone else's user name.");
    this.client.query_presence(name); // throws a clear Error for an invalid name
    this.ensureContact(name);
    this.drain();
    this.saveChat();
    this.select(name);
  }

  select(name) {
    this.selected = name;
    const contact = this.contacts.get(name);
    if (contact !== undefined) contact.unread = 0;
    this.saveChat();
    render(this);
  }

  send(to, text) {
    const id = this.client.send(to, text); // throws a clear Error (too large, outbox full…)
    this.addMessage(to, { id, dir: "out", text, at: Date.now(), status: "sending" });
    this.drain();
  }

  retry(peer, id) {
    const messages = this.history.get(peer);
    const index = messages.findIndex((m) => m.id === id && m.dir === "out");
    if (index < 0) return;
    const [old] = messages.splice(index, 1);
    try {
      this.send(peer, old.text);
    } catch (error) {
      messages.splice(index, 0, old);
      throw error;
    }
  }

  trustKey(user) {
    this.client.trust_key(user);
    this.drain();
    render(this);
  }
}

/** @type {Session | null} */
let session = null;

// ---------------------------------------------------------------- sign-in

function signInFields() {
  return {
    user: $("signin-user").value.trim(),
    passphrase: $("signin-passphrase").value,
  };
}

function setBusy(text) {
  $("signin-busy").textContent = text;
}

function setSignInError(text) {
  $("signin-error").textContent = text;
  if (text) announce(text);
}

function setSignInEnabled(enabled) {
  for (const id of ["signin-login", "signin-create", "signin-import"]) $(id).disabled = !enabled;
}

function showSignIn(error) {
  if (session !== null && session.stopped) session = null;
  $("chat-view").hidden = true;
  $("me").hidden = true;
  $("signin-view").hidden = false;
  $("keygen").hidden = true;
  setBusy("");
  setSignInEnabled(true);
  setSignInError(error ?? "");
  document.title = "Missive";
  $("signin-passphrase").focus();
}

function requirePassphrase(passphrase, creating) {
  if (passphrase === "") throw new Error("Enter your passphrase.");
  if (creating && passphrase.length < MIN_PASSPHRASE) {
    throw new Error(`Choose a passphrase of at least ${MIN_PASSPHRASE} characters.`);
  }
}

function requireUser(user) {
  if (user === "") throw new Error("Enter a user name.");
}

/** Runs a sign-in action: one at a time, its errors shown in the form. */
async function signInAction(action) {
  setSignInError("");
  setSignInEnabled(false);
  try {
    await wasmReady;
    await action();
  } catch (error) {
    setBusy("");
    $("keygen").hidden = true;
    setSignInEnabled(true);
    setSignInError(errorMessage(error));
  }
}

/** Builds the client and connects; the events take it from there. */
async function startSession({ user, vaultSession, identity, register }) {
  let state;
  if (vaultSession.stored) {
    try {
      state = await vaultSession.loadBytes("state");
    } catch (error) {
      console.warn("missive: the stored client state cannot be read; starting afresh", error);
    }
  }
  const client = new WebClient(user, identity, state, register);
  session = new Session({ user, vaultSession, identity, client });
  if (vaultSession.stored) await session.loadChat();
  setBusy(register ? "Connecting and registering…" : "Connecting…");
  session.connect();
}

function logIn() {
  return signInAction(async () => {
    const { user, passphrase } = signInFields();
    requireUser(user);
    requirePassphrase(passphrase, false);
    setBusy("Unlocking your key…");
    const { session: vaultSession, identity } = await vault.unlock(user, passphrase);
    await startSession({ user, vaultSession, identity, register: $("signin-register-too").checked });
  });
}

function createAccount() {
  return signInAction(async () => {
    const { user, passphrase } = signInFields();
    requireUser(user);
    requirePassphrase(passphrase, true);
    if (await vault.hasIdentity(user)) {
      throw new Error(`This browser already holds a key for ${user}: log in instead (or import a key to replace it).`);
    }
    setBusy("");
    $("keygen").hidden = false;
    const identity = await generateIdentity(KEY_BITS);
    $("keygen").hidden = true;
    setBusy("Protecting your key with your passphrase…");
    const vaultSession = await vault.newSession(user, passphrase);
    await startSession({ user, vaultSession, identity, register: true });
  });
}

function importKey() {
  return signInAction(async () => {
    const { user, passphrase } = signInFields();
    requireUser(user);
    const pem = $("import-pem").value.trim();
    if (pem === "") throw new Error("Paste your private key (PEM) first.");
    const identity = identity_from_pem(pem); // throws a clear Error for a bad PEM
    requirePassphrase(passphrase, true);
    setBusy("Protecting your key with your passphrase…");
    const vaultSession = await vault.newSession(user, passphrase);
    await startSession({ user, vaultSession, identity, register: $("import-register").checked });
  });
}

/** Generates a key in the worker (RSA key generation takes a while). */
function generateIdentity(bits) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    worker.onmessage = (event) => {
      worker.terminate();
      if (event.data.error !== undefined) reject(new Error(`Key generation failed: ${event.data.error}`));
      else resolve(event.data.identity);
    };
    worker.onerror = (event) => {
      worker.terminate();
      reject(new Error(`Key generation failed: ${event.message || "the worker did not start"}`));
    };
    worker.postMessage({ bits });
  });
}

// ---------------------------------------------------------------- chat view

function setConnectionStatus(state, text) {
  const status = $("connection-status");
  status.dataset.state = state;
  status.textContent = text;
}

function showNotice(text) {
  $("composer-error").textContent = text;
  announce(text);
}

function showChat(current) {
  $("signin-view").hidden = true;
  $("chat-view").hidden = false;
  $("me").hidden = false;
  $("me-user").textContent = current.user;
  $("me-fingerprint").textContent = current.client.fingerprint();
  $("signin-passphrase").value = "";
  $("import-pem").value = "";
  setBusy("");
  setSignInError("");
  if (current.selected === null && current.contacts.size > 0) {
    current.selected = [...current.contacts.keys()][0];
  }
  render(current);
  (current.selected === null ? $("contact-add-input") : $("composer-input")).focus();
}

function render(current) {
  if (current !== session || $("chat-view").hidden) return;
  renderContacts(current);
  renderConversation(current);
  const unread = [...current.contacts.values()].reduce((sum, c) => sum + c.unread, 0);
  document.title = unread > 0 ? `(${unread}) Missive` : "Missive";
}

function element(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "testid") node.dataset.testid = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function renderContacts(current) {
  const list = $("contact-list");
  const focused = document.activeElement?.closest?.("[data-contact]")?.dataset.contact;
  list.replaceChildren(...[...current.contacts.values()].map((contact) => {
    const presence = lastSeenText(contact);
    const online = contact.known === false ? "unknown" : String(contact.online === true);
    const button = element("button", {
      type: "button", className: "contact-button", testid: "contact-open",
      ariaCurrent: current.selected === contact.name ? "true" : "false",
      ariaLabel: `${contact.name}, ${presence}` + (contact.unread ? `, ${contact.unread} unread` : ""),
      onclick: () => current.select(contact.name),
    }, [
      element("span", { className: `dot ${online === "true" ? "on" : ""}`, ariaHidden: "true" }),
      element("span", { className: "contact-name", textContent: contact.name }),
      element("span", { className: "contact-presence", testid: "contact-presence", textContent: presence }),
      ...(contact.unread > 0
        ? [element("span", { className: "badge", testid: "contact-unread", textContent: String(contact.unread) })]
        : []),
    ]);
    return element("li", {
      testid: "contact", dataset: { contact: contact.name, online },
      className: current.selected === contact.name ? "selected" : "",
    }, [button]);
  }));
  if (focused) list.querySelector(`[data-contact="${CSS.escape(focused)}"] button`)?.focus();
}

const MARKS = {
  sending: ["…", "sending"],
  accepted: ["✓", "accepted by the server"],
  delivered: ["✓✓", "delivered"],
  failed: ["✗", "not sent"],
  expired: ["⌛", "expired"],
};

function renderConversation(current) {
  const name = current.selected;
  const list = $("message-list");
  $("composer").hidden = name === null;
  $("empty-hint").hidden = name !== null;
  if (name === null) {
    $("conversation-title").textContent = "No conversation selected";
    $("conversation-presence").textContent = "";
    $("contact-fingerprint-line").hidden = true;
    list.replaceChildren();
    return;
  }
  const contact = current.contacts.get(name);
  $("conversation-title").textContent = name;
  $("conversation-presence").textContent = contact ? lastSeenText(contact) : "";
  $("contact-fingerprint-line").hidden = false;
  $("contact-fingerprint").textContent =
    current.client.pinned_fingerprint(name) ?? "not pinned yet (pinned when you first write to them)";
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(...(current.history.get(name) ?? []).map((message) => {
    const meta = [element("time", { dateTime: new Date(message.at).toISOString(), textContent: formatTime(message.at) })];
    if (message.dir === "out") {
      const [symbol, label] = MARKS[message.status] ?? ["", message.status];
      meta.push(element("span", {
        className: `mark ${message.status}`, testid: "message-mark", textContent: symbol,
        title: label, ariaLabel: label, role: "img",
      }));
    }
    const children = [
      element("p", { className: "text", testid: "message-text", textContent: message.text }),
      element("p", { className: "meta" }, meta),
    ];
    if (message.reason && (message.status === "failed" || message.status === "expired")) {
      children.push(element("p", { className: "reason", testid: "message-reason", textContent: message.reason }));
      children.push(element("button", {
        type: "button", className: "secondary small", testid: "message-retry", textContent: "Send again",
        onclick: () => {
          try {
            current.retry(name, message.id);
          } catch (error) {
            showNotice(errorMessage(error));
          }
        },
      }));
    }
    return element("li", {
      className: `message ${message.dir} ${message.status}`, testid: "message",
      dataset: { id: message.id, direction: message.dir, status: message.status },
    }, children);
  }));
  if (atBottom || list.lastElementChild?.dataset.direction === "out") list.scrollTop = list.scrollHeight;
}

// ---------------------------------------------------------------- dialogs

function showNextKeyWarning() {
  const dialog = $("key-dialog");
  if (session === null || dialog.open || session.keyWarnings.length === 0) return;
  const warning = session.keyWarnings.shift();
  dialog.dataset.user = warning.user;
  $("key-dialog-user").textContent = warning.user;
  $("key-dialog-user2").textContent = warning.user;
  $("key-dialog-pinned").textContent = warning.pinned;
  $("key-dialog-offered").textContent = warning.offered;
  dialog.returnValue = "";
  dialog.showModal();
  announce(`Warning: ${warning.user}'s key changed. Messages to them are blocked.`);
}

function onKeyDialogClose() {
  const dialog = $("key-dialog");
  const user = dialog.dataset.user;
  if (session !== null && !session.stopped && dialog.returnValue === "trust") {
    session.keyWarnings = session.keyWarnings.filter((w) => w.user !== user);
    session.trustKey(user);
    showNotice(`You now trust ${user}'s new key (it is pinned with your next message). Send your message again.`);
  }
  showNextKeyWarning();
}

let exportUrl = null;

function openExport() {
  if (session === null) return;
  $("export-ask").hidden = false;
  $("export-show").hidden = true;
  $("export-passphrase").value = "";
  $("export-error").textContent = "";
  $("export-pem").value = "";
  $("export-user").textContent = session.user;
  $("export-dialog").showModal();
  $("export-passphrase").focus();
}

async function confirmExport() {
  if (session === null) return;
  $("export-error").textContent = "";
  try {
    const der = await session.vault.confirm($("export-passphrase").value);
    const pem = identity_to_pem(der);
    $("export-pem").value = pem;
    if (exportUrl !== null) URL.revokeObjectURL(exportUrl);
    exportUrl = URL.createObjectURL(new Blob([pem], { type: "application/x-pem-file" }));
    $("export-download").href = exportUrl;
    $("export-ask").hidden = true;
    $("export-show").hidden = false;
    $("export-pem").focus();
    $("export-pem").select();
  } catch (error) {
    $("export-error").textContent = errorMessage(error);
  }
}

function closeExport() {
  $("export-pem").value = "";
  if (exportUrl !== null) {
    URL.revokeObjectURL(exportUrl);
    exportUrl = null;
  }
  $("export-download").removeAttribute("href");
}

async function logOut() {
  if (session === null) return;
  const current = session;
  current.stop();
  await current.vault.flushed();
  session = null;
  $("message-list").replaceChildren();
  $("contact-list").replaceChildren();
  $("signin-user").value = current.user;
  showSignIn("");
  setBusy("Logged out.");
}

// ---------------------------------------------------------------- wiring

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  logIn();
});
$("signin-create").addEventListener("click", createAccount);
$("signin-import").addEventListener("click", importKey);

$("contact-add-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("contact-add-input");
  const name = input.value.trim();
  $("contact-add-error").textContent = "";
  if (session === null || name === "") return;
  try {
    session.addContact(name);
    input.value = "";
    $("composer-input").focus();
  } catch (error) {
    $("contact-add-error").textContent = errorMessage(error);
  }
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("composer-input");
  $("composer-error").textContent = "";
  if (session === null || session.selected === null) return;
  const text = input.value;
  if (text.trim() === "") return;
  try {
    session.send(session.selected, text);
    input.value = "";
  } catch (error) {
    $("composer-error").textContent = errorMessage(error);
  }
});
$("composer-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("key-dialog").addEventListener("close", onKeyDialogClose);
$("key-dialog").addEventListener("cancel", (event) => event.preventDefault()); // Escape = no choice: it blocks
$("export-open").addEventListener("click", openExport);
$("export-confirm").addEventListener("click", confirmExport);
$("export-passphrase").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    confirmExport();
  }
});
$("export-dialog").addEventListener("close", closeExport);
$("logout").addEventListener("click", logOut);

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && session !== null && session.selected !== null) session.select(session.selected);
});

wasmReady.catch((error) => setSignInError("The page could not load its WebAssembly core: " + errorMessage(error)));
