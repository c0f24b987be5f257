/**
 * A hasher that runs on a second thread (a web `Worker`), so hashing a big
 * NAR overlaps with walking the tree and reading files on the main thread
 * (hashing costs about as much as all the rest together). Bytes are copied
 * into a ring of 1 MiB slots in one `SharedArrayBuffer` (4 MiB: memory stays
 * flat; passing the slot index is cheap, where transferring buffers back and
 * forth measured slower than hashing inline under Bun); `update` waits when
 * every slot is still being hashed.
 *
 * Where there is no `Worker` or `SharedArrayBuffer` (Node), or the worker
 * cannot start, hashing happens inline with node:crypto, with the same
 * results.
 *
 * @module
 */
import { createHasher, type HashAlgo, type Hasher } from "./hash.ts";

const SLOT = 1 << 20;
const SLOTS = 4;

// The worker's whole program (a blob URL: nothing to ship next to a
// compiled binary). It hashes each slot it is told about and hands it back.
const WORKER_SOURCE = `
import { createHash } from "node:crypto";
let h, ring;
self.onmessage = (e) => {
  const m = e.data;
  try {
    if (m.ring) {
      ring = m.ring;
      h = createHash(m.algo);
    } else if (m.end) {
      self.postMessage({ digest: new Uint8Array(h.digest()) });
    } else {
      h.update(new Uint8Array(ring, m.slot * ${SLOT}, m.len));
      self.postMessage({ slot: m.slot });
    }
  } catch (err) {
    self.postMessage({ error: String(err) });
  }
};
`;

/** An incremental hasher whose work may happen on another thread. */
export interface AsyncHasher {
  /** Whether the hashing happens on another thread. */
  readonly threaded: boolean;
  /** Adds bytes (copied before this resolves: `b` may be reused afterwards). */
  update(b: Uint8Array): Promise<void> | void;
  /** The digest; the hasher is finished afterwards. */
  digest(): Promise<Uint8Array>;
  /** Stops the thread (idempotent; after errors, or when done). */
  close(): void;
}

/**
 * A hasher for `algo` that hashes on a worker thread when the runtime has
 * web workers and shared memory (Deno, Bun), else inline.
 */
export function createThreadedHasher(algo: HashAlgo): AsyncHasher {
  const W = (globalThis as { Worker?: typeof Worker }).Worker;
  if (
    typeof W !== "function" || typeof SharedArrayBuffer !== "function" ||
    typeof URL.createObjectURL !== "function"
  ) {
    return inlineHasher(createHasher(algo));
  }
  let url: string | undefined;
  try {
    // Revoked on close: Bun reads the worker's source only later.
    url = URL.createObjectURL(
      new Blob([WORKER_SOURCE], { type: "text/javascript" }),
    );
    // `smol` (Bun): a smaller heap for the worker; it only calls into
    // native hashing. Other runtimes ignore the option.
    const options = { type: "module", smol: true } as WorkerOptions;
    return new WorkerHasher(new W(url, options), algo, url);
  } catch {
    if (url) URL.revokeObjectURL(url);
    return inlineHasher(createHasher(algo));
  }
}

function inlineHasher(h: Hasher): AsyncHasher {
  return {
    threaded: false,
    update: (b) => {
      h.update(b);
    },
    digest: () => Promise.resolve(h.digest()),
    close: () => {},
  };
}

class WorkerHasher implements AsyncHasher {
  readonly threaded = true;
  readonly #worker: Worker;
  readonly #url: string;
  readonly #ring = new SharedArrayBuffer(SLOT * SLOTS);
  readonly #bytes = new Uint8Array(this.#ring);
  readonly #free: number[] = [];
  /** The slot being filled, or -1. */
  #slot = -1;
  #pos = 0;
  #error: Error | undefined;
  #closed = false;
  #wake: (() => void) | undefined;
  #onDigest: ((d: Uint8Array) => void) | undefined;

  constructor(worker: Worker, algo: HashAlgo, url: string) {
    this.#worker = worker;
    this.#url = url;
    for (let i = SLOTS - 1; i >= 0; i--) this.#free.push(i);
    worker.onmessage = (e: MessageEvent) => {
      const m = e.data as {
        slot?: number;
        digest?: Uint8Array;
        error?: string;
      };
      if (m.slot !== undefined) this.#free.push(m.slot);
      else if (m.digest) this.#onDigest?.(m.digest);
      else this.#fail(new Error(`hashing thread: ${m.error}`));
      this.#signal();
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault?.();
      this.#fail(new Error(`hashing thread failed: ${e.message}`));
      this.#signal();
    };
    worker.postMessage({ ring: this.#ring, algo });
  }

  #signal(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  #fail(e: Error): void {
    this.#error ??= e;
    this.close();
  }

  #send(): void {
    this.#worker.postMessage({ slot: this.#slot, len: this.#pos });
    this.#slot = -1;
    this.#pos = 0;
  }

  async update(b: Uint8Array): Promise<void> {
    let o = 0;
    while (o < b.length) {
      if (this.#slot < 0) {
        while (this.#free.length === 0 && !this.#error) {
          await new Promise<void>((r) => this.#wake = r);
        }
        if (this.#error) throw this.#error;
        this.#slot = this.#free.pop()!;
      }
      const n = Math.min(b.length - o, SLOT - this.#pos);
      this.#bytes.set(b.subarray(o, o + n), this.#slot * SLOT + this.#pos);
      this.#pos += n;
      o += n;
      if (this.#pos === SLOT) this.#send();
    }
  }

  async digest(): Promise<Uint8Array> {
    if (this.#error) throw this.#error;
    if (this.#slot >= 0) this.#send();
    let digest: Uint8Array | undefined;
    this.#onDigest = (d) => digest = d;
    this.#worker.postMessage({ end: true });
    while (!digest && !this.#error) {
      await new Promise<void>((r) => this.#wake = r);
    }
    this.close();
    if (!digest) throw this.#error;
    return digest;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#worker.terminate();
    URL.revokeObjectURL(this.#url);
  }
}
