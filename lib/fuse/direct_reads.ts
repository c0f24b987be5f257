/**
 * READs of big files answered on worker threads (the source is in
 * ../runtime/reply_worker.ts): the main thread only says which request
 * (`unique`), which file and which bytes; a worker reads the chunks' stored
 * zstd frames from the pack files, decompresses and BLAKE3-verifies them
 * and writes the reply to `/dev/fuse` itself.
 *
 * Why: on a cold sequential read of a big file the main thread was the
 * bottleneck (per GiB ~0.45 s writing replies, ~0.45 s zstd, ~0.25 s
 * BLAKE3, ~0.2 s GC), while a second core sat mostly idle. Shipping the
 * decoded bytes back to the main thread was measured to lose (message
 * handling ate the gain), so here they never come back.
 *
 * A file is registered once (its chunk layout: where each chunk starts, its
 * size and digest, where its frame is stored), then READs are four numbers
 * each, sent in batches. A READ goes to a worker by the MiB of the file it
 * starts in, so the kernel's READs of one region (and so of one chunk) meet
 * the same worker's cache of decoded chunks, while a sequential reader's
 * READs (several in flight, see the readahead in ./mount.ts) alternate
 * between the workers. A READ a worker cannot answer
 * (unreadable or merged-away pack, a chunk that does not check out) comes
 * back and is answered the usual way, which reports what is wrong (EIO and
 * a log line naming the digest); nothing of it was written.
 *
 * Only where every piece is there: the native BLAKE3 addon loaded from a
 * file (found in /proc/self/maps, which also covers the copy a compiled
 * binary unpacks), FFI for libzstd and writev(2) in the worker (Deno, Bun),
 * chunks stored in packs. Otherwise {@linkcode DirectReads.start} resolves
 * false and the file system answers READs itself.
 *
 * @module
 */
import { REPLY_WORKER_SOURCE } from "../runtime/reply_worker.ts";
import { startChunkWorkers } from "../runtime/chunk_worker.ts";
import type { BlobService } from "../castore/blob_service.ts";
import type { StoredRange } from "../castore/pack.ts";

/** Where chunk `i` of a file is: starts, raw sizes and stored ranges. */
export interface ChunkLayout {
  /** The file's size. */
  size: number;
  /** Byte offset in the file where each chunk starts (ascending). */
  starts: number[];
  /** Each chunk's raw (decompressed) size. */
  sizes: number[];
  /** Each chunk's BLAKE3 digest, 32 bytes each, back to back. */
  digests: Uint8Array;
  /** Each chunk's zstd frame: pack file, offset, length. */
  ranges: { path: string; offset: number; length: number }[];
}

/**
 * Where the chunks of blob `digest` (`size` bytes) are stored, if all are
 * pack records (`locate`: the local blob service's `locateChunk`); a loose
 * or missing chunk leaves the file to the usual READ path.
 */
export async function chunkLayout(
  blobs: Pick<BlobService, "chunks">,
  locate: (digest: Uint8Array) => StoredRange | undefined,
  digest: Uint8Array,
  size: number,
): Promise<ChunkLayout | undefined> {
  const listed = await blobs.chunks(digest);
  if (!listed) return undefined;
  const chunks = listed.length > 0 ? listed : [{ digest, size }];
  const starts: number[] = [];
  const sizes: number[] = [];
  const ranges: StoredRange[] = [];
  const digests = new Uint8Array(32 * chunks.length);
  let at = 0;
  for (const [i, c] of chunks.entries()) {
    const r = locate(c.digest);
    if (!r || r.length < 0 || c.digest.length !== 32) return undefined;
    starts.push(at);
    sizes.push(c.size);
    ranges.push(r);
    digests.set(c.digest, 32 * i);
    at += c.size;
  }
  return at === size ? { size, starts, sizes, digests, ranges } : undefined;
}

/** Decoded chunks one worker keeps (bytes). */
const WORKER_CACHE_BYTES = 8 << 20;
/**
 * READs starting in the same span of a file go to the same worker. A chunk
 * across a span boundary is decoded by both workers: 2 MiB spans (with the
 * mount's 8 MiB readahead) measured ~0.15 s less CPU per GiB than 1 MiB.
 */
const ROUTE_SPAN = 2 << 20;
/** Files registered with the workers at once. */
const MAX_FILES = 256;

interface Slot {
  w: Worker;
  queue: number[];
}

/** Answers READs of registered files on worker threads. */
export class DirectReads {
  #workers: Slot[] = [];
  #ids = new Map<string, number>();
  #nextId = 1;
  #flushing = false;
  #fallback: (
    unique: number,
    id: number,
    offset: number,
    size: number,
    ino: bigint,
  ) => void;
  #closed = false;
  /** READs handed to the workers (for tests and diagnostics). */
  dispatched = 0;
  /** READs the workers gave back (for tests and diagnostics). */
  failed = 0;

  /**
   * `fallback` answers a READ a worker gave back (the usual way); it gets
   * the file id {@linkcode register} returned and the inode given to
   * {@linkcode read}.
   */
  constructor(
    fallback: (
      unique: number,
      id: number,
      offset: number,
      size: number,
      ino: bigint,
    ) => void,
  ) {
    this.#fallback = fallback;
  }

  /**
   * Starts `count` workers writing replies to `fuseFd`; resolves whether
   * they all can (else they are stopped and {@linkcode read} is not to be
   * used). Never rejects.
   */
  async start(fuseFd: number, count = 2, timeoutMs = 5000): Promise<boolean> {
    const workers = await startChunkWorkers(
      REPLY_WORKER_SOURCE.replace(
        "CACHE_BYTES_VALUE",
        String(WORKER_CACHE_BYTES),
      ),
      count,
      { fd: fuseFd },
      {
        message: (_w, m) => {
          if (m.t === "fail") this.#failed(m.q as Float64Array);
        },
        // From now on READs stay on the main thread.
        failed: () => this.close(),
      },
      timeoutMs,
    );
    if (!workers || this.#closed) {
      for (const w of workers ?? []) w.terminate();
      return false;
    }
    this.#workers = workers.map((w) => ({ w, queue: [] }));
    return true;
  }

  /** Whether the workers run. */
  get running(): boolean {
    return this.#workers.length > 0 && !this.#closed;
  }

  /** The id of a registered file (by a key of the caller's), if it is. */
  idOf(key: string): number | undefined {
    const id = this.#ids.get(key);
    if (id !== undefined) {
      // Most recently used last.
      this.#ids.delete(key);
      this.#ids.set(key, id);
    }
    return id;
  }

  /** Tells the workers where a file's chunks are; returns its id. */
  register(key: string, layout: ChunkLayout): number {
    const known = this.idOf(key);
    if (known !== undefined) return known;
    const id = this.#nextId++;
    const paths: string[] = [];
    const pathIdx = new Uint32Array(layout.ranges.length);
    layout.ranges.forEach((r, i) => {
      let p = paths.indexOf(r.path);
      if (p < 0) p = paths.push(r.path) - 1;
      pathIdx[i] = p;
    });
    const msg = {
      t: "file",
      id,
      size: layout.size,
      paths,
      pathIdx,
      offs: Float64Array.from(layout.ranges, (r) => r.offset),
      lens: Float64Array.from(layout.ranges, (r) => r.length),
      starts: Float64Array.from(layout.starts),
      sizes: Float64Array.from(layout.sizes),
      digests: layout.digests,
    };
    for (const { w } of this.#workers) w.postMessage(msg);
    this.#ids.set(key, id);
    if (this.#ids.size > MAX_FILES) {
      const [oldKey, oldId] = this.#ids.entries().next().value!;
      this.#ids.delete(oldKey);
      for (const { w } of this.#workers) {
        w.postMessage({ t: "forget", id: oldId });
      }
    }
    return id;
  }

  /**
   * Hands READ `unique` of `size` bytes at `offset` of file `id` to a
   * worker; `ino` comes back with it if the worker gives it back.
   */
  read(
    unique: bigint,
    id: number,
    offset: number,
    size: number,
    ino = 0n,
  ): void {
    const ws = this.#workers;
    const slot = ws[Math.floor(offset / ROUTE_SPAN) % ws.length];
    slot.queue.push(Number(unique), id, offset, size, Number(ino));
    this.dispatched++;
    if (!this.#flushing) {
      this.#flushing = true;
      queueMicrotask(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushing = false;
    for (const slot of this.#workers) {
      if (slot.queue.length === 0) continue;
      const q = Float64Array.from(slot.queue);
      slot.queue = [];
      slot.w.postMessage({ t: "reads", q }, [q.buffer]);
    }
  }

  #failed(q: Float64Array): void {
    for (let i = 0; i < q.length; i += 5) {
      this.failed++;
      // Its layout may be stale (a pack merged away): the next READ of the
      // file registers it again.
      this.#forget(q[i + 1]);
      this.#fallback(q[i], q[i + 1], q[i + 2], q[i + 3], BigInt(q[i + 4]));
    }
  }

  #forget(id: number): void {
    for (const [key, known] of this.#ids) {
      if (known !== id) continue;
      this.#ids.delete(key);
      for (const { w } of this.#workers) w.postMessage({ t: "forget", id });
      return;
    }
  }

  /** Replies the workers sent so far (for tests). */
  async replies(): Promise<number> {
    const counts = await Promise.all(
      this.#workers.map(({ w }) =>
        new Promise<number>((done) => {
          const prev = w.onmessage;
          w.onmessage = (e: MessageEvent) => {
            if (e.data.t === "stats") {
              w.onmessage = prev;
              done(e.data.replies as number);
            } else prev?.call(w, e);
          };
          w.postMessage({ t: "stats" });
        })
      ),
    );
    return counts.reduce((a, b) => a + b, 0);
  }

  /** Stops the workers (READs they still hold are not answered). */
  close(): void {
    this.#closed = true;
    for (const { w } of this.#workers) w.terminate();
    this.#workers = [];
  }
}
