/**
 * The source of the decoder worker of lib/castore/range_decoder.ts: a
 * module given to `new Worker` as text (no module files, so the same under
 * Deno, Bun and a compiled binary). It lives here because it calls the
 * runtimes' FFI (`Deno.dlopen`, `bun:ffi`) for libzstd.
 *
 * @module
 */

/**
 * The worker. First message: `{ blake3File }` (the addon's path, or
 * undefined). Then in: `{ id, paths: string[], offsets: Float64Array,
 * lengths: Float64Array, sizes: Float64Array, digests: Uint8Array }` (32
 * bytes each); out: `{ id, all: ArrayBuffer, ok: Uint8Array, verified }`:
 * the ranges' bytes back to back in `all`, `ok[i]` 0 where range i
 * failed, `verified` whether the digests were checked. Pack files stay
 * open (at most 64, least recently used closed). Decompression goes through
 * libzstd by FFI where the runtime allows (Deno, Bun): node:zlib's zstd
 * measured about 3x slower here. Records read in file order come from a
 * 1 MiB window per file (one read for many small records), as on the main
 * thread (lib/castore/pack.ts).
 */
export const DECODE_WORKER_SOURCE = `
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
