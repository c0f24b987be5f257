/**
 * A blob's chunks as the local store keeps them (zstd frames), for the bulk
 * Read connection's compressed messages (./zstd_message.ts explains the
 * format): the daemon then only reads each stored frame and writes it out,
 * with no decompression and no BLAKE3 of its own; the client decodes and
 * verifies every chunk against its digest, as it does for every Read.
 *
 * Measured serving a 128 MiB blob of incompressible data under Deno on this
 * 2-core machine (see scripts/bench_grpc.ts): the daemon spent about a
 * third of its CPU per MiB on the BLAKE3 check and the decompression copy
 * that the client repeats or does not need.
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
import { frameContentSize } from "./zstd_message.ts";

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
  /** The chunk's stored zstd frame, whose content is `size` bytes. */
  | { frame: Uint8Array; size: number }
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
      const frame = readStored(blobs, chunk.digest, fds);
      const size = frame && (chunk.size ?? frameContentSize(frame));
      if (frame && size !== undefined) {
        if (size > 0) yield { frame, size };
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

/** Most files one Read keeps open. */
const MAX_OPEN = 16;

/** A chunk's stored frame, or `undefined` if it cannot be located or read. */
function readStored(
  blobs: ChunkLocator,
  digest: Uint8Array,
  fds: Map<string, number>,
): Uint8Array | undefined {
  let at: StoredRange | undefined;
  try {
    at = blobs.locateChunk(digest);
  } catch {
    return undefined;
  }
  if (!at) return undefined;
  try {
    if (at.length < 0) return fs.readFileSync(at.path);
    let fd = fds.get(at.path);
    if (fd === undefined) {
      if (fds.size >= MAX_OPEN) {
        const [p, old] = fds.entries().next().value!;
        fds.delete(p);
        fs.closeSync(old);
      }
      fd = fs.openSync(at.path, "r");
      fds.set(at.path, fd);
    }
    const buf = new Uint8Array(at.length);
    let n = 0;
    while (n < at.length) {
      const got = fs.readSync(fd, buf, n, at.length - n, at.offset + n);
      if (got === 0) return undefined;
      n += got;
    }
    return buf;
  } catch {
    return undefined; // e.g. a pack merged away meanwhile: read it the usual way
  }
}
