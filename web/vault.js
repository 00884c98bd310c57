// The vault: per-user records in IndexedDB (database "missive"), all
// encrypted with AES-GCM-256 under a key derived from the user's passphrase
// (PBKDF2-SHA-256, random 16-byte salt, 600 000 iterations, stored with the
// identity record). Nothing is ever stored in clear: the identity (PKCS#8
// DER), the client state (CBOR), the contacts and the history are each one
// encrypted record. The derived CryptoKey is non-extractable and lives in
// memory only while the user is logged in (a VaultSession).
//
// Stores:
//   identities  key = user  value = {user, salt, iterations, iv, sealed}
//   records     key = "user/kind"  value = {iv, sealed}
// Every ciphertext is bound to its user and kind by the AES-GCM additional
// data, so records cannot be swapped between users or kinds.

const DB_NAME = "missive";
const DB_VERSION = 1;
const IDENTITIES = "identities";
const RECORDS = "records";
export const PBKDF2_ITERATIONS = 600_000;
const SALT_BYTES = 16;
const IV_BYTES = 12;

/** The passphrase did not decrypt the stored key. */
export class WrongPassphrase extends Error {
  constructor() {
    super("Wrong passphrase.");
    this.name = "WrongPassphrase";
  }
}

/** This browser holds no key for the user. */
export class NoStoredIdentity extends Error {
  constructor(user) {
    super(`This browser holds no key for ${user}. Create an account, or import your key.`);
    this.name = "NoStoredIdentity";
  }
}

let database;

function openDatabase() {
  database ??= new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, DB_VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(IDENTITIES)) db.createObjectStore(IDENTITIES);
      if (!db.objectStoreNames.contains(RECORDS)) db.createObjectStore(RECORDS);
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(new Error(`Cannot open the browser's storage: ${request.error}`));
    request.onblocked = () => reject(new Error("The browser's storage is blocked by another tab."));
  });
  return database;
}

async function transact(store, mode, operation) {
  const db = await openDatabase();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode);
    const request = operation(tx.objectStore(store));
    let result;
    request.onsuccess = () => { result = request.result; };
    tx.oncomplete = () => resolve(result);
    tx.onerror = () => reject(new Error(`The browser's storage failed: ${tx.error}`));
    tx.onabort = () => reject(new Error(`The browser's storage failed: ${tx.error}`));
  });
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function additionalData(user, kind) {
  return encoder.encode(`missive/${user}/${kind}`);
}

async function deriveKey(passphrase, salt, iterations) {
  const material = await crypto.subtle.importKey(
    "raw", encoder.encode(passphrase), "PBKDF2", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    material,
    { name: "AES-GCM", length: 256 },
    false, // non-extractable: the key never leaves WebCrypto
    ["encrypt", "decrypt"]);
}

async function seal(key, user, kind, bytes) {
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: additionalData(user, kind) }, key, bytes);
  return { iv, sealed: new Uint8Array(sealed) };
}

async function unseal(key, user, kind, record) {
  const plain = await crypto.subtle.decrypt(
    { name: "AES-GCM", iv: record.iv, additionalData: additionalData(user, kind) },
    key, record.sealed);
  return new Uint8Array(plain);
}

/** Whether this browser holds a key for `user`. */
export async function hasIdentity(user) {
  const record = await transact(IDENTITIES, "readonly", (s) => s.get(user));
  return record !== undefined;
}

/**
 * Derives a fresh key for a new identity of `user` (not stored yet: call
 * `session.storeIdentity(der)` once the server accepted the key).
 */
export async function newSession(user, passphrase) {
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const key = await deriveKey(passphrase, salt, PBKDF2_ITERATIONS);
  return new VaultSession(user, key, { salt, iterations: PBKDF2_ITERATIONS });
}

/**
 * Opens the stored identity of `user` with `passphrase`: resolves to
 * `{session, identity}` (identity = PKCS#8 DER). Throws NoStoredIdentity or
 * WrongPassphrase.
 */
export async function unlock(user, passphrase) {
  const record = await transact(IDENTITIES, "readonly", (s) => s.get(user));
  if (record === undefined) throw new NoStoredIdentity(user);
  const key = await deriveKey(passphrase, record.salt, record.iterations);
  let identity;
  try {
    identity = await unseal(key, user, "identity", record);
  } catch {
    throw new WrongPassphrase();
  }
  const session = new VaultSession(user, key, { salt: record.salt, iterations: record.iterations });
  session.stored = true;
  return { session, identity };
}

/** One logged-in user's access to the vault: the derived key, in memory only. */
export class VaultSession {
  #key;
  #derivation;
  #writes = Promise.resolve();

  constructor(user, key, derivation) {
    this.user = user;
    this.#key = key;
    this.#derivation = derivation;
    this.stored = false;
  }

  /** Stores (or replaces) the user's identity, encrypted. */
  async storeIdentity(der) {
    const { iv, sealed } = await seal(this.#key, this.user, "identity", der);
    const record = { user: this.user, ...this.#derivation, iv, sealed };
    await transact(IDENTITIES, "readwrite", (s) => s.put(record, this.user));
    this.stored = true;
  }

  /** Checks `passphrase` against the stored identity; resolves to the DER. */
  async confirm(passphrase) {
    return (await unlock(this.user, passphrase)).identity;
  }

  /** Saves bytes under `kind`, encrypted; writes happen in call order. */
  saveBytes(kind, bytes) {
    const write = this.#writes.then(async () => {
      const record = await seal(this.#key, this.user, kind, bytes);
      await transact(RECORDS, "readwrite", (s) => s.put(record, `${this.user}/${kind}`));
    });
    this.#writes = write.catch(() => {});
    return write;
  }

  /** Loads the bytes saved under `kind`, or undefined. */
  async loadBytes(kind) {
    const record = await transact(RECORDS, "readonly", (s) => s.get(`${this.user}/${kind}`));
    if (record === undefined) return undefined;
    return unseal(this.#key, this.user, kind, record);
  }

  saveJson(kind, value) {
    return this.saveBytes(kind, encoder.encode(JSON.stringify(value)));
  }

  async loadJson(kind) {
    const bytes = await this.loadBytes(kind);
    return bytes === undefined ? undefined : JSON.parse(decoder.decode(bytes));
  }

  /** Waits for the pending writes. */
  flushed() {
    return this.#writes;
  }
}
