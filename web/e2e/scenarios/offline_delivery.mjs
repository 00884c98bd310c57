// A message to an offline browser user: the server accepts it (✓) and
// queues it; the recipient's page is reloaded, they log in, and the
// message is there; the sender then sees it delivered (✓✓). Presence shows
// the recipient offline, then online.
import {
  check, checkEqual, contact, login, logout, messageItem, newPage, openConversation, register,
  screenshot, sendTo, waitForMessage, waitForStatus,
} from "../lib.mjs";

export async function run(browser) {
  const bob = await newPage(browser, "bob");
  await register(bob, "bob", "bob passphrase");
  await logout(bob);

  const alice = await newPage(browser, "alice");
  await register(alice, "alice", "alice passphrase");
  await openConversation(alice, "bob");
  await alice.locator('[data-testid="contact"][data-contact="bob"][data-online="false"]').waitFor();
  const presence = await contact(alice, "bob").locator('[data-testid="contact-presence"]').textContent();
  check(/^(last seen .+|offline)$/.test(presence), `bob's presence while he is away: ${presence}`);

  await sendTo(alice, "bob", "Call me when you are back.");
  await waitForStatus(alice, "Call me when you are back.", "accepted");
  await sendTo(alice, "bob", "It is about Friday.");
  await waitForStatus(alice, "It is about Friday.", "accepted");
  // Queued, not delivered, while bob is away.
  await alice.waitForTimeout(1_000);
  checkEqual(await messageItem(alice, "out", "Call me when you are back.").getAttribute("data-status"),
    "accepted", "the first message's status while bob is offline");

  // Bob comes back: a reload (a fresh page load) and a login.
  await bob.reload();
  await login(bob, "bob", "bob passphrase");
  await waitForMessage(bob, "alice", "Call me when you are back.");
  await messageItem(bob, "in", "It is about Friday.").waitFor();
  checkEqual(await bob.locator('[data-testid="message"][data-direction="in"]').count(), 2, "messages bob found");

  await waitForStatus(alice, "Call me when you are back.", "delivered");
  await waitForStatus(alice, "It is about Friday.", "delivered");
  // The presence poll (every 15 s) sees bob online again.
  await alice.locator('[data-testid="contact"][data-contact="bob"][data-online="true"]')
    .waitFor({ timeout: 20_000 });
  await screenshot(bob);
}
