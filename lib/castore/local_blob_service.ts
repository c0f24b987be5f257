/**
 * The embedded blob service: blobs in a local data directory, split into
 * content-defined chunks (FastCDC, see ./chunker.ts), each chunk stored once.
 *
 * Layout under `<dataDir>/castore/`:
 * - `chunks/<hex[0:2]>/<hex>`: one chunk, zstd-compressed, named by the
 *   BLAKE3 of its uncompressed bytes;
 * - `blobs/<hex[0:2]>/<hex>`: the chunk list of a blob of two or more
 *   chunks (see {@linkcode encodeChunkList});
 * - `packs/blobs/<id>.pack`: chunks and chunk lists written by one
 *   ingestion (`putDeferred` with a session from `openSession`), in one
 *   file (./pack.ts). Readers look in packs first, then at loose files.
 *
 * A blob of one chunk (every blob up to 128 KiB, and the empty blob, stored
 * as one empty chunk) has no list: its only chunk has the blob's digest. So a
 * blob is present if its list or a chunk of that digest exists; every stored
 * chunk is itself a valid blob.
 *
 * Durability (./data_dir_sync.ts): objects are written to a temporary file
 * and renamed into place, so no process ever sees a partial one; a blob's
 * list only after all its chunks. Where syncfs is available they are not
 * fsynced one by one: `put()` writers commit (one shared syncfs) before
 * `close()` resolves, `putDeferred()` writers (ingestion) leave that to one
 * commit of the whole ingestion, and a power loss is repaired when the data
 * directory is next opened. Without syncfs each object and its shard
 * directory are fsynced, the chunks before the list. Several processes may
 * write into one data directory.
 *
 * zstd comes from `node:zlib` (present in Deno 2.9 and Bun 1.4). The
 * synchronous calls are used on purpose: per 512 KiB chunk they block for
 * well under a millisecond, and measured under Deno 2.9 they ran as fast or
 * faster than the callback versions (which hop through a thread pool and
 * allocate per call), for the same peak RSS.
 *
 * @module
 */
import * as fsSync from "node:fs";
import process from "node:process";
import { join } from "node:path";
import * as zlib from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";
import type {
  BlobService,
  BlobWriter,
  ByteRange,
  ChunkMeta,
} from "./blob_service.ts";
import { Chunker, DEFAULT_AVG_CHUNK_SIZE } from "./chunker.ts";
import {
  type Blake3,
  blake3Sync,
  createBlake3,
  DIGEST_LENGTH,
  digestEquals,
  digestToHex,
  digestToString,
  validateDigest,
} from "./digest.ts";
import {
  existsNow,
  listShardedDigests,
  prepareDataDir,
  readFileNow,
  shardsEmpty,
  storageError,
} from "./atomic_file.ts";
import {
  DataDirSync,
  type DeferredBlobService,
  type WriteSession,
} from "./data_dir_sync.ts";
import {
  PackKind,
  type PackRecord,
  PackSet,
  PackWriter,
  type StoredRange,
} from "./pack.ts";
import {
  type ZstdCompressor,
  zstdCompressor,
  type ZstdDecompressor,
  zstdDecompressor,
} from "../runtime/zstd.ts";
import { checkRange } from "./range.ts";
import {
  ChunkPipeline,
  type ChunkSink,
  MAX_PIPELINE_AVG,
  QUEUED_WRITER,
  sharedChunkPipeline,
} from "./chunk_pipeline.ts";
import { objectFiles } from "../runtime/object_files.ts";

/**
 * zstd level for chunks: -1 (the fastest of the "fast" levels that still
 * compresses like level 1 here: measured with `zstd -b` on 256 KiB blocks,
 * the mixed bench corpus compressed the same at 2x the speed, /usr/share/doc
 * 2% larger at 1.3x; level 3 compressed no better than 1 at more CPU).
 */
const ZSTD_LEVEL = -1;
/** Chunks being compressed and written at once per writer. */
const WRITE_CONCURRENCY = 4;
/**
 * A synchronous chunk read slower than this (ms) means a cold cache (a
 * packed one may fill a 1 MiB read window: a copy of up to about 1 ms on
 * a busy machine, so it gets more)...
 */
const COLD_READ_MS = 1;
const COLD_PACKED_READ_MS = 3;
/** ...and read-ahead then reads asynchronously for this long (ms). */
const COLD_WINDOW_MS = 1000;
/** Largest content a chunk file may claim in its header (sanity bound). */
const MAX_CHUNK_FILE_SIZE = 64 << 20;
/** Chunks read ahead of the consumer per read stream. */
const READ_AHEAD = 8;

const LIST_MAGIC_V1 = new TextEncoder().encode("SNIXBL1\n");
const LIST_MAGIC = new TextEncoder().encode("SNIXBL2\n");
const LIST_HEADER = 8 + 4 + 4 + 8;
const LIST_ENTRY = DIGEST_LENGTH + 4;

/**
 * Whether ingestion sessions use the ingest worker (./chunk_pipeline.ts):
 * yes unless `SNIX_INGEST_WORKER=0`. It was opt-in while the walk waited
 * at every directory's end for the worker's last blobs (ping-pong, not
 * overlap); since directories no longer wait (./ingest_tree.ts,
 * ./ingest_nar.ts) it won the interleaved pairs on the shared 2-core VM
 * (load 1.2-1.9): `snix store import` of the 1 GiB mixed corpus 3.3-3.6 s
 * against 3.9-4.6 s (binary, six pairs), 4.1-5.1 against 4.8-5.2 s
 * (`deno run`, one pair of six lost), `nix copy --to` 166-211 against
 * 155-187 MiB/s (binary, two pairs of six lost), for ~0.5-1 s more CPU per
 * GiB and ~70-100 MiB more peak RSS (the worker's heap, the rings). (A rare
 * test failure that came with it was the test's: ./nar_to_fd_test.ts
 * repaired a damaged pack in place and read on through a service holding
 * the damaged bytes in a pack read window.)
 */
const INGEST_WORKER = process.env.SNIX_INGEST_WORKER !== "0";

/**
 * What loading a chunk takes: its digest, the blob it belongs to (named in
 * messages), its size if known, its stored bytes if already read (else it
 * is read here), whether those are a pooled buffer to give back, and the
 * file they came from (for messages).
 */
type LoadChunkArgs = [
  digest: Uint8Array,
  blob: Uint8Array,
  expectedSize?: number,
  preread?: Uint8Array,
  pooled?: boolean,
  source?: string,
];

/** The checksum of a list body; version 2 lists also bind the blob digest. */
function listChecksum(body: Uint8Array, blob?: Uint8Array): Uint8Array {
  const h = createBlake3().update(body);
  if (blob) h.update(blob);
  return h.digest();
}

/**
 * A blob's chunk list file: magic `SNIXBL2\n`, chunk count (u32 LE), 4 zero
 * bytes, total size (u64 LE), per chunk its digest (32 bytes) and size
 * (u32 LE), then the BLAKE3 of everything before followed by the blob's own
 * digest. So a damaged list is detected before it can steer a ranged read to
 * the wrong chunks, and a list only verifies under the blob digest it was
 * written for: the writer hashed exactly these chunks, in this order, to that
 * digest. A reader that verifies every chunk therefore delivers the blob's
 * bytes without hashing the whole blob a second time. (Version 1 lists,
 * `SNIXBL1\n`, checksum the body alone; they are still read, with the whole
 * blob re-hashed.)
 */
export function encodeChunkList(
  chunks: ChunkMeta[],
  blob: Uint8Array,
): Uint8Array {
  validateDigest(blob, "blob digest");
  const n = chunks.length;
  const out = new Uint8Array(LIST_HEADER + n * LIST_ENTRY + DIGEST_LENGTH);
  const dv = new DataView(out.buffer);
  out.set(LIST_MAGIC, 0);
  dv.setUint32(8, n, true);
  let total = 0;
  chunks.forEach((c, i) => {
    const o = LIST_HEADER + i * LIST_ENTRY;
    out.set(c.digest, o);
    dv.setUint32(o + DIGEST_LENGTH, c.size, true);
    total += c.size;
  });
  dv.setBigUint64(16, BigInt(total), true);
  out.set(
    listChecksum(out.subarray(0, out.length - DIGEST_LENGTH), blob),
    out.length - DIGEST_LENGTH,
  );
  return out;
}

/**
 * Parses the chunk list file of blob `blob`; throws `Error` describing the
 * damage. `bound` tells whether the list's checksum binds the blob digest
 * (version 2), so that verified chunks make up the blob.
 */
export function decodeChunkList(
  b: Uint8Array,
  blob: Uint8Array,
): { chunks: ChunkMeta[]; size: number; bound: boolean } {
  if (b.length < LIST_HEADER + DIGEST_LENGTH) {
    throw new Error("chunk list truncated");
  }
  let v2 = true;
  let v1 = true;
  for (let i = 0; i < 8; i++) {
    if (b[i] !== LIST_MAGIC[i]) v2 = false;
    if (b[i] !== LIST_MAGIC_V1[i]) v1 = false;
  }
  if (!v1 && !v2) throw new Error("bad chunk list magic");
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const n = dv.getUint32(8, true);
  if (b.length !== LIST_HEADER + n * LIST_ENTRY + DIGEST_LENGTH) {
    throw new Error(
      `chunk list has ${b.length} bytes, expected ${
        LIST_HEADER + n * LIST_ENTRY + DIGEST_LENGTH
      }`,
    );
  }
  const body = b.subarray(0, b.length - DIGEST_LENGTH);
  if (
    !digestEquals(
      listChecksum(body, v2 ? blob : undefined),
      b.subarray(b.length - DIGEST_LENGTH),
    )
  ) {
    throw new Error(
      v2
        ? "chunk list checksum mismatch (damaged, or not this blob's list)"
        : "chunk list checksum mismatch",
    );
  }
  const size = Number(dv.getBigUint64(16, true));
  const chunks: ChunkMeta[] = [];
  let total = 0;
  for (let i = 0; i < n; i++) {
    const o = LIST_HEADER + i * LIST_ENTRY;
    const c = {
      digest: b.slice(o, o + DIGEST_LENGTH),
      size: dv.getUint32(o + DIGEST_LENGTH, true),
    };
    total += c.size;
    chunks.push(c);
  }
  if (total !== size) {
    throw new Error(`chunk sizes add up to ${total}, list says ${size}`);
  }
  return { chunks, size, bound: v2 };
}

/**
 * Buffers for compressed chunk files, reused: reading through them instead
 * of `readFile` halves the garbage a long read produces (peak RSS).
 */
const readPool: Uint8Array[] = [];
const POOL_MAX = 8;

/**
 * Reads a whole file into a pooled buffer (a view of its length), or
 * `undefined` if missing. Synchronous on purpose: chunk files are at most a
 * few hundred KiB, a warm read takes tens of microseconds, while the four
 * thread-pool round trips of the asynchronous calls (open, stat, read,
 * close) cost more main-thread time than the copy itself (measured on the
 * 1 GiB mixed corpus export).
 */
function readPooled(path: string): Uint8Array | undefined {
  let fd: number;
  try {
    fd = fsSync.openSync(path, "r");
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return undefined;
    throw storageError(`cannot read ${path}`, e);
  }
  try {
    const { size } = fsSync.fstatSync(fd);
    let buf = readPool.pop();
    if (!buf || buf.length < size) {
      buf = new Uint8Array(Math.max(size, 256 << 10));
    }
    let n = 0;
    while (n < size) {
      const bytesRead = fsSync.readSync(fd, buf, n, size - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    return buf.subarray(0, n);
  } catch (e) {
    throw storageError(`cannot read ${path}`, e);
  } finally {
    try {
      fsSync.closeSync(fd);
    } catch { /* nothing to do */ }
  }
}

/**
 * Reads a whole file in the runtime's I/O threads, or `undefined` if
 * missing. For read-ahead: its buffer is the caller's (not pooled).
 */
async function readUnpooled(path: string): Promise<Uint8Array | undefined> {
  try {
    return await objectFiles.read(path);
  } catch (e) {
    throw storageError(`cannot read ${path}`, e);
  }
}

/** Reads a whole chunk file on this thread, or `undefined` if missing. */
function readChunkFile(path: string): Uint8Array | undefined {
  try {
    return objectFiles.readSync(path);
  } catch (e) {
    throw storageError(`cannot read ${path}`, e);
  }
}

/** Returns a buffer from {@linkcode readPooled} to the pool. */
function releasePooled(view: Uint8Array): void {
  if (readPool.length < POOL_MAX) {
    readPool.push(
      new Uint8Array(
        view.buffer,
        view.byteOffset,
        view.buffer.byteLength - view.byteOffset,
      ),
    );
  }
}

function dataLoss(message: string): ConnectError {
  return new ConnectError(message, Code.DataLoss);
}

/** Blob storage in `<dataDir>/castore/{chunks,blobs}`. */
export class LocalBlobService implements BlobService, DeferredBlobService {
  readonly #chunksDir: string;
  readonly #blobsDir: string;
  readonly #tmpDir: string;
  readonly #avgChunkSize: number | undefined;
  /** Until when read-ahead reads asynchronously (see #loadChunkAhead). */
  #coldUntil = 0;
  /** Slow synchronous reads in a row. */
  #slowReads = 0;
  readonly #sync: DataDirSync;
  readonly #packs: PackSet;
  /** Whether ingestion sessions write packs (else loose files). */
  #packing = true;
  /** Whether loose objects existed when an ingestion first looked. */
  #looseMayExist: boolean | undefined;
  readonly #zstd: ZstdCompressor | undefined;
  /**
   * The ingest worker (see ./chunk_pipeline.ts): unknown until the first
   * session starts it, then a promise, then the pipeline or `null` (none).
   */
  #pipeline: Promise<ChunkPipeline | undefined> | ChunkPipeline | null = null;
  /** Whether sessions start the ingest worker (see INGEST_WORKER). */
  #ingestWorker = INGEST_WORKER;
  /** libzstd for chunks of known size (set by `open`; node:zlib otherwise). */
  #unzstd: ZstdDecompressor | undefined;

  private constructor(
    dataDir: string,
    sync: DataDirSync,
    zstd: ZstdCompressor | undefined,
    avgChunkSize?: number,
  ) {
    this.#chunksDir = join(dataDir, "castore", "chunks");
    this.#blobsDir = join(dataDir, "castore", "blobs");
    this.#tmpDir = join(dataDir, "tmp");
    this.#packs = new PackSet(
      join(dataDir, "castore", "packs", "blobs"),
      this.#tmpDir,
      { check: (...a) => this.#checkRecord(...a) },
    );
    this.#sync = sync;
    this.#zstd = zstd;
    this.#avgChunkSize = avgChunkSize;
  }

  /**
   * Opens (creating if needed) the blob store in `dataDir`. Throws an `Error`
   * with one line naming the path if it cannot be written.
   * `options.avgChunkSize` is for tests (default 256 KiB), as is
   * `options.asyncReads` (read-ahead always off this thread, as on a cold
   * cache), `options.packs: false` (ingestion writes loose files) and
   * `options.ingestWorker` (default: on unless `SNIX_INGEST_WORKER=0`).
   */
  static async open(
    dataDir: string,
    options: {
      avgChunkSize?: number;
      asyncReads?: boolean;
      packs?: boolean;
      ingestWorker?: boolean;
    } = {},
  ): Promise<LocalBlobService> {
    await prepareDataDir(dataDir, ["castore/chunks", "castore/blobs"]);
    const sync = await DataDirSync.open(dataDir);
    const zstd = await zstdCompressor();
    const svc = new LocalBlobService(
      dataDir,
      sync,
      zstd,
      options.avgChunkSize,
    );
    svc.#unzstd = await zstdDecompressor();
    if (options.asyncReads) svc.#coldUntil = Infinity;
    svc.#packing = options.packs ?? true;
    svc.#ingestWorker = options.ingestWorker ?? INGEST_WORKER;
    return svc;
  }

  /** The commit point of this data directory (see ./data_dir_sync.ts). */
  get syncPoint(): DataDirSync {
    return this.#sync;
  }

  /** Pack files that could not be loaded (damaged), one line each (for `verify`). */
  storageProblems(): string[] {
    return [...this.#packs.problems];
  }

  /** Where a packed chunk is, if it is in a pack. */
  packedChunk(digest: Uint8Array): PackRecord | undefined {
    const r = this.#packs.lookup(digest);
    return r?.kind === PackKind.chunk ? r : undefined;
  }

  /**
   * Where the stored (zstd-compressed) bytes of a blob stored as a single
   * chunk are: a range of a pack file, or a whole loose chunk file
   * (`length` -1); `undefined` if there is no such chunk. For readers that
   * load files themselves (the FUSE loader threads); the bytes are not
   * checked here.
   */
  locateChunk(digest: Uint8Array): StoredRange | undefined {
    const r = this.packedChunk(digest);
    if (r) return { path: r.pack.path, offset: r.offset, length: r.length };
    const path = this.chunkPath(digest);
    return existsNow(path) ? { path, offset: 0, length: -1 } : undefined;
  }

  /** Path of a loose chunk file (for tests and `verify`). */
  chunkPath(digest: Uint8Array): string {
    const h = digestToHex(digest);
    return join(this.#chunksDir, h.slice(0, 2), h);
  }

  /** Path of a blob's chunk list file (for tests and `verify`). */
  blobListPath(digest: Uint8Array): string {
    const h = digestToHex(digest);
    return join(this.#blobsDir, h.slice(0, 2), h);
  }

  /** Whether the blob is present. */
  // deno-lint-ignore require-await -- async so a bad digest rejects
  async has(digest: Uint8Array): Promise<boolean> {
    validateDigest(digest, "blob digest");
    return this.#packs.has(digest) ||
      existsNow(this.blobListPath(digest)) ||
      existsNow(this.chunkPath(digest));
  }

  /**
   * The blob's chunks in order; `[]` for a blob stored as a single chunk;
   * `undefined` if missing; `DataLoss` if its chunk list is damaged.
   */
  async chunks(digest: Uint8Array): Promise<ChunkMeta[] | undefined> {
    validateDigest(digest, "blob digest");
    const list = await this.#readList(digest);
    if (list) return list.chunks;
    return this.packedChunk(digest) || existsNow(this.chunkPath(digest))
      ? []
      : undefined;
  }

  /**
   * The chunk list of a blob of two or more chunks: the chunks, the blob's
   * size, and whether the list binds the blob digest (version 2: verified
   * chunks in its order are the blob; version 1 needs the whole blob
   * re-hashed); `undefined` if the blob has no list; `DataLoss` if it is
   * damaged. For readers that load chunks themselves (the NAR workers).
   */
  chunkList(
    digest: Uint8Array,
  ): { chunks: ChunkMeta[]; size: number; bound: boolean } | undefined {
    validateDigest(digest, "blob digest");
    return this.#readList(digest);
  }

  #readList(
    digest: Uint8Array,
  ): { chunks: ChunkMeta[]; size: number; bound: boolean } | undefined {
    const r = this.#packs.lookup(digest);
    const b = r?.kind === PackKind.list
      ? r.pack.readSync(r)
      : readFileNow(this.blobListPath(digest));
    if (!b) return undefined;
    try {
      return decodeChunkList(b, digest);
    } catch (e) {
      throw dataLoss(
        `chunk list of blob ${digestToString(digest)} is damaged: ${
          (e as Error).message
        }`,
      );
    }
  }

  /**
   * {@linkcode #loadChunk} for read-ahead. A warm file is read on this
   * thread (cheapest: an asynchronous read costs this thread more than the
   * copy, measured on the mixed corpus export: 0.5-0.7 CPU s more). Once a
   * read takes long (the disk was hit), reads go to the runtime's I/O
   * threads for a while, so the read-ahead keeps a cold disk busy with
   * several files at once while this thread decompresses and verifies.
   */
  async #loadChunkAhead(
    digest: Uint8Array,
    blob: Uint8Array,
    expectedSize: number,
  ): Promise<Uint8Array | undefined> {
    const packed = this.packedChunk(digest);
    let compressed: Uint8Array | undefined;
    if (performance.now() < this.#coldUntil) {
      compressed = packed
        ? await packed.pack.read(packed)
        : await readUnpooled(this.chunkPath(digest));
    } else {
      // A transient view: the chunk is decompressed right below, before
      // anything else can run.
      compressed = this.#timedReadSync(digest, packed);
    }
    if (!compressed) return undefined;
    return this.#loadChunk(
      digest,
      blob,
      expectedSize,
      compressed,
      false,
      packed?.pack.path,
    );
  }

  /**
   * A chunk's stored bytes read on this thread, for use right away (a
   * packed one is a transient view, see PackFile.readTransient), noting a
   * slow read: two in a row mean a cold disk, and then read-ahead goes off
   * this thread for a while (see #loadChunkAhead).
   */
  #timedReadSync(
    digest: Uint8Array,
    packed: PackRecord | undefined,
  ): Uint8Array | undefined {
    const t0 = performance.now();
    const compressed = packed
      ? packed.pack.readTransient(packed)
      : readChunkFile(this.chunkPath(digest));
    const t1 = performance.now();
    // Two slow reads in a row: one alone is often a pack being opened or
    // a pause of this thread, not the disk.
    const limit = packed ? COLD_PACKED_READ_MS : COLD_READ_MS;
    if (t1 - t0 <= limit) this.#slowReads = 0;
    else if (++this.#slowReads >= 2) this.#coldUntil = t1 + COLD_WINDOW_MS;
    return compressed;
  }

  /**
   * A small blob's verified bytes, read on this thread with no stream:
   * `undefined` where {@linkcode read} has to do it (a blob of several
   * chunks, a missing one, or while the disk is cold, when reads go to the
   * I/O threads). `DataLoss` naming the digest if the bytes are damaged or
   * not `size` long.
   */
  readSmallSync(digest: Uint8Array, size: number): Uint8Array | undefined {
    if (performance.now() < this.#coldUntil) return undefined;
    const rec = this.#packs.lookup(digest);
    if (rec && rec.kind !== PackKind.chunk) return undefined;
    const compressed = this.#timedReadSync(digest, rec);
    if (!compressed) return undefined;
    return this.#loadChunkSync(
      digest,
      digest,
      size,
      compressed,
      false,
      rec?.pack.path,
    );
  }

  /** {@linkcode #loadChunkSync}, failures as rejections (read-ahead style). */
  // deno-lint-ignore require-await -- async so failures reject
  async #loadChunk(...args: LoadChunkArgs): Promise<Uint8Array | undefined> {
    return this.#loadChunkSync(...args);
  }

  /**
   * Loads, decompresses and verifies one chunk. `blob` names the blob in
   * messages; `expectedSize` is checked when known.
   */
  #loadChunkSync(
    ...[digest, blob, expectedSize, preread, pooled = true, source]:
      LoadChunkArgs
  ): Uint8Array | undefined {
    const packed = preread ? undefined : this.packedChunk(digest);
    const path = source ?? packed?.pack.path ?? this.chunkPath(digest);
    const compressed = preread ??
      (packed
        ? packed.pack.readSync(packed, readPool.pop())
        : readPooled(path));
    if (!compressed) return undefined;
    const what = digestEquals(digest, blob)
      ? `blob ${digestToString(blob)}`
      : `chunk ${digestToString(digest)} of blob ${digestToString(blob)}`;
    let data: Uint8Array;
    try {
      data = this.#decompress(compressed, expectedSize);
    } catch (e) {
      if (pooled) releasePooled(compressed);
      throw dataLoss(
        `${what} is corrupt: cannot decompress ${path}: ${
          (e as Error).message
        }`,
      );
    }
    if (pooled) releasePooled(compressed);
    if (expectedSize !== undefined && data.length !== expectedSize) {
      throw dataLoss(
        `${what} is corrupt: ${data.length} bytes, expected ${expectedSize}`,
      );
    }
    const actual = blake3Sync(data);
    if (!digestEquals(actual, digest)) {
      throw dataLoss(
        `${what} is corrupt: its bytes hash to ${digestToString(actual)}`,
      );
    }
    return data;
  }

  /** A chunk's bytes from its zstd frame (`expectedSize` if known). */
  #decompress(compressed: Uint8Array, expectedSize?: number): Uint8Array {
    // An output chunk of the expected size spares the concatenation of
    // 64 KiB pieces (about 25% less time, measured on 256 KiB chunks).
    // libzstd when the size is known: from the chunk list, or from the
    // frame header (frames written through libzstd record it; a wrong
    // header is caught by the BLAKE3 check of every caller).
    const size = expectedSize ??
      (this.#unzstd?.contentSize(compressed) ?? -1);
    const out = this.#unzstd && size >= 0 && size <= MAX_CHUNK_FILE_SIZE
      ? this.#unzstd.decompress(compressed, size)
      : zlib.zstdDecompressSync(compressed, {
        maxOutputLength: Math.max(expectedSize ?? 64 << 20, 1),
        ...(expectedSize && expectedSize >= 1024
          ? { chunkSize: expectedSize }
          : {}),
      });
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  }

  /** What is wrong with a pack record's stored bytes (for pack compaction). */
  #checkRecord(
    kind: number,
    digest: Uint8Array,
    stored: Uint8Array,
    rawSize: number,
  ): string | undefined {
    try {
      if (kind === PackKind.list) {
        decodeChunkList(stored, digest);
        return undefined;
      }
      if (kind !== PackKind.chunk) return `unknown record kind ${kind}`;
      // The read path's own check (decompression, size, BLAKE3).
      this.#loadChunkSync(digest, digest, rawSize, stored, false);
      return undefined;
    } catch (e) {
      return `record ${digestToString(digest)}: ${(e as Error).message}`;
    }
  }

  /** The pack files (for `snix store compact`; see ./pack.ts). */
  get packs(): PackSet {
    return this.#packs;
  }

  /**
   * The blob's bytes (or a range), streamed; each chunk is verified before
   * any of its bytes are delivered, and a whole read also checks the blob's
   * digest; a mismatch errors the stream with `DataLoss` naming the digest.
   */
  async read(
    digest: Uint8Array,
    range?: ByteRange,
  ): Promise<ReadableStream<Uint8Array> | undefined> {
    validateDigest(digest, "blob digest");
    checkRange(range, 0); // reject a malformed range before anything is read
    // A blob of one chunk (every small one) is that chunk's file: try it
    // first, which costs big blobs one failed open and saves small ones the
    // failed open of a chunk list. A chunk file named by the blob digest
    // holds exactly the blob's bytes (checked when pulled).
    // (A packed chunk list means more than one chunk: no loose try then.)
    const rec = this.#packs.lookup(digest);
    const packed = rec?.kind === PackKind.chunk ? rec : undefined;
    const compressed = packed
      ? packed.pack.readSync(packed, readPool.pop())
      : rec?.kind === PackKind.list
      ? undefined
      : readChunkFile(this.chunkPath(digest));
    if (compressed) {
      const blob = digest;
      let loaded: Uint8Array | undefined;
      let done = false;
      return new ReadableStream<Uint8Array>({
        pull: async (controller) => {
          if (done) return;
          loaded = await this.#loadChunk(
            blob,
            blob,
            undefined,
            compressed,
            packed !== undefined, // a pooled buffer goes back to the pool
            packed?.pack.path,
          );
          if (!loaded) {
            throw dataLoss(
              `blob ${digestToString(blob)} disappeared while being read`,
            );
          }
          const [start, end] = checkRange(range, loaded.length);
          done = true;
          if (end > start) controller.enqueue(loaded.subarray(start, end));
          controller.close();
        },
      }, { highWaterMark: 0 });
    }
    const list = await this.#readList(digest);
    if (!list) return undefined;
    const [start, end] = checkRange(range, list.size);
    // Pick the chunks overlapping [start, end).
    const picks: { meta: ChunkMeta; from: number; to: number }[] = [];
    let off = 0;
    for (const meta of list.chunks) {
      const cEnd = off + meta.size;
      if (cEnd > start && off < end) {
        picks.push({
          meta,
          from: Math.max(0, start - off),
          to: Math.min(meta.size, end - off),
        });
      }
      off = cEnd;
      if (off >= end) break;
    }
    // Every chunk is verified as it is loaded. A version 2 list binds the
    // blob digest (see encodeChunkList), so verified chunks in its order ARE
    // the blob; only an old version 1 list needs the whole blob re-hashed.
    const whole = start === 0 && end === list.size;
    const hasher = whole && !list.bound ? createBlake3() : undefined;
    const pending: Promise<Uint8Array | undefined>[] = [];
    let next = 0; // next pick to start loading
    let delivered = 0; // picks delivered
    const fill = () => {
      while (next < picks.length && pending.length < READ_AHEAD) {
        // Read ahead asynchronously: on a cold page cache the chunk files
        // then come off the disk in parallel, while this thread decompresses
        // and verifies the chunk being delivered.
        const p = this.#loadChunkAhead(
          picks[next].meta.digest,
          digest,
          picks[next].meta.size,
        );
        p.catch(() => {}); // handled when awaited
        pending.push(p);
        next++;
      }
    };
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        if (delivered >= picks.length) {
          if (hasher) {
            const actual = hasher.digest();
            if (!digestEquals(actual, digest)) {
              throw dataLoss(
                `blob ${
                  digestToString(digest)
                } is corrupt: its chunks hash to ${digestToString(actual)}`,
              );
            }
          }
          controller.close();
          return;
        }
        fill();
        const pick = picks[delivered];
        const data = await pending.shift()!;
        if (!data) {
          throw dataLoss(
            `chunk ${digestToString(pick.meta.digest)} of blob ${
              digestToString(digest)
            } is missing`,
          );
        }
        delivered++;
        fill();
        hasher?.update(data);
        controller.enqueue(
          pick.from === 0 && pick.to === data.length
            ? data
            : data.subarray(pick.from, pick.to),
        );
        if (delivered >= picks.length && !hasher) controller.close();
      },
      cancel: () => {
        pending.length = 0;
      },
    }, { highWaterMark: 0 });
  }

  /** Starts writing a blob; `close()` resolves once it is durable. */
  put(): BlobWriter {
    return new LocalBlobWriter(
      this,
      new Chunker({ avgSize: this.#avgChunkSize }),
      false,
    );
  }

  /**
   * Starts writing a blob that is durable only after a later
   * `syncPoint.commit()` (for ingestion, which commits once at its end).
   */
  putDeferred(session?: WriteSession): BlobWriter {
    const avg = this.#avgChunkSize ?? DEFAULT_AVG_CHUNK_SIZE;
    if (this.#pipeline instanceof ChunkPipeline && this.#pipeline.broken) {
      this.#pipeline = null; // the next session starts another
    }
    const p = this.#pipeline;
    if (p && session instanceof PackWriter && avg <= MAX_PIPELINE_AVG) {
      if (!(p instanceof Promise)) {
        return new PipedBlobWriter(this, p, session, avg);
      }
      // Still starting: the first writes wait for it (an ingestion's
      // synchronous walk would otherwise never let its start finish).
      return new StartingBlobWriter(
        p.then((ready) =>
          ready
            ? new PipedBlobWriter(this, ready, session, avg)
            : new LocalBlobWriter(
              this,
              new Chunker({ avgSize: this.#avgChunkSize }),
              true,
              session,
            )
        ),
      );
    }
    return new LocalBlobWriter(
      this,
      new Chunker({ avgSize: this.#avgChunkSize }),
      true,
      session instanceof PackWriter ? session : undefined,
    );
  }

  /**
   * A session for {@linkcode putDeferred}: its chunks and lists go into one
   * new pack file, published (durably) by the session's `finish()`.
   * `undefined` (loose files) if opened with `packs: false`.
   */
  openSession(): WriteSession | undefined {
    if (!this.#packing) return undefined;
    // The ingest worker starts with the first session; writers use it
    // once it is up (the first blobs of the first session may not).
    if (this.#pipeline === null && this.#ingestWorker) {
      const starting = sharedChunkPipeline(this.#zstd, ZSTD_LEVEL);
      this.#pipeline = starting;
      starting.then((p) => {
        if (this.#pipeline === starting) this.#pipeline = p ?? null;
      });
    }
    return this.#packs.writer();
  }

  /**
   * Whether an ingestion may skip `digest`. Loose files are looked at only
   * if there were any when first asked (two failed stats per new chunk
   * otherwise, ~0.4 s per GiB imported); one written meanwhile by another
   * process is missed, which only stores its bytes twice.
   */
  #stored(digest: Uint8Array, pack: PackWriter): boolean {
    if (pack.holds(digest) || this.#packs.has(digest, false)) return true;
    this.#looseMayExist ??= !shardsEmpty(this.#chunksDir) ||
      !shardsEmpty(this.#blobsDir);
    return this.#looseMayExist &&
      (existsNow(this.chunkPath(digest)) ||
        existsNow(this.blobListPath(digest)));
  }

  /**
   * @internal Stores one chunk (if new), into `pack` if given; returns the
   * shard directory to fsync (none for a pack).
   */
  async storeChunk(
    digest: Uint8Array,
    data: Uint8Array,
    pack?: PackWriter,
  ): Promise<string> {
    if (pack) {
      this.storePacked(digest, data, pack);
      return "";
    }
    const path = this.chunkPath(digest);
    const dir = join(this.#chunksDir, digestToHex(digest).slice(0, 2));
    if (existsNow(path)) return dir;
    const c = this.#compress(digest, data);
    await this.#sync.write(this.#tmpDir, path, [
      new Uint8Array(c.buffer, c.byteOffset, c.byteLength),
    ]);
    return dir;
  }

  /**
   * @internal Adds one chunk to `pack` (if new), synchronously: `data` may
   * be a view that is only valid during the call.
   */
  storePacked(digest: Uint8Array, data: Uint8Array, pack: PackWriter): void {
    if (this.#stored(digest, pack)) return;
    const z = this.#zstd;
    if (!z) {
      pack.add(
        PackKind.chunk,
        digest,
        this.#compress(digest, data),
        data.length,
      );
      return;
    }
    // Compressed straight into the pack's write buffer.
    pack.addWith(
      PackKind.chunk,
      digest,
      data.length,
      z.bound(data.length),
      (dst) => {
        try {
          return z.compressInto(data, ZSTD_LEVEL, dst);
        } catch (e) {
          throw storageError(
            `cannot compress chunk ${digestToString(digest)}`,
            e,
          );
        }
      },
    );
  }

  #compress(digest: Uint8Array, data: Uint8Array): Uint8Array {
    let c: Uint8Array;
    try {
      // libzstd with one reused context where FFI allows (see
      // ../runtime/zstd.ts), node:zlib otherwise; the same frames.
      c = this.#zstd
        ? this.#zstd.compress(data, ZSTD_LEVEL)
        : zlib.zstdCompressSync(data, {
          params: {
            [zlib.constants.ZSTD_c_compressionLevel]: ZSTD_LEVEL,
            [zlib.constants.ZSTD_c_checksumFlag]: 0,
          },
        });
    } catch (e) {
      throw storageError(`cannot compress chunk ${digestToString(digest)}`, e);
    }
    return c;
  }

  /**
   * @internal Adds a chunk compressed elsewhere (the ingest worker) to
   * `pack`, if new: `frame` is its zstd frame, a view valid during the call.
   */
  storePackedFrame(
    digest: Uint8Array,
    size: number,
    frame: Uint8Array,
    pack: PackWriter,
  ): void {
    if (!this.#stored(digest, pack)) {
      pack.add(PackKind.chunk, digest, frame, size);
    }
  }

  /** @internal Adds a blob's chunk list to `pack` (after its chunks), if new. */
  storePackedList(
    digest: Uint8Array,
    chunks: ChunkMeta[],
    pack: PackWriter,
  ): void {
    if (!this.#stored(digest, pack)) {
      pack.add(PackKind.list, digest, encodeChunkList(chunks, digest));
    }
  }

  /**
   * @internal Writes a blob's chunk list after its chunks (without syncfs:
   * after their shard directories are fsynced).
   */
  async storeList(
    digest: Uint8Array,
    chunks: ChunkMeta[],
    chunkDirs: Set<string>,
    pack?: PackWriter,
  ): Promise<void> {
    if (pack) return this.storePackedList(digest, chunks, pack);
    await this.#sync.dirsDurable(chunkDirs);
    const path = this.blobListPath(digest);
    if (existsNow(path)) return;
    await this.#sync.write(this.#tmpDir, path, [
      encodeChunkList(chunks, digest),
    ]);
    await this.#sync.dirsDurable([
      join(this.#blobsDir, digestToHex(digest).slice(0, 2)),
    ]);
  }

  /**
   * Every readable blob digest: blobs with a chunk list, and every chunk
   * (each chunk is the blob of its own bytes; single-chunk blobs are stored
   * that way). For `snix store verify`: read each back to check it.
   */
  async *listBlobs(): AsyncIterable<Uint8Array> {
    for (const { digest } of this.#packs.entries()) yield digest;
    yield* listShardedDigests(this.#blobsDir);
    yield* listShardedDigests(this.#chunksDir);
  }

  /** Nothing to release (files are opened per operation). */
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Throws a writer's error, or FailedPrecondition unless it is open. */
function checkWritable(error: unknown, state: string): void {
  if (error !== undefined) throw error;
  if (state !== "open") {
    throw new ConnectError(
      `blob writer already ${state}`,
      Code.FailedPrecondition,
    );
  }
}

class LocalBlobWriter implements BlobWriter {
  #svc: LocalBlobService;
  #chunker: Chunker;
  // The whole blob's hash is fed chunk by chunk (the same bytes in the same
  // order), see #account: small blobs are hashed once.
  #hasher: Blake3 | undefined; // created for the second chunk
  #first: Uint8Array | undefined;
  #chunks: ChunkMeta[] = [];
  #dirs = new Set<string>();
  #inflight = new Set<Promise<void>>();
  #error: unknown;
  #state: "open" | "closing" | "closed" | "aborted" = "open";
  #deferred: boolean;
  #pack: PackWriter | undefined;
  constructor(
    svc: LocalBlobService,
    chunker: Chunker,
    deferred: boolean,
    pack?: PackWriter,
  ) {
    this.#svc = svc;
    this.#chunker = chunker;
    this.#deferred = deferred;
    this.#pack = pack;
  }

  #check(): void {
    checkWritable(this.#error, this.#state);
  }

  /**
   * Hashes a chunk, feeds the blob's hash and records it; returns its
   * digest. The first chunk is held back (`first`: the array to keep) until
   * a second one exists: a blob of one chunk has that chunk's digest.
   */
  #account(chunk: Uint8Array, first: () => Uint8Array): Uint8Array {
    const digest = blake3Sync(chunk);
    if (this.#chunks.length === 0) {
      this.#first = first();
    } else {
      this.#hasher ??= createBlake3();
      if (this.#first) this.#hasher.update(this.#first);
      this.#first = undefined;
      this.#hasher.update(chunk);
    }
    this.#chunks.push({ digest, size: chunk.length });
    return digest;
  }

  async #store(chunk: Uint8Array): Promise<void> {
    const digest = this.#account(chunk, () => chunk);
    while (this.#inflight.size >= WRITE_CONCURRENCY) {
      await Promise.race(this.#inflight);
    }
    if (this.#error !== undefined) throw this.#error;
    const p = this.#svc.storeChunk(digest, chunk, this.#pack).then(
      (dir) => {
        if (dir) this.#dirs.add(dir);
      },
      (e) => {
        this.#error ??= e;
      },
    ).finally(() => this.#inflight.delete(p));
    this.#inflight.add(p);
  }

  /**
   * Stores a chunk of a pack session right away (`chunk` is a view of the
   * chunker's input, valid only during the call: the first chunk is copied,
   * as it is hashed into the blob digest only once a second one exists).
   */
  #storeView(chunk: Uint8Array): void {
    if (this.#error !== undefined) return;
    try {
      const digest = this.#account(chunk, () => chunk.slice());
      this.#svc.storePacked(digest, chunk, this.#pack!);
    } catch (e) {
      this.#error = e;
    }
  }

  async write(data: Uint8Array): Promise<void> {
    this.#check();
    if (this.#pack) {
      // No copies: chunks are cut, hashed and compressed where they are.
      this.#chunker.pushEach(data, (c) => this.#storeView(c));
      if (this.#error !== undefined) throw this.#error;
      return;
    }
    // Feed big writes in slices, so only a few chunks exist at once.
    for (let o = 0; o < data.length; o += 1 << 20) {
      const part = data.subarray(o, o + (1 << 20));
      for (const c of this.#chunker.push(part)) await this.#store(c);
    }
  }

  async close(): Promise<Uint8Array> {
    this.#check();
    this.#state = "closing";
    try {
      const rest = this.#chunker.finish();
      if (this.#chunks.length === 0 && rest.length === 0) {
        rest.push(new Uint8Array(0));
      }
      for (const c of rest) await this.#store(c);
      await Promise.all(this.#inflight);
      if (this.#error !== undefined) throw this.#error;
      const single = this.#chunks.length === 1;
      const digest = single ? this.#chunks[0].digest : this.#hasher!.digest();
      this.#first = undefined;
      if (single) {
        // The single chunk is the blob (without syncfs: make its rename durable).
        await this.#svc.syncPoint.dirsDurable(this.#dirs);
      } else {
        await this.#svc.storeList(
          digest,
          this.#chunks,
          this.#dirs,
          this.#pack,
        );
      }
      if (!this.#deferred) await this.#svc.syncPoint.commit();
      this.#state = "closed";
      return digest;
    } catch (e) {
      this.#state = "aborted";
      throw e;
    }
  }

  async abort(): Promise<void> {
    if (this.#state === "open") this.#state = "aborted";
    this.#first = undefined;
    await Promise.allSettled(this.#inflight);
  }
}

/**
 * Blobs smaller than this are stored on the main thread (one chunk: a
 * BLAKE3 and a zstd call of a few KiB cost less than the hand-over to the
 * worker and back); bigger ones go through the ingest worker.
 */
const PIPE_MIN = 128 << 10;

/**
 * A blob writer of a pack session whose chunking, hashing and compression
 * run on the ingest worker (./chunk_pipeline.ts) once the blob reaches
 * PIPE_MIN bytes: `write` copies the bytes into the worker's ring; the
 * chunks' frames come back in order and go into the pack on this thread,
 * the chunk list after them. A smaller blob is gathered and stored at
 * `close` by a {@linkcode LocalBlobWriter} of the same pack.
 */
class PipedBlobWriter implements BlobWriter, ChunkSink {
  readonly [QUEUED_WRITER] = true;
  #svc: LocalBlobService;
  #pipe: ChunkPipeline;
  #pack: PackWriter;
  #avgSize: number;
  /** The worker's id of this blob, once it goes there. */
  #id: number | undefined;
  /** Bytes gathered before that. */
  #small: Uint8Array | undefined;
  #smallLength = 0;
  #chunks: ChunkMeta[] = [];
  #error: unknown;
  #state: "open" | "closing" | "closed" | "aborted" = "open";
  #done: Promise<Uint8Array>;
  #resolve!: (d: Uint8Array) => void;
  #reject!: (e: unknown) => void;

  constructor(
    svc: LocalBlobService,
    pipe: ChunkPipeline,
    pack: PackWriter,
    avgSize: number,
  ) {
    this.#svc = svc;
    this.#pipe = pipe;
    this.#pack = pack;
    this.#avgSize = avgSize;
    this.#done = new Promise((ok, fail) => {
      this.#resolve = ok;
      this.#reject = fail;
    });
    this.#done.catch(() => {});
  }

  chunk(digest: Uint8Array, size: number, frame: Uint8Array): void {
    this.#chunks.push({ digest, size });
    if (this.#error !== undefined) return;
    try {
      this.#svc.storePackedFrame(digest, size, frame, this.#pack);
    } catch (e) {
      this.#error = e;
    }
  }

  blob(digest: Uint8Array, chunks: number): void {
    try {
      if (this.#error !== undefined) throw this.#error;
      if (chunks !== this.#chunks.length) {
        throw new Error(
          `ingest worker sent ${this.#chunks.length} chunks of ${chunks}`,
        );
      }
      if (chunks > 1) {
        this.#svc.storePackedList(digest, this.#chunks, this.#pack);
      }
      this.#resolve(digest);
    } catch (e) {
      this.#error ??= e;
      this.#reject(e);
    }
  }

  fail(e: Error): void {
    this.#error ??= storageError("cannot store blob", e);
    this.#reject(this.#error);
  }

  #check(): void {
    checkWritable(this.#error, this.#state);
  }

  async write(data: Uint8Array): Promise<void> {
    this.#check();
    if (this.#id === undefined) {
      const n = this.#smallLength + data.length;
      if (n < PIPE_MIN) {
        if (!this.#small || this.#small.length < n) {
          const grown = new Uint8Array(Math.max(n, 2 * this.#smallLength));
          if (this.#small) {
            grown.set(this.#small.subarray(0, this.#smallLength));
          }
          this.#small = grown;
        }
        this.#small.set(data, this.#smallLength);
        this.#smallLength = n;
        return;
      }
      this.#id = this.#pipe.open(this, this.#avgSize);
      const gathered = this.#small?.subarray(0, this.#smallLength);
      this.#small = undefined;
      if (gathered && gathered.length > 0) {
        await this.#pipe.write(this.#id, gathered);
      }
    }
    await this.#pipe.write(this.#id, data);
    if (this.#error !== undefined) throw this.#error;
  }

  async close(): Promise<Uint8Array> {
    this.#check();
    this.#state = "closing";
    try {
      let digest: Uint8Array;
      if (this.#id === undefined) {
        const w = new LocalBlobWriter(
          this.#svc,
          new Chunker({ avgSize: this.#avgSize }),
          true,
          this.#pack,
        );
        if (this.#smallLength > 0) {
          await w.write(this.#small!.subarray(0, this.#smallLength));
        }
        this.#small = undefined;
        digest = await w.close();
      } else {
        this.#pipe.end(this.#id);
        digest = await this.#done;
      }
      this.#state = "closed";
      return digest;
    } catch (e) {
      this.#state = "aborted";
      throw e;
    }
  }

  abort(): Promise<void> {
    if (this.#state === "open") {
      this.#state = "aborted";
      this.#small = undefined;
      if (this.#id !== undefined) this.#pipe.drop(this.#id);
    }
    return Promise.resolve();
  }
}

/** A blob writer whose real writer is still being made (the worker starts). */
class StartingBlobWriter implements BlobWriter {
  readonly [QUEUED_WRITER] = true;
  #inner: Promise<BlobWriter>;
  constructor(inner: Promise<BlobWriter>) {
    this.#inner = inner;
  }
  async write(data: Uint8Array): Promise<void> {
    await (await this.#inner).write(data);
  }
  async close(): Promise<Uint8Array> {
    return await (await this.#inner).close();
  }
  async abort(): Promise<void> {
    await (await this.#inner).abort();
  }
}
