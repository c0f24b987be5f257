/**
 * The blob service seam: content-addressed bytes, keyed by BLAKE3 digest.
 *
 * Implementations throw `ConnectError` (from `@connectrpc/connect`) with a
 * fitting `Code` on failure: `InvalidArgument` for a malformed digest,
 * `DataLoss` when stored bytes do not match their digest, `Unavailable` for
 * an unreachable backend. A missing blob is not an error: `undefined`.
 *
 * @module
 */

/** One chunk of a blob, as listed by {@linkcode BlobService.chunks}. */
export interface ChunkMeta {
  /** BLAKE3 digest of the chunk's bytes (32 bytes). */
  digest: Uint8Array;
  /** Length of the chunk in bytes. */
  size: number;
}

/** A byte range of a blob: `length` bytes from `offset` (to the end if omitted). */
export interface ByteRange {
  offset: number;
  length?: number;
  /**
   * The whole blob's size, if the caller knows it from a verified source (a
   * directory entry): a remote service may then fetch a small blob in one
   * call instead of asking for its chunks first. A wrong size only costs
   * that shortcut: the bytes are still verified against the digest.
   */
  blobSize?: number;
}

/** Receives a blob's bytes in order; `close()` stores it and returns its digest. */
export interface BlobWriter {
  /** Appends bytes. The writer may keep a reference until the returned promise settles. */
  write(data: Uint8Array): Promise<void>;
  /** Finishes the blob, makes it durable and visible, returns its BLAKE3 digest. */
  close(): Promise<Uint8Array>;
  /** Drops everything written so far; nothing becomes visible. */
  abort(): Promise<void>;
}

/** Content-addressed blob storage. */
export interface BlobService {
  /** Whether the blob is present. */
  has(digest: Uint8Array): Promise<boolean>;
  /**
   * The chunks the blob is made of, in order; an empty list if the backend
   * has no finer granularity; `undefined` if the blob is missing.
   */
  chunks(digest: Uint8Array): Promise<ChunkMeta[] | undefined>;
  /**
   * The blob's bytes (or a range of them), streamed and verified;
   * `undefined` if the blob is missing. A verification failure errors the
   * stream with `Code.DataLoss` naming the digest; wrong bytes are never
   * delivered.
   */
  read(
    digest: Uint8Array,
    range?: ByteRange,
  ): Promise<ReadableStream<Uint8Array> | undefined>;
  /** Starts writing a new blob. */
  put(): BlobWriter;
  /** Releases resources (connections, file handles). */
  close?(): Promise<void>;
}
