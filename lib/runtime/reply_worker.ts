/**
 * The source of the FUSE reply worker of lib/fuse/direct_reads.ts: a module
 * given to `new Worker` as text (no module files to resolve, so the same
 * under `deno run`, Bun and a compiled binary). It lives here because it
 * calls the runtimes' FFI (`Deno.dlopen`, `bun:ffi`) for libzstd and
 * writev(2).
 *
 * @module
 */
import { CHUNK_WORKER_PRELUDE } from "./chunk_worker.ts";

/**
 * The worker: answers FUSE READs of big files itself. It reads a chunk's
 * stored bytes (a zstd frame in a pack file), decompresses it with libzstd
 * into a reused buffer, checks its BLAKE3 against the chunk's digest (the
 * native addon, loaded from the file the main thread loaded it from), and
 * writes the reply (out header + slices of the chunks) to the `/dev/fuse`
 * fd with one writev(2): the kernel matches a reply to its request by
 * `unique`, from whichever thread it comes. The decoded bytes never travel
 * back to the main thread.
 *
 * Messages in:
 * - `{ t: "init", addons, fd }` (files of Node-API addons this process
 *   loaded: the first with a `blake3` function is used); answered
 *   `{ t: "ready", ok, error? }`;
 * - `{ t: "file", id, size, paths, pathIdx: Uint32Array, offs, lens,
 *   starts, sizes: Float64Array, digests: Uint8Array }` (32 bytes each):
 *   where chunk `i` of file `id` starts in the file, its raw size, and
 *   where its zstd frame is stored;
 * - `{ t: "forget", id }`;
 * - `{ t: "reads", q: Float64Array }`: READs as `unique, id, offset,
 *   size, ino` (the last is only handed back).
 *
 * Out: `{ t: "fail", q: Float64Array }`: READs this worker did not answer
 * (unknown file, unreadable or moved pack, a chunk that does not decompress
 * to its size or hash to its digest, a reply the device refused); the main
 * thread answers them the usual way, which reports what is wrong. Nothing
 * of such a READ has reached the kernel.
 *
 * The last decoded chunks are kept (a few MiB): the kernel's READs of one
 * file are smaller than or not aligned to chunks, so several READs in a
 * row need the same chunk, which is then decoded once.
 */
export const REPLY_WORKER_SOURCE = `
${CHUNK_WORKER_PRELUDE}
let fuseFd = -1;
const files = new Map();
// Decoded chunks, least recently used first: { key, buf, n, used }.
const CACHE_BYTES = CACHE_BYTES_VALUE;
let cache = [];
let cachedBytes = 0;
let readNo = 0;
const slot = (key, n) => {
  // Reuse the buffer of the least recently used chunk not needed by the
  // READ being answered, once over the bound; else a new one.
  if (cachedBytes + n > CACHE_BYTES) {
    for (let i = 0; i < cache.length; i++) {
      const e = cache[i];
      if (e.used === readNo) continue;
      cache.splice(i, 1);
      cachedBytes -= e.buf.length;
      if (e.buf.length >= n && e.buf.length <= 2 * n) {
        e.key = key; e.n = n; e.used = readNo;
        cache.push(e);
        cachedBytes += e.buf.length;
        return e;
      }
      if (cachedBytes + n <= CACHE_BYTES) break;
      i--;
    }
  }
  const e = { key, buf: new Uint8Array(new ArrayBuffer(Math.max(n, 1))), n, used: readNo };
  cache.push(e);
  cachedBytes += e.buf.length;
  return e;
};
const lookup = (key) => {
  for (let i = cache.length - 1; i >= 0; i--) {
    const e = cache[i];
    if (e.key === key) {
      if (i !== cache.length - 1) { cache.splice(i, 1); cache.push(e); }
      e.used = readNo;
      return e;
    }
  }
  return undefined;
};
const drop = (e) => {
  const i = cache.indexOf(e);
  if (i >= 0) { cache.splice(i, 1); cachedBytes -= e.buf.length; }
};
// Chunk k of file f decoded and verified, or undefined.
const chunk = (f, k) => {
  const path = f.paths[f.pathIdx[k]];
  const off = f.offs[k], len = f.lens[k], raw = f.sizes[k];
  const key = path + "\\0" + off;
  const hit = lookup(key);
  if (hit) return hit;
  const stored = readStored(path, off, len);
  if (!stored) return undefined;
  const e = slot(key, raw);
  if (!decodeVerified(e.buf.subarray(0, raw), stored, f.digests, k)) { drop(e); return undefined; }
  return e;
};
const header = new Uint8Array(new ArrayBuffer(16));
const hv = new DataView(header.buffer);
let iov = new BigUint64Array(64);
let iovBytes = new Uint8Array(iov.buffer);
const find = (starts, offset) => {
  let lo = 0, hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid] <= offset) lo = mid; else hi = mid - 1;
  }
  return lo;
};
// Answers one READ; false if it could not (nothing written then).
const answer = (unique, id, offset, size) => {
  const f = files.get(id);
  if (!f) return false;
  readNo++;
  const end = Math.min(f.size, offset + size);
  let n = 1;
  let total = 0;
  if (offset < end) {
    for (let k = find(f.starts, offset); k < f.starts.length && f.starts[k] < end; k++) {
      const e = chunk(f, k);
      if (!e) return false;
      const s = f.starts[k];
      const from = Math.max(offset, s) - s;
      const to = Math.min(end, s + f.sizes[k]) - s;
      if (to <= from) continue;
      if ((n + 1) * 2 > iov.length) {
        const bigger = new BigUint64Array(iov.length * 2);
        bigger.set(iov);
        iov = bigger;
        iovBytes = new Uint8Array(iov.buffer);
      }
      iov[n * 2] = addr(e.buf.subarray(from, to));
      iov[n * 2 + 1] = BigInt(to - from);
      n++;
      total += to - from;
    }
  }
  hv.setUint32(0, 16 + total, true);
  hv.setInt32(4, 0, true);
  hv.setBigUint64(8, BigInt(unique), true);
  iov[0] = addr(header);
  iov[1] = 16n;
  // Refused (ENOENT: the request was interrupted; anything else: the
  // main thread tries again, which reports it).
  if (writev(fuseFd, iovBytes, n) < 0) return false;
  replies++;
  return true;
};
let replies = 0;
let ready;
self.onmessage = async (e) => {
  const m = e.data;
  if (m.t === "init") {
    fuseFd = m.fd;
    ready = setup(m.addons).then(
      () => { self.postMessage({ t: "ready", ok: true }); return true; },
      (err) => { self.postMessage({ t: "ready", ok: false, error: String(err?.message ?? err) }); return false; });
    return;
  }
  if (m.t === "file") { files.set(m.id, m); return; }
  if (m.t === "forget") { files.delete(m.id); return; }
  if (m.t === "stats") { self.postMessage({ t: "stats", replies }); return; }
  if (m.t !== "reads") return;
  const ok = await ready;
  const q = m.q;
  const failed = [];
  for (let i = 0; i < q.length; i += 5) {
    let done = false;
    try {
      done = ok && answer(q[i], q[i + 1], q[i + 2], q[i + 3]);
    } catch {
      done = false;
    }
    if (!done) failed.push(q[i], q[i + 1], q[i + 2], q[i + 3], q[i + 4]);
  }
  if (failed.length > 0) self.postMessage({ t: "fail", q: Float64Array.from(failed) });
};
`;
