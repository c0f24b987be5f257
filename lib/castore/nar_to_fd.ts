/**
 * Writes the NAR of a tree of the local store straight to a file descriptor
 * (stdout for `snix store export`, the client's socket for the nix-daemon's
 * NarFromPath), decoding on two worker threads
 * (../runtime/nar_worker.ts): this thread only plans (./nar_plan.ts: the
 * directory walk, the NAR framing and where each chunk is stored), and the
 * workers read, decompress and BLAKE3-check the chunks and take turns
 * writing the jobs in NAR order. The decoded bytes are never on this
 * thread.
 *
 * Why: the streaming path (./render_nar.ts) decodes and verifies every
 * chunk on the main thread and hands each piece through a stream, which
 * used one core of two (export of the 1 GiB mixed corpus 0.16-0.22x of
 * `nix-store --dump`).
 *
 * Bounded memory: at most {@linkcode IN_FLIGHT} jobs (about 1 MiB of output
 * each) are handed out and not yet written. A job a worker cannot do (a
 * chunk that does not check out, a pack merged away meanwhile) comes back;
 * this thread reads its chunks the usual way (the blob service, which
 * verifies and finds moved records) and hands the bytes back to be written
 * in turn, or, if that fails too, stops the output and throws the blob
 * service's error, which names the digest.
 *
 * Only for a local blob service, where the workers can start (FFI for
 * libzstd and writev, the native BLAKE3 addon, see ../runtime/chunk_worker.ts)
 * and for NARs of at least {@linkcode MIN_NAR_SIZE}; otherwise
 * {@linkcode writeNarToFd} returns `undefined` having written nothing, and
 * the caller uses the streaming path.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Entry } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { BlobService } from "./blob_service.ts";
import type { DirectoryService } from "./directory_service.ts";
import { LocalBlobService } from "./local_blob_service.ts";
import { type NarJob, planNar } from "./nar_plan.ts";
import { NAR_WORKER_SOURCE } from "../runtime/nar_worker.ts";
import { startChunkWorkers } from "../runtime/chunk_worker.ts";
import { ffiGranted } from "../runtime/raw_socket.ts";
import { digestToString } from "./digest.ts";

const log = getLogger(["snix", "castore"]);

/**
 * Smaller NARs go the streaming way (starting the workers costs more),
 * unless the workers are running already.
 */
export const MIN_NAR_SIZE = 4 << 20;
/**
 * Smaller NARs than this go the streaming way even when the workers run (a
 * file or two: handing them over costs more than reading them here).
 */
const MIN_NAR_SIZE_RUNNING = 64 << 10;
/** Jobs handed out and not yet written, at most. */
const IN_FLIGHT = 16;
/**
 * Bytes of shared memory per job handed out: its framing, pieces and
 * digests (see ./nar_plan.ts for the bounds). Jobs travel through shared
 * memory because posting them cost this thread more than planning them:
 * ~40 KiB of typed arrays per job took 0.2-0.35 ms a postMessage (Deno, Bun).
 */
const SLOT_BYTES = 1 << 20;
/** Idle workers are ended after this long (ms), unless warmed up (then never). */
const IDLE_MS = 10_000;
let idleMs = IDLE_MS;
const WORKERS = 2;

/** The error of a write that failed (e.g. `EPIPE`: the reader went away). */
export class NarWriteError extends Error {
  /** The errno name, e.g. `EPIPE`. */
  readonly code: string;
  constructor(errno: number) {
    const code = errno === 32
      ? "EPIPE"
      : errno === 104
      ? "ECONNRESET"
      : `errno ${errno}`;
    super(`cannot write the NAR: ${code}`);
    this.name = "NarWriteError";
    this.code = code;
  }
}

type Msg = { t: string; id?: number; seq?: number; [k: string]: unknown };

/** One NAR being written. */
class Session {
  readonly ctl = new Int32Array(new SharedArrayBuffer(8));
  readonly jobs = new Map<number, NarJob>();
  /** Jobs written (the turn counter the workers move on). */
  get done(): number {
    return Atomics.load(this.ctl, 0);
  }
  ended = 0;
  failure: unknown;
  #wake?: () => void;

  constructor(readonly id: number) {}

  /** Resolves at the next message for this session. */
  next(): Promise<void> {
    return new Promise((r) => (this.#wake = r));
  }

  wake(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  stop(failure: unknown): void {
    this.failure ??= failure;
    Atomics.store(this.ctl, 1, 1);
    Atomics.notify(this.ctl, 0);
  }
}

/** Two NAR workers, one NAR at a time. */
class NarWorkers {
  #workers: Worker[] = [];
  readonly #slots = new SharedArrayBuffer(IN_FLIGHT * SLOT_BYTES);
  #session: Session | undefined;
  #nextId = 1;
  #idle: ReturnType<typeof setTimeout> | undefined;
  #recover:
    | ((job: NarJob) => Promise<Uint8Array>)
    | undefined;
  closed = false;

  static async start(): Promise<NarWorkers | undefined> {
    const pool = new NarWorkers();
    const ws = await startChunkWorkers(NAR_WORKER_SOURCE, WORKERS, {}, {
      message: (w, m) => pool.#message(w, m),
      failed: () => pool.close(new Error("a NAR worker failed")),
    });
    if (!ws) return undefined;
    pool.#workers = ws;
    pool.#armIdle();
    return pool;
  }

  get busy(): boolean {
    return this.#session !== undefined || this.closed;
  }

  #armIdle(): void {
    clearTimeout(this.#idle);
    this.#idle = setTimeout(() => {
      if (!this.#session) this.close();
    }, idleMs);
    // deno-lint-ignore no-explicit-any
    (this.#idle as any)?.unref?.();
  }

  #message(w: Worker, m: Msg): void {
    const s = this.#session;
    if (!s || m.id !== s.id) return;
    if (m.t === "done") {
      for (const seq of s.jobs.keys()) if (seq < s.done) s.jobs.delete(seq);
    } else if (m.t === "ended") s.ended++;
    else if (m.t === "gone") s.stop(new NarWriteError(m.errno as number));
    else if (m.t === "fail") {
      const job = s.jobs.get(m.seq!);
      if (job && this.#recover && s.failure === undefined) {
        this.#recover(job).then(
          (bytes) =>
            w.postMessage({ t: "literal", id: s.id, seq: job.seq, bytes }),
          (e) => {
            s.stop(e);
            s.wake();
          },
        );
      } else s.stop(new Error("internal error: a NAR job failed twice"));
    }
    s.wake();
  }

  /**
   * Writes the jobs to `fd`; resolves the bytes written. `recover` gives a
   * job's bytes the usual way (for a job a worker gave back).
   */
  async write(
    jobs: AsyncIterable<NarJob>,
    fd: number,
    recover: (job: NarJob) => Promise<Uint8Array>,
  ): Promise<number> {
    clearTimeout(this.#idle);
    const s = new Session(this.#nextId++);
    this.#session = s;
    this.#recover = recover;
    const ws = this.#workers;
    for (const w of ws) {
      w.postMessage({
        t: "begin",
        id: s.id,
        ctl: s.ctl.buffer,
        fd,
        slots: this.#slots,
        slotBytes: SLOT_BYTES,
      });
    }
    let posted = 0;
    let bytes = 0;
    // Waiting only for worker messages does not keep every runtime's event
    // loop alive (`deno test` ended a test here as "pending").
    const alive = setInterval(() => {}, 1000);
    try {
      for await (const job of jobs) {
        while (posted - s.done >= IN_FLIGHT && s.failure === undefined) {
          await s.next();
        }
        if (s.failure !== undefined) break;
        s.jobs.set(job.seq, job);
        if (job.newPaths.length > 0) {
          for (const w of ws) {
            w.postMessage({ t: "paths", id: s.id, paths: job.newPaths });
          }
        }
        const slot = job.seq % IN_FLIGHT;
        this.#fill(slot, job);
        ws[job.seq % ws.length].postMessage(
          { t: "job", id: s.id, seq: job.seq, slot },
        );
        posted++;
        bytes += job.size;
      }
    } catch (e) {
      s.stop(e);
    }
    if (s.failure !== undefined) s.stop(s.failure);
    // A worker ends once it wrote (or, stopped, dropped) its jobs.
    for (const w of ws) w.postMessage({ t: "end", id: s.id });
    let told = false;
    while (s.ended < ws.length && !this.closed) {
      if (s.failure !== undefined && !told) {
        // A worker waiting for a job's bytes holds its later messages.
        told = true;
        for (const w of ws) w.postMessage({ t: "stop", id: s.id });
      }
      await s.next();
    }
    if (s.failure === undefined && s.done !== posted) {
      s.failure = new Error("internal error: NAR workers ended early");
    }
    clearInterval(alive);
    this.#session = undefined;
    this.#recover = undefined;
    if (this.closed) throw s.failure ?? new Error("NAR workers stopped");
    this.#armIdle();
    if (s.failure !== undefined) throw s.failure;
    return bytes;
  }

  /** Copies a job into its slot of shared memory (layout: ../runtime/nar_worker.ts). */
  #fill(slot: number, job: NarJob): void {
    const base = slot * SLOT_BYTES;
    const { ops, digests, bytes } = job;
    const need = 24 + 8 * ops.length + digests.length + bytes.length;
    if (need > SLOT_BYTES) {
      throw new Error(`internal error: a NAR job of ${need} bytes`);
    }
    new Float64Array(this.#slots, base, 3 + ops.length).set(
      [ops.length, bytes.length, digests.length],
    );
    new Float64Array(this.#slots, base + 24, ops.length).set(ops);
    const u8 = new Uint8Array(this.#slots, base + 24 + 8 * ops.length);
    u8.set(digests);
    u8.set(bytes, digests.length);
  }

  /** Ends the workers (a NAR being written fails). */
  close(why: unknown = new Error("NAR workers closed")): void {
    this.closed = true;
    clearTimeout(this.#idle);
    for (const w of this.#workers) w.terminate();
    this.#workers = [];
    const s = this.#session;
    if (s) {
      s.stop(why);
      s.wake();
    }
  }
}

let shared: Promise<NarWorkers | undefined> | undefined;
/** The workers once started (see {@linkcode MIN_NAR_SIZE_RUNNING}). */
let running: NarWorkers | undefined;

async function workers(): Promise<NarWorkers | undefined> {
  let pool = await (shared ??= NarWorkers.start());
  if (pool?.closed) {
    shared = undefined;
    pool = await (shared ??= NarWorkers.start());
  }
  running = pool;
  return pool;
}

/**
 * Gets ready to write NARs of a local store (for the nix-daemon, which is
 * about to serve them): starts the NAR workers and loads the pack indexes
 * of `blobs` and `directories` now, so that the first NarFromPath waits for
 * neither (~40-50 ms each under the binary, together about half the time of
 * a 76 MiB NAR). From then on the workers stay as long as the process
 * runs. Resolves whether they run; does nothing where they cannot (not a
 * local store, no FFI).
 */
export async function warmNarWorkers(
  blobs: BlobService,
  directories: DirectoryService,
): Promise<boolean> {
  if (!(blobs instanceof LocalBlobService) || !ffiGranted()) return false;
  idleMs = 2 ** 31 - 1; // setTimeout's longest delay
  const pool = workers();
  // A digest nobody has: the lookups load the indexes and find nothing.
  const none = new Uint8Array(32);
  await Promise.all([blobs.has(none), directories.get(none)]);
  const p = await pool;
  return p !== undefined && !p.closed;
}

/** Ends the NAR workers, if started (e.g. before a command exits). */
export async function closeNarWorkers(): Promise<void> {
  const pool = await shared;
  shared = undefined;
  pool?.close();
}

/** A job's bytes read the usual way (verified by the blob service). */
async function jobBytes(
  job: NarJob,
  blobs: BlobService,
): Promise<Uint8Array> {
  const out = new Uint8Array(job.size);
  let at = 0;
  let k = 0;
  for (let i = 0; i < job.ops.length; i += 5) {
    if (job.ops[i] === 0) {
      const piece = job.bytes.subarray(job.ops[i + 1], job.ops[i + 2]);
      out.set(piece, at);
      at += piece.length;
      continue;
    }
    const size = job.ops[i + 4];
    const { blob, offset } = job.sources[k++];
    const s = await blobs.read(blob, { offset, length: size });
    if (!s) throw new Error(`blob ${digestToString(blob)} is missing`);
    let got = 0;
    for await (const piece of s) {
      out.set(piece.subarray(0, Math.max(0, size - got)), at + got);
      got += piece.length;
    }
    if (got !== size) {
      throw new Error("internal error: a chunk read again has another size");
    }
    at += size;
  }
  return out;
}

/**
 * Writes the NAR of `entry` to `fd` on the NAR workers; resolves the bytes
 * written, or `undefined` (nothing written) where they do not apply: not a
 * local blob service, `sizeHint` (the NAR's size, if known) below
 * {@linkcode MIN_NAR_SIZE}, no workers here, or they are busy with another
 * NAR. Rejects with the blob or directory service's error (naming the
 * digest) on missing or damaged data, or a {@linkcode NarWriteError}; the
 * output then ends where it was.
 */
export async function writeNarToFd(
  entry: Entry,
  blobs: BlobService,
  directories: DirectoryService,
  fd: number,
  sizeHint: number,
): Promise<number | undefined> {
  const min = running?.closed === false ? MIN_NAR_SIZE_RUNNING : MIN_NAR_SIZE;
  if (!(blobs instanceof LocalBlobService) || sizeHint < min) {
    return undefined;
  }
  if (entry.entry.case === "symlink") return undefined;
  return await writeJobsToFd(planNar(entry, blobs, directories), blobs, fd);
}

/**
 * Writes planned jobs (./nar_plan.ts) to `fd` on the NAR workers; a job a
 * worker gives back is read again through `blobs`. Resolves the bytes
 * written, or `undefined` (nothing written, no job taken) if the workers
 * cannot run here or are busy. Rejects as {@linkcode writeNarToFd}.
 */
export async function writeJobsToFd(
  jobs: AsyncIterable<NarJob>,
  blobs: BlobService,
  fd: number,
): Promise<number | undefined> {
  // (no FFI permission under `deno run`: no workers, and no prompt)
  const pool = ffiGranted() ? await workers() : undefined;
  if (!pool || pool.busy) {
    log.debug("NAR streamed: the NAR workers are {why}", {
      why: pool ? "busy" : "not available here",
    });
    return undefined;
  }
  const n = await pool.write(jobs, fd, (job) => jobBytes(job, blobs));
  log.debug("NAR of {n} bytes written by the NAR workers", { n });
  return n;
}
