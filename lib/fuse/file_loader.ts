/**
 * Reads files ahead of demand on worker threads, several at once: either only
 * into the kernel's page cache ("warming"), or also zstd-decompressed and
 * handed back.
 *
 * The local castore reads its small files (directories, chunks) with
 * synchronous calls: microseconds when cached, but on a cold cache each one
 * is a disk wait on the main thread, one at a time. A FUSE tree walk knows
 * which files it will want next; reading them here turns those serial waits
 * into parallel I/O, and the synchronous reads that follow are cache hits.
 * Decompressing on the worker as well leaves the main thread only the
 * checksum of what it gets back.
 *
 * The workers do asynchronous `node:fs` reads, several at once each, and
 * the main thread pays one message per batch of paths, not several
 * thread-pool round trips per file. Where no worker can be started, warming runs on the main thread
 * and decompressed loads are not offered.
 *
 * @module
 */
import { promises as fsp } from "node:fs";

/** Paths remembered as warm (so they are not read twice). */
const REMEMBER = 1 << 16;

/**
 * A worker. In: `{ ids: Uint32Array, paths: string[], sizes: Int32Array }`
 * (size -1: only read; else zstd-decompress to exactly that many bytes).
 * Out: `{ ids: Uint32Array, datas: (ArrayBuffer | null)[] }` (null:
 * unreadable, or only warmed), a batch per turn of its event loop. Up to
 * {@linkcode WORKER_CONCURRENCY} asynchronous reads run at once, so a cold
 * cache sees many disk reads in parallel.
 */
const WORKER_SOURCE = `
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
const load = async (path, size) => {
  const bytes = await fsp.readFile(path);
  if (size < 0) return null;
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
    const [id, path, size] = queue[head++];
    if (head > 4096 && head * 2 > queue.length) { queue.splice(0, head); head = 0; }
    running++;
    load(path, size).then((d) => finish(id, d), () => finish(id, null));
  }
};
self.onmessage = (e) => {
  const { ids, paths, sizes } = e.data;
  for (let i = 0; i < ids.length; i++) queue.push([ids[i], paths[i], sizes[i]]);
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
  path: string;
  priority: Priority;
  /** -1: warm only; else decompress to exactly this many bytes. */
  size: number;
  done: (data: Uint8Array | undefined) => void;
}

/** Reads files on worker threads, a bounded number at a time. */
export class FileLoader {
  readonly #workerCount: number;
  readonly #maxWaiting: number;
  #workers: { w: Worker; busy: number }[] = [];
  #workersTried = false;
  #workerUrl: string | undefined;
  #jobs = new Map<number, Job>();
  /** Warm-only jobs by path (so one path is read once at a time). */
  #warming = new Map<string, Promise<void>>();
  /** Unsent jobs by path (to hurry them). */
  #unsentByPath = new Map<string, number>();
  #nextId = 1;
  /** Jobs not yet handed to a worker (or the in-thread reader), by priority. */
  #unsent: number[][] = [[], [], []];
  #sendScheduled = false;
  #sendSoon = false;
  #running = 0;
  #warm = new Set<string>();
  #closed = false;
  /** Files read so far (for tests and diagnostics). */
  reads = 0;
  /** Messages sent to the workers (for diagnostics). */
  messages = 0;

  /**
   * `workers` threads read (several files at a time each); beyond `maxWaiting`
   * waiting jobs new ones are not taken (they resolve at once, warm-only
   * as done, loads as `undefined`).
   */
  constructor(workers = 2, maxWaiting = 16384) {
    this.#workerCount = Math.max(1, workers);
    this.#maxWaiting = Math.max(1, maxWaiting);
  }

  /** Jobs waiting or running. */
  get pending(): number {
    return this.#jobs.size;
  }

  /** Whether {@linkcode readZstd} can work (workers run or can be started). */
  get canDecompress(): boolean {
    this.#ensureWorkers();
    return this.#workers.length > 0;
  }

  /**
   * Resolves once `path` has been read into the page cache (or could not
   * be: a missing file is not an error here; the real read reports it).
   * Never rejects.
   */
  warm(path: string, priority: Priority = 2): Promise<void> {
    if (this.#closed || this.#warm.has(path)) return Promise.resolve();
    const known = this.#warming.get(path);
    if (known) return known;
    if (this.#jobs.size >= this.#maxWaiting) return Promise.resolve();
    const p = new Promise<void>((done) =>
      this.#add({ path, priority, size: -1, done: () => done() })
    );
    this.#warming.set(path, p);
    return p;
  }

  /**
   * The zstd-decompressed contents of file `path`, which must come out at
   * exactly `size` bytes; `undefined` if the file cannot be read or
   * decompressed to that size, or without workers. The caller checks the
   * bytes (this does not know what they should hash to). Never rejects.
   */
  readZstd(
    path: string,
    size: number,
    priority: Priority = 1,
  ): Promise<Uint8Array | undefined> {
    if (this.#closed || !this.canDecompress) return Promise.resolve(undefined);
    if (this.#jobs.size >= this.#maxWaiting) return Promise.resolve(undefined);
    return new Promise((done) => this.#add({ path, priority, size, done }));
  }

  /** Moves a job for `path` not yet handed to a worker to the front. */
  hurry(path: string): void {
    const id = this.#unsentByPath.get(path);
    const job = id === undefined ? undefined : this.#jobs.get(id);
    if (id === undefined || !job || job.priority === 0) return;
    // Its entry in the lower list goes stale (skipped when taken).
    job.priority = 0;
    this.#unsent[0].push(id);
    this.#scheduleSend(true);
  }

  /** Stops the workers; waiting promises resolve. */
  close(): void {
    this.#closed = true;
    for (const { w } of this.#workers) w.terminate();
    this.#workers = [];
    if (this.#workerUrl) URL.revokeObjectURL(this.#workerUrl);
    for (const id of [...this.#jobs.keys()]) this.#finish(id, null);
    this.#unsent = [[], [], []];
    this.#unsentByPath.clear();
  }

  #add(job: Job): void {
    const id = this.#nextId++;
    this.#jobs.set(id, job);
    this.#unsent[job.priority].push(id);
    this.#unsentByPath.set(job.path, id);
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
      if (job && this.#unsentByPath.get(job.path) === id) {
        this.#unsentByPath.delete(job.path);
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
    );
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
        const { ids, datas } = e.data as {
          ids: Uint32Array;
          datas: (ArrayBuffer | null)[];
        };
        slot.busy -= ids.length;
        for (let j = 0; j < ids.length; j++) this.#finish(ids[j], datas[j]);
        if (this.#unsentCount > 0) this.#send();
      };
      w.onerror = (e: Event) => {
        // What this worker owed is given up (those files are simply read
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
        const sizes = new Int32Array(ids.length);
        ids.forEach((id, i) => {
          const job = this.#jobs.get(id);
          paths.push(job?.path ?? "");
          sizes[i] = job?.size ?? -1;
        });
        best.busy += ids.length;
        this.messages++;
        best.w.postMessage({ ids, paths, sizes }, [ids.buffer, sizes.buffer]);
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
      fsp.readFile(job.path).then(() => {}, () => {}).then(() => {
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
    this.reads++;
    if (job.size < 0) {
      this.#warming.delete(job.path);
      this.#warm.add(job.path);
      if (this.#warm.size > REMEMBER) {
        this.#warm.delete(this.#warm.values().next().value!);
      }
    }
    job.done(data ? new Uint8Array(data) : undefined);
  }
}
