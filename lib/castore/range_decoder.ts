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

/** Bytes of requests gathered before a batch is sent right away. */
const BATCH_BYTES = 512 << 10;
/**
 * An idle worker is stopped after this long (ms): a worker keeps a Deno
 * process alive once it has used `node:fs`, and Bun's always (an `unref`
 * would let Bun exit while a reply is awaited).
 */
const IDLE_STOP_MS = 250;

/**
 * The worker. First message: `{ blake3File }` (the addon's path, or
 * undefined). Then in: `{ id, paths: string[], offsets: Float64Array,
 * lengths: Float64Array, sizes: Float64Array, digests: Uint8Array }` (32
 * bytes each); out: `{ id, all: ArrayBuffer, ok: Uint8Array, verified }`:
 * the ranges' bytes back to back in `all`, `ok[i]` 0 where range i
 * failed, `verified` whether the digests were checked. Pack files stay open (at most 64, least recently used
 * closed). Decompression goes through libzstd by FFI where the runtime
 * allows (Deno, Bun): node:zlib's zstd measured about 3x slower here.
 * Records read in file order come from a 1 MiB window per file (one read
 * for many small records), as on the main thread (./pack.ts).
 */
const WORKER_SOURCE = `
import * as fs from "node:fs";
import * as zlib from "node:zlib";
let unzstd;
try {
  if (globalThis.Deno) {
    const lib = Deno.dlopen("libzstd.so.1", {
      ZSTD_createDCtx: { parameters: [], result: "pointer" },
      ZSTD_decompressDCtx: {
        parameters: ["pointer", "buffer", "usize", "buffer", "usize"],
        result: "usize",
      },
    });
    const dctx = lib.symbols.ZSTD_createDCtx();
    if (dctx !== null) {
      unzstd = (dst, src) => Number(lib.symbols.ZSTD_decompressDCtx(
        dctx, dst, BigInt(dst.length), src, BigInt(src.length)));
    }
  } else if (globalThis.Bun) {
    const { dlopen, FFIType } = await import(["bun", "ffi"].join(":"));
    const lib = dlopen("libzstd.so.1", {
      ZSTD_createDCtx: { args: [], returns: FFIType.ptr },
      ZSTD_decompressDCtx: {
        args: [FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.ptr, FFIType.u64],
        returns: FFIType.u64_fast,
      },
    });
    const dctx = lib.symbols.ZSTD_createDCtx();
    if (dctx) {
      unzstd = (dst, src) => Number(lib.symbols.ZSTD_decompressDCtx(
        dctx, dst, dst.length, src, src.length));
    }
  }
} catch { unzstd = undefined; }
const WINDOW = 1 << 20;
const files = new Map();
const fileOf = (path) => {
  let f = files.get(path);
  if (f) { files.delete(path); files.set(path, f); return f; }
  f = { fd: fs.openSync(path, "r"), win: null, at: 0, len: 0, end: -1 };
  files.set(path, f);
  if (files.size > 64) {
    const [p, old] = files.entries().next().value;
    files.delete(p);
    try { fs.closeSync(old.fd); } catch {}
  }
  return f;
};
let scratch = new Uint8Array(1 << 20);
const readInto = (fd, buf, want, offset) => {
  let n = 0;
  while (n < want) {
    const got = fs.readSync(fd, buf, n, buf.length - n, offset + n);
    if (got === 0) return -1;
    n += got;
  }
  return n;
};
const stored = (path, offset, length) => {
  const f = fileOf(path);
  if (f.win && offset >= f.at && offset + length <= f.at + f.len) {
    f.end = offset + length;
    return f.win.subarray(offset - f.at, offset - f.at + length);
  }
  const sequential = offset === f.end;
  f.end = offset + length;
  if (sequential && length < WINDOW / 2) {
    f.win ??= new Uint8Array(WINDOW);
    const n = readInto(f.fd, f.win, length, offset);
    if (n < 0) { f.win = null; return null; }
    f.at = offset;
    f.len = n;
    return f.win.subarray(0, length);
  }
  if (scratch.length < length) scratch = new Uint8Array(length);
  const n = readInto(f.fd, scratch.subarray(0, length), length, offset);
  return n < 0 ? null : scratch.subarray(0, length);
};
let blake3;
const setup = async (file) => {
  if (!file) return;
  try {
    const { createRequire } = await import("node:module");
    const m = createRequire(file)(file);
    if (typeof m.blake3 === "function") blake3 = (b) => m.blake3(b);
  } catch {}
};
const matches = (data, digests, i) => {
  const d = blake3(data);
  if (d.length !== 32) return false;
  for (let k = 0; k < 32; k++) if (d[k] !== digests[i * 32 + k]) return false;
  return true;
};
// Decompresses into \`out\` (exactly its length); false if that failed.
const decompress = (path, offset, length, out) => {
  const src = stored(path, offset, length);
  if (!src) return false;
  if (out.length === 0) return true;
  if (unzstd) return unzstd(out, src) === out.length;
  const d = zlib.zstdDecompressSync(src, {
    maxOutputLength: Math.max(out.length, 1),
    ...(out.length >= 1024 ? { chunkSize: out.length } : {}),
  });
  if (d.byteLength !== out.length) return false;
  out.set(d);
  return true;
};
let ready;
self.onmessage = async (e) => {
  if (!ready) { ready = setup(e.data.blake3File); return; }
  await ready;
  const { id, paths, offsets, lengths, sizes, digests } = e.data;
  // One array for the whole batch: one transfer per message, not one per
  // range (each transferred buffer costs the receiving thread).
  let total = 0;
  for (let i = 0; i < sizes.length; i++) total += sizes[i];
  const all = new Uint8Array(total);
  const ok = new Uint8Array(paths.length);
  let at = 0;
  for (let i = 0; i < paths.length; i++) {
    const out = all.subarray(at, at + sizes[i]);
    at += sizes[i];
    try {
      ok[i] = decompress(paths[i], offsets[i], lengths[i], out) &&
          (!blake3 || matches(out, digests, i)) ? 1 : 0;
    } catch { ok[i] = 0; }
  }
  self.postMessage({ id, all: all.buffer, ok, verified: blake3 !== undefined },
    [all.buffer]);
};
`;

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
      new Blob([WORKER_SOURCE], { type: "text/javascript" }),
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
