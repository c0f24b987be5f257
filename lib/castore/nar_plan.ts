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
import { directoryChildren, fetchDirectory } from "./render_nar.ts";
import {
  narChunks,
  type NarNode,
  type NarRegularNode,
} from "../nix/nar_writer.ts";

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

/** A file node that carries its blob digest to the planner. */
type PlannedFile = NarRegularNode & { digest: Uint8Array };

const NO_PATH = new Uint8Array(0);
function notRead(): never {
  throw new Error("internal error: a planned NAR file was read");
}

/**
 * A directory of the local store read on this thread (a pack record,
 * checked against its digest), or `undefined` where the service has to do
 * it. Walking 14,000 directories through `get` cost ~0.13 s more on this
 * thread (its promise, cache and the NAR writer's await per directory).
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

/** The entries of a directory read through the service. */
async function* entriesOf(
  digest: Uint8Array,
  directories: DirectoryService,
): AsyncGenerator<[Uint8Array, NarNode]> {
  const d = await fetchDirectory(directories, digest);
  for (const [name, child] of directoryChildren(d)) {
    yield [name, planNode(child, directories)];
  }
}

function planNode(entry: Entry, directories: DirectoryService): NarNode {
  const e = entry.entry;
  switch (e.case) {
    case "symlink":
      return { type: "symlink", target: e.value.target };
    case "file": {
      if (e.value.size === 0n) {
        return {
          type: "regular",
          executable: e.value.executable,
          size: 0,
          bytes: () => Promise.resolve(NO_PATH),
          contents: notRead,
        };
      }
      // The planner's copyContents hook takes every non-empty file: the
      // readers below are never called.
      const node: PlannedFile = {
        type: "regular",
        executable: e.value.executable,
        size: Number(e.value.size),
        digest: e.value.digest,
        localPath: NO_PATH,
        openSync: notRead,
        contents: notRead,
      };
      return node;
    }
    case "directory": {
      const digest = e.value.digest;
      return {
        type: "directory",
        entries: () => {
          const d = directorySync(directories, digest);
          if (!d) return entriesOf(digest, directories);
          const out = directoryChildren(d).map((
            [name, child],
          ): [Uint8Array, NarNode] => [name, planNode(child, directories)]);
          // Synchronous too: the NAR writer then iterates without an await.
          return Object.assign(out, {
            [Symbol.asyncIterator]: () => out[Symbol.iterator]() as never,
          });
        },
      };
    }
    default:
      throw new ConnectError("entry has no node", Code.InvalidArgument);
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
  const chunks = narChunks(planNode(entry, directories), {
    reuseBuffers: true,
    copyContents: {
      minSize: 1,
      copy: async (node) => {
        const f = node as PlannedFile;
        let offset = 0;
        for (const c of await storedChunks(blobs, f.digest, f.size)) {
          jobs.addChunk(c, f.digest, offset);
          offset += c.size;
        }
        return f.size;
      },
    },
  });
  for await (const framing of chunks) {
    jobs.addBytes(framing);
    if (jobs.ready.length > 0) {
      yield* jobs.ready;
      jobs.ready = [];
    }
  }
  jobs.cut();
  yield* jobs.ready;
}
