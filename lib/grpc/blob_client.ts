/**
 * `GrpcBlobService`: the blob service seam over a remote
 * `snix.castore.v1.BlobService`.
 *
 * Reads are chunk-aware, like snix's gRPC client: Stat with send_chunks
 * lists the blob's chunks; a blob made of several chunks is fetched chunk by
 * chunk (Read with the chunk's digest), several in parallel, each verified
 * against its digest before any of its bytes are handed out, and only the
 * chunks a range touches are fetched. A blob without finer chunks is
 * streamed with one Read and verified as it flows; its last piece is held
 * back until the digest matched, so a corrupted blob ends in an error, not
 * a clean end of stream.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import {
  type Client,
  Code,
  ConnectError,
  createClient,
  type Transport,
} from "@connectrpc/connect";
import {
  type BlobChunk,
  BlobChunkSchema,
  BlobService as BlobServiceDesc,
} from "../../proto/gen/snix/castore/protos/rpc_blobstore_pb.ts";
import type {
  BlobService,
  BlobWriter,
  ByteRange,
  ChunkMeta,
} from "../castore/blob_service.ts";
import {
  blake3Sync,
  createBlake3,
  digestEquals,
  digestToString,
  validateDigest,
} from "../castore/digest.ts";
import { checkRange } from "../castore/range.ts";
import {
  CHUNK_FETCH_CONCURRENCY,
  MAX_CHUNK_BYTES,
  MAX_DATA_MESSAGE_BYTES,
} from "./limits.ts";
import {
  type ClientOptions,
  connectClient,
  type GrpcAddress,
} from "./transport.ts";
import { PushQueue } from "./push_queue.ts";
import { type RawHttp2Caller, readBlobBytes } from "./blob_read_client.ts";
import type { BulkReader } from "./bulk_read_client.ts";
import { dataLoss, isNotFound, rethrowFrom } from "./client_errors.ts";
import { concatBytes } from "../nix/bytes.ts";

/**
 * Blobs up to this size whose size the caller gives (`ByteRange.blobSize`)
 * are read in one call, without a Stat first: a fresh mount's walk over
 * small files paid two round trips a file.
 */
const SMALL_BLOB_READ = 1 << 20;

/** Options of {@linkcode GrpcBlobService}. */
export interface GrpcBlobServiceOptions extends ClientOptions {
  /** How many chunks a ranged read fetches ahead in parallel (default 8). */
  chunkConcurrency?: number;
}

/** A BlobService backed by a remote gRPC BlobService. */
export class GrpcBlobService implements BlobService {
  readonly #client: Client<typeof BlobServiceDesc>;
  readonly #peer: string;
  readonly #concurrency: number;
  readonly #onClose?: () => void;
  readonly #raw?: RawHttp2Caller;
  readonly #bulk?: BulkReader;

  /** Uses an existing transport (which the caller closes). */
  constructor(transport: Transport, opts: GrpcBlobServiceOptions = {}) {
    this.#client = createClient(BlobServiceDesc, transport);
    this.#raw = opts.raw;
    this.#bulk = opts.bulk;
    this.#peer = opts.peer ?? "blob service";
    this.#concurrency = Math.max(
      1,
      opts.chunkConcurrency ?? CHUNK_FETCH_CONCURRENCY,
    );
    this.#onClose = opts.onClose;
  }

  /** Connects to `grpc+http://host:port` or `grpc+unix:///path`; `close()` closes the connection. */
  static connect(
    address: string | GrpcAddress,
    opts: GrpcBlobServiceOptions = {},
  ): GrpcBlobService {
    return connectClient(address, opts, (t, o) => new GrpcBlobService(t, o));
  }

  /** Whether the blob is present (Stat). */
  async has(digest: Uint8Array): Promise<boolean> {
    validateDigest(digest, "blob digest");
    try {
      await this.#client.stat({ digest });
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      rethrowFrom(this.#peer, e);
    }
  }

  /** The blob's chunks (Stat with send_chunks); `undefined` if missing. */
  async chunks(digest: Uint8Array): Promise<ChunkMeta[] | undefined> {
    validateDigest(digest, "blob digest");
    let resp;
    try {
      resp = await this.#client.stat({ digest, sendChunks: true });
    } catch (e) {
      if (isNotFound(e)) return undefined;
      rethrowFrom(this.#peer, e);
    }
    return resp.chunks.map((c, i) => {
      if (c.digest.length !== 32) {
        throw dataLoss(
          this.#peer,
          `chunk ${i} of ${
            digestToString(digest)
          } has a ${c.digest.length}-byte digest`,
        );
      }
      if (c.size > BigInt(MAX_CHUNK_BYTES)) {
        throw dataLoss(
          this.#peer,
          `chunk ${i} of ${
            digestToString(digest)
          } is ${c.size} bytes, over ${MAX_CHUNK_BYTES}`,
        );
      }
      return { digest: c.digest, size: Number(c.size) };
    });
  }

  /**
   * Starts a Read of `digest`: its data bytes in order (pieces need not
   * follow message boundaries), with the first piece (or the end) already
   * received; `undefined` if the server says NotFound. Uses the direct
   * HTTP/2 reader where this client opened the connection itself.
   */
  async #startRead(
    digest: Uint8Array,
    signal: AbortSignal,
  ): Promise<
    | { it: AsyncIterator<Uint8Array>; first: IteratorResult<Uint8Array> }
    | undefined
  > {
    const it = this.#readBytes(digest, signal);
    try {
      return { it, first: await it.next() };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      rethrowFrom(this.#peer, e);
    }
  }

  /**
   * A Read's data bytes: over the bulk connection or the direct HTTP/2
   * reader where this client opened the connection itself, else Connect.
   */
  #readBytes(
    digest: Uint8Array,
    signal: AbortSignal,
  ): AsyncIterator<Uint8Array> {
    if (this.#bulk) return this.#bulk.read(digest, signal);
    if (this.#raw) return readBlobBytes(this.#raw, digest, signal);
    return messageData(this.#client.read({ digest }, { signal }));
  }

  /** The blob's bytes (or a range), verified; `undefined` if missing. */
  async read(
    digest: Uint8Array,
    range?: ByteRange,
  ): Promise<ReadableStream<Uint8Array> | undefined> {
    const small = range?.blobSize !== undefined &&
      range.blobSize <= SMALL_BLOB_READ;
    if (small) {
      const whole = await this.#readSmall(digest, range.blobSize!);
      if (whole === undefined) return undefined;
      if (whole !== "bigger") {
        const [start, end] = checkRange(range, whole.length);
        const part = whole.subarray(start, end);
        return new ReadableStream({
          start(c) {
            if (part.length > 0) c.enqueue(part);
            c.close();
          },
        });
      }
    }
    const chunks = await this.chunks(digest);
    if (chunks === undefined) return undefined;
    if (chunks.length <= 1) {
      return await this.#readWhole(
        digest,
        chunks.length === 1 ? chunks[0].size : undefined,
        range,
      );
    }
    const size = chunks.reduce((n, c) => n + c.size, 0);
    const [start, end] = checkRange(range, size);
    if (end <= start) return new ReadableStream({ start: (c) => c.close() });
    // One Read of the blob from its start is faster than chunk Reads in
    // parallel (measured ~2x for a 128 MiB blob), but it has to receive
    // everything before the range: take it when that costs little.
    let before = 0; // bytes of the chunks entirely before `start`
    for (const c of chunks) {
      if (before + c.size > start) break;
      before += c.size;
    }
    if (before <= (end - start) / 4) {
      return await this.#readStreamByChunks(digest, chunks, start, end);
    }
    return this.#readChunked(digest, chunks, start, end);
  }

  /**
   * A chunked blob through one Read (the server assembles it: one call
   * instead of one per chunk), split at the chunk boundaries Stat gave; each
   * chunk touching `[start, end)` is verified before any of its bytes are
   * handed out, chunks before it are received and dropped, and the call is
   * cancelled once `end` is reached. `undefined` if the blob vanished.
   */
  async #readStreamByChunks(
    digest: Uint8Array,
    chunks: ChunkMeta[],
    start: number,
    end: number,
  ): Promise<ReadableStream<Uint8Array> | undefined> {
    const peer = this.#peer;
    const name = digestToString(digest);
    const abort = new AbortController();
    const started = await this.#startRead(digest, abort.signal);
    if (!started) return undefined;
    const it = started.it;
    let pending: IteratorResult<Uint8Array> | undefined = started.first;
    let ci = 0; // chunk being filled
    let chunkStart = 0; // offset of chunk ci in the blob
    let held: Uint8Array[] = []; // received bytes of chunk ci
    let filled = 0;
    let rest: Uint8Array | undefined; // bytes of the current piece not yet placed
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          while (true) {
            if (!rest || rest.length === 0) {
              const r = pending ?? await it.next();
              pending = undefined;
              if (r.done) {
                if (ci < chunks.length) {
                  throw dataLoss(
                    peer,
                    `blob ${name} ended early, in chunk ${ci} of ${chunks.length}`,
                  );
                }
                controller.close();
                return;
              }
              rest = r.value;
              continue;
            }
            if (ci >= chunks.length) {
              throw dataLoss(peer, `blob ${name} is longer than its chunks`);
            }
            const chunk = chunks[ci];
            // The received pieces are fresh buffers, never reused: they are
            // held until their chunk verified and then handed out as they
            // are (no chunk-sized buffer per chunk to allocate and fill).
            const take = Math.min(rest.length, chunk.size - filled);
            const wanted = chunkStart + chunk.size > start;
            if (wanted) {
              held.push(take === rest.length ? rest : rest.subarray(0, take));
            }
            filled += take;
            rest = rest.subarray(take);
            if (filled < chunk.size) continue;
            if (!wanted) { // before the range: not handed out, not hashed
              chunkStart += chunk.size;
              filled = 0;
              ci++;
              continue;
            }
            if (!digestEquals(hashPieces(held, chunk.size), chunk.digest)) {
              throw dataLoss(
                peer,
                `chunk ${
                  digestToString(chunk.digest)
                } of blob ${name} does not match its digest`,
              );
            }
            let o = chunkStart;
            for (const piece of held) {
              const a = Math.max(start, o) - o;
              const b = Math.min(end, o + piece.length) - o;
              if (a < b) {
                controller.enqueue(
                  a === 0 && b === piece.length ? piece : piece.subarray(a, b),
                );
              }
              o += piece.length;
            }
            held = [];
            filled = 0;
            chunkStart += chunk.size;
            ci++;
            if (chunkStart >= end && ci < chunks.length) {
              // The range is complete (the rest of the blob is not needed).
              controller.close();
              abort.abort();
              void it.return?.();
            }
            return;
          }
        } catch (e) {
          abort.abort();
          void it.return?.();
          controller.error(asClientError(peer, e));
        }
      },
      cancel() {
        abort.abort();
        void it.return?.();
      },
    }, { highWaterMark: 0 });
  }

  /** One Read of the whole blob, hashed as it flows; only `range` is handed out. */
  async #readWhole(
    digest: Uint8Array,
    knownSize: number | undefined,
    range: ByteRange | undefined,
  ): Promise<ReadableStream<Uint8Array> | undefined> {
    const peer = this.#peer;
    const abort = new AbortController();
    const started = await this.#startRead(digest, abort.signal);
    if (!started) return undefined;
    const it = started.it;
    // Range bounds are known up front only if the size is; otherwise clamp as we go.
    const [start, end] = knownSize === undefined
      ? checkRange(range, Number.MAX_SAFE_INTEGER)
      : checkRange(range, knownSize);
    const hasher = createBlake3();
    let pos = 0; // bytes of the blob received so far
    let held: Uint8Array | undefined; // the newest in-range piece, released once the next one arrives
    let pending: IteratorResult<Uint8Array> | undefined = started.first;
    const name = digestToString(digest);
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          while (true) {
            const r = pending ?? await it.next();
            pending = undefined;
            if (r.done) {
              if (knownSize !== undefined && pos !== knownSize) {
                throw dataLoss(
                  peer,
                  `blob ${name}: got ${pos} bytes, Stat said ${knownSize}`,
                );
              }
              if (!digestEquals(hasher.digest(), digest)) {
                throw dataLoss(
                  peer,
                  `blob ${name}: received bytes do not match the digest`,
                );
              }
              if (held) controller.enqueue(held);
              controller.close();
              return;
            }
            const data = r.value;
            hasher.update(data);
            const from = pos;
            pos += data.length;
            if (knownSize !== undefined && pos > knownSize) {
              throw dataLoss(
                peer,
                `blob ${name}: more than the ${knownSize} bytes Stat said`,
              );
            }
            const a = Math.max(start, from);
            const b = Math.min(end, pos);
            if (a < b) {
              const piece = data.subarray(a - from, b - from);
              const release = held;
              held = piece;
              if (release) {
                controller.enqueue(release);
                return;
              }
            }
          }
        } catch (e) {
          abort.abort();
          void it.return?.();
          controller.error(asClientError(peer, e));
        }
      },
      cancel() {
        abort.abort();
        void it.return?.();
      },
    }, { highWaterMark: 0 });
  }

  /**
   * A small blob (said to be `size` bytes) in one Read, no Stat: received
   * whole and verified against its digest before anything is handed out.
   * `"bigger"` if more than `size` bytes come (the call is cancelled; the
   * caller takes the usual way), `undefined` if the blob is missing.
   */
  async #readSmall(
    digest: Uint8Array,
    size: number,
  ): Promise<Uint8Array | "bigger" | undefined> {
    const abort = new AbortController();
    try {
      const started = await this.#startRead(digest, abort.signal);
      if (!started) return undefined;
      const parts: Uint8Array[] = [];
      let got = 0;
      for (
        let r = started.first;
        !r.done;
        r = await started.it.next()
      ) {
        got += r.value.length;
        if (got > size) {
          abort.abort();
          void started.it.return?.();
          return "bigger";
        }
        parts.push(r.value);
      }
      const whole = parts.length === 1 ? parts[0] : concatBytes(parts);
      if (!digestEquals(blake3Sync(whole), digest)) {
        throw dataLoss(
          this.#peer,
          `blob ${
            digestToString(digest)
          }: received bytes do not match the digest`,
        );
      }
      return whole;
    } catch (e) {
      abort.abort();
      throw asClientError(this.#peer, e);
    }
  }

  /** Fetches the chunks overlapping `[start, end)`, up to `concurrency` ahead, in order. */
  #readChunked(
    digest: Uint8Array,
    chunks: ChunkMeta[],
    start: number,
    end: number,
  ): ReadableStream<Uint8Array> {
    // Which chunks overlap the range, with their offsets in the blob.
    const wanted: { chunk: ChunkMeta; offset: number }[] = [];
    let off = 0;
    for (const chunk of chunks) {
      if (off + chunk.size > start && off < end) {
        wanted.push({ chunk, offset: off });
      }
      off += chunk.size;
    }
    const abort = new AbortController();
    const inFlight: Promise<Uint8Array>[] = [];
    let next = 0;
    const fill = () => {
      while (next < wanted.length && inFlight.length < this.#concurrency) {
        const p = this.#fetchChunk(digest, wanted[next].chunk, abort.signal);
        p.catch(() => {}); // awaited in order below; avoid an unhandled rejection meanwhile
        inFlight.push(p);
        next++;
      }
    };
    let delivered = 0;
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        if (delivered === wanted.length) {
          controller.close();
          return;
        }
        fill();
        try {
          const data = await inFlight.shift()!;
          const { offset } = wanted[delivered++];
          const a = Math.max(start, offset) - offset;
          const b = Math.min(end, offset + data.length) - offset;
          controller.enqueue(
            a === 0 && b === data.length ? data : data.subarray(a, b),
          );
          fill();
          if (delivered === wanted.length) controller.close();
        } catch (e) {
          abort.abort();
          controller.error(e);
        }
      },
      cancel() {
        abort.abort();
      },
    }, { highWaterMark: 0 });
  }

  /** Reads one chunk whole (Read with its digest) and checks it. */
  async #fetchChunk(
    blob: Uint8Array,
    chunk: ChunkMeta,
    signal: AbortSignal,
  ): Promise<Uint8Array> {
    const name = digestToString(chunk.digest);
    let buf: Uint8Array | undefined;
    let pos = 0;
    const it = this.#readBytes(chunk.digest, signal);
    try {
      for (let r = await it.next(); !r.done; r = await it.next()) {
        const data = r.value;
        if (pos + data.length > chunk.size) {
          throw dataLoss(
            this.#peer,
            `chunk ${name} of blob ${
              digestToString(blob)
            } is longer than ${chunk.size} bytes`,
          );
        }
        if (pos === 0 && data.length === chunk.size) {
          buf = data; // the whole chunk in one piece: no copy
        } else {
          buf ??= new Uint8Array(chunk.size);
          buf.set(data, pos);
        }
        pos += data.length;
      }
    } catch (e) {
      void it.return?.();
      if (isNotFound(e)) {
        throw new ConnectError(
          `${this.#peer}: chunk ${name} of blob ${
            digestToString(blob)
          } not found`,
          Code.NotFound,
        );
      }
      rethrowFrom(this.#peer, e);
    }
    if (pos !== chunk.size) {
      throw dataLoss(
        this.#peer,
        `chunk ${name} of blob ${
          digestToString(blob)
        }: got ${pos} of ${chunk.size} bytes`,
      );
    }
    buf ??= new Uint8Array(0);
    if (!digestEquals(blake3Sync(buf), chunk.digest)) {
      throw dataLoss(
        this.#peer,
        `chunk ${name} of blob ${
          digestToString(blob)
        } does not match its digest`,
      );
    }
    return buf;
  }

  /**
   * Streams a new blob to the server (Put). The digest the server answers is
   * checked against the one computed here.
   */
  put(): BlobWriter {
    const peer = this.#peer;
    const queue = new PushQueue<BlobChunk>();
    const abort = new AbortController();
    const hasher = createBlake3();
    const call = this.#client.put(queue, { signal: abort.signal });
    call.catch((e) => queue.fail(e));
    let state: "open" | "closed" | "aborted" = "open";
    const checkOpen = () => {
      if (state !== "open") throw new Error(`blob writer already ${state}`);
    };
    return {
      async write(data: Uint8Array): Promise<void> {
        checkOpen();
        hasher.update(data);
        try {
          for (let o = 0; o < data.length; o += MAX_DATA_MESSAGE_BYTES) {
            await queue.push(
              create(BlobChunkSchema, {
                data: data.subarray(o, o + MAX_DATA_MESSAGE_BYTES),
              }),
            );
          }
        } catch (e) {
          // The call failed; close() reports it with its code.
          await call.catch(() => {});
          rethrowFrom(peer, e);
        }
      },
      async close(): Promise<Uint8Array> {
        checkOpen();
        state = "closed";
        queue.end();
        let resp;
        try {
          resp = await call;
        } catch (e) {
          rethrowFrom(peer, e);
        }
        const mine = hasher.digest();
        if (!digestEquals(resp.digest, mine)) {
          throw dataLoss(
            peer,
            `Put answered digest ${
              digestToString(resp.digest)
            }, but the bytes sent hash to ${digestToString(mine)}`,
          );
        }
        return mine;
      },
      async abort(): Promise<void> {
        if (state !== "open") return;
        state = "aborted";
        abort.abort();
        queue.fail(new ConnectError("blob write aborted", Code.Canceled));
        await call.catch(() => {});
      },
    };
  }

  /** Closes the connection if this service owns it. */
  close(): Promise<void> {
    this.#onClose?.();
    return Promise.resolve();
  }
}

/** The data bytes of a Connect Read call's messages. */
function messageData(
  messages: AsyncIterable<BlobChunk>,
): AsyncIterator<Uint8Array> {
  const it = messages[Symbol.asyncIterator]();
  return {
    async next() {
      while (true) {
        const r = await it.next();
        if (r.done) return { value: undefined, done: true };
        if (r.value.data.length > 0) {
          return { value: r.value.data, done: false };
        }
      }
    },
    async return() {
      await it.return?.();
      return { value: undefined, done: true };
    },
  };
}

/** A read stream's error as the caller sees it (the peer named where useful). */
function asClientError(peer: string, e: unknown): ConnectError {
  try {
    rethrowFrom(peer, e);
  } catch (ce) {
    return ce as ConnectError;
  }
}

/** Scratch space for hashing a chunk received in several pieces (grown as needed). */
let scratch = new Uint8Array(0);

/** BLAKE3 of the concatenation of `pieces` (`size` bytes), one-shot. */
function hashPieces(pieces: Uint8Array[], size: number): Uint8Array {
  if (pieces.length === 1) return blake3Sync(pieces[0]);
  // Kept for reuse up to a few MiB (local-store chunks are <= 512 KiB).
  if (scratch.length < size && size <= 4 << 20) scratch = new Uint8Array(size);
  const buf = scratch.length >= size ? scratch : new Uint8Array(size);
  let o = 0;
  for (const p of pieces) {
    buf.set(p, o);
    o += p.length;
  }
  return blake3Sync(buf.subarray(0, size));
}
