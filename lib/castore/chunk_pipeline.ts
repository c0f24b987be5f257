/**
 * Chunking, hashing and compression of ingested blobs on a worker thread
 * (the worker's source is ../runtime/ingest_worker.ts; it runs
 * ./chunker.ts's class from its source text, so boundaries are the same).
 *
 * Why: an import's main thread did everything in turn: read the files,
 * SHA-256 the NAR, cut chunks (~1 s per GiB), BLAKE3 each chunk and the
 * whole blob (~0.7 s), zstd (~0.4 s) and write the pack, while the second
 * core sat idle (1 GiB mixed corpus, Deno profile). Now the main thread
 * copies each blob's bytes into a ring of shared memory and, from a second
 * ring, copies each new chunk's zstd frame into the pack; the worker does
 * the rest. The main thread never blocks on the worker: when it must wait
 * (a full ring, a blob's digest) it asks for a message at the next
 * progress, so a daemon's other connections go on meanwhile.
 *
 * Only where every piece is there: Workers, the native BLAKE3 addon loaded
 * from a file (found in /proc/self/maps, which also covers the copy a
 * compiled binary unpacks), FFI for libzstd in the worker (Deno, Bun), and
 * the worker's zstd frames equal to the main thread's (checked at start).
 * Otherwise {@linkcode ChunkPipeline.shared} resolves `undefined` and blob
 * writers do everything on the main thread as before. The local blob
 * service uses it unless `SNIX_INGEST_WORKER=0` (see there).
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { Buffer } from "node:buffer";
import { Worker } from "node:worker_threads";
import process from "node:process";
import { chunkerClassName, chunkerSource } from "./chunker.ts";
import {
  CTL_IN_USED,
  CTL_LENGTH,
  CTL_MAIN_WAITING,
  CTL_OUT_USED,
  CTL_PROGRESS,
  CTL_STOP,
  CTL_WAKE_AT,
  CTL_WAKE_BELOW,
  CTL_WORKER_SLEEPING,
  IN_BEGIN,
  IN_DATA,
  IN_DROP,
  IN_END,
  IN_HEADER,
  ingestWorkerSource,
  OUT_BLOB,
  OUT_CHUNK,
  OUT_ERROR,
  OUT_HEADER,
  RING_ALIGN,
  RING_WRAP,
} from "../runtime/ingest_worker.ts";
import type { ZstdCompressor } from "../runtime/zstd.ts";

/** Bytes of the input ring (blob contents on their way to the worker). */
const IN_RING = 8 << 20;
/** Bytes of the output ring (chunk frames on their way back). */
const OUT_RING = 8 << 20;
/** Largest input record's payload (big writes are cut into these). */
const MAX_PIECE = 1 << 20;
/** A waiting main thread is woken after this many records (or when the worker is idle). */
const WAKE_RECORDS = 64;
/** Largest average chunk size the rings take (a chunk frame must fit). */
export const MAX_PIPELINE_AVG = 1 << 20;

/**
 * Marks blob writers whose pending closes hold no data of their own (it
 * waits in the bounded ring): ingestion may keep many more of them in
 * flight, so its walk never waits for single small files.
 */
export const QUEUED_WRITER: unique symbol = Symbol("queued blob writer");

/** Blob closes an ingestion may keep pending for `w` (`usual` unless queued). */
export function maxInFlight(w: object, usual: number): number {
  return QUEUED_WRITER in w ? 512 : usual;
}

/** Where the results of one blob go, on the main thread, in order. */
export interface ChunkSink {
  /** A chunk: its digest, raw size and zstd frame (a view valid during the call). */
  chunk(digest: Uint8Array, size: number, frame: Uint8Array): void;
  /** The blob is done: its digest and chunk count (after all its chunks). */
  blob(digest: Uint8Array, chunks: number): void;
  /** The worker failed on this blob (nothing more comes for it). */
  fail(e: Error): void;
}

const align = (n: number) => (n + RING_ALIGN - 1) & -RING_ALIGN;

/** The Node-API addons this process has mapped, by file. */
function mappedAddons(): string[] {
  let maps: string;
  try {
    maps = readFileSync("/proc/self/maps", "utf8");
  } catch {
    return [];
  }
  const files = new Set(maps.match(/\/[^\s]*\.node$/gm) ?? []);
  return [...files].sort((a, b) =>
    Number(b.includes("blake")) - Number(a.includes("blake"))
  );
}

let shared: Promise<ChunkPipeline | undefined> | undefined;

/** One ingest worker and its two rings, shared by every writer of the process. */
export class ChunkPipeline {
  readonly #w: Worker;
  readonly #in: Uint8Array;
  readonly #in32: Int32Array;
  readonly #out: Uint8Array;
  readonly #out32: Int32Array;
  readonly #ctl: Int32Array;
  #inHead = 0;
  #outTail = 0;
  #nextId = 1;
  #sinks = new Map<number, ChunkSink>();
  /** Blobs ended whose blob record has not come back yet. */
  #ended = new Set<number>();
  #pumping = false;
  #wake: Promise<void> | undefined;
  #wakeUp: (() => void) | undefined;
  #broken: Error | undefined;

  private constructor(
    w: Worker,
    inRing: SharedArrayBuffer,
    outRing: SharedArrayBuffer,
    ctl: SharedArrayBuffer,
  ) {
    this.#w = w;
    this.#in = new Uint8Array(inRing);
    this.#in32 = new Int32Array(inRing);
    this.#out = new Uint8Array(outRing);
    this.#out32 = new Int32Array(outRing);
    this.#ctl = new Int32Array(ctl);
  }

  /**
   * The process's pipeline, started on first use; `undefined` where it
   * cannot run (see the module comment). `zstd` is the main thread's
   * compressor, whose frames the worker must reproduce.
   */
  static shared(
    zstd: ZstdCompressor | undefined,
    level: number,
  ): Promise<ChunkPipeline | undefined> {
    return shared ??= ChunkPipeline.#start(zstd, level).catch(() => undefined);
  }

  static async #start(
    zstd: ZstdCompressor | undefined,
    level: number,
  ): Promise<ChunkPipeline | undefined> {
    if (!zstd || typeof Worker === "undefined") return undefined;
    if (typeof SharedArrayBuffer === "undefined") return undefined;
    const addons = mappedAddons();
    if (addons.length === 0) return undefined;
    const chunker = chunkerSource();
    if (!chunker) return undefined;
    const source = ingestWorkerSource(chunker, chunkerClassName);
    const url = new URL(
      "data:text/javascript;base64," +
        Buffer.from(source).toString("base64"),
    );
    const inRing = new SharedArrayBuffer(IN_RING);
    const outRing = new SharedArrayBuffer(OUT_RING);
    const ctl = new SharedArrayBuffer(CTL_LENGTH * 4);
    let w: Worker | undefined;
    try {
      w = new Worker(url, { type: "module" } as WorkerOptions);
      const probe = new TextEncoder().encode(
        "snix ingest worker probe ".repeat(40),
      );
      const ok = await new Promise<boolean>((resolve) => {
        w!.once("message", (m) => resolve(m?.ok === true));
        w!.once("error", () => resolve(false));
        w!.postMessage({
          t: "init",
          addons,
          level,
          inRing,
          outRing,
          ctl,
          probe,
          frame: zstd.compress(probe, level),
        });
      });
      if (!ok) {
        await w.terminate();
        return undefined;
      }
    } catch {
      await w?.terminate();
      return undefined;
    }
    const p = new ChunkPipeline(w, inRing, outRing, ctl);
    w.on("message", () => p.#woken());
    w.on("error", (e: Error) => {
      p.#fail(new Error(`ingest worker failed: ${e?.message ?? e}`));
    });
    // The worker sleeps in Atomics.wait; it must not keep the process up.
    w.unref();
    stopAtExit(p);
    return p;
  }

  /** Stops the worker (at exit; writers after this fail). */
  stop(): void {
    Atomics.store(this.#ctl, CTL_STOP, 1);
    Atomics.notify(this.#ctl, CTL_IN_USED);
    Atomics.notify(this.#ctl, CTL_OUT_USED);
    this.#w.terminate().catch(() => {});
    this.#fail(new Error("ingest worker stopped"));
  }

  /** Whether the worker failed or was stopped (then writers go without it). */
  get broken(): boolean {
    return this.#broken !== undefined;
  }

  /** Starts a blob whose results go to `sink`; returns its id. */
  open(sink: ChunkSink, avgSize: number): number {
    if (this.#broken) throw this.#broken;
    const id = this.#nextId++;
    if (this.#nextId > 0x7fffffff) this.#nextId = 1;
    this.#sinks.set(id, sink);
    this.#put(IN_BEGIN, id, avgSize);
    return id;
  }

  /**
   * Sends bytes of blob `id` (copied; `data` is not kept). Resolves once
   * they are in the ring: at once unless the ring is full.
   */
  async write(id: number, data: Uint8Array): Promise<void> {
    for (let o = 0; o < data.length; o += MAX_PIECE) {
      const piece = data.subarray(o, o + MAX_PIECE);
      while (!this.#tryPut(IN_DATA, id, piece.length, piece)) {
        const seen = Atomics.load(this.#ctl, CTL_PROGRESS);
        this.#drain();
        if (this.#tryPut(IN_DATA, id, piece.length, piece)) break;
        if (this.#broken) throw this.#broken;
        await this.#progress(seen, IN_RING / 2);
      }
    }
    this.#drain();
  }

  /** Ends blob `id`: its sink gets the rest of its chunks and the blob. */
  end(id: number): void {
    this.#put(IN_END, id, 0);
    this.#ended.add(id);
    this.#pump();
  }

  /** Forgets blob `id` (aborted): its sink gets nothing more. */
  drop(id: number): void {
    this.#ended.delete(id);
    if (this.#sinks.delete(id) && !this.#broken) this.#put(IN_DROP, id, 0);
  }

  /** Puts a record without payload, waiting for room if need be. */
  #put(kind: number, id: number, a: number): void {
    if (this.#tryPut(kind, id, a)) return;
    // Header-only records are tiny: make room synchronously by draining;
    // only if the worker is behind by a whole ring wait for it (rare).
    for (;;) {
      this.#drain();
      if (this.#tryPut(kind, id, a)) return;
      if (this.#broken) throw this.#broken;
      this.#signal();
      Atomics.wait(
        this.#ctl,
        CTL_IN_USED,
        Atomics.load(this.#ctl, CTL_IN_USED),
        5,
      );
    }
  }

  #tryPut(kind: number, id: number, a: number, payload?: Uint8Array): boolean {
    const need = align(IN_HEADER + (payload?.length ?? 0));
    const size = this.#in.length;
    const free = size - Atomics.load(this.#ctl, CTL_IN_USED);
    const toEnd = size - this.#inHead;
    let at = this.#inHead;
    if (toEnd < need) {
      if (free < toEnd + need) return false;
      this.#in32[at >> 2] = RING_WRAP;
      Atomics.add(this.#ctl, CTL_IN_USED, toEnd);
      at = 0;
    } else if (free < need) {
      return false;
    }
    const i = at >> 2;
    this.#in32[i] = kind;
    this.#in32[i + 1] = id;
    this.#in32[i + 2] = a;
    if (payload) this.#in.set(payload, at + IN_HEADER);
    this.#inHead = at + need === size ? 0 : at + need;
    Atomics.add(this.#ctl, CTL_IN_USED, need);
    this.#signal();
    return true;
  }

  /** Wakes the worker if it sleeps (with input queued). */
  #signal(): void {
    if (
      Atomics.load(this.#ctl, CTL_WORKER_SLEEPING) !== 0 &&
      Atomics.load(this.#ctl, CTL_IN_USED) !== 0
    ) {
      Atomics.notify(this.#ctl, CTL_IN_USED, 1);
    }
  }

  /** Hands every finished output record to its sink. */
  #drain(): void {
    const size = this.#out.length;
    let used = Atomics.load(this.#ctl, CTL_OUT_USED);
    while (used > 0 && !this.#broken) {
      const at = this.#outTail;
      const i = at >> 2;
      const kind = this.#out32[i];
      let len: number;
      if (kind === RING_WRAP) {
        len = size - at;
      } else {
        const id = this.#out32[i + 1];
        const a = this.#out32[i + 2];
        const b = this.#out32[i + 3];
        const sink = this.#sinks.get(id);
        const body = at + OUT_HEADER;
        if (kind === OUT_CHUNK) {
          len = align(OUT_HEADER + b);
          sink?.chunk(
            this.#out.slice(at + 16, at + 48),
            a,
            this.#out.subarray(body, body + b),
          );
        } else if (kind === OUT_BLOB) {
          len = OUT_HEADER;
          this.#ended.delete(id);
          if (sink) {
            this.#sinks.delete(id);
            sink.blob(this.#out.slice(at + 16, at + 48), a);
          }
        } else if (kind === OUT_ERROR) {
          len = align(OUT_HEADER + a);
          this.#ended.delete(id);
          if (sink) {
            this.#sinks.delete(id);
            sink.fail(
              new Error(
                new TextDecoder().decode(this.#out.slice(body, body + a)),
              ),
            );
          }
        } else {
          // Never written by the worker: the ring is out of step.
          this.#fail(new Error(`ingest worker: bad output record ${kind}`));
          return;
        }
      }
      this.#outTail = at + len === size ? 0 : at + len;
      // (the worker waits for room in short timed waits: no wake-up here)
      used = Atomics.sub(this.#ctl, CTL_OUT_USED, len) - len;
    }
  }

  /** Drains until every ended blob is back (in the background). */
  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#ended.size > 0 && !this.#broken) {
        const seen = Atomics.load(this.#ctl, CTL_PROGRESS);
        this.#drain();
        if (this.#ended.size === 0) break;
        await this.#progress(seen, 0);
      }
    } finally {
      this.#pumping = false;
    }
  }

  /**
   * Resolves once the worker has done WAKE_RECORDS records after `seen`
   * (the progress count the caller saw before it last looked), has no more
   * than `below` bytes of input left or waits for room: a writer waiting
   * for room goes on once half the ring is free, not per record.
   */
  #progress(seen: number, below: number): Promise<void> {
    // Only a writer waiting for room wakes the worker here: the pump waits
    // in the background while this thread goes on queueing (each write
    // wakes a sleeping worker anyway).
    if (below > 0) this.#signal();
    Atomics.store(this.#ctl, CTL_WAKE_AT, (seen + WAKE_RECORDS) | 0);
    Atomics.store(this.#ctl, CTL_WAKE_BELOW, below);
    Atomics.store(this.#ctl, CTL_MAIN_WAITING, 1);
    if (Atomics.load(this.#ctl, CTL_PROGRESS) !== seen) {
      Atomics.store(this.#ctl, CTL_MAIN_WAITING, 0);
      return Promise.resolve();
    }
    if (!this.#wake) {
      // Waiting for the worker's message: it must keep the process up now.
      this.#w.ref();
      this.#wake = new Promise<void>((r) => (this.#wakeUp = r));
    }
    return this.#wake;
  }

  #woken(): void {
    if (this.#wake) this.#w.unref();
    const r = this.#wakeUp;
    this.#wake = undefined;
    this.#wakeUp = undefined;
    r?.();
  }

  #fail(e: Error): void {
    if (this.#broken) return;
    this.#broken = e;
    shared = undefined;
    const sinks = [...this.#sinks.values()];
    this.#sinks.clear();
    this.#ended.clear();
    for (const s of sinks) s.fail(e);
    this.#woken();
  }
}

/** {@linkcode ChunkPipeline.shared}, as a function. */
export function sharedChunkPipeline(
  zstd: ZstdCompressor | undefined,
  level: number,
): Promise<ChunkPipeline | undefined> {
  return ChunkPipeline.shared(zstd, level);
}

/** Stops the worker when the process exits (a blocked worker could hold it). */
function stopAtExit(p: ChunkPipeline): void {
  process.once("exit", () => p.stop());
}
