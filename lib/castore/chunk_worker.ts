/**
 * The thread side of ./chunk_pool.ts: cuts the bytes of blobs into chunks
 * (./chunker.ts), hashes each chunk and the whole blob (BLAKE3) and
 * compresses each chunk (zstd, the frames of ./local_blob_service.ts), for
 * several blobs at once (sessions, by id).
 *
 * Messages in: `{ open: id, avgSize }`, `{ data: id, bytes }` (the buffer is
 * transferred), `{ finish: id }`, `{ drop: id }`, `{ recycle: buffer }` (an
 * output buffer given back). Messages out: `{ ready }` once loaded;
 * `{ chunks: id, consumed, digests, sizes, offsets, lengths, out, input }`
 * after each data message (the digests packed 32 bytes each, the frames in
 * `out` at `offsets`, the input buffer given back); `{ done: id, digest }`;
 * `{ failed: id, message }`.
 *
 * @module
 */
import * as zlib from "node:zlib";
import { Chunker } from "./chunker.ts";
import { nativeBlake3 } from "./blake3_native.ts";
import { type ZstdCompressor, zstdCompressor } from "../runtime/zstd.ts";

/** zstd level, as ./local_blob_service.ts writes chunks. */
const ZSTD_LEVEL = 1;

interface Session {
  chunker: Chunker;
  hasher: Blake3 | undefined;
  first: Uint8Array | undefined;
  firstDigest: Uint8Array | undefined;
  count: number;
}

/** An incremental BLAKE3 (as ./digest.ts's). */
interface Blake3 {
  update(b: Uint8Array): unknown;
  digest(): Uint8Array;
}

// The native addon directly: ./digest.ts (loaded only without it) brings
// the WebAssembly hashers and Connect along, ~10 MiB more per thread.
let blake3Sync: (b: Uint8Array) => Uint8Array;
let createBlake3: () => Blake3;
if (nativeBlake3) {
  const n = nativeBlake3;
  blake3Sync = (b) => {
    const d = n.blake3(b);
    return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  };
  createBlake3 = () => {
    const h = new n.Blake3Hasher();
    return {
      update: (b: Uint8Array) => h.update(b),
      digest: () => {
        const d = h.digestBuffer();
        return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
      },
    };
  };
} else {
  const digest = await import("./digest.ts");
  blake3Sync = digest.blake3Sync;
  createBlake3 = digest.createBlake3;
}

const sessions = new Map<number, Session>();
const zstd: ZstdCompressor | undefined = await zstdCompressor().catch(() =>
  undefined
);

/** Recycled output buffers (sent back by the pool). */
const free: ArrayBuffer[] = [];
const OUT_MIN = 2 << 20; // holds a batch of one INPUT_SLOT message plus a carried chunk

/** zstd's compressBound (for the node:zlib fallback). */
function bound(n: number): number {
  return zstd ? zstd.bound(n) : n + (n >> 8) +
    (n < 128 << 10 ? ((128 << 10) - n) >> 11 : 0) + 64;
}

/** Compresses `data` to the start of `out`; returns the frame length. */
function compressInto(data: Uint8Array, out: Uint8Array): number {
  if (zstd) return zstd.compressInto(data, ZSTD_LEVEL, out);
  const b = zlib.zstdCompressSync(data, {
    params: {
      [zlib.constants.ZSTD_c_compressionLevel]: ZSTD_LEVEL,
      [zlib.constants.ZSTD_c_checksumFlag]: 0,
    },
  });
  out.set(b);
  return b.length;
}

function outBuffer(min: number): Uint8Array {
  // Small outputs (small blobs, ends of blobs) are not worth recycling.
  if (min < OUT_MIN >> 2) return new Uint8Array(min);
  for (let i = 0; i < free.length; i++) {
    if (free[i].byteLength >= min) {
      return new Uint8Array(free.splice(i, 1)[0]);
    }
  }
  return new Uint8Array(Math.max(min, OUT_MIN));
}

/** The chunks made from one message, hashed and compressed into `out`. */
interface Batch {
  out: Uint8Array;
  off: number;
  digests: Uint8Array[];
  sizes: number[];
  offsets: number[];
  lengths: number[];
}

/** A batch with room for the chunks of up to `bytes` bytes (cut at least `minSize` apart). */
function batch(bytes: number, minSize: number): Batch {
  const most = Math.ceil(bytes / Math.max(minSize, 1)) + 2;
  return {
    out: outBuffer(bound(bytes) + 64 * most),
    off: 0,
    digests: [],
    sizes: [],
    offsets: [],
    lengths: [],
  };
}

/** Hashes and compresses one chunk (a view, used only during the call). */
function add(b: Batch, s: Session, c: Uint8Array): void {
  const d = blake3Sync(c);
  b.digests.push(d);
  b.sizes.push(c.length);
  const n = compressInto(c, b.out.subarray(b.off));
  b.offsets.push(b.off);
  b.lengths.push(n);
  b.off += n;
  // A blob of one chunk has that chunk's digest: the whole-blob hash
  // starts with the second chunk (then covering the first too).
  if (s.count === 0) {
    s.first = c.slice();
    s.firstDigest = d;
  } else {
    s.hasher ??= createBlake3();
    if (s.first) s.hasher.update(s.first);
    s.first = undefined;
    s.hasher.update(c);
  }
  s.count++;
}

/**
 * Posts a batch, with the input buffer given back (both buffers are reused:
 * transferred buffers left to the garbage collector piled up, ~1 GiB RSS
 * for a 2 GiB import).
 */
function send(b: Batch, id: number, consumed: number, input?: ArrayBuffer) {
  const digests = new Uint8Array(32 * b.digests.length);
  b.digests.forEach((d, i) => digests.set(d, 32 * i));
  const transfer: Transferable[] = [b.out.buffer as ArrayBuffer];
  if (input) transfer.push(input);
  post({
    chunks: id,
    consumed,
    digests,
    sizes: b.sizes,
    offsets: b.offsets,
    lengths: b.lengths,
    out: b.out,
    input,
  }, transfer);
}

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(m: unknown, transfer?: Transferable[]): void;
};
const post = (m: unknown, transfer: Transferable[] = []) =>
  scope.postMessage(m, transfer);

scope.onmessage = (e: MessageEvent) => {
  const m = e.data as {
    open?: number;
    avgSize?: number;
    data?: number;
    bytes?: Uint8Array;
    finish?: number;
    drop?: number;
    recycle?: ArrayBuffer;
  };
  if (m.recycle) {
    // (as many as can be out at once: the pool's backlog over its input size)
    if (free.length < 16 && m.recycle.byteLength >= OUT_MIN) {
      free.push(m.recycle);
    }
    return;
  }
  const id = m.open ?? m.data ?? m.finish ?? m.drop!;
  try {
    if (m.open !== undefined) {
      sessions.set(m.open, {
        chunker: new Chunker({ avgSize: m.avgSize }),
        hasher: undefined,
        first: undefined,
        firstDigest: undefined,
        count: 0,
      });
    } else if (m.data !== undefined) {
      const s = sessions.get(m.data);
      const input = m.bytes!.buffer as ArrayBuffer;
      if (!s) {
        post({ chunks: m.data, consumed: m.bytes!.length, input }, [input]);
        return;
      }
      const b = batch(
        m.bytes!.length + s.chunker.maxSize,
        s.chunker.minSize,
      );
      s.chunker.pushEach(m.bytes!, (c) => add(b, s, c));
      send(b, m.data, m.bytes!.length, input);
    } else if (m.finish !== undefined) {
      const s = sessions.get(m.finish);
      if (!s) return;
      const rest = s.chunker.finish();
      if (s.count === 0 && rest.length === 0) rest.push(new Uint8Array(0));
      const b = batch(rest.reduce((n, c) => n + c.length, 0), 1);
      for (const c of rest) add(b, s, c);
      send(b, m.finish, 0);
      sessions.delete(m.finish);
      const digest = s.hasher ? s.hasher.digest() : s.firstDigest!;
      post({ done: m.finish, digest });
    } else if (m.drop !== undefined) {
      sessions.delete(m.drop);
    }
  } catch (err) {
    sessions.delete(id);
    post({ failed: id, message: (err as Error)?.message ?? String(err) });
  }
};

post({ ready: true });
