// Two people, two browsers: both register, then chat both ways. Each sees
// the other's message, the delivered mark on their own, and the other's
// fingerprint pinned — the same one the other sees as their own.
import {
  byTestId, checkEqual, registerAliceAndBob, screenshot, sendTo, waitForMessage, waitForStatus,
} from "../lib.mjs";

export async function run(browser) {
  const { alice, bob } = await registerAliceAndBob(browser);

  await sendTo(alice, "bob", "Hi Bob! Lunch at noon?");
  await waitForMessage(bob, "alice", "Hi Bob! Lunch at noon?");
  await waitForStatus(alice, "Hi Bob! Lunch at noon?", "delivered");

  await sendTo(bob, "alice", "Sure — see you at the usual place.");
  await waitForMessage(alice, "bob", "Sure — see you at the usual place.");
  await waitForStatus(bob, "Sure — see you at the usual place.", "delivered");
  await sendTo(alice, "bob", "Great, à tout à l’heure!");
  await waitForMessage(bob, "alice", "Great, à tout à l’heure!");

  // Trust on first use: each pinned the key the other holds.
  checkEqual(await byTestId(alice, "contact-fingerprint").textContent(),
    await byTestId(bob, "me-fingerprint").textContent(), "bob's fingerprint as alice pinned it");
  checkEqual(await byTestId(bob, "contact-fingerprint").textContent(),
    await byTestId(alice, "me-fingerprint").textContent(), "alice's fingerprint as bob pinned it");
  checkEqual(await alice.locator('[data-testid="message"]').count(), 3, "messages in alice's conversation");
  checkEqual(await bob.locator('[data-testid="message"]').count(), 3, "messages in bob's conversation");

  await waitForStatus(alice, "Great, à tout à l’heure!", "delivered");
  await screenshot(alice);
}
