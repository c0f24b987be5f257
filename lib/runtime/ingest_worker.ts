/**
 * The source of the ingest worker of lib/castore/chunk_pipeline.ts: a module
 * given to `node:worker_threads`' `Worker` as a `data:` URL (its `unref`
 * lets the process exit while the worker sleeps; Deno's web Worker has
 * none), as text (no module files to resolve, so the same
 * under `deno run`, Bun and a compiled binary), like ./reply_worker.ts. It
 * lives here because it calls the runtimes' FFI (`Deno.dlopen`, `bun:ffi`)
 * for libzstd's compressor.
 *
 * The worker takes blob contents from a ring of shared memory, cuts them
 * into chunks (the castore chunker, whose class text the caller passes in),
 * hashes each chunk and the whole blob with the native BLAKE3 addon and
 * compresses each chunk with libzstd straight into a second ring, which the
 * main thread drains into the ingestion's pack file. So the main thread of
 * an import keeps only the file reads, the NAR's SHA-256 and the pack
 * writes, and the second core does the rest.
 *
 * Both rings hold records aligned to {@linkcode RING_ALIGN} bytes, each
 * starting with four int32: kind, writer id and two arguments. Input
 * records (main thread -> worker):
 * - `IN_BEGIN` (a = average chunk size): a new blob writer;
 * - `IN_DATA` (a = length): bytes of the blob, after the header;
 * - `IN_END`: the blob is complete;
 * - `IN_DROP`: forget the writer (aborted);
 * - `RING_WRAP`: continue at the start of the ring.
 * Output records (worker -> main thread), a 32-byte digest after the header:
 * - `OUT_CHUNK` (a = raw size, b = stored length): the chunk's digest and
 *   its zstd frame;
 * - `OUT_BLOB` (a = chunk count): the blob's digest (a blob of one chunk has
 *   that chunk's digest); sent after all its chunks;
 * - `OUT_ERROR` (a = message length): the writer failed, message in UTF-8;
 * - `RING_WRAP`.
 * The control array holds the bytes in use of each ring (the producer adds
 * after writing a record, the consumer subtracts after reading it; the
 * worker waits on `CTL_IN_USED` while it is zero, a few short timed waits
 * and then asleep, saying so in `CTL_WORKER_SLEEPING`), a progress counter the worker bumps per record,
 * and a flag by which the main thread asks for a message (`{}`) once the
 * counter reaches `CTL_WAKE_AT`, the input in use falls to
 * `CTL_WAKE_BELOW` bytes or the worker waits for room:
 * the main thread never blocks, and is not woken per record.
 *
 * @module
 */
import { DENO_ZSTD_COMPRESS_SYMBOLS } from "./zstd.ts";

/** Records start at multiples of this many bytes. */
export const RING_ALIGN = 16;
/** Bytes of an input record's header. */
export const IN_HEADER = 16;
/** Bytes of an output record's header (four int32 and a digest). */
export const OUT_HEADER = 48;
/** Record kinds. */
export const RING_WRAP = 9;
export const IN_BEGIN = 1;
export const IN_DATA = 2;
export const IN_END = 3;
export const IN_DROP = 4;
export const OUT_CHUNK = 1;
export const OUT_BLOB = 2;
export const OUT_ERROR = 3;
/** Indexes into the control Int32Array. */
export const CTL_IN_USED = 0;
export const CTL_OUT_USED = 1;
export const CTL_PROGRESS = 2;
export const CTL_MAIN_WAITING = 3;
export const CTL_STOP = 4;
export const CTL_WAKE_AT = 5;
export const CTL_WORKER_SLEEPING = 6;
export const CTL_WAKE_BELOW = 7;
/** Length of the control Int32Array. */
export const CTL_LENGTH = 8;

/**
 * The worker's module text, with the chunker class (`chunker`, JavaScript
 * defining the class `chunkerName`) in front.
 *
 * Messages in: `{ t: "init", addons, level, inRing, outRing, ctl, probe,
 * frame }` (files of the Node-API addons this process loaded, the first
 * with `blake3` and `Blake3Hasher` is used; the zstd level; the three
 * SharedArrayBuffers; a probe and its frame as the main thread's compressor
 * made it, which the worker must reproduce byte for byte). Answered
 * `{ t: "ready", ok, error? }`; after a good start the worker serves the
 * rings until `CTL_STOP` is set. Out later: `{}` (progress, when asked for).
 */
export function ingestWorkerSource(chunker: string, chunkerName: string) {
  return `
import { createRequire } from "node:module";
import { parentPort } from "node:worker_threads";
${chunker}
const ChunkerClass = ${chunkerName};
const ALIGN = ${RING_ALIGN}, IN_HEADER = ${IN_HEADER}, OUT_HEADER = ${OUT_HEADER};
const WRAP = ${RING_WRAP}, BEGIN = ${IN_BEGIN}, DATA = ${IN_DATA}, END = ${IN_END}, DROP = ${IN_DROP};
const CHUNK = ${OUT_CHUNK}, BLOB = ${OUT_BLOB}, ERROR = ${OUT_ERROR};
const IN_USED = ${CTL_IN_USED}, OUT_USED = ${CTL_OUT_USED}, PROGRESS = ${CTL_PROGRESS};
const WAITING = ${CTL_MAIN_WAITING}, STOP = ${CTL_STOP};
const WAKE_AT = ${CTL_WAKE_AT}, SLEEPING = ${CTL_WORKER_SLEEPING};
const WAKE_BELOW = ${CTL_WAKE_BELOW};
let blake3, Hasher, compress, bound;
const loadZstd = async () => {
  if (globalThis.Deno) {
    const z = Deno.dlopen(
      "libzstd.so.1",
      ${JSON.stringify(DENO_ZSTD_COMPRESS_SYMBOLS)},
    ).symbols;
    const cctx = z.ZSTD_createCCtx();
    if (cctx === null) throw new Error("ZSTD_createCCtx failed");
    return {
      run: (dst, src, level) => {
        const r = z.ZSTD_compressCCtx(cctx, dst, BigInt(dst.length), src, BigInt(src.length), level);
        if (z.ZSTD_isError(r)) throw new Error("zstd compression failed");
        return Number(r);
      },
      bound: (n) => Number(z.ZSTD_compressBound(BigInt(n))),
    };
  }
  if (globalThis.Bun) {
    const { dlopen, FFIType } = await import(["bun", "ffi"].join(":"));
    const z = dlopen("libzstd.so.1", {
      ZSTD_createCCtx: { args: [], returns: FFIType.ptr },
      ZSTD_compressCCtx: {
        args: [FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.ptr, FFIType.u64, FFIType.i32],
        returns: FFIType.u64_fast,
      },
      ZSTD_compressBound: { args: [FFIType.u64], returns: FFIType.u64_fast },
      ZSTD_isError: { args: [FFIType.u64], returns: FFIType.u32 },
    }).symbols;
    const cctx = z.ZSTD_createCCtx();
    if (!cctx) throw new Error("ZSTD_createCCtx failed");
    return {
      run: (dst, src, level) => {
        const r = z.ZSTD_compressCCtx(cctx, dst, dst.length, src, src.length, level);
        if (z.ZSTD_isError(r)) throw new Error("zstd compression failed");
        return Number(r);
      },
      bound: (n) => Number(z.ZSTD_compressBound(n)),
    };
  }
  throw new Error("no FFI in this runtime");
};
const setup = async (m) => {
  for (const file of m.addons) {
    try {
      const a = createRequire(file)(file);
      if (typeof a.blake3 === "function" && typeof a.Blake3Hasher === "function") {
        blake3 = (b) => a.blake3(b);
        Hasher = a.Blake3Hasher;
        break;
      }
    } catch {}
  }
  if (!blake3) throw new Error("no BLAKE3 addon among " + m.addons.join(", "));
  const z = await loadZstd();
  bound = z.bound;
  compress = z.run;
  const out = new Uint8Array(bound(m.probe.length));
  const n = compress(out, m.probe, m.level);
  if (n !== m.frame.length || out.subarray(0, n).some((b, i) => b !== m.frame[i])) {
    throw new Error("libzstd in the worker made another frame than the main thread");
  }
};
let IN, OUT, OUT32, IN32, ctl, IN_SIZE, OUT_SIZE, level;
let inTail = 0, outHead = 0;
const writers = new Map();
const align = (n) => (n + ALIGN - 1) & -ALIGN;
// Wakes a waiting main thread once its count of records is done, when the
// input in use falls to its mark, or (force) when this worker waits for room.
const progress = (force) => {
  const p = Atomics.add(ctl, PROGRESS, 1) + 1;
  if (
    Atomics.load(ctl, WAITING) !== 0 &&
    (force || ((p - Atomics.load(ctl, WAKE_AT)) | 0) >= 0 ||
      Atomics.load(ctl, IN_USED) <= Atomics.load(ctl, WAKE_BELOW)) &&
    Atomics.exchange(ctl, WAITING, 0) === 1
  ) {
    parentPort.postMessage({});
  }
};
// The offset of n free contiguous bytes at the output head (waits for the
// main thread to drain; writes a wrap record when the end is too near).
const reserve = (n) => {
  for (;;) {
    const used = Atomics.load(ctl, OUT_USED);
    const toEnd = OUT_SIZE - outHead;
    if (toEnd >= n) {
      if (OUT_SIZE - used >= n) return outHead;
    } else if (OUT_SIZE - used >= toEnd + n) {
      OUT32[outHead >> 2] = WRAP;
      outHead = 0;
      Atomics.add(ctl, OUT_USED, toEnd);
      continue;
    }
    if (Atomics.load(ctl, STOP)) throw new Error("ingest worker stopped");
    progress(true);
    // Timed: the main thread drains without waking this thread.
    Atomics.wait(ctl, OUT_USED, used, 0.2);
  }
};
const publish = (at, kind, id, a, b, digest, payload) => {
  const i = at >> 2;
  OUT32[i] = kind; OUT32[i + 1] = id; OUT32[i + 2] = a; OUT32[i + 3] = b;
  if (digest) OUT.set(digest, at + 16);
  const len = align(OUT_HEADER + payload);
  outHead = at + len === OUT_SIZE ? 0 : at + len;
  Atomics.add(ctl, OUT_USED, len);
  progress();
};
const chunk = (id, w, c, last) => {
  const d = blake3(c);
  if (w.n === 0) {
    w.firstDigest = d;
    // A first chunk that is not known to be the last is kept for the
    // blob's hash (a blob of one chunk has that chunk's digest).
    if (!last) w.first = c.slice();
  } else {
    if (!w.hasher) {
      w.hasher = new Hasher();
      w.hasher.update(w.first);
      w.first = undefined;
    }
    w.hasher.update(c);
  }
  w.n++;
  const cap = bound(c.length);
  const at = reserve(align(OUT_HEADER + cap));
  const n = compress(OUT.subarray(at + OUT_HEADER, at + OUT_HEADER + cap), c, level);
  publish(at, CHUNK, id, c.length, n, d, n);
};
const fail = (id, w, e) => {
  w.failed = true;
  const msg = new TextEncoder().encode(String(e?.message ?? e));
  const at = reserve(align(OUT_HEADER + msg.length));
  OUT.set(msg, at + OUT_HEADER);
  publish(at, ERROR, id, msg.length, 0, undefined, msg.length);
};
const record = (kind, id, a, at) => {
  if (kind === BEGIN) {
    writers.set(id, { chunker: new ChunkerClass({ avgSize: a }), n: 0, failed: false });
    return;
  }
  const w = writers.get(id);
  if (!w) return;
  if (kind === DROP) { writers.delete(id); return; }
  if (w.failed) { if (kind === END) writers.delete(id); return; }
  try {
    if (kind === DATA) {
      w.chunker.pushEach(IN.subarray(at + IN_HEADER, at + IN_HEADER + a), (c) => chunk(id, w, c, false));
    } else if (kind === END) {
      writers.delete(id);
      for (const c of w.chunker.finish()) chunk(id, w, c, true);
      if (w.n === 0) chunk(id, w, new Uint8Array(0), true);
      const digest = w.n === 1 ? w.firstDigest : w.hasher.digestBuffer();
      publish(reserve(OUT_HEADER), BLOB, id, w.n, 0, digest, 0);
    }
  } catch (e) {
    if (Atomics.load(ctl, STOP)) throw e;
    fail(id, w, e);
  }
};
// Short timed waits first, growing: during an ingestion the next record
// usually comes within them, and nobody has to wake this thread (a wake-up
// by the main thread cost it ~0.1-0.2 ms each in this VM, more than the
// work of a small record). Only after IDLE_STEPS does it sleep until woken.
const IDLE_STEPS = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6];
const serve = () => {
  let idle = 0;
  for (;;) {
    if (Atomics.load(ctl, IN_USED) === 0) {
      if (Atomics.load(ctl, STOP)) return;
      if (idle < IDLE_STEPS.length) {
        Atomics.wait(ctl, IN_USED, 0, IDLE_STEPS[idle++]);
        continue;
      }
      // The main thread notifies only a sleeping worker (the flag).
      Atomics.store(ctl, SLEEPING, 1);
      Atomics.wait(ctl, IN_USED, 0, 500);
      Atomics.store(ctl, SLEEPING, 0);
      continue;
    }
    idle = 0;
    const i = inTail >> 2;
    const kind = IN32[i];
    let len;
    if (kind === WRAP) {
      len = IN_SIZE - inTail;
    } else {
      const a = IN32[i + 2];
      len = align(IN_HEADER + (kind === DATA ? a : 0));
      record(kind, IN32[i + 1], a, inTail);
    }
    inTail = inTail + len === IN_SIZE ? 0 : inTail + len;
    Atomics.sub(ctl, IN_USED, len);
    progress();
  }
};
parentPort.on("message", async (m) => {
  if (m?.t !== "init") return;
  try {
    await setup(m);
  } catch (err) {
    parentPort.postMessage({ t: "ready", ok: false, error: String(err?.message ?? err) });
    return;
  }
  level = m.level;
  IN = new Uint8Array(m.inRing); IN32 = new Int32Array(m.inRing); IN_SIZE = IN.length;
  OUT = new Uint8Array(m.outRing); OUT32 = new Int32Array(m.outRing); OUT_SIZE = OUT.length;
  ctl = new Int32Array(m.ctl);
  parentPort.postMessage({ t: "ready", ok: true });
  try {
    serve();
  } catch {
    // Stopped while waiting for room.
  }
  // (stopped: the main thread terminates this worker)
});
`;
}
