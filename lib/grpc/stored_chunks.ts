/**
 * A blob's chunks as the local store keeps them (zstd frames), for a bulk
 * Read that accepts zstd messages (./zstd_message.ts explains the format):
 * the daemon sends each chunk with no decompression and no BLAKE3 of its
 * own; the client verifies every chunk against its digest, as it does for
 * every Read. A frame of raw blocks only (incompressible data) is read
 * block by block straight into one array and sent as a plain message; any
 * other frame is sent as it is stored, for the client to decompress.
 *
 * Measured serving a 128 MiB blob of incompressible data under Deno on this
 * 2-core machine (see scripts/bench_grpc.ts --compare-decoded): the daemon
 * spent 1.4-1.7 ms CPU per MiB decoding and verifying each chunk itself,
 * 0.55-0.65 this way (load ~1).
 *
 * It works with a backend that says where a chunk's stored bytes are
 * (`locateChunk`, as `LocalBlobService` does for the FUSE loaders); any
 * other backend, and any chunk not found that way, is read through the
 * backend's verified `read`.
 *
 * @module
 */
import * as fs from "node:fs";
import { Code, ConnectError } from "@connectrpc/connect";
import type { BlobService } from "../castore/blob_service.ts";
import { digestToString } from "../castore/digest.ts";
import { frameContentSize, frameHeaderOf } from "./zstd_message.ts";

/** Where a chunk's stored zstd frame is (`length` -1: the whole file). */
export interface StoredRange {
  path: string;
  offset: number;
  length: number;
}

/** A backend that can say where chunks are stored. */
export interface ChunkLocator {
  locateChunk(digest: Uint8Array): StoredRange | undefined;
}

/** Whether `blobs` says where its chunks are stored. */
export function canLocateChunks(
  blobs: BlobService,
): blobs is BlobService & ChunkLocator {
  return typeof (blobs as Partial<ChunkLocator>).locateChunk === "function";
}

/** One chunk of a blob being sent. */
export type ChunkPiece =
  /**
   * The chunk's stored zstd frame, whose content is `size` bytes (a frame
   * with compressed blocks).
   */
  | { frame: Uint8Array; size: number; raw?: undefined }
  /**
   * The chunk's bytes, from a frame that stores them raw: gathered from
   * its blocks straight into one array (no decompression, no copy), `size`
   * bytes long.
   */
  | { raw: Uint8Array; size: number; frame?: undefined }
  /** The chunk's bytes, read (and verified) through the backend. */
  | { data: ReadableStream<Uint8Array> };

/**
 * The chunks of blob `digest`, in order, as stored frames where they can be
 * located and read, else as the backend's verified read of the chunk;
 * `undefined` if the blob is missing. Stored frames are not checked here.
 * Files opened are closed when the iteration ends.
 */
export async function storedChunks(
  blobs: BlobService & ChunkLocator,
  digest: Uint8Array,
): Promise<AsyncGenerator<ChunkPiece> | undefined> {
  const chunks = await blobs.chunks(digest);
  if (chunks === undefined) return undefined;
  const list: { digest: Uint8Array; size?: number }[] = chunks.length > 0
    ? chunks
    : [{ digest }];
  return pieces(blobs, digest, list);
}

async function* pieces(
  blobs: BlobService & ChunkLocator,
  blob: Uint8Array,
  list: { digest: Uint8Array; size?: number }[],
): AsyncGenerator<ChunkPiece> {
  // Files of this Read, open until it ends (packs hold many chunks).
  const fds = new Map<string, number>();
  try {
    for (const chunk of list) {
      const piece = readStored(blobs, chunk.digest, chunk.size, fds);
      if (piece) {
        if (piece.size > 0) yield piece;
        continue;
      }
      const data = await blobs.read(chunk.digest);
      if (!data) {
        throw new ConnectError(
          `chunk ${digestToString(chunk.digest)} of blob ${
            digestToString(blob)
          } is missing`,
          Code.DataLoss,
        );
      }
      yield { data };
    }
  } finally {
    for (const fd of fds.values()) {
      try {
        fs.closeSync(fd);
      } catch { /* already closed */ }
    }
  }
}

/**
 * Free bytes in front of every stored frame returned (in its buffer), for
 * the sender's frame and message headers: one write per message, no copy.
 */
export const STORED_HEADROOM = 64;

/** Buffers for stored frames, given back once written (see {@linkcode releaseStored}). */
const pool: ArrayBuffer[] = [];
/**
 * Most buffers kept in the pool: a Read runs ahead until the socket's
 * buffer is full (up to 8 MiB on a unix socket), and the write callbacks
 * that give buffers back run after that (measured: up to 30 taken at once).
 */
const POOL_MAX = 32;
/**
 * Size of pooled buffers: a local-store chunk's frame (chunks are at most
 * 512 KiB) with its headroom; bigger frames get buffers of their own.
 */
const POOL_BUFFER = (512 << 10) + 4096;

function takeBuffer(n: number): Uint8Array {
  if (n > POOL_BUFFER) return new Uint8Array(n);
  const b = pool.pop();
  return new Uint8Array(b ?? new ArrayBuffer(POOL_BUFFER), 0, n);
}

/**
 * Gives the buffer of a stored frame from {@linkcode storedChunks} back for
 * reuse, once nothing refers to its bytes any more (e.g. the socket write
 * of the frame completed). Why: a fresh buffer per chunk is zero-filled
 * first, a copy's worth of work (measured under Deno: `memset` was 8% of
 * the daemon's samples serving stored frames over TCP).
 */
export function releaseStored(frame: Uint8Array): void {
  if (frame.buffer.byteLength === POOL_BUFFER && pool.length < POOL_MAX) {
    pool.push(frame.buffer as ArrayBuffer);
  }
}

/** Most files one Read keeps open. */
const MAX_OPEN = 16;

/**
 * A chunk as stored (raw bytes or frame, see {@linkcode ChunkPiece}; the
 * array's buffer has {@linkcode STORED_HEADROOM} free bytes in front, give
 * it back with {@linkcode releaseStored} once written), or `undefined` if
 * it cannot be located or read, or its size is unknown.
 */
function readStored(
  blobs: ChunkLocator,
  digest: Uint8Array,
  knownSize: number | undefined,
  fds: Map<string, number>,
): Exclude<ChunkPiece, { data: unknown }> | undefined {
  let at: StoredRange | undefined;
  try {
    at = blobs.locateChunk(digest);
  } catch {
    return undefined;
  }
  if (!at) return undefined;
  let loose: number | undefined;
  try {
    let fd: number;
    let length = at.length;
    const base = Math.max(0, at.offset);
    if (length < 0) { // a whole (loose) file
      fd = loose = fs.openSync(at.path, "r");
      length = fs.fstatSync(fd).size;
    } else {
      const open = fds.get(at.path);
      if (open === undefined) {
        if (fds.size >= MAX_OPEN) {
          const [p, old] = fds.entries().next().value!;
          fds.delete(p);
          fs.closeSync(old);
        }
        fd = fs.openSync(at.path, "r");
        fds.set(at.path, fd);
      } else fd = open;
    }
    const raw = gatherRaw(fd, base, length, knownSize);
    if (raw) return { raw, size: raw.length };
    const buf = takeBuffer(STORED_HEADROOM + length);
    if (!readFully(fd, buf, STORED_HEADROOM, length, base)) {
      releaseStored(buf);
      return undefined;
    }
    const frame = buf.subarray(STORED_HEADROOM, STORED_HEADROOM + length);
    const size = knownSize ?? frameContentSize(frame);
    if (size === undefined) {
      releaseStored(buf);
      return undefined;
    }
    return { frame, size };
  } catch {
    return undefined; // e.g. a pack merged away meanwhile: read it the usual way
  } finally {
    if (loose !== undefined) fs.closeSync(loose);
  }
}

/** Reads `n` bytes at file position `pos` into `buf` at `at`; false at end of file. */
function readFully(
  fd: number,
  buf: Uint8Array,
  at: number,
  n: number,
  pos: number,
): boolean {
  let done = 0;
  while (done < n) {
    const got = fs.readSync(fd, buf, at + done, n - done, pos + done);
    if (got === 0) return false;
    done += got;
  }
  return true;
}

/** Scratch for frame and block headers. */
const head = new Uint8Array(32);

/**
 * The content of the zstd frame at `base` (`length` bytes) of `fd` if it
 * is stored in raw blocks only (what zstd writes for incompressible data),
 * read block by block straight into place: each read takes a block's bytes
 * and the next block's 3-byte header, which the next block's bytes then
 * overwrite. `undefined` (nothing to give back) for any other frame: a
 * compressed or RLE block, a checksum, an unknown size, trailing bytes.
 */
function gatherRaw(
  fd: number,
  base: number,
  length: number,
  knownSize: number | undefined,
): Uint8Array | undefined {
  const first = Math.min(length, head.length);
  if (!readFully(fd, head, 0, first, base)) return undefined;
  const fh = frameHeaderOf(head.subarray(0, first));
  if (!fh || fh.checksum || fh.length + 3 > first) return undefined;
  const size = fh.contentSize ?? knownSize;
  if (size === undefined || (knownSize ?? size) !== size) return undefined;
  let h = head[fh.length] | (head[fh.length + 1] << 8) |
    (head[fh.length + 2] << 16);
  let pos = fh.length + 3; // frame offset of the current block's bytes
  let k = 0; // content bytes placed
  const buf = takeBuffer(STORED_HEADROOM + size + 3);
  while (true) {
    const n = h >>> 3;
    const last = (h & 1) === 1;
    const want = n + (last ? 0 : 3);
    if (
      ((h >>> 1) & 3) !== 0 || k + n > size || pos + want > length ||
      !readFully(fd, buf, STORED_HEADROOM + k, want, base + pos)
    ) {
      releaseStored(buf);
      return undefined;
    }
    k += n;
    pos += want;
    if (last) break;
    const o = STORED_HEADROOM + k;
    h = buf[o] | (buf[o + 1] << 8) | (buf[o + 2] << 16);
  }
  if (k !== size || pos !== length) {
    releaseStored(buf);
    return undefined;
  }
  return buf.subarray(STORED_HEADROOM, STORED_HEADROOM + size);
}
