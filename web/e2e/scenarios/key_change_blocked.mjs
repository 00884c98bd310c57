// A pinned key changes: alice and bob chat (alice pins bob's key); the
// server loses its data and "bob" is registered again under another key.
// Alice's next message to bob is blocked: a modal warning shows both
// fingerprints, the message is not sent (bob receives nothing). Only after
// "Trust the new key" can alice write to the new bob.
import {
  byTestId, check, checkEqual, login, logout, messageItem, newPage, openConversation, register,
  registerAliceAndBob, restartServerFresh, screenshot, sendTo, waitForMessage, waitForStatus,
} from "../lib.mjs";

export async function run(browser) {
  const { alice, bob } = await registerAliceAndBob(browser);
  // Alice comes back with the key stored in her browser (a plain login: a
  // page that just created the account registers again on every connection).
  await logout(alice);
  await login(alice, "alice", "alice passphrase");
  await sendTo(alice, "bob", "Hi Bob, this is your pinned key.");
  await waitForMessage(bob, "alice", "Hi Bob, this is your pinned key.");
  await waitForStatus(alice, "Hi Bob, this is your pinned key.", "delivered");
  const pinned = await byTestId(alice, "contact-fingerprint").textContent();
  checkEqual(pinned, await byTestId(bob, "me-fingerprint").textContent(), "bob's key as alice pinned it");
  await bob.context().close();

  // The server loses its data: nobody is registered any more.
  await restartServerFresh();

  // Alice's page reconnects; the fresh server does not know her: the page
  // says so, and she registers her stored key again.
  await alice.waitForFunction(
    () => document.querySelector('[data-testid="signin-error"]').textContent.includes("not registered"),
    null, { timeout: 45_000 });
  await login(alice, "alice", "alice passphrase", { registerToo: true });

  // Someone registers "bob" with a new key.
  const mallory = await newPage(browser, "new-bob");
  await register(mallory, "bob", "another passphrase");
  const offered = await byTestId(mallory, "me-fingerprint").textContent();
  check(offered !== pinned, "the new bob has another key");

  await sendTo(alice, "bob", "Are you still you?");
  const dialog = byTestId(alice, "key-dialog");
  await dialog.waitFor({ state: "visible" });
  checkEqual(await byTestId(alice, "key-dialog-pinned").textContent(), pinned, "the pinned fingerprint in the warning");
  checkEqual(await byTestId(alice, "key-dialog-offered").textContent(), offered, "the offered fingerprint in the warning");
  check(await dialog.evaluate((d) => d.open && d.matches(":modal")), "the warning is modal");
  await screenshot(alice);

  // Blocked: the message failed with the key change, nothing reached the new bob.
  await byTestId(alice, "key-keep").click();
  await waitForStatus(alice, "Are you still you?", "failed");
  const reason = await messageItem(alice, "out", "Are you still you?")
    .locator('[data-testid="message-reason"]').textContent();
  check(/key/i.test(reason), `the failed message's reason: ${reason}`);
  await mallory.waitForTimeout(1_500);
  checkEqual(await mallory.locator('[data-testid="contact"]').count(), 0, "contacts of the new bob (nothing arrived)");
  checkEqual(await byTestId(alice, "contact-fingerprint").textContent(), pinned, "the pin is kept while blocked");

  // Alice checks the fingerprint with bob out of band and trusts the new key.
  await sendTo(alice, "bob", "Checking again.");
  await dialog.waitFor({ state: "visible" });
  await byTestId(alice, "key-trust").click();
  await dialog.waitFor({ state: "hidden" });
  await sendTo(alice, "bob", "OK, I trust your new key.");
  await waitForMessage(mallory, "alice", "OK, I trust your new key.");
  await openConversation(alice, "bob");
  await waitForStatus(alice, "OK, I trust your new key.", "delivered");
  checkEqual(await byTestId(alice, "contact-fingerprint").textContent(), offered, "the new pin after trusting");
}
