/**
 * Reads stored objects ahead of demand on worker threads, several at once:
 * either only into the kernel's page cache ("warming"), or also
 * zstd-decompressed and handed back.
 *
 * What is read is a {@linkcode StoredRange}: a whole loose file (`length`
 * -1) or `length` bytes at `offset` of a pack file (../castore/pack.ts).
 *
 * The local castore reads its objects (directories, chunks) with
 * synchronous calls: microseconds when cached, but on a cold cache each one
 * is a disk wait on the main thread, one at a time. A FUSE tree walk knows
 * which objects it will want next; reading them here turns those serial
 * waits into parallel I/O, and the synchronous reads that follow are cache
 * hits. Decompressing on the worker as well leaves the main thread only the
 * checksum of what it gets back.
 *
 * Pack ranges are warmed a whole aligned block ({@linkcode PACK_BLOCK}) at a
 * time: a pack holds one ingestion's records in walk order, so the
 * neighbours of a record are what a walk wants next, and one big sequential
 * read costs the disk about what one small random read does.
 *
 * The workers do asynchronous `node:fs` reads, several at once each (pack
 * files stay open in the worker), and the main thread pays one message per
 * batch of ranges, not several thread-pool round trips per object. Where no
 * worker can be started, warming runs on the main thread and decompressed
 * loads are not offered.
 *
 * @module
 */
import { promises as fsp } from "node:fs";
import type { StoredRange } from "../castore/pack.ts";

export type { StoredRange };

/** Ranges remembered as warm (so they are not read twice). */
const REMEMBER = 1 << 16;
/**
 * How long a range counts as warm (ms): the page cache may drop it later,
 * and then it is read again (in one block, not record by record).
 */
const WARM_TTL_MS = 60_000;
/** Granularity of pack warming: aligned blocks of this many bytes. */
export const PACK_BLOCK = 1 << 20;

/**
 * A worker. In: `{ ids: Uint32Array, paths: string[], offsets: Float64Array,
 * lengths: Float64Array, sizes: Int32Array }` (length -1: the whole file;
 * size -1: only read; else zstd-decompress to exactly that many bytes).
 * Out: `{ ids: Uint32Array, datas: (ArrayBuffer | null)[] }` (null:
 * unreadable, or only warmed), a batch per turn of its event loop. Up to
 * {@linkcode WORKER_CONCURRENCY} asynchronous reads run at once, so a cold
 * cache sees many disk reads in parallel. Pack files stay open (a bounded
 * number, closed once unused when over the bound).
 */
const WORKER_SOURCE = `
import * as fs from "node:fs";
import { promises as fsp } from "node:fs";
import * as zlib from "node:zlib";
const queue = [];
let head = 0, running = 0, doneIds = [], doneData = [], flushing = false;
const flush = () => {
  flushing = false;
  if (doneIds.length === 0) return;
  const ids = Uint32Array.from(doneIds);
  const datas = doneData;
  doneIds = [];
  doneData = [];
  const transfer = [ids.buffer];
  for (const d of datas) if (d) transfer.push(d);
  self.postMessage({ ids, datas }, transfer);
};
// Open files by path: { fd, users }, least recently used first.
const files = new Map();
const MAX_OPEN = 64;
const openFile = (path) => {
  let f = files.get(path);
  if (f) files.delete(path);
  else f = { fd: fs.openSync(path, "r"), users: 0 };
  files.set(path, f);
  f.users++;
  if (files.size > MAX_OPEN) {
    for (const [p, g] of files) {
      if (files.size <= MAX_OPEN) break;
      if (g.users === 0) { files.delete(p); fs.close(g.fd, () => {}); }
    }
  }
  return f;
};
const pread = (fd, buf, n, len, at) =>
  new Promise((ok, fail) =>
    fs.read(fd, buf, n, len - n, at + n, (e, got) => e ? fail(e) : ok(got)));
// Scratch buffers for warm-only reads (their bytes are thrown away).
const scratch = [];
const load = async (path, offset, length, size) => {
  if (length < 0) {
    const bytes = await fsp.readFile(path);
    return size < 0 ? null : unzstd(bytes, size);
  }
  const f = openFile(path);
  const own = size >= 0 || length > BLOCK;
  const buf = own ? new Uint8Array(length) : (scratch.pop() ?? new Uint8Array(BLOCK));
  try {
    let n = 0;
    while (n < length) {
      const got = await pread(f.fd, buf, n, length, offset);
      if (got === 0) throw new Error("unexpected end of file");
      n += got;
    }
  } finally {
    f.users--;
    if (!own) scratch.push(buf);
  }
  return size < 0 ? null : unzstd(buf, size);
};
const unzstd = (bytes, size) => {
  const out = zlib.zstdDecompressSync(bytes, { maxOutputLength: Math.max(size, 1) });
  if (out.byteLength !== size) return null;
  return out.byteOffset === 0 && out.byteLength === out.buffer.byteLength
    ? out.buffer
    : out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength);
};
const finish = (id, data) => {
  running--;
  doneIds.push(id);
  doneData.push(data);
  if (!flushing) { flushing = true; setTimeout(flush, 0); }
  pump();
};
const pump = () => {
  while (running < CONCURRENCY && head < queue.length) {
    const [id, path, offset, length, size] = queue[head++];
    if (head > 4096 && head * 2 > queue.length) { queue.splice(0, head); head = 0; }
    running++;
    let p;
    try {
      p = load(path, offset, length, size);
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then((d) => finish(id, d), () => finish(id, null));
  }
};
self.onmessage = (e) => {
  if (e.data === "ping") {
    self.postMessage("pong");
    return;
  }
  const { ids, paths, offsets, lengths, sizes } = e.data;
  for (let i = 0; i < ids.length; i++) {
    queue.push([ids[i], paths[i], offsets[i], lengths[i], sizes[i]]);
  }
  pump();
};
`;

/** Reads one worker runs at once. */
const WORKER_CONCURRENCY = 8;

/** Jobs handed to one worker at once. */
const JOB_BATCH = 16;

/** Job priorities: what a waiting request needs, what a walk will need, background. */
export type Priority = 0 | 1 | 2;

interface Job {
  range: StoredRange;
  key: string;
  priority: Priority;
  /** -1: warm only; else decompress to exactly this many bytes. */
  size: number;
  /** The pack block a warm-only job reads, if it reads one. */
  block?: number;
  done: (data: Uint8Array | undefined) => void;
}

/** The key of a range (for de-duplication and {@linkcode FileLoader.hurry}). */
export function rangeKey(r: StoredRange): string {
  return r.length < 0 ? r.path : `${r.path}\0${r.offset}\0${r.length}`;
}

/** Reads stored ranges on worker threads, a bounded number at a time. */
export class FileLoader {
  readonly #workerCount: number;
  readonly #maxWaiting: number;
  #workers: { w: Worker; busy: number }[] = [];
  #workersTried = false;
  #workerUrl: string | undefined;
  #jobs = new Map<number, Job>();
  /** Warm-only jobs by key (so one range is read once at a time). */
  #warming = new Map<string, Promise<void>>();
  /** Unsent jobs by key (to hurry them). */
  #unsentByKey = new Map<string, number>();
  #nextId = 1;
  /** Jobs not yet handed to a worker (or the in-thread reader), by priority. */
  #unsent: number[][] = [[], [], []];
  #sendScheduled = false;
  #sendSoon = false;
  #running = 0;
  #urgent = 0;
  /** Warm ranges by key, with when they were read. */
  #warm = new Map<string, number>();
  /**
   * Warm pack blocks: path -> block number -> when read (`Date.now()`, a
   * cheaper clock than `performance.now()`, precise enough for the TTL).
   * Asked several times per file of a walk, so no key strings here.
   */
  #warmBlocks = new Map<string, Map<number, number>>();
  #warmBlockCount = 0;
  #closed = false;
  /** Waiters for the workers' answers to {@linkcode start}'s pings. */
  #pongs: (() => void)[] = [];
  /** Ranges read so far (for tests and diagnostics). */
  reads = 0;
  /** Decompressed loads that came back with data (for tests and diagnostics). */
  loaded = 0;
  /** Bytes read by warm-only jobs (for tests and diagnostics). */
  warmedBytes = 0;
  /** Messages sent to the workers (for diagnostics). */
  messages = 0;

  /**
   * `workers` threads read (several ranges at a time each); beyond
   * `maxWaiting` waiting jobs new ones are not taken (they resolve at once,
   * warm-only as done, loads as `undefined`).
   */
  constructor(workers = 2, maxWaiting = 16384) {
    this.#workerCount = Math.max(1, workers);
    this.#maxWaiting = Math.max(1, maxWaiting);
  }

  /**
   * Starts the workers now (instead of on first use) and resolves once
   * each has booted and answered (or after `timeoutMs`): a worker takes
   * ~0.1-0.3 s to boot, which the first read of a fresh mount would
   * otherwise wait for. Never rejects.
   */
  start(timeoutMs = 3000): Promise<void> {
    this.#ensureWorkers();
    const booted = this.#workers.map(({ w }) =>
      new Promise<void>((done) => {
        this.#pongs.push(done);
        w.postMessage("ping");
      })
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    return Promise.race([
      Promise.all(booted),
      new Promise<void>((r) => timer = setTimeout(r, timeoutMs)),
    ]).then(() => clearTimeout(timer));
  }

  /** Jobs waiting or running. */
  get pending(): number {
    return this.#jobs.size;
  }

  /** Jobs of priority 0 (someone waits for them) waiting or running. */
  get urgent(): number {
    return this.#urgent;
  }

  /** Whether {@linkcode readZstd} can work (workers run or can be started). */
  get canDecompress(): boolean {
    this.#ensureWorkers();
    return this.#workers.length > 0;
  }

  /**
   * Resolves once `range` has been read into the page cache (or could not
   * be: a missing file is not an error here; the real read reports it).
   * A range of a pack is warmed as the aligned {@linkcode PACK_BLOCK}s that
   * hold it. Never rejects.
   */
  warm(range: StoredRange, priority: Priority = 2): Promise<void> {
    if (range.length < 0) return this.#warmOne(range, priority);
    const first = Math.floor(range.offset / PACK_BLOCK);
    const last = Math.floor(
      (range.offset + Math.max(range.length, 1) - 1) / PACK_BLOCK,
    );
    if (first === last) return this.#warmBlock(range.path, first, priority);
    const all: Promise<void>[] = [];
    for (let b = first; b <= last; b++) {
      all.push(this.#warmBlock(range.path, b, priority));
    }
    return Promise.all(all).then(() => {});
  }

  /**
   * Warms the blocks of `path` covering bytes `[from, to)`, in order (the
   * file need not be that long: reads past its end just come back short).
   */
  warmSpan(
    path: string,
    from: number,
    to: number,
    priority: Priority = 2,
  ): Promise<void> {
    if (to <= from) return Promise.resolve();
    return this.warm({ path, offset: from, length: to - from }, priority);
  }

  /** Whether `range` was warmed recently (no job needed). */
  isWarm(range: StoredRange): boolean {
    if (range.length < 0) return this.#isWarmKey(range.path);
    const first = Math.floor(range.offset / PACK_BLOCK);
    const last = Math.floor(
      (range.offset + Math.max(range.length, 1) - 1) / PACK_BLOCK,
    );
    for (let b = first; b <= last; b++) {
      if (!this.#isWarmBlock(range.path, b)) return false;
    }
    return true;
  }

  #isWarmBlock(path: string, block: number): boolean {
    const blocks = this.#warmBlocks.get(path);
    const at = blocks?.get(block);
    if (at === undefined) return false;
    if (Date.now() - at < WARM_TTL_MS) return true;
    blocks!.delete(block);
    this.#warmBlockCount--;
    return false;
  }

  #isWarmKey(key: string): boolean {
    const at = this.#warm.get(key);
    if (at === undefined) return false;
    if (performance.now() - at < WARM_TTL_MS) return true;
    this.#warm.delete(key);
    return false;
  }

  #warmBlock(path: string, block: number, priority: Priority): Promise<void> {
    if (this.#closed || this.#isWarmBlock(path, block)) {
      return Promise.resolve();
    }
    return this.#warmOne(
      { path, offset: block * PACK_BLOCK, length: PACK_BLOCK },
      priority,
      blockKey(path, block),
      block,
    );
  }

  #warmOne(
    range: StoredRange,
    priority: Priority,
    key = rangeKey(range),
    block?: number,
  ): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (block === undefined && this.#isWarmKey(key)) return Promise.resolve();
    const known = this.#warming.get(key);
    if (known) {
      if (priority < 2) this.#hurryKey(key, priority);
      return known;
    }
    if (this.#jobs.size >= this.#maxWaiting) return Promise.resolve();
    const p = new Promise<void>((done) =>
      this.#add({ range, key, priority, size: -1, block, done: () => done() })
    );
    this.#warming.set(key, p);
    return p;
  }

  /**
   * The zstd-decompressed contents of `range`, which must come out at
   * exactly `size` bytes; `undefined` if it cannot be read or decompressed
   * to that size, or without workers. The caller checks the bytes (this
   * does not know what they should hash to). Never rejects.
   */
  readZstd(
    range: StoredRange,
    size: number,
    priority: Priority = 1,
  ): Promise<Uint8Array | undefined> {
    if (this.#closed || !this.canDecompress) return Promise.resolve(undefined);
    if (this.#jobs.size >= this.#maxWaiting) return Promise.resolve(undefined);
    return new Promise((done) =>
      this.#add({ range, key: rangeKey(range), priority, size, done })
    );
  }

  /** Moves a job for `range` not yet handed to a worker to the front. */
  hurry(range: StoredRange): void {
    this.#hurryKey(rangeKey(range), 0);
  }

  #hurryKey(key: string, priority: Priority): void {
    const id = this.#unsentByKey.get(key);
    const job = id === undefined ? undefined : this.#jobs.get(id);
    if (id === undefined || !job || job.priority <= priority) return;
    // Its entry in the lower list goes stale (skipped when taken).
    job.priority = priority;
    if (priority === 0) this.#urgent++;
    this.#unsent[priority].push(id);
    this.#scheduleSend(priority === 0);
  }

  /** Stops the workers; waiting promises resolve. */
  close(): void {
    this.#closed = true;
    for (const { w } of this.#workers) w.terminate();
    this.#workers = [];
    if (this.#workerUrl) URL.revokeObjectURL(this.#workerUrl);
    for (const id of [...this.#jobs.keys()]) this.#finish(id, null);
    this.#unsent = [[], [], []];
    this.#unsentByKey.clear();
  }

  #add(job: Job): void {
    const id = this.#nextId++;
    this.#jobs.set(id, job);
    if (job.priority === 0) this.#urgent++;
    this.#unsent[job.priority].push(id);
    this.#unsentByKey.set(job.key, id);
    this.#scheduleSend(job.priority === 0);
  }

  get #unsentCount(): number {
    return this.#unsent[0].length + this.#unsent[1].length +
      this.#unsent[2].length;
  }

  /** Up to `n` unsent job ids, most urgent first. */
  #takeUnsent(n: number): number[] {
    const out: number[] = [];
    this.#unsent.forEach((list, priority) => {
      let i = 0;
      while (out.length < n && i < list.length) {
        const id = list[i++];
        const job = this.#jobs.get(id);
        // Skip finished jobs and stale entries of hurried ones.
        if (job && job.priority === priority) out.push(id);
      }
      list.splice(0, i);
    });
    for (const id of out) {
      const job = this.#jobs.get(id);
      if (job && this.#unsentByKey.get(job.key) === id) {
        this.#unsentByKey.delete(job.key);
      }
    }
    return out;
  }

  /**
   * Sends what waits soon: an urgent job at the end of this task, others
   * with the next timer (so the many small requests of a busy loop turn go
   * out as a few messages).
   */
  #scheduleSend(urgent = false): void {
    if (urgent && !this.#sendSoon) {
      this.#sendSoon = true;
      queueMicrotask(() => {
        this.#sendSoon = false;
        this.#send();
      });
    }
    if (!this.#sendScheduled) {
      this.#sendScheduled = true;
      setTimeout(() => {
        this.#sendScheduled = false;
        this.#send();
      }, 0);
    }
  }

  #ensureWorkers(): void {
    if (this.#workersTried || this.#closed) return;
    // Started on first use: a mount that never walks needs no threads.
    this.#workersTried = true;
    if (typeof Worker === "undefined") return;
    const source = WORKER_SOURCE.replace(
      "CONCURRENCY",
      String(WORKER_CONCURRENCY),
    ).replaceAll("BLOCK", String(PACK_BLOCK));
    const url = URL.createObjectURL(
      new Blob([source], { type: "text/javascript" }),
    );
    this.#workerUrl = url;
    for (let i = 0; i < this.#workerCount; i++) {
      let w: Worker;
      try {
        w = new Worker(url, { type: "module" });
      } catch {
        break;
      }
      const slot = { w, busy: 0 };
      w.onmessage = (e: MessageEvent) => {
        if (e.data === "pong") return this.#pongs.shift()?.();
        const { ids, datas } = e.data as {
          ids: Uint32Array;
          datas: (ArrayBuffer | null)[];
        };
        slot.busy -= ids.length;
        for (let j = 0; j < ids.length; j++) this.#finish(ids[j], datas[j]);
        if (this.#unsentCount > 0) this.#send();
      };
      w.onerror = (e: Event) => {
        // What this worker owed is given up (those ranges are simply read
        // cold later); the others go on.
        e.preventDefault?.();
        w.terminate();
        this.#workers = this.#workers.filter((x) => x !== slot);
      };
      this.#workers.push(slot);
    }
  }

  #send(): void {
    if (this.#closed) return;
    this.#ensureWorkers();
    if (this.#workers.length > 0) {
      // Hand out batches to the least busy workers, keeping at most two
      // batches queued per worker (the rest waits here, so late jobs are
      // not stuck behind a long queue in one worker).
      while (this.#unsentCount > 0) {
        let best = this.#workers[0];
        for (const x of this.#workers) if (x.busy < best.busy) best = x;
        if (best.busy >= 2 * JOB_BATCH) return;
        // Spread a few jobs over all workers (parallel disk reads when the
        // cache is cold), many in batches of JOB_BATCH.
        const share = Math.ceil(this.#unsentCount / this.#workers.length);
        const ids = Uint32Array.from(
          this.#takeUnsent(Math.min(JOB_BATCH, Math.max(1, share))),
        );
        if (ids.length === 0) continue; // only stale entries were left
        const paths: string[] = [];
        const offsets = new Float64Array(ids.length);
        const lengths = new Float64Array(ids.length);
        const sizes = new Int32Array(ids.length);
        ids.forEach((id, i) => {
          const job = this.#jobs.get(id);
          paths.push(job?.range.path ?? "");
          offsets[i] = job?.range.offset ?? 0;
          lengths[i] = job?.range.length ?? -1;
          sizes[i] = job?.size ?? -1;
        });
        best.busy += ids.length;
        this.messages++;
        best.w.postMessage({ ids, paths, offsets, lengths, sizes }, [
          ids.buffer,
          offsets.buffer,
          lengths.buffer,
          sizes.buffer,
        ]);
      }
      return;
    }
    // No worker: warm on this thread, a bounded number at once.
    while (this.#running < 16 && this.#unsentCount > 0) {
      const [id] = this.#takeUnsent(1);
      const job = id === undefined ? undefined : this.#jobs.get(id);
      if (!job) continue;
      if (job.size >= 0) {
        this.#finish(id, null);
        continue;
      }
      this.#running++;
      readRange(job.range).then(() => {}, () => {}).then(() => {
        this.#running--;
        this.#finish(id, null);
        this.#send();
      });
    }
  }

  #finish(id: number, data: ArrayBuffer | null): void {
    const job = this.#jobs.get(id);
    if (!job) return;
    this.#jobs.delete(id);
    if (job.priority === 0) this.#urgent--;
    this.reads++;
    if (job.size < 0) {
      this.#warming.delete(job.key);
      if (job.range.length > 0) this.warmedBytes += job.range.length;
      if (job.block !== undefined) this.#rememberBlock(job);
      else {
        this.#warm.delete(job.key);
        this.#warm.set(job.key, performance.now());
        if (this.#warm.size > REMEMBER) {
          this.#warm.delete(this.#warm.keys().next().value!);
        }
      }
    } else if (data) this.loaded++;
    job.done(data ? new Uint8Array(data) : undefined);
  }

  #rememberBlock(job: Job): void {
    // Past the bound, forget them all (a block asked for again is read
    // again: from the page cache, one read per MiB).
    if (this.#warmBlockCount >= REMEMBER) {
      this.#warmBlocks.clear();
      this.#warmBlockCount = 0;
    }
    let blocks = this.#warmBlocks.get(job.range.path);
    if (!blocks) this.#warmBlocks.set(job.range.path, blocks = new Map());
    if (!blocks.has(job.block!)) this.#warmBlockCount++;
    blocks.set(job.block!, Date.now());
  }
}

function blockKey(path: string, block: number): string {
  return `${path}\0b${block}`;
}

/** Reads a range on this thread's runtime (the no-worker fallback). */
async function readRange(r: StoredRange): Promise<void> {
  if (r.length < 0) {
    await fsp.readFile(r.path);
    return;
  }
  const fh = await fsp.open(r.path, "r");
  try {
    const buf = new Uint8Array(Math.min(r.length, PACK_BLOCK));
    for (let n = 0; n < r.length;) {
      const { bytesRead } = await fh.read(
        buf,
        0,
        Math.min(buf.length, r.length - n),
        r.offset + n,
      );
      if (bytesRead === 0) break;
      n += bytesRead;
    }
  } finally {
    await fh.close();
  }
}
