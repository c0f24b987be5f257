/**
 * Reads and zstd-decompresses stored chunk records on a worker thread, so
 * that a long sequential read (a NAR being rendered: `snix store export`,
 * the nix-daemon's NarFromPath, NAR hashing) keeps both cores busy: the
 * worker reads and decompresses what the main thread will want next, while
 * the main thread checks BLAKE3 digests and writes out what came back.
 *
 * Measured on the 1 GiB mixed corpus before this: reading, decompressing
 * and verifying took about 0.75 s of the export's ~1.5 s of main-thread
 * work, the rest being NAR framing, the tree walk and output.
 *
 * The worker gets batches of ranges (pack file path, offset, length,
 * uncompressed size, BLAKE3 digest) in one message and answers each batch
 * with one message, transferring the decompressed bytes (no copies). It
 * starts from a source string (no module files: the same under Deno, Bun
 * and a compiled binary). Where it can load the native BLAKE3 addon (its
 * file is known: not in a compiled binary) it checks each digest itself,
 * which leaves the main thread only the NAR framing and output; elsewhere
 * the caller checks. A range it cannot read, decompress or verify comes
 * back as `undefined`, and the caller falls back to its own path (which
 * then reports the damage precisely, or finds a record moved by a pack
 * merge).
 *
 * Written here: the FUSE loader (lib/fuse/file_loader.ts) is a different
 * tool (warming the page cache for many small files, several reads in
 * flight) in a layer above this one.
 *
 * @module
 */
import process from "node:process";
import { setTimeout } from "node:timers";
import { nativeBlake3File } from "./blake3_native.ts";
import { DECODE_WORKER_SOURCE } from "../runtime/decode_worker.ts";

/** Bytes of requests gathered before a batch is sent right away. */
const BATCH_BYTES = 512 << 10;
/**
 * An idle worker is stopped after this long (ms): a worker keeps a Deno
 * process alive once it has used `node:fs`, and Bun's always (an `unref`
 * would let Bun exit while a reply is awaited).
 */
const IDLE_STOP_MS = 250;

/** A decoded range: its bytes, and whether the worker checked their digest. */
export interface Decoded {
  bytes: Uint8Array;
  verified: boolean;
}

interface Job {
  path: string;
  offset: number;
  length: number;
  size: number;
  digest: Uint8Array;
  done: (data: Decoded | undefined) => void;
}

/** Decodes stored chunk ranges on one worker thread (see the module doc). */
export class RangeDecoder {
  static #shared: RangeDecoder | undefined | null;
  /** Readers that said they will use the decoder for a while. */
  static #holders = 0;
  /** Ranges decoded by worker threads so far, in this process (for tests). */
  static decoded = 0;
  readonly #worker: Worker;
  #pending: Job[] = [];
  #pendingBytes = 0;
  #flushQueued = false;
  #sent = new Map<number, Job[]>();
  #nextId = 0;
  #broken = false;
  #idleTimer: { unref?: () => void } | undefined;

  private constructor(worker: Worker) {
    this.#worker = worker;
    worker.onmessage = (e: MessageEvent) => {
      const { id, all, ok, verified } = e.data as {
        id: number;
        all: ArrayBuffer;
        ok: Uint8Array;
        verified: boolean;
      };
      const jobs = this.#sent.get(id) ?? [];
      this.#sent.delete(id);
      let at = 0;
      jobs.forEach((j, i) => {
        const bytes = new Uint8Array(all, at, j.size);
        at += j.size;
        if (ok[i]) RangeDecoder.decoded++;
        j.done(ok[i] ? { bytes, verified } : undefined);
      });
      this.#idle();
    };
    worker.onerror = (e: Event) => {
      e.preventDefault?.();
      this.#fail();
    };
  }

  /**
   * The process's decoder, started on first use; `undefined` where no
   * worker can be started, or unless `SNIX_DECODE_WORKER=1` (off by
   * default until measured on an otherwise idle machine: on the shared
   * test machines the second core was busy).
   */
  static shared(): RangeDecoder | undefined {
    if (RangeDecoder.#shared !== undefined) {
      return RangeDecoder.#shared ?? undefined;
    }
    if (process.env.SNIX_DECODE_WORKER !== "1") return undefined;
    RangeDecoder.#shared = null; // (stays so if no worker can start)
    if (typeof Worker === "undefined") return undefined;
    const url = URL.createObjectURL(
      new Blob([DECODE_WORKER_SOURCE], { type: "text/javascript" }),
    );
    try {
      const worker = new Worker(url, { type: "module" });
      worker.postMessage({ blake3File: nativeBlake3File });
      RangeDecoder.#shared = new RangeDecoder(worker);
    } catch {
      return undefined;
    }
    return RangeDecoder.#shared;
  }

  /**
   * Says a long read is going on: the worker is not stopped for being idle
   * until the returned release is called (once); after the last release it
   * stops as soon as it has nothing to do, so a short-lived process (one
   * export) exits at once.
   */
  static hold(): () => void {
    RangeDecoder.#holders++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--RangeDecoder.#holders === 0) RangeDecoder.#shared?.stopIfIdle();
    };
  }

  /**
   * `length` bytes at `offset` of `path`, zstd-decompressed to exactly
   * `size` bytes, which should hash to `digest`; `undefined` if the worker
   * could not (unreadable, not a frame of that size, a wrong digest, or the
   * worker failed). Unless `verified`, the caller checks the digest.
   */
  decode(
    path: string,
    offset: number,
    length: number,
    size: number,
    digest: Uint8Array,
  ): Promise<Decoded | undefined> {
    if (this.#broken) return Promise.resolve(undefined);
    return new Promise((done) => {
      this.#pending.push({ path, offset, length, size, digest, done });
      this.#pendingBytes += size;
      if (this.#pendingBytes >= BATCH_BYTES) this.#flush();
      else if (!this.#flushQueued) {
        // With the next timer, not the next microtask: a tree walk asks for
        // many small files between two timers, and each message costs the
        // sender tens of microseconds (measured under Deno).
        this.#flushQueued = true;
        setTimeout(() => {
          if (this.#flushQueued) this.#flush();
        }, 0);
      }
    });
  }

  #flush(): void {
    this.#flushQueued = false;
    const jobs = this.#pending;
    if (jobs.length === 0) return;
    this.#pending = [];
    this.#pendingBytes = 0;
    const id = this.#nextId++;
    this.#sent.set(id, jobs);
    this.#busy();
    try {
      this.#worker.postMessage({
        id,
        paths: jobs.map((j) => j.path),
        offsets: Float64Array.from(jobs, (j) => j.offset),
        lengths: Float64Array.from(jobs, (j) => j.length),
        sizes: Float64Array.from(jobs, (j) => j.size),
        digests: digestsOf(jobs),
      });
    } catch {
      this.#fail();
    }
  }

  #busy(): void {
    if (this.#idleTimer) clearTimeout(this.#idleTimer as number);
    this.#idleTimer = undefined;
  }

  /**
   * Stops the worker once it has nothing to do: at once if nobody holds
   * it, else after it has been idle for a while.
   */
  #idle(): void {
    if (this.#sent.size > 0 || this.#pending.length > 0) return;
    if (RangeDecoder.#holders === 0) return this.#stop();
    if (this.#idleTimer) return;
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = undefined;
      if (this.#sent.size === 0 && this.#pending.length === 0) this.#stop();
    }, IDLE_STOP_MS);
    this.#idleTimer.unref?.();
  }

  /** Stops the worker if it has nothing to do and nobody holds it. */
  stopIfIdle(): void {
    this.#idle();
  }

  #stop(): void {
    this.#busy(); // (clears the idle timer)
    if (RangeDecoder.#shared === this) RangeDecoder.#shared = undefined;
    this.#broken = true;
    this.#worker.terminate();
  }

  #fail(): void {
    this.#broken = true;
    this.#busy(); // (no idle timer any more)
    for (const jobs of this.#sent.values()) {
      for (const j of jobs) j.done(undefined);
    }
    this.#sent.clear();
    for (const j of this.#pending) j.done(undefined);
    this.#pending = [];
    try {
      this.#worker.terminate();
    } catch { /* gone already */ }
  }
}

function digestsOf(jobs: Job[]): Uint8Array {
  const out = new Uint8Array(jobs.length * 32);
  jobs.forEach((j, i) => out.set(j.digest.subarray(0, 32), i * 32));
  return out;
}
