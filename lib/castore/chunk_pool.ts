/**
 * Chunking, hashing and compression of blobs being ingested, on worker
 * threads (./chunk_worker.ts), so an import uses both cores: the main thread
 * walks the tree, reads files, hashes the NAR and appends to the pack, the
 * workers do FastCDC, BLAKE3 and zstd (about 40% of an import's CPU time,
 * measured on the 1 GiB mixed corpus).
 *
 * A blob is a {@linkcode ChunkSession}: its bytes are copied to one worker
 * (the caller keeps its buffers), results come back in order through
 * `onChunk`, `finish()` gives the blob digest. Memory stays flat: a
 * `write()` waits while more than {@linkcode POOL_BACKLOG} bytes (of all
 * sessions) are on their way to the workers; below that, the caller runs
 * ahead to the next blobs while the workers catch up.
 *
 * Where workers cannot start (no `Worker`, or the worker fails to load, as in
 * a compiled binary without the worker file), {@linkcode ChunkPool.get}
 * resolves to `undefined` and callers do the work inline, as they do by
 * default: `SNIX_INGEST_THREADS=N` turns the pool on. Measured on the mixed
 * corpus: on a quiet machine 2 threads cut an import from 9.0 to 7.4 s, but
 * with other work running (load 4-6) the wall time was the same or worse,
 * at +2.5 CPU s and +270 MiB peak RSS (2 GiB single file: 251 MiB, over
 * the 200 MiB budget), so it is off until that is understood.
 *
 * @module
 */

import process from "node:process";

/** Threads when `SNIX_INGEST_THREADS` is not set (0: no pool). */
const DEFAULT_THREADS = 0;
/** Bytes all sessions together may have in flight before a `write()` waits. */
const POOL_BACKLOG = 16 << 20;
/** Bytes per message to a worker (input buffers of this size are reused). */
const INPUT_SLOT = 1 << 20;
/** Output buffers at least this big go back to their worker for reuse. */
const RECYCLE_MIN = 1 << 20;
/** How long a worker may take to load before the pool gives up on workers. */
const START_TIMEOUT_MS = 10_000;

/** One chunk of a blob, as a worker made it. */
export interface PooledChunk {
  digest: Uint8Array;
  size: number;
  /** The chunk's zstd frame. */
  stored: Uint8Array;
}

interface Slot {
  worker: Worker;
  /** Bytes sent to this worker and not yet processed. */
  backlog: number;
}

type Reply = {
  ready?: boolean;
  chunks?: number;
  consumed?: number;
  digests?: Uint8Array;
  sizes?: number[];
  offsets?: number[];
  lengths?: number[];
  out?: Uint8Array;
  input?: ArrayBuffer;
  done?: number;
  digest?: Uint8Array;
  failed?: number;
  message?: string;
};

/**
 * Worker threads shared by the ingestions of this process. They run while
 * some ingestion holds the pool ({@linkcode ChunkPool.acquire}), and stop
 * with the last {@linkcode ChunkPool.release} (a live worker would keep a
 * Deno process from exiting), unless {@linkcode ChunkPool.keepWarm} was
 * called (long-running daemons).
 */
export class ChunkPool {
  static #pool: Promise<ChunkPool | undefined> | undefined;
  static #holders = 0;
  static #warm = false;
  readonly #slots: Slot[];
  readonly #sessions = new Map<number, ChunkSession>();
  #nextId = 1;
  #backlog = 0;
  #waiters: (() => void)[] = [];
  /** Input buffers given back by the workers, for reuse. */
  #free: ArrayBuffer[] = [];

  private constructor(slots: Slot[]) {
    this.#slots = slots;
    for (const s of slots) {
      s.worker.onmessage = (e: MessageEvent) => this.#reply(e.data as Reply, s);
      s.worker.onerror = (e: Event) => {
        e.preventDefault?.();
        for (const session of this.#sessions.values()) {
          if (session.slot === s) session.fail("chunk worker crashed");
        }
      };
    }
  }

  /** Holds the pool (starting its workers) until the matching release. */
  static acquire(): void {
    ChunkPool.#holders++;
  }

  /** Lets go of the pool; the last release stops the workers. */
  static release(): void {
    if (--ChunkPool.#holders > 0 || ChunkPool.#warm) return;
    ChunkPool.#holders = 0;
    const p = ChunkPool.#pool;
    ChunkPool.#pool = undefined;
    p?.then((pool) => {
      if (pool) pool.#stop();
    });
  }

  /** Keeps the workers running between ingestions (for daemons). */
  static keepWarm(): void {
    ChunkPool.#warm = true;
  }

  /**
   * The pool (its threads started on first use), or `undefined` where worker
   * threads are not available or nobody holds the pool.
   */
  static get(
    workers = Number(process.env.SNIX_INGEST_THREADS ?? DEFAULT_THREADS),
  ): Promise<ChunkPool | undefined> {
    if (
      (ChunkPool.#holders <= 0 && !ChunkPool.#warm) || !(workers >= 1)
    ) {
      return Promise.resolve(undefined);
    }
    return ChunkPool.#pool ??= ChunkPool.#start(workers);
  }

  static async #start(n: number): Promise<ChunkPool | undefined> {
    if (typeof Worker === "undefined") return undefined;
    const url = new URL("./chunk_worker.ts", import.meta.url);
    const slots: Slot[] = [];
    try {
      await Promise.all(
        Array.from({ length: n }, () => {
          const worker = new Worker(url.href, { type: "module" });
          slots.push({ worker, backlog: 0 });
          return new Promise<void>((resolve, reject) => {
            const timer = setTimeout(
              () => reject(new Error("chunk worker did not start")),
              START_TIMEOUT_MS,
            );
            worker.onmessage = (e: MessageEvent) => {
              if ((e.data as Reply).ready) {
                clearTimeout(timer);
                resolve();
              }
            };
            worker.onerror = (e: Event) => {
              e.preventDefault?.();
              clearTimeout(timer);
              reject(new Error("chunk worker failed to load"));
            };
          });
        }),
      );
    } catch {
      for (const s of slots) s.worker.terminate();
      return undefined;
    }
    return new ChunkPool(slots);
  }

  #stop(): void {
    for (const s of this.#sessions.values()) s.fail("chunk pool stopped");
    for (const s of this.#slots) s.worker.terminate();
  }

  /** A session for one blob (`avgSize`: the chunker's average chunk size). */
  open(avgSize?: number): ChunkSession {
    // The least busy thread; ties in turn (blobs arrive one at a time, so
    // both threads are often idle when one opens).
    const turn = this.#nextId % this.#slots.length;
    let slot = this.#slots[turn];
    for (const x of this.#slots) if (x.backlog < slot.backlog) slot = x;
    const id = this.#nextId++;
    const s = new ChunkSession(this, slot, id);
    this.#sessions.set(id, s);
    slot.worker.postMessage({ open: id, avgSize });
    return s;
  }

  /** @internal */
  closed(s: ChunkSession): void {
    this.#sessions.delete(s.id);
  }

  /** @internal Counts bytes sent; resolves when the backlog allows more. */
  sent(slot: Slot, n: number): Promise<void> | undefined {
    slot.backlog += n;
    this.#backlog += n;
    if (this.#backlog <= POOL_BACKLOG) return undefined;
    return new Promise((r) => this.#waiters.push(r));
  }

  /** @internal Counts bytes processed; wakes writers when below the limit. */
  processed(slot: Slot, n: number): void {
    slot.backlog -= n;
    this.#backlog -= n;
    if (this.#backlog > POOL_BACKLOG) return;
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /**
   * @internal A buffer for `n` bytes of input: a reused one of
   * {@linkcode INPUT_SLOT} bytes, or an exact one for small inputs.
   */
  inputBuffer(n: number): Uint8Array {
    if (n < INPUT_SLOT >> 2) return new Uint8Array(n);
    return new Uint8Array(this.#free.pop() ?? new ArrayBuffer(INPUT_SLOT));
  }

  #reply(m: Reply, slot: Slot): void {
    if (
      m.input && m.input.byteLength === INPUT_SLOT &&
      this.#free.length < POOL_BACKLOG / INPUT_SLOT
    ) {
      this.#free.push(m.input);
    }
    const id = m.chunks ?? m.done ?? m.failed;
    const s = id === undefined ? undefined : this.#sessions.get(id);
    if (m.chunks !== undefined) {
      if (s) s.received(m);
      else this.processed(slot, m.consumed!);
      // The frames were written out synchronously: the buffer can go back.
      if (m.out && m.out.byteLength >= RECYCLE_MIN) {
        slot.worker.postMessage({ recycle: m.out.buffer }, [
          m.out.buffer as ArrayBuffer,
        ]);
      }
      return;
    }
    if (!s) return;
    if (m.done !== undefined) {
      s.done(m.digest!);
    } else {
      s.fail(m.message ?? "chunk worker failed");
    }
  }
}

/** The chunking of one blob on a worker. */
export class ChunkSession {
  /** Called with each chunk, in order. */
  onChunk: (c: PooledChunk) => void = () => {};
  #pool: ChunkPool;
  /** Bytes sent and not yet processed (given back to the pool on failure). */
  #backlog = 0;
  #error: Error | undefined;
  #finished:
    | { resolve: (d: Uint8Array) => void; reject: (e: Error) => void }
    | undefined;

  constructor(pool: ChunkPool, readonly slot: Slot, readonly id: number) {
    this.#pool = pool;
  }

  /** Sends a copy of `data`; waits while too much is in flight. */
  async write(data: Uint8Array): Promise<void> {
    if (this.#error) throw this.#error;
    for (let o = 0; o < data.length; o += INPUT_SLOT) {
      const part = data.subarray(o, o + INPUT_SLOT);
      const buf = this.#pool.inputBuffer(part.length);
      buf.set(part);
      const bytes = buf.subarray(0, part.length);
      this.#backlog += part.length;
      this.slot.worker.postMessage({ data: this.id, bytes }, [
        buf.buffer as ArrayBuffer,
      ]);
      const wait = this.#pool.sent(this.slot, part.length);
      if (wait) await wait;
      if (this.#error) throw this.#error;
    }
  }

  /** Ends the blob; resolves to its digest after every chunk was delivered. */
  finish(): Promise<Uint8Array> {
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#finished = { resolve, reject };
      this.slot.worker.postMessage({ finish: this.id });
    });
  }

  /** Gives the blob up. */
  abort(): void {
    this.slot.worker.postMessage({ drop: this.id });
    this.fail("aborted");
  }

  /** @internal */
  received(m: Reply): void {
    this.#backlog -= m.consumed!;
    this.#pool.processed(this.slot, m.consumed!);
    if (this.#error) return;
    const { digests, sizes, offsets, lengths, out } = m;
    try {
      for (let i = 0; i < sizes!.length; i++) {
        this.onChunk({
          digest: digests!.subarray(32 * i, 32 * i + 32),
          size: sizes![i],
          stored: out!.subarray(offsets![i], offsets![i] + lengths![i]),
        });
      }
    } catch (e) {
      this.slot.worker.postMessage({ drop: this.id });
      this.fail(e as Error);
    }
  }

  /** @internal */
  done(digest: Uint8Array): void {
    this.#pool.closed(this);
    this.#finished?.resolve(digest);
  }

  /** @internal */
  fail(e: Error | string): void {
    this.#error ??= typeof e === "string" ? new Error(e) : e;
    this.#pool.closed(this);
    this.#pool.processed(this.slot, this.#backlog);
    this.#backlog = 0;
    this.#finished?.reject(this.#error);
  }
}
