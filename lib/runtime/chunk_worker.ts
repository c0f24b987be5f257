/**
 * What the workers that decode stored chunks off the main thread share: the
 * FUSE reply workers (./reply_worker.ts, lib/fuse/direct_reads.ts) and the
 * NAR workers (./nar_worker.ts, lib/castore/nar_to_fd.ts).
 *
 * {@linkcode CHUNK_WORKER_PRELUDE} is the start of such a worker's source (a
 * module given to `new Worker` as text: no module files to resolve, so the
 * same under `deno run`, Bun and a compiled binary): it loads the native
 * BLAKE3 addon from a file the main thread mapped, libzstd and libc through
 * the runtime's FFI (`Deno.dlopen`, `bun:ffi`), and defines
 * - `setup(addons)`: loads all of that (rejects if any piece is missing);
 * - `readStored(path, offset, length)`: a stored record's bytes (`length`
 *   -1: a whole loose file) as a view of a reused buffer, `undefined` if
 *   the file is shorter;
 * - `decodeVerified(out, stored, digests, k)`: decompresses `stored` into
 *   exactly `out` and checks its BLAKE3 against digest `k` of `digests`
 *   (32 bytes each); false if it does not check out;
 * - `writev(fd, iov, n)` (negative errno on failure), `pollOut(fd, ms)`,
 *   `addr(u8)` (the address of a view's first byte, for iovecs);
 * - `closeFiles()`: closes the cached pack descriptors.
 *
 * {@linkcode startChunkWorkers} starts such workers and waits until each
 * answered its `init`.
 *
 * @module
 */
import { readFileSync } from "node:fs";

/** The common start of a chunk worker's source (see the module doc). */
export const CHUNK_WORKER_PRELUDE = `
import * as fs from "node:fs";
import { createRequire } from "node:module";
let blake3, unzstd, writev, pollOut, addr;
const setup = async (addons) => {
  for (const file of addons) {
    try {
      const m = createRequire(file)(file);
      if (typeof m.blake3 === "function") { blake3 = (b) => m.blake3(b); break; }
    } catch {}
  }
  if (!blake3) throw new Error("no BLAKE3 addon among " + addons.join(", "));
  const pfd = new Uint8Array(new ArrayBuffer(8));
  const pv = new DataView(pfd.buffer);
  let c, errnoAt, peek;
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
    c = Deno.dlopen("libc.so.6", {
      writev: { parameters: ["i32", "buffer", "i32"], result: "isize" },
      poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
      __errno_location: { parameters: [], result: "pointer" },
    }).symbols;
    addr = (u8) => BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(u8)));
    peek = (p) => new Deno.UnsafePointerView(p).getInt32();
    errnoAt = () => c.__errno_location();
    pollOut = (fd, ms) => { pv.setInt32(0, fd, true); pv.setInt16(4, 4, true); pv.setInt16(6, 0, true); return c.poll(pfd, 1n, ms); };
  } else if (globalThis.Bun) {
    const { dlopen, FFIType, ptr, read } = await import(["bun", "ffi"].join(":"));
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
    c = dlopen("libc.so.6", {
      writev: { args: [FFIType.i32, FFIType.ptr, FFIType.i32], returns: FFIType.i64 },
      poll: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
      __errno_location: { args: [], returns: FFIType.ptr },
    }).symbols;
    addr = (u8) => BigInt(ptr(u8));
    peek = (p) => read.i32(p, 0);
    errnoAt = () => c.__errno_location();
    pollOut = (fd, ms) => { pv.setInt32(0, fd, true); pv.setInt16(4, 4, true); pv.setInt16(6, 0, true); return c.poll(pfd, 1, ms); };
  } else {
    throw new Error("no FFI in this runtime");
  }
  writev = (fd, iov, n) => {
    const r = Number(c.writev(fd, iov, n));
    return r < 0 ? -peek(errnoAt()) : r;
  };
  // A known frame must come back (16 zero bytes, zstd level 1).
  const frame = new Uint8Array([40, 181, 47, 253, 0, 72, 69, 0, 0, 16, 0, 0, 1, 0, 50, 192, 2]);
  const out = new Uint8Array(new ArrayBuffer(16));
  const n = unzstd(out, 16, frame, frame.length);
  if (n !== 16 || out.some((b) => b !== 0)) throw new Error("libzstd self-test failed: " + n);
};
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
const closeFiles = () => {
  for (const fd of fds.values()) { try { fs.closeSync(fd); } catch {} }
  fds.clear();
};
let packed = new Uint8Array(1 << 20);
const readStored = (path, off, len) => {
  if (len < 0) {
    // A loose object file: all of it.
    const b = fs.readFileSync(path);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  }
  const fd = fdOf(path);
  if (packed.length < len) packed = new Uint8Array(new ArrayBuffer(len));
  let got = 0;
  while (got < len) {
    const r = fs.readSync(fd, packed, got, len - got, off + got);
    if (r === 0) return undefined;
    got += r;
  }
  return packed.subarray(0, len);
};
const decodeVerified = (out, stored, digests, k) => {
  const raw = out.length;
  if (raw > 0 && unzstd(out, raw, stored, stored.length) !== raw) return false;
  const d = blake3(out);
  for (let i = 0; i < 32; i++) {
    if (d[i] !== digests[k * 32 + i]) return false;
  }
  return true;
};
`;

/**
 * The Node-API addons this process has mapped (the native BLAKE3 among
 * them, if loaded: under `deno run` its file in node_modules, in a
 * compiled binary the copy Bun unpacked to a temporary file), the BLAKE3
 * one first.
 */
export function addonFiles(): string[] {
  const out = new Set<string>();
  try {
    for (const line of readFileSync("/proc/self/maps", "utf8").split("\n")) {
      const at = line.indexOf("/");
      if (at >= 0 && line.endsWith(".node")) out.add(line.slice(at));
    }
  } catch {
    // No /proc: no chunk workers.
  }
  return [...out].sort((a, b) =>
    Number(/blake/.test(b)) - Number(/blake/.test(a))
  );
}

/** What {@linkcode startChunkWorkers} calls with each worker's messages. */
export interface ChunkWorkerHandlers {
  /** A message other than the `ready` answer. */
  message(worker: Worker, data: { t: string; [k: string]: unknown }): void;
  /** A worker failed (an uncaught error) after it was started. */
  failed(worker: Worker): void;
}

/**
 * Starts `count` workers from `source` (which begins with
 * {@linkcode CHUNK_WORKER_PRELUDE} and answers `{ t: "init", addons, ... }`
 * with `{ t: "ready", ok, error? }`), sending each `init` (plus the addon
 * files). Resolves the workers once all are ready, or `undefined` (any
 * started one terminated) if a piece is missing, one fails, or they take
 * longer than `timeoutMs`. Never rejects.
 */
export async function startChunkWorkers(
  source: string,
  count: number,
  init: Record<string, unknown>,
  handlers: ChunkWorkerHandlers,
  timeoutMs = 5000,
): Promise<Worker[] | undefined> {
  const addons = addonFiles();
  if (addons.length === 0 || typeof Worker === "undefined") return undefined;
  const url = URL.createObjectURL(
    new Blob([source], { type: "text/javascript" }),
  );
  const workers: Worker[] = [];
  const oks: Promise<boolean>[] = [];
  let started = false;
  try {
    for (let i = 0; i < count; i++) {
      const w = new Worker(url, { type: "module" });
      workers.push(w);
      oks.push(
        new Promise<boolean>((ok) => {
          w.onmessage = (e: MessageEvent) => {
            const m = e.data;
            if (m.t === "ready") ok(m.ok === true);
            else handlers.message(w, m);
          };
          w.onerror = (e: Event) => {
            // Not expected (a worker catches what its work throws).
            e.preventDefault?.();
            ok(false);
            if (started) handlers.failed(w);
          };
        }),
      );
      w.postMessage({ ...init, t: "init", addons });
    }
  } catch {
    oks.push(Promise.resolve(false));
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const all = await Promise.race([
    Promise.all(oks).then((r) => r.every((x) => x)),
    new Promise<boolean>((r) => timer = setTimeout(() => r(false), timeoutMs)),
  ]);
  clearTimeout(timer);
  URL.revokeObjectURL(url);
  if (!all) {
    for (const w of workers) w.terminate();
    return undefined;
  }
  started = true;
  return workers;
}
