// A message over the server's envelope limit is refused before sending with
// a clear message; nothing is sent, the text stays in the composer, and a
// normal message still goes through.
import {
  byTestId, check, checkEqual, openConversation, registerAliceAndBob, screenshot, sendTo, waitForMessage, waitForStatus,
} from "../lib.mjs";

export async function run(browser) {
  const { alice, bob } = await registerAliceAndBob(browser);
  await openConversation(alice, "bob");

  const huge = "x".repeat(300 * 1024);
  await byTestId(alice, "composer-input").fill(huge);
  await byTestId(alice, "composer-send").click();
  const error = byTestId(alice, "composer-error");
  await alice.waitForFunction(
    () => document.querySelector('[data-testid="composer-error"]').textContent.trim() !== "");
  const text = await error.textContent();
  check(/^Message too large: 307200 bytes, at most \d+( bytes)?\.$/.test(text), `the oversize error: ${text}`);
  checkEqual(await alice.locator('[data-testid="message"]').count(), 0, "messages after the refused send");
  checkEqual((await byTestId(alice, "composer-input").inputValue()).length, huge.length, "the text kept in the composer");
  await screenshotWithShortText(alice);

  await byTestId(alice, "composer-input").fill("");
  await sendTo(alice, "bob", "A normal message still goes through.");
  await waitForStatus(alice, "A normal message still goes through.", "delivered");
  await waitForMessage(bob, "alice", "A normal message still goes through.");
  checkEqual(await bob.locator('[data-testid="message"]').count(), 1, "messages bob received");
}

/** The screenshot, with the composer scrolled to its start (300 KiB of x fill it). */
async function screenshotWithShortText(page) {
  await page.evaluate(() => { document.querySelector('[data-testid="composer-input"]').scrollTop = 0; });
  await screenshot(page);
}
