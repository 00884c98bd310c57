// The browser's figures (docs/BENCHMARKS.md, "The browser"): in Chromium,
// against a real missive-server serving the page, measures
//   - RSA-2048 key generation (generate_identity, median of KEYGEN_RUNS),
//   - seal and open of a 256-byte message (median of CRYPTO_RUNS each),
//   - page load to logged in on localhost (median of LOGIN_RUNS): a user
//     registered beforehand through the page, then each run loads the page,
//     signs in with the passphrase and stops at the page's logged-in marker
//     (connection-status data-state="online"); no key generation,
//   - the wasm bundle's size, raw and gzip -9,
// and prints a markdown table. Run by scripts/bench-web.sh, which starts
// the server and Chromium: MISSIVE_CDP, MISSIVE_URL.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(new URL("../web/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const KEYGEN_RUNS = Number(process.env.KEYGEN_RUNS ?? 20);
const CRYPTO_RUNS = Number(process.env.CRYPTO_RUNS ?? 20);
const LOGIN_RUNS = Number(process.env.LOGIN_RUNS ?? 10);
const MESSAGE_BYTES = 256;
const WASM = new URL("../web/pkg/missive_web_bg.wasm", import.meta.url);
const STEP_TIMEOUT_MS = 60_000;

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run scripts/bench-web.sh)`);
  return value;
};

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const ms = (value) => `${value.toFixed(value < 10 ? 2 : 0)} ms`;
const range = (values) => `${ms(Math.min(...values))} – ${ms(Math.max(...values))}`;

/** Key generation, seal and open, timed inside the page with performance.now(). */
async function measureCrypto(page) {
  return page.evaluate(
    async ({ keygenRuns, cryptoRuns, messageBytes }) => {
      const m = await import("/pkg/missive_web.js");
      await m.default();
      const keygen = [];
      let identities = [];
      for (let i = 0; i < keygenRuns; i++) {
        const start = performance.now();
        const der = m.generate_identity(2048);
        keygen.push(performance.now() - start);
        if (identities.length < 2) identities.push(der);
      }
      const [alice, bob] = identities;
      const aliceKey = m.public_key(alice);
      const bobKey = m.public_key(bob);
      const text = "x".repeat(messageBytes);
      const seal = [];
      const open = [];
      for (let i = 0; i < cryptoRuns; i++) {
        let start = performance.now();
        const envelope = m.seal(alice, "alice", "bob", bobKey, text);
        seal.push(performance.now() - start);
        start = performance.now();
        const opened = m.open(bob, "bob", "alice", aliceKey, envelope);
        open.push(performance.now() - start);
        if (opened !== text) throw new Error("open returned another text");
      }
      return { keygen, seal, open, userAgent: navigator.userAgent };
    },
    { keygenRuns: KEYGEN_RUNS, cryptoRuns: CRYPTO_RUNS, messageBytes: MESSAGE_BYTES },
  );
}

const byTestId = (page, id) => page.locator(`[data-testid="${id}"]`);

/** Resolves with performance.now() (ms since navigation start) once the page is online. */
const onlineAt = (page) =>
  page
    .waitForFunction(
      () =>
        document.querySelector('[data-testid="connection-status"]')?.dataset.state === "online" &&
        performance.now(),
      null,
      { polling: "raf", timeout: STEP_TIMEOUT_MS },
    )
    .then((handle) => handle.jsonValue());

async function signIn(page, user, passphrase, button) {
  await byTestId(page, "signin-view").waitFor({ state: "visible" });
  await byTestId(page, "signin-user").fill(user);
  await byTestId(page, "signin-passphrase").fill(passphrase);
  const clickedAt = await page.evaluate(() => performance.now());
  await byTestId(page, button).click();
  const online = await onlineAt(page);
  return { clickedAt, online };
}

/** Page load to logged in: registers once, then LOGIN_RUNS fresh loads and sign-ins. */
async function measureLogin(context, url) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const user = `bench${Date.now().toString(36)}`;
  const passphrase = "bench passphrase 1";
  await page.goto(url);
  await signIn(page, user, passphrase, "signin-create");
  const total = [];
  const afterClick = [];
  for (let i = 0; i < LOGIN_RUNS; i++) {
    await page.goto("about:blank");
    await page.goto(url);
    const { clickedAt, online } = await signIn(page, user, passphrase, "signin-login");
    total.push(online);
    afterClick.push(online - clickedAt);
  }
  await page.close();
  return { total, afterClick };
}

function bundleSizes() {
  const raw = readFileSync(WASM).length;
  const gzip = execFileSync("gzip", ["-9", "-c", WASM.pathname], { maxBuffer: 64 << 20 }).length;
  return { raw, gzip };
}

const kib = (bytes) => `${(bytes / 1024).toFixed(1)} KiB (${bytes} B)`;

const browser = await chromium.connectOverCDP(env("MISSIVE_CDP"));
try {
  const url = env("MISSIVE_URL");
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(url);
  const crypto = await measureCrypto(page);
  await page.close();
  const login = await measureLogin(context, url);
  await context.close();
  const size = bundleSizes();
  console.log(`Chromium: ${crypto.userAgent}\n`);
  console.log("| measure | median | range | runs |");
  console.log("|---|---|---|---|");
  console.log(`| RSA-2048 key generation (\`generate_identity\`) | ${ms(median(crypto.keygen))} | ${range(crypto.keygen)} | ${crypto.keygen.length} |`);
  console.log(`| seal, ${MESSAGE_BYTES} B message (\`seal\`) | ${ms(median(crypto.seal))} | ${range(crypto.seal)} | ${crypto.seal.length} |`);
  console.log(`| open, ${MESSAGE_BYTES} B message (\`open\`) | ${ms(median(crypto.open))} | ${range(crypto.open)} | ${crypto.open.length} |`);
  console.log(`| page load → logged in (navigation start → online, sign-in typed by Playwright) | ${ms(median(login.total))} | ${range(login.total)} | ${login.total.length} |`);
  console.log(`| of which: "Log in" click → online (vault unlock, connect, login) | ${ms(median(login.afterClick))} | ${range(login.afterClick)} | ${login.afterClick.length} |`);
  console.log(`| wasm bundle, raw (\`web/pkg/missive_web_bg.wasm\`) | ${kib(size.raw)} | | |`);
  console.log(`| wasm bundle, gzip -9 | ${kib(size.gzip)} | | |`);
} finally {
  await browser.close();
}
