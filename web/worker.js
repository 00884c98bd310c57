// Key generation off the main thread: a module worker that loads the wasm
// core and answers {bits} with {identity} (PKCS#8 DER) or {error}.
import init, { generate_identity } from "./pkg/missive_web.js";

const ready = init();

self.onmessage = async (event) => {
  try {
    await ready;
    const identity = generate_identity(event.data.bits);
    self.postMessage({ identity }, [identity.buffer]);
  } catch (error) {
    self.postMessage({ error: error instanceof Error ? error.message : String(error) });
  }
};
