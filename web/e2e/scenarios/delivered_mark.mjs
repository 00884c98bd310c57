// The marks of a sent message: sending → accepted (✓) → delivered (✓✓) once
// the recipient's client acknowledged it; the recipient sees an unread
// count until they open the conversation.
import {
  byTestId, check, checkEqual, contact, openConversation, registerAliceAndBob, screenshot, sendTo, waitForStatus,
} from "../lib.mjs";

export async function run(browser) {
  const { alice, bob } = await registerAliceAndBob(browser);

  const item = await sendTo(alice, "bob", "Did this arrive?");
  await waitForStatus(alice, "Did this arrive?", "delivered");
  const mark = item.locator('[data-testid="message-mark"]');
  checkEqual(await mark.textContent(), "✓✓", "the delivered mark");
  checkEqual(await mark.getAttribute("aria-label"), "delivered", "the delivered mark's label");

  // Bob has not opened the conversation: one unread message from alice.
  const unread = contact(bob, "alice").locator('[data-testid="contact-unread"]');
  await unread.waitFor();
  checkEqual(await unread.textContent(), "1", "bob's unread count");
  await openConversation(bob, "alice");
  check(await unread.count() === 0, "the unread count is gone once bob opened the conversation");

  await sendTo(bob, "alice", "Yes, loud and clear.");
  await openConversation(alice, "bob");
  await alice.locator('[data-testid="message"][data-direction="in"]').waitFor();
  await sendTo(alice, "bob", "Perfect ✓✓ means delivered.");
  await waitForStatus(alice, "Perfect ✓✓ means delivered.", "delivered");
  checkEqual(await byTestId(alice, "composer-error").textContent(), "", "no error in alice's composer");
  await screenshot(alice);
}
