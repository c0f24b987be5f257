/**
 * BLAKE3 digests as used by castore: 32 bytes. Hashed natively where
 * ./blake3_native.ts can load its addon (about 5x faster), otherwise with
 * hash-wasm's WebAssembly BLAKE3 (incremental) and blake3-jit (one-shot).
 *
 * hash-wasm was picked after a benchmark (64 MiB in 64 KiB updates, this
 * machine): hash-wasm 4.13 ~300-390 MB/s under Deno 2.9 and Bun 1.4,
 * blake3-jit 1.1 ~200-250 MB/s, @noble/hashes ~45-115 MB/s; blake3-wasm 3.0
 * does not install (a missing dependency version on npm).
 *
 * hash-wasm only hands out hashers asynchronously (the WebAssembly module is
 * instantiated with a promise), while castore wants a synchronous
 * `createBlake3()`. So this module instantiates ONE hasher at load time and
 * lets any number of logical hashers share it: a logical hasher that is not
 * the current owner of the WebAssembly state swaps its saved state in before
 * updating (hash-wasm's `save()`/`load()`), so interleaving hashers stay
 * correct and a single hasher pays nothing extra.
 *
 * @module
 */
import { createBLAKE3, type IHasher } from "hash-wasm";
import { hash as oneShotBlake3 } from "blake3-jit";
import { Code, ConnectError } from "@connectrpc/connect";
import { nativeBlake3 } from "./blake3_native.ts";

/** Length of a BLAKE3 digest in bytes. */
export const DIGEST_LENGTH = 32;

const shared: IHasher = await createBLAKE3();
let owner: Blake3 | undefined;

/** An incremental BLAKE3 hasher (see {@linkcode createBlake3}). */
export interface Blake3 {
  /** Feeds bytes; returns the hasher for chaining. */
  update(data: Uint8Array): Blake3;
  /** Finishes and returns the 32-byte digest; the hasher is unusable afterwards. */
  digest(): Uint8Array;
}

class SharedBlake3 implements Blake3 {
  #state: Uint8Array | undefined;
  #done = false;

  #acquire(): void {
    if (this.#done) throw new Error("BLAKE3 hasher used after digest()");
    if (owner === this) return;
    if (owner !== undefined) (owner as SharedBlake3).#state = shared.save();
    if (this.#state === undefined) shared.init();
    else shared.load(this.#state);
    this.#state = undefined;
    owner = this;
  }

  update(data: Uint8Array): Blake3 {
    this.#acquire();
    shared.update(data);
    return this;
  }

  digest(): Uint8Array {
    this.#acquire();
    const out = shared.digest("binary");
    this.#done = true;
    owner = undefined;
    return out;
  }
}

/** A hasher of the native addon (each one owns its state). */
class NativeHasher implements Blake3 {
  #h = new nativeBlake3!.Blake3Hasher();
  #done = false;

  update(data: Uint8Array): Blake3 {
    if (this.#done) throw new Error("BLAKE3 hasher used after digest()");
    this.#h.update(data);
    return this;
  }

  digest(): Uint8Array {
    if (this.#done) throw new Error("BLAKE3 hasher used after digest()");
    this.#done = true;
    const b = this.#h.digestBuffer();
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  }
}

/** Starts an incremental BLAKE3 hash. */
export function createBlake3(): Blake3 {
  return nativeBlake3 ? new NativeHasher() : new SharedBlake3();
}

/**
 * The BLAKE3 digest of `data` (32 bytes), in one call. This is what hashes
 * (and verifies) every chunk, so it uses blake3-jit (pure JS generating a
 * WebAssembly SIMD kernel at run time): measured on this machine for 256 KiB
 * inputs, ~670 MiB/s under Deno 2.9 and ~300 MiB/s under Bun against
 * hash-wasm's ~340 and ~170 MiB/s. Its incremental hasher was slower than
 * hash-wasm's (~250 vs ~340 MiB/s in 1 MiB updates), so
 * {@linkcode createBlake3} stays on hash-wasm. Both are checked against the
 * same known answers and `b3sum` in ./digest_test.ts.
 */
export function blake3Sync(data: Uint8Array): Uint8Array {
  if (!nativeBlake3) return oneShotBlake3(data);
  const b = nativeBlake3.blake3(data);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Which BLAKE3 implementation is in use (for logs and benchmarks). */
export const blake3Implementation: "native" | "wasm" = nativeBlake3
  ? "native"
  : "wasm";

/** The BLAKE3 digest of `data` (32 bytes). */
export function blake3(data: Uint8Array): Promise<Uint8Array> {
  return Promise.resolve(blake3Sync(data));
}

/**
 * A digest as people read it in messages: `blake3-` + standard base64, the
 * form snix prints (`Display for B3Digest` in snix/castore/src/digests.rs).
 * Digests of the wrong length are printed the same way, so messages about
 * them stay readable.
 */
export function digestToString(digest: Uint8Array): string {
  let bin = "";
  for (const b of digest) bin += String.fromCharCode(b);
  return "blake3-" + btoa(bin);
}

/** Lower-case hex of a digest (used for file names). */
export function digestToHex(digest: Uint8Array): string {
  let s = "";
  for (const b of digest) s += HEX[b];
  return s;
}

const HEX: string[] = Array.from(
  { length: 256 },
  (_, i) => i.toString(16).padStart(2, "0"),
);

/** Parses 64 hex characters into a digest; throws `Error` on anything else. */
export function digestFromHex(hex: string): Uint8Array {
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new Error(`not a hex BLAKE3 digest: ${JSON.stringify(hex)}`);
  }
  const out = new Uint8Array(DIGEST_LENGTH);
  for (let i = 0; i < DIGEST_LENGTH; i++) {
    out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  return out;
}

/** Whether `d` has the length of a BLAKE3 digest. */
export function isValidDigest(d: Uint8Array): boolean {
  return d instanceof Uint8Array && d.length === DIGEST_LENGTH;
}

/**
 * Throws `ConnectError` `InvalidArgument` unless `d` is 32 bytes long.
 * `what` names the digest in the message (e.g. "blob digest").
 */
export function validateDigest(d: Uint8Array, what = "digest"): void {
  if (!isValidDigest(d)) {
    const len = d instanceof Uint8Array ? d.length : typeof d;
    throw new ConnectError(
      `invalid ${what}: expected ${DIGEST_LENGTH} bytes, got ${len}`,
      Code.InvalidArgument,
    );
  }
}

/** Byte-wise equality of two digests. */
export function digestEquals(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
