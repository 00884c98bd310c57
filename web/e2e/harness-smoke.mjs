// The browser runner's own check (crates/missive-cli/tests/browser.rs,
// test `harness_smoke`): Chromium over CDP, the page as the server serves
// it (status, Content-Security-Policy and the other headers of the
// contract), a WebSocket on the same origin speaking missive.v1, the
// control channel (a fresh server on the same port), the screenshot.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const CSP =
  "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; " +
  "connect-src 'self'; style-src 'self'; img-src 'self' data:; base-uri 'none'; " +
  "form-action 'none'; frame-ancestors 'none'";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run through crates/missive-cli/tests/browser.rs)`);
  return value;
};

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the runner for a fresh server on the same port and waits for it. */
async function restartServerFresh(timeoutMs = 30_000) {
  console.log("MISSIVE-CONTROL restart-server-fresh");
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no "restarted" within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const { value, done } = await Promise.race([lines.next(), timeout]);
    if (done || value.trim() !== "restarted") {
      throw new Error(`the runner answered ${JSON.stringify(value)} instead of "restarted"`);
    }
  } finally {
    clearTimeout(timer);
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Loads the page and checks what the server answered. */
async function loadPage(page, url) {
  const response = await page.goto(url, { waitUntil: "load" });
  check(response !== null, `no response for ${url}`);
  const headers = response.headers();
  check(response.status() === 200, `GET ${url}: status ${response.status()}`);
  check(
    headers["content-type"] === "text/html; charset=utf-8",
    `GET ${url}: content-type ${headers["content-type"]}`,
  );
  check(headers["content-security-policy"] === CSP, `GET ${url}: CSP ${headers["content-security-policy"]}`);
  check(headers["x-content-type-options"] === "nosniff", `GET ${url}: no nosniff`);
  check(headers["referrer-policy"] === "no-referrer", `GET ${url}: referrer-policy ${headers["referrer-policy"]}`);
  check(headers["cache-control"] === "no-cache", `GET ${url}: cache-control ${headers["cache-control"]}`);
  console.log(`GET ${url}: 200, CSP and headers as the contract says`);
}

/** Opens a WebSocket from the page to its own origin, as the page does. */
async function openProtocolSocket(page) {
  return page.evaluate(
    () =>
      new Promise((resolve) => {
        const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/";
        const socket = new WebSocket(url, "missive.v1");
        socket.binaryType = "arraybuffer";
        socket.onopen = () => {
          const protocol = socket.protocol;
          socket.close();
          resolve({ opened: true, protocol });
        };
        socket.onerror = () => resolve({ opened: false, protocol: null });
      }),
  );
}

const browser = await chromium.connectOverCDP(env("MISSIVE_CDP"));
try {
  const url = env("MISSIVE_URL");
  const context = await browser.newContext();
  const page = await context.newPage();
  await loadPage(page, url);
  const socket = await openProtocolSocket(page);
  check(socket.opened, "the page could not open a WebSocket to its origin");
  check(socket.protocol === "missive.v1", `WebSocket subprotocol ${socket.protocol}`);
  console.log("WebSocket from the page: missive.v1");

  await restartServerFresh();
  await loadPage(page, url);
  const again = await openProtocolSocket(page);
  check(again.opened && again.protocol === "missive.v1", "no WebSocket after the restart");
  console.log("after the restart: same origin, page and WebSocket answer");

  await page.screenshot({ path: env("MISSIVE_SCREENSHOT") });
  await context.close();
} finally {
  await browser.close();
}
process.exit(0);
