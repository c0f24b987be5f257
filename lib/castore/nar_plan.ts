/**
 * Plans a NAR of the local store for the NAR workers (./nar_to_fd.ts): walks
 * the tree in NAR order and cuts the output into jobs of about
 * {@linkcode JOB_BYTES}: the NAR framing bytes (made by lib/nix's NAR writer,
 * which also checks names, order and depth) and, for every file, where its
 * chunks are stored (pack file, offset, length, decoded size, digest). No
 * file contents are read here: the workers decode and verify them.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type {
  Directory,
  Entry,
} from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { DirectoryService } from "./directory_service.ts";
import type { LocalBlobService } from "./local_blob_service.ts";
import { LocalDirectoryService } from "./local_directory_service.ts";
import { checkStoredDirectory } from "./memory_directory_service.ts";
import { PackKind } from "./pack.ts";
import { digestToString } from "./digest.ts";
import { fetchDirectory } from "./render_nar.ts";
import { compareBytes, validateDirectory } from "./directory.ts";
import { NAR_TOKENS } from "../nix/nar_writer.ts";
import { MAX_NAR_DEPTH } from "../nix/nar_common.ts";

/** Decoded bytes a job holds at most (chunks are at most 512 KiB more). */
export const JOB_BYTES = 1 << 20;
/** Pieces of output a job holds at most (one writev(2) each, IOV_MAX 1024). */
export const JOB_PIECES = 512;
/** Framing bytes that end a job (one more piece of framing is at most 256 KiB). */
export const JOB_FRAMING = 256 << 10;

/** One job: NAR bytes in order, framing and chunks (see ../runtime/nar_worker.ts). */
export interface NarJob {
  /** The job's number: jobs are written in this order. */
  seq: number;
  /** The framing bytes of the job. */
  bytes: Uint8Array;
  /** Five numbers per piece: `0, start, end, 0, 0` or `1, path, offset, length, size`. */
  ops: Float64Array;
  /**
   * Pack (or loose chunk) files first named by this job: `ops` name files
   * by their number in the order of first use, over all jobs of the NAR.
   */
  newPaths: string[];
  /** The chunks' digests, 32 bytes each, in order. */
  digests: Uint8Array;
  /** For each chunk, its blob and where in the blob it starts (to read it again the usual way). */
  sources: { blob: Uint8Array; offset: number }[];
  /** Output bytes of the job. */
  size: number;
}

/** The chunks of a file and where they are stored. */
interface StoredChunk {
  digest: Uint8Array;
  size: number;
  path: string;
  offset: number;
  /** -1: a whole loose chunk file. */
  length: number;
}

function missing(what: string): ConnectError {
  return new ConnectError(`${what} is missing`, Code.NotFound);
}

/** Where each chunk of blob `digest` (`size` bytes as its entry says) is stored. */
async function storedChunks(
  blobs: LocalBlobService,
  digest: Uint8Array,
  size: number,
): Promise<StoredChunk[]> {
  const declared = (actual: number) =>
    new ConnectError(
      `blob ${
        digestToString(digest)
      } has ${actual} bytes, its entry declares ${size}`,
      Code.DataLoss,
    );
  const rec = blobs.packedChunk(digest);
  if (rec) {
    if (rec.rawSize !== size) throw declared(rec.rawSize);
    return [{
      digest,
      size,
      path: rec.pack.path,
      offset: rec.offset,
      length: rec.length,
    }];
  }
  const list = blobs.chunkList(digest);
  const chunks = list?.chunks ?? [{ digest, size }];
  if (list) {
    if (list.size !== size) throw declared(list.size);
    if (!list.bound) {
      // An old (version 1) list does not bind the blob digest: the whole
      // blob is checked once the usual way, then its chunks as for any.
      const s = await blobs.read(digest);
      if (!s) throw missing(`blob ${digestToString(digest)}`);
      for await (const _ of s) { /* read and verified */ }
    }
  }
  return chunks.map((c) => {
    const r = blobs.locateChunk(c.digest);
    if (!r) {
      throw missing(
        list
          ? `chunk ${digestToString(c.digest)} of blob ${
            digestToString(digest)
          }`
          : `blob ${digestToString(digest)}`,
      );
    }
    return { digest: c.digest, size: Number(c.size), ...r };
  });
}

const ZEROS = new Uint8Array(8);

/** Collects output into jobs. */
class JobBuilder {
  #seq = 0;
  #bytes = new Uint8Array(64 << 10);
  #len = 0;
  #ops: number[] = [];
  #newPaths: string[] = [];
  #pathIdx = new Map<string, number>();
  #digests: Uint8Array[] = [];
  #sources: { blob: Uint8Array; offset: number }[] = [];
  #raw = 0;
  #num = new Uint8Array(8);
  /** Finished jobs not yet taken. */
  ready: NarJob[] = [];

  addBytes(b: Uint8Array): void {
    if (b.length === 0) return;
    if (this.#len + b.length > this.#bytes.length) {
      const bigger = new Uint8Array(
        Math.max(2 * this.#bytes.length, this.#len + b.length),
      );
      bigger.set(this.#bytes.subarray(0, this.#len));
      this.#bytes = bigger;
    }
    this.#bytes.set(b, this.#len);
    const ops = this.#ops;
    const n = ops.length;
    if (n > 0 && ops[n - 5] === 0 && ops[n - 3] === this.#len) {
      ops[n - 3] += b.length;
    } else ops.push(0, this.#len, this.#len + b.length, 0, 0);
    this.#len += b.length;
    if (this.#len >= JOB_FRAMING) this.cut();
  }

  /** A u64 little-endian. */
  addNumber(n: number): void {
    const b = this.#num;
    new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
    this.addBytes(b);
  }

  /** Zero bytes up to a multiple of 8 after `n` bytes. */
  addPadding(n: number): void {
    const p = (8 - (n % 8)) % 8;
    if (p > 0) this.addBytes(ZEROS.subarray(0, p));
  }

  /** A NAR string: length, bytes, padding. */
  addString(b: Uint8Array): void {
    this.addNumber(b.length);
    this.addBytes(b);
    this.addPadding(b.length);
  }

  addChunk(c: StoredChunk, blob: Uint8Array, offset: number): void {
    let p = this.#pathIdx.get(c.path);
    if (p === undefined) {
      p = this.#pathIdx.size;
      this.#pathIdx.set(c.path, p);
      this.#newPaths.push(c.path);
    }
    this.#ops.push(1, p, c.offset, c.length, c.size);
    this.#digests.push(c.digest);
    this.#sources.push({ blob, offset });
    this.#raw += c.size;
    if (this.#raw >= JOB_BYTES || this.#ops.length >= 5 * JOB_PIECES) {
      this.cut();
    }
  }

  /** Ends the job being built (if it has anything). */
  cut(): void {
    if (this.#ops.length === 0) return;
    const digests = new Uint8Array(32 * this.#digests.length);
    this.#digests.forEach((d, i) => digests.set(d, 32 * i));
    this.ready.push({
      seq: this.#seq++,
      bytes: this.#bytes.slice(0, this.#len),
      ops: Float64Array.from(this.#ops),
      newPaths: this.#newPaths,
      digests,
      sources: this.#sources,
      size: this.#len + this.#raw,
    });
    this.#len = 0;
    this.#ops = [];
    this.#newPaths = [];
    this.#digests = [];
    this.#sources = [];
    this.#raw = 0;
  }
}

/**
 * A directory of the local store read on this thread (a pack record,
 * checked against its digest and validated), or `undefined` where the
 * service has to do it. Walking 14,000 directories through `get` cost
 * ~0.13 s more on this thread (its promise and cache).
 */
function directorySync(
  directories: DirectoryService,
  digest: Uint8Array,
): Directory | undefined {
  if (!(directories instanceof LocalDirectoryService)) return undefined;
  const r = directories.packs.lookup(digest);
  if (r?.kind !== PackKind.directory) return undefined;
  let bytes: Uint8Array;
  try {
    // A copy: the decoded message's bytes fields are views of it.
    bytes = r.pack.readTransient(r).slice();
  } catch {
    return undefined; // e.g. merged away meanwhile: the service finds it
  }
  return checkStoredDirectory(digest, bytes);
}

/** A directory checked against its digest and validated. */
async function readDirectory(
  directories: DirectoryService,
  digest: Uint8Array,
): Promise<Directory> {
  const d = directorySync(directories, digest);
  if (d) return d;
  const fetched = await fetchDirectory(directories, digest);
  validateDirectory(fetched);
  return fetched;
}

const T = NAR_TOKENS;
/** Finished jobs a big file's walk holds before handing them out. */
const READY_JOBS = 8;

/**
 * Lays out the NAR itself (the tokens of lib/nix's NAR writer) rather than
 * through the writer's node objects: its per-node objects, promises and
 * generator steps were a third of this thread's time. What the writer
 * checks holds here already: each directory is validated (names, order,
 * targets) and checked against its digest.
 */
class Walk {
  constructor(
    readonly jobs: JobBuilder,
    readonly blobs: LocalBlobService,
    readonly directories: DirectoryService,
  ) {}

  /** A regular file; a big one hands out its jobs as they fill (memory stays flat). */
  async *file(
    digest: Uint8Array,
    size: number,
    executable: boolean,
  ): AsyncGenerator<NarJob> {
    const jobs = this.jobs;
    jobs.addBytes(T.regular);
    if (executable) jobs.addBytes(T.executable);
    jobs.addBytes(T.contents);
    jobs.addNumber(size);
    if (size > 0) {
      let offset = 0;
      for (const c of await storedChunks(this.blobs, digest, size)) {
        jobs.addChunk(c, digest, offset);
        offset += c.size;
        if (jobs.ready.length >= READY_JOBS) {
          yield* jobs.ready;
          jobs.ready = [];
        }
      }
      jobs.addPadding(size);
    }
    jobs.addBytes(T.close);
  }

  symlink(target: Uint8Array): void {
    this.jobs.addBytes(T.symlink);
    this.jobs.addString(target);
    this.jobs.addBytes(T.close);
  }

  async *directory(
    digest: Uint8Array,
    depth: number,
  ): AsyncGenerator<NarJob> {
    if (depth >= MAX_NAR_DEPTH) {
      throw new ConnectError(
        `directory ${
          digestToString(digest)
        } is nested deeper than ${MAX_NAR_DEPTH} levels`,
        Code.InvalidArgument,
      );
    }
    const jobs = this.jobs;
    const d = await readDirectory(this.directories, digest);
    jobs.addBytes(T.directory);
    // The three lists are each sorted: merge them by name.
    const { directories: ds, files: fs, symlinks: ls } = d;
    let i = 0, j = 0, k = 0;
    while (i < ds.length || j < fs.length || k < ls.length) {
      const dn = ds[i]?.name, fn = fs[j]?.name, ln = ls[k]?.name;
      let pick = dn !== undefined ? 0 : fn !== undefined ? 1 : 2;
      let name = pick === 0 ? dn! : pick === 1 ? fn! : ln!;
      if (fn !== undefined && compareBytes(fn, name) < 0) {
        [pick, name] = [1, fn];
      }
      if (ln !== undefined && compareBytes(ln, name) < 0) {
        [pick, name] = [2, ln];
      }
      jobs.addBytes(T.entryName);
      jobs.addString(name);
      jobs.addBytes(T.node);
      if (pick === 0) yield* this.directory(ds[i++].digest, depth + 1);
      else if (pick === 1) {
        const f = fs[j++];
        yield* this.file(f.digest, Number(f.size), f.executable);
      } else this.symlink(ls[k++].target);
      jobs.addBytes(T.close);
      if (jobs.ready.length > 0) {
        yield* jobs.ready;
        jobs.ready = [];
      }
    }
    jobs.addBytes(T.close);
  }
}

/**
 * The jobs of the NAR of `entry` (its name is ignored), in order. Throws
 * (`NotFound`/`DataLoss` naming the digest) on a missing directory, blob
 * or chunk, or a blob whose size is not its entry's.
 */
export async function* planNar(
  entry: Entry,
  blobs: LocalBlobService,
  directories: DirectoryService,
): AsyncGenerator<NarJob> {
  const jobs = new JobBuilder();
  const walk = new Walk(jobs, blobs, directories);
  jobs.addBytes(T.magic);
  const e = entry.entry;
  if (e.case === "directory") yield* walk.directory(e.value.digest, 0);
  else if (e.case === "file") {
    yield* walk.file(e.value.digest, Number(e.value.size), e.value.executable);
  } else if (e.case === "symlink") walk.symlink(e.value.target);
  else throw new ConnectError("entry has no node", Code.InvalidArgument);
  jobs.cut();
  yield* jobs.ready;
}
