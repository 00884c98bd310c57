// A wrong passphrase is refused: AES-GCM cannot open the stored key, the
// page says "Wrong passphrase." and stays on the sign-in form; the right
// one logs in. The key is stored encrypted, never in clear.
import {
  byTestId, check, checkEqual, login, loginError, logout, newPage, register, screenshot,
} from "../lib.mjs";

export async function run(browser) {
  const page = await newPage(browser, "alice");
  await register(page, "alice", "the right passphrase");
  await logout(page);
  await page.reload();

  const error = await loginError(page, "alice", "not the passphrase");
  checkEqual(error, "Wrong passphrase.", "the error for a wrong passphrase");
  await screenshot(page);

  // Nothing in the browser's storage holds the key in clear.
  const stored = await page.evaluate(() => new Promise((resolve, reject) => {
    const request = indexedDB.open("missive");
    request.onerror = () => reject(request.error);
    request.onsuccess = () => {
      const tx = request.result.transaction("identities", "readonly");
      const get = tx.objectStore("identities").get("alice");
      get.onsuccess = () => resolve({
        fields: Object.keys(get.result).sort(),
        iterations: get.result.iterations,
        saltBytes: get.result.salt.length,
        sealedBytes: get.result.sealed.length,
      });
    };
  }));
  checkEqual(stored.fields.join(","), "iterations,iv,salt,sealed,user", "the stored identity's fields");
  check(stored.iterations >= 600_000, `PBKDF2 iterations ≥ 600 000 (got ${stored.iterations})`);
  checkEqual(stored.saltBytes, 16, "salt length");
  check(stored.sealedBytes > 1000, "the sealed key is stored");

  // An unknown user and an empty passphrase are explained too.
  const unknown = await loginError(page, "nobody", "whatever");
  check(unknown.includes("holds no key for nobody"), `the error for an unknown user: ${unknown}`);

  await login(page, "alice", "the right passphrase");
  checkEqual(await byTestId(page, "me-user").textContent(), "alice", "logged in after the right passphrase");
}
