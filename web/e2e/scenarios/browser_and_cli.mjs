// A browser user and a CLI user chat both ways, over the same server (the
// CLI speaks WebSocket too). Then one identity moves between them: the
// browser's key, exported as PEM, works in the CLI, and the CLI's key.pem
// imports into a fresh browser.
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  byTestId, check, checkEqual, cliHome, cliOk, importKey, login, newPage, register, screenshot, sendTo,
  waitForMessage, waitForStatus,
} from "../lib.mjs";

/** Runs `listen --json` until `count` messages came; returns them. */
async function listen(user, count) {
  const { stdout } = await cliOk(user, ["listen", "--json", "--count", String(count), "--timeout", "20"]);
  return stdout.trim().split("\n").filter((line) => line !== "").map((line) => JSON.parse(line));
}

export async function run(browser) {
  const alice = await newPage(browser, "alice");
  await register(alice, "alice", "alice passphrase");

  await cliOk("carol", ["register"]);
  await cliOk("carol", ["send", "alice", "Hello from the terminal!"]);
  await waitForMessage(alice, "carol", "Hello from the terminal!");

  // The fingerprint alice pinned for carol is the one the CLI prints.
  const carolPrints = (await cliOk("carol", ["fingerprint"])).stdout.trim();
  checkEqual(await byTestId(alice, "contact-fingerprint").textContent(), carolPrints,
    "carol's fingerprint in the browser and in the CLI");

  await sendTo(alice, "carol", "Hello back from the browser — ça marche!");
  await waitForStatus(alice, "Hello back from the browser — ça marche!", "accepted");
  const [received] = await listen("carol", 1);
  checkEqual(received.from, "alice", "the sender the CLI printed");
  checkEqual(received.body, "Hello back from the browser — ça marche!", "the text the CLI printed");
  await waitForStatus(alice, "Hello back from the browser — ça marche!", "delivered");
  const aliceInCli = (await cliOk("carol", ["fingerprint", "alice"])).stdout.trim();
  checkEqual(aliceInCli, await byTestId(alice, "me-fingerprint").textContent(),
    "alice's fingerprint pinned by the CLI");
  await screenshot(alice);

  // One identity in both: alice's key, exported from the browser, in the CLI.
  await byTestId(alice, "export-open").click();
  await byTestId(alice, "export-passphrase").fill("alice passphrase");
  await byTestId(alice, "export-confirm").click();
  await byTestId(alice, "export-pem").waitFor({ state: "visible" }); // after PBKDF2 and AES-GCM
  const pem = await byTestId(alice, "export-pem").inputValue();
  check(pem.startsWith("-----BEGIN PRIVATE KEY-----"), "the export is a PKCS#8 PEM");
  check((await byTestId(alice, "export-download").getAttribute("href"))?.startsWith("blob:"),
    "the download link is a blob URL");
  await byTestId(alice, "export-close").click();
  const aliceHome = join(cliHome(), "alice");
  mkdirSync(aliceHome, { recursive: true, mode: 0o700 });
  writeFileSync(join(aliceHome, "key.pem"), pem, { mode: 0o600 });
  checkEqual((await cliOk("alice", ["fingerprint"])).stdout.trim(),
    await byTestId(alice, "me-fingerprint").textContent(), "the exported key's fingerprint in the CLI");
  await cliOk("alice", ["send", "carol", "Sent by the CLI with alice's browser key."]);
  const [fromCli] = await listen("carol", 1);
  checkEqual(fromCli.body, "Sent by the CLI with alice's browser key.", "the message the CLI sent as alice");
  // The CLI's login replaced the browser's session: the page says so and stops.
  const replaced = await byTestId(alice, "signin-error").textContent({ timeout: 10_000 });
  check(replaced.includes("logged in somewhere else"), `the page after the CLI's login as alice: ${replaced}`);
  await login(alice, "alice", "alice passphrase");

  // And the other way: carol's key.pem imported into a fresh browser.
  const carolPem = readFileSync(join(cliHome(), "carol", "key.pem"), "utf8");
  const carol = await newPage(browser, "carol");
  await importKey(carol, "carol", "carol passphrase", carolPem);
  checkEqual(await byTestId(carol, "me-fingerprint").textContent(), carolPrints,
    "the imported key's fingerprint in the browser");
  await sendTo(carol, "alice", "Now from a browser, same key.");
  await waitForMessage(alice, "carol", "Now from a browser, same key.");
  await waitForStatus(carol, "Now from a browser, same key.", "delivered");
}
