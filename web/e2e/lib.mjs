// Helpers shared by the browser scenarios (web/e2e/scenarios/*.mjs).
//
// The runner (crates/missive-cli/tests/browser.rs) owns the server and
// Chromium; a scenario connects over CDP, opens fresh contexts (fresh
// IndexedDB each), drives the page through its data-testid hooks (listed at
// the top of web/app.js) and asserts what the user would see.

import { chromium } from "playwright-core";
import { execFile } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** How long a step may take before the scenario fails. */
export const STEP_TIMEOUT_MS = 20_000;

export function env(name) {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`environment variable ${name} is not set`);
  return value;
}

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

export function checkEqual(actual, expected, what) {
  if (actual !== expected) {
    throw new Error(`check failed: ${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

export async function connectBrowser() {
  return chromium.connectOverCDP(env("MISSIVE_CDP"));
}

const pages = [];

/**
 * A fresh browser context (its own storage, like another person's browser)
 * with the page loaded. Console errors and page errors are echoed.
 */
export async function newPage(browser, label, { width = 1100, height = 700 } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on("pageerror", (error) => console.log(`[${label}] page error: ${error.stack ?? error}`));
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") {
      console.log(`[${label}] console.${message.type()}: ${message.text()}`);
    }
  });
  await page.goto(env("MISSIVE_URL"));
  pages.push({ label, page });
  return page;
}

/** The pages opened so far (for a failure screenshot). */
export function openPages() {
  return pages.filter(({ page }) => !page.isClosed());
}

export const byTestId = (page, id) => page.locator(`[data-testid="${id}"]`);

async function fillSignIn(page, user, passphrase) {
  await byTestId(page, "signin-view").waitFor({ state: "visible" });
  await byTestId(page, "signin-user").fill(user);
  await byTestId(page, "signin-passphrase").fill(passphrase);
}

export async function waitForChat(page) {
  const chat = byTestId(page, "chat-view");
  const error = byTestId(page, "signin-error");
  // Either the chat view shows, or the sign-in form says why not.
  await page.waitForFunction(() => {
    const chatView = document.querySelector('[data-testid="chat-view"]');
    const signinError = document.querySelector('[data-testid="signin-error"]');
    return !chatView.hidden || signinError.textContent.trim() !== "";
  }, null, { timeout: STEP_TIMEOUT_MS });
  if (!(await chat.isVisible())) throw new Error(`not logged in: ${await error.textContent()}`);
  await statusIs(page, "online");
}

/** Creates an account: key generated in the worker, registered, logged in. */
/**
 * Alice and Bob, each in a fresh context, registered with the passphrases
 * "alice passphrase" and "bob passphrase": the start of most scenarios.
 */
export async function registerAliceAndBob(browser) {
  const alice = await newPage(browser, "alice");
  const bob = await newPage(browser, "bob");
  await register(alice, "alice", "alice passphrase");
  await register(bob, "bob", "bob passphrase");
  return { alice, bob };
}

export async function register(page, user, passphrase) {
  await fillSignIn(page, user, passphrase);
  await byTestId(page, "signin-create").click();
  await waitForChat(page);
  checkEqual(await byTestId(page, "me-user").textContent(), user, "the user shown after registering");
}

/** Logs in with the key stored in this browser. */
export async function login(page, user, passphrase, { registerToo = false } = {}) {
  await fillSignIn(page, user, passphrase);
  await byTestId(page, "signin-register-too").setChecked(registerToo);
  await byTestId(page, "signin-login").click();
  await waitForChat(page);
}

/** Tries to log in and returns the error the sign-in form shows. */
export async function loginError(page, user, passphrase) {
  await fillSignIn(page, user, passphrase);
  await byTestId(page, "signin-login").click();
  const error = byTestId(page, "signin-error");
  await page.waitForFunction(
    () => document.querySelector('[data-testid="signin-error"]').textContent.trim() !== "");
  check(await byTestId(page, "chat-view").isHidden(), "the chat view stays hidden after a refused login");
  return (await error.textContent()).trim();
}

/** Imports a PKCS#8 PEM key and logs in (or registers) with it. */
export async function importKey(page, user, passphrase, pem, { registerName = false } = {}) {
  await fillSignIn(page, user, passphrase);
  await page.locator('[data-testid="import-section"] summary').click();
  await byTestId(page, "import-pem").fill(pem);
  await byTestId(page, "import-register").setChecked(registerName);
  await byTestId(page, "signin-import").click();
  await waitForChat(page);
}

export async function logout(page) {
  await byTestId(page, "logout").click();
  await byTestId(page, "signin-view").waitFor({ state: "visible" });
}

export async function statusIs(page, state) {
  await page.locator(`[data-testid="connection-status"][data-state="${state}"]`).waitFor();
}

export function contact(page, name) {
  return page.locator(`[data-testid="contact"][data-contact="${name}"]`);
}

export async function addContact(page, name) {
  await byTestId(page, "contact-add-input").fill(name);
  await byTestId(page, "contact-add").click();
  await contact(page, name).waitFor();
}

/** Selects the conversation with `name` (adding the contact if needed). */
export async function openConversation(page, name) {
  if ((await contact(page, name).count()) === 0) await addContact(page, name);
  await contact(page, name).locator('[data-testid="contact-open"]').click();
  await page.waitForFunction(
    (who) => document.querySelector('[data-testid="conversation-title"]').textContent === who, name);
}

/** The <li> of the message with this text in the open conversation. */
export function messageItem(page, direction, text) {
  return page.locator(`[data-testid="message"][data-direction="${direction}"]`)
    .filter({ has: page.locator('[data-testid="message-text"]', { hasText: text }) });
}

/** Sends `text` to `to` by typing it and pressing Enter; returns the message's <li>. */
export async function sendTo(page, to, text) {
  await openConversation(page, to);
  await byTestId(page, "composer-input").fill(text);
  await byTestId(page, "composer-input").press("Enter");
  const item = messageItem(page, "out", text);
  await item.waitFor();
  checkEqual(await byTestId(page, "composer-input").inputValue(), "", "the composer after sending");
  return item;
}

/** Waits until the open conversation's message `text` reaches `status`. */
export async function waitForStatus(page, text, status) {
  await page.locator(`[data-testid="message"][data-direction="out"][data-status="${status}"]`)
    .filter({ has: page.locator('[data-testid="message-text"]', { hasText: text }) })
    .waitFor();
}

/** Opens the conversation with `from` and waits for their message `text`. */
export async function waitForMessage(page, from, text) {
  await contact(page, from).waitFor();
  await openConversation(page, from);
  await messageItem(page, "in", text).waitFor();
}

export async function screenshot(page) {
  const path = env("MISSIVE_SCREENSHOT");
  await page.screenshot({ path, fullPage: false });
  console.log(`screenshot: ${path}`);
}

/** Saves a screenshot of every open page to a temp dir (after a failure). */
export async function failureScreenshots() {
  const dir = mkdtempSync(join(tmpdir(), "missive-e2e-failure-"));
  for (const { label, page } of openPages()) {
    const path = join(dir, `${label}.png`);
    try {
      await page.screenshot({ path });
      console.error(`failure screenshot of ${label}: ${path}`);
    } catch (error) {
      console.error(`no failure screenshot of ${label}: ${error.message}`);
    }
  }
}

/** Runs the `missive` CLI with HOME (and its key store) under $MISSIVE_HOME. */
export function cli(user, args, { timeoutMs = 60_000 } = {}) {
  const home = env("MISSIVE_HOME");
  const argv = ["--server", env("MISSIVE_CLI_SERVER"), "--home", cliHome(), "--user", user, ...args];
  return new Promise((resolve) => {
    execFile(env("MISSIVE_CLI"), argv, {
      env: { ...process.env, HOME: home, MISSIVE_HOME: cliHome(), RUST_LOG: "warn" },
      timeout: timeoutMs,
    }, (error, stdout, stderr) => {
      resolve({ code: error ? (error.code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Like cli(), but fails the scenario on a non-zero exit. */
export async function cliOk(user, args, options) {
  const result = await cli(user, args, options);
  if (result.code !== 0) {
    throw new Error(`missive ${args.join(" ")} (as ${user}) exited ${result.code}: ${result.stderr.trim()}`);
  }
  return result;
}

/** The CLI's home directory: ~/.missive with HOME = $MISSIVE_HOME. */
export function cliHome() {
  return join(env("MISSIVE_HOME"), ".missive");
}

let stdinLines;

/** Asks the runner to restart the server with empty data on the same port. */
export async function restartServerFresh({ timeoutMs = 60_000 } = {}) {
  stdinLines ??= createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  console.log("MISSIVE-CONTROL restart-server-fresh");
  const deadline = new Promise((_, reject) => {
    setTimeout(() => reject(new Error("the runner did not answer `restarted` in time")), timeoutMs).unref();
  });
  for (;;) {
    const next = await Promise.race([stdinLines.next(), deadline]);
    if (next.done) throw new Error("standard input closed before `restarted`");
    if (next.value.trim() === "restarted") return;
  }
}
