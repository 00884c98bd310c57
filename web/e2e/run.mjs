// node web/e2e/run.mjs SCENARIO
//
// Runs one browser scenario (web/e2e/scenarios/SCENARIO.mjs) against the
// server at $MISSIVE_URL in the Chromium at $MISSIVE_CDP. Exit 0 = passed;
// a failure prints why, saves screenshots of the open pages to a temp dir
// and exits 1. Environment (set by crates/missive-cli/tests/browser.rs):
// MISSIVE_CDP, MISSIVE_URL, MISSIVE_CLI, MISSIVE_CLI_SERVER, MISSIVE_HOME,
// MISSIVE_SCREENSHOT.

import { connectBrowser, failureScreenshots } from "./lib.mjs";

const SCENARIOS = [
  "two_browsers",
  "browser_and_cli",
  "offline_delivery",
  "delivered_mark",
  "key_change_blocked",
  "wrong_passphrase",
  "oversize_refused",
];
// Below the runner's own limit (240 s), so a hang is reported with screenshots.
const SCENARIO_TIMEOUT_MS = 200_000;

const name = process.argv[2];
if (!SCENARIOS.includes(name)) {
  console.error(`usage: node web/e2e/run.mjs SCENARIO\nscenarios: ${SCENARIOS.join(", ")}`);
  process.exit(2);
}

const watchdog = setTimeout(async () => {
  console.error(`FAIL ${name}: no result after ${SCENARIO_TIMEOUT_MS / 1000} s`);
  await failureScreenshots();
  process.exit(1);
}, SCENARIO_TIMEOUT_MS);

let code = 1;
let browser;
try {
  browser = await connectBrowser();
  const { run } = await import(`./scenarios/${name}.mjs`);
  await run(browser);
  console.log(`PASS ${name}`);
  code = 0;
} catch (error) {
  console.error(`FAIL ${name}: ${error?.stack ?? error}`);
  await failureScreenshots();
} finally {
  clearTimeout(watchdog);
  // Closes the contexts this script created and disconnects; the runner owns Chromium.
  await browser?.close().catch(() => {});
}
process.exit(code);
