/**
 * The source of the FUSE reply worker of lib/fuse/direct_reads.ts: a module
 * given to `new Worker` as text (no module files to resolve, so the same
 * under `deno run`, Bun and a compiled binary). It lives here because it
 * calls the runtimes' FFI (`Deno.dlopen`, `bun:ffi`) for libzstd and
 * writev(2).
 *
 * @module
 */

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
import * as fs from "node:fs";
import { createRequire } from "node:module";
let blake3, unzstd, writev, addr;
let fuseFd = -1;
const setup = async (addons, fd) => {
  fuseFd = fd;
  for (const file of addons) {
    try {
      const m = createRequire(file)(file);
      if (typeof m.blake3 === "function") { blake3 = (b) => m.blake3(b); break; }
    } catch {}
  }
  if (!blake3) throw new Error("no BLAKE3 addon among " + addons.join(", "));
  if (globalThis.Deno) {
    const z = Deno.dlopen("libzstd.so.1", {
      ZSTD_createDCtx: { parameters: [], result: "pointer" },
      ZSTD_decompressDCtx: {
        parameters: ["pointer", "buffer", "usize", "buffer", "usize"],
        result: "usize",
      },
    });
    const dctx = z.symbols.ZSTD_createDCtx();
    if (dctx === null) throw new Error("ZSTD_createDCtx failed");
    unzstd = (dst, n, src, len) => Number(z.symbols.ZSTD_decompressDCtx(
      dctx, dst, BigInt(n), src, BigInt(len)));
    const c = Deno.dlopen("libc.so.6", {
      writev: { parameters: ["i32", "buffer", "i32"], result: "isize" },
    });
    addr = (u8) => BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(u8)));
    writev = (iov, n) => Number(c.symbols.writev(fuseFd, iov, n));
  } else if (globalThis.Bun) {
    const { dlopen, FFIType, ptr } = await import(["bun", "ffi"].join(":"));
    const z = dlopen("libzstd.so.1", {
      ZSTD_createDCtx: { args: [], returns: FFIType.ptr },
      ZSTD_decompressDCtx: {
        args: [FFIType.ptr, FFIType.ptr, FFIType.u64, FFIType.ptr, FFIType.u64],
        returns: FFIType.u64_fast,
      },
    });
    const dctx = z.symbols.ZSTD_createDCtx();
    if (!dctx) throw new Error("ZSTD_createDCtx failed");
    unzstd = (dst, n, src, len) =>
      Number(z.symbols.ZSTD_decompressDCtx(dctx, dst, n, src, len));
    const c = dlopen("libc.so.6", {
      writev: { args: [FFIType.i32, FFIType.ptr, FFIType.i32], returns: FFIType.i64 },
    });
    addr = (u8) => BigInt(ptr(u8));
    writev = (iov, n) => Number(c.symbols.writev(fuseFd, iov, n));
  } else {
    throw new Error("no FFI in this runtime");
  }
  // A known frame must come back (16 zero bytes, zstd level 1).
  const frame = new Uint8Array([40, 181, 47, 253, 0, 72, 69, 0, 0, 16, 0, 0, 1, 0, 50, 192, 2]);
  const out = new Uint8Array(new ArrayBuffer(16));
  const n = unzstd(out, 16, frame, frame.length);
  if (n !== 16 || out.some((b) => b !== 0)) throw new Error("libzstd self-test failed: " + n);
};
const files = new Map();
// Open pack files by path, least recently used first.
const fds = new Map();
const MAX_OPEN = 64;
const fdOf = (path) => {
  let fd = fds.get(path);
  if (fd !== undefined) { fds.delete(path); fds.set(path, fd); return fd; }
  fd = fs.openSync(path, "r");
  fds.set(path, fd);
  if (fds.size > MAX_OPEN) {
    const [p, old] = fds.entries().next().value;
    fds.delete(p);
    try { fs.closeSync(old); } catch {}
  }
  return fd;
};
// Decoded chunks, least recently used first: { key, buf, n, used }.
const CACHE_BYTES = CACHE_BYTES_VALUE;
let cache = [];
let cachedBytes = 0;
let readNo = 0;
let packed = new Uint8Array(1 << 20);
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
  const fd = fdOf(path);
  if (packed.length < len) packed = new Uint8Array(new ArrayBuffer(len));
  let got = 0;
  while (got < len) {
    const r = fs.readSync(fd, packed, got, len - got, off + got);
    if (r === 0) return undefined;
    got += r;
  }
  const e = slot(key, raw);
  const out = e.buf.subarray(0, raw);
  if (raw > 0 && unzstd(out, raw, packed, len) !== raw) { drop(e); return undefined; }
  const d = blake3(out);
  for (let i = 0; i < 32; i++) {
    if (d[i] !== f.digests[k * 32 + i]) { drop(e); return undefined; }
  }
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
  if (writev(iovBytes, n) < 0) return false;
  replies++;
  return true;
};
let replies = 0;
let ready;
self.onmessage = async (e) => {
  const m = e.data;
  if (m.t === "init") {
    ready = setup(m.addons, m.fd).then(
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
