/**
 * Ingests a file system tree into castore: file contents stream through
 * {@linkcode BlobWriter}s, directories are put leaves first, symlinks and the
 * executable bit are kept (the executable bit as Nix reads it: the owner's x).
 *
 * The walk is driven by the NAR writer (lib/nix `narChunks`) over a lazy
 * {@linkcode NarNode} of the tree, so the same single pass also yields the
 * tree's NAR serialisation: {@linkcode ingestTreeWithNar} hands every NAR
 * chunk to a callback (e.g. a SHA-256 hasher, as `nix-store --add` needs)
 * without reading any file twice. File system calls are synchronous on
 * purpose: with a warm cache they take microseconds, while each async call
 * costs a thread-pool round trip that left the walk mostly waiting (measured
 * on the 1 GiB mixed corpus: 11.5 s and 6.8 CPU s async, see the report of
 * the store layer). Memory stays flat: one directory listing
 * per level of the current path and one read buffer.
 *
 * Local services write without per-object syncs here (see
 * ./data_dir_sync.ts): everything is made durable by one commit before the
 * root entry is returned, so a caller may record it (a PathInfo) right away.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import * as fs from "node:fs";
import type { Stats } from "node:fs";
import { basename } from "node:path";
import { Buffer } from "node:buffer";
import {
  type Directory,
  type Entry,
  EntrySchema,
  FileEntrySchema,
  SymlinkEntrySchema,
} from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { BlobService, BlobWriter } from "./blob_service.ts";
import type { DirectoryPutter, DirectoryService } from "./directory_service.ts";
import { directoryEntry, directoryOfEntries } from "./directory.ts";
import { narChunks, type NarNode } from "../nix/nar_writer.ts";
import { WriteBatch } from "./data_dir_sync.ts";
import { maxInFlight } from "./chunk_pipeline.ts";

/** How far an ingestion got: file content bytes and files done so far. */
export interface IngestProgress {
  /** File content bytes ingested. */
  bytes: number;
  /** Regular files ingested. */
  files: number;
}

/** Called as ingestion advances (after each chunk of file data). */
export type ProgressCallback = (p: IngestProgress) => void;

/** Size of the reads from big files. */
const READ_SIZE = 1 << 20;
/** Files up to this size are read in one call (the NAR writer's small-file path). */
const SMALL_FILE = 256 * 1024;

function describe(path: Buffer): string {
  return path.toString("utf8");
}

/** A clear one-line error for a failed file system call. */
function fsError(e: unknown, what: string, path: Buffer): Error {
  const code = (e as NodeJS.ErrnoException)?.code;
  const why = code === "ENOENT"
    ? "no such file or directory"
    : code === "EACCES" || code === "EPERM"
    ? "permission denied"
    : code === "ENOTDIR"
    ? "not a directory"
    : (e as Error)?.message ?? String(e);
  return new Error(`${what} ${describe(path)}: ${why}`);
}

/**
 * Blob writes allowed in flight at once (their closes overlap the walk);
 * more for writers of the ingest worker (see ./chunk_pipeline.ts).
 */
const MAX_IN_FLIGHT = 32;

/** A child's entry, known once its blob is stored. */
type Pending = Promise<Entry>;

/** State shared by one ingestion. */
class TreeIngester {
  #putter?: DirectoryPutter;
  #putChain: Promise<void> = Promise.resolve();
  #progress: IngestProgress = { bytes: 0, files: 0 };
  #inflight = new Set<Promise<unknown>>();
  #writers = new Set<BlobWriter>();
  /** The first blob that failed (the walk stops at its next file). */
  #failure: { error: unknown } | undefined;
  readonly batch: WriteBatch;

  constructor(
    blobs: BlobService,
    directories: DirectoryService,
    readonly onProgress?: ProgressCallback,
  ) {
    this.batch = new WriteBatch(blobs, directories);
  }

  /**
   * Queues a directory for the putter. Puts run one after the other in walk
   * order (children before parents), overlapping with the walk.
   */
  putDirectory(dir: Directory): void {
    const putter = this.#putter ??= this.batch.putDirectories();
    const next = this.#putChain.then(() => putter.put(dir));
    next.catch(() => {});
    this.#putChain = next;
  }

  /**
   * Waits for queued directory puts, closes the putter (if used) and
   * commits everything written (one sync, see ./data_dir_sync.ts).
   */
  async closePutter(): Promise<void> {
    await this.#putChain;
    if (this.#putter) await this.#putter.close();
    await this.batch.commit();
  }

  /** Starts a blob writer, tracked so a failure can abort it. */
  writer(): BlobWriter {
    const w = this.batch.putBlob();
    this.#writers.add(w);
    return w;
  }

  /** Closes a writer in the background; the promise resolves to its digest. */
  finish(w: BlobWriter, write?: Uint8Array): Promise<Uint8Array> {
    const p = (async () => {
      if (write && write.length > 0) await w.write(write);
      const d = await w.close();
      this.#writers.delete(w);
      return d;
    })();
    const tracked = p.then(() => {}, (error) => {
      this.#failure ??= { error };
    });
    this.#inflight.add(tracked);
    tracked.then(() => this.#inflight.delete(tracked));
    return p;
  }

  /** Waits until fewer than MAX_IN_FLIGHT blob closes are pending (for `w`). */
  async slot(w: BlobWriter): Promise<void> {
    while (this.#inflight.size >= maxInFlight(w, MAX_IN_FLIGHT)) {
      await Promise.race(this.#inflight);
    }
    // Directories no longer wait for their blobs in the walk: a failed
    // blob stops it here, at the next file, rather than at the end.
    if (this.#failure) throw this.#failure.error;
  }

  /** Aborts every blob still being written (after a failure). */
  async abort(): Promise<void> {
    await Promise.all(this.#inflight);
    const ws = [...this.#writers];
    this.#writers.clear();
    await Promise.all(ws.map((w) => w.abort().catch(() => {})));
    await this.#putChain.catch(() => {});
    await this.batch.abort();
  }

  /** Counts ingested bytes and files and reports progress. */
  tick(bytes: number, file: boolean): void {
    this.#progress.bytes += bytes;
    if (file) this.#progress.files++;
    this.onProgress?.({ ...this.#progress });
  }
}

function fileEntry(
  name: Uint8Array,
  digest: Uint8Array,
  size: number,
  executable: boolean,
): Entry {
  return create(EntrySchema, {
    entry: {
      case: "file",
      value: create(FileEntrySchema, {
        name,
        digest,
        size: BigInt(size),
        executable,
      }),
    },
  });
}

/**
 * Opens a node for `path` (already lstat'ed); `done` receives a promise of
 * its castore entry, settled once its contents are stored. Symlink targets
 * are read here because the NAR writer needs them synchronously.
 */
function makeNode(
  ing: TreeIngester,
  path: Buffer,
  name: Uint8Array,
  st: Stats,
  done: (e: Pending) => void,
): NarNode {
  if (st.isSymbolicLink()) {
    let target: Buffer;
    try {
      target = fs.readlinkSync(path, { encoding: "buffer" });
    } catch (e) {
      throw fsError(e, "cannot read symlink", path);
    }
    const t = new Uint8Array(target);
    done(Promise.resolve(create(EntrySchema, {
      entry: {
        case: "symlink",
        value: create(SymlinkEntrySchema, { name, target: t }),
      },
    })));
    return { type: "symlink", target: t };
  }
  if (st.isFile()) return fileNode(ing, path, name, st, done);
  if (st.isDirectory()) return dirNode(ing, path, name, done);
  throw new Error(
    `${
      describe(path)
    } has an unsupported file type (not a file, directory or symlink)`,
  );
}

function fileNode(
  ing: TreeIngester,
  path: Buffer,
  name: Uint8Array,
  st: Stats,
  done: (e: Pending) => void,
): NarNode {
  const size = st.size;
  const executable = (st.mode & 0o100) !== 0;
  const settle = (digest: Promise<Uint8Array>) => {
    const e = digest.then((d) => fileEntry(name, d, size, executable));
    e.catch(() => {}); // awaited by the parent directory
    done(e);
  };
  return {
    type: "regular",
    executable,
    size,
    bytes: size <= SMALL_FILE
      ? async () => {
        let data: Uint8Array;
        try {
          data = fs.readFileSync(path);
        } catch (e) {
          throw fsError(e, "cannot read", path);
        }
        const w = ing.writer();
        await ing.slot(w);
        settle(ing.finish(w, data));
        ing.tick(data.length, true);
        return data;
      }
      : undefined,
    contents: () => fileContents(ing, path, settle),
  };
}

async function fileContents(
  ing: TreeIngester,
  path: Buffer,
  settle: (digest: Promise<Uint8Array>) => void,
): Promise<ReadableStream<Uint8Array>> {
  let fd: number;
  try {
    fd = fs.openSync(path, "r");
  } catch (e) {
    throw fsError(e, "cannot open", path);
  }
  const w = ing.writer();
  await ing.slot(w);
  let closed = false;
  const buffers = [
    new Uint8Array(READ_SIZE),
    new Uint8Array(READ_SIZE),
    new Uint8Array(READ_SIZE),
  ];
  let turn = 0;
  const cleanup = () => {
    if (closed) return;
    closed = true;
    try {
      fs.closeSync(fd);
    } catch { /* nothing to do */ }
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        // Buffers rotate: a chunk is hashed and written before the NAR
        // writer asks for the chunk after next (it holds no chunk longer),
        // so three buffers suffice and big files make no garbage.
        const buf = buffers[turn++ % buffers.length];
        const bytesRead = fs.readSync(fd, buf, 0, READ_SIZE, null);
        if (bytesRead === 0) {
          cleanup();
          settle(ing.finish(w));
          ing.tick(0, true);
          controller.close();
          return;
        }
        const chunk = bytesRead === READ_SIZE
          ? buf
          : buf.subarray(0, bytesRead);
        await w.write(chunk);
        ing.tick(bytesRead, false);
        controller.enqueue(chunk);
      } catch (e) {
        cleanup();
        controller.error(
          (e as NodeJS.ErrnoException)?.code
            ? fsError(e, "cannot read", path)
            : e,
        );
      }
    },
    cancel() {
      cleanup();
    },
  }, { highWaterMark: 0 });
}

function dirNode(
  ing: TreeIngester,
  path: Buffer,
  name: Uint8Array,
  done: (e: Pending) => void,
): NarNode {
  return {
    type: "directory",
    entries: async function* () {
      let names: Buffer[];
      try {
        names = fs.readdirSync(path, { encoding: "buffer" });
      } catch (e) {
        throw fsError(e, "cannot list directory", path);
      }
      names.sort(Buffer.compare);
      const children: Pending[] = [];
      for (const child of names) {
        const childPath = Buffer.concat([path, SLASH, child]);
        let st: Stats;
        try {
          st = fs.lstatSync(childPath);
        } catch (e) {
          throw fsError(e, "cannot stat", childPath);
        }
        let entry: Pending | undefined;
        const childName = new Uint8Array(child);
        const node = makeNode(
          ing,
          childPath,
          childName,
          st,
          (e) => (entry = e),
        );
        yield [childName, node];
        // The NAR writer asks for the next entry only after the child is
        // fully written, so its (pending) entry is known here.
        if (!entry) {
          throw new Error(
            `internal error: ${describe(childPath)} was not ingested`,
          );
        }
        children.push(entry);
      }
      // Not awaited here: the walk goes on while the last blobs of this
      // directory are still being chunked (on the ingest worker, see
      // ./chunk_pipeline.ts), instead of waiting for them at every
      // directory's end (~1 s of a 1 GiB import with the worker). The
      // directory is put once its children are known, so still after its
      // child directories (their entries resolve only after their puts
      // are queued).
      const entry = Promise.all(children).then((all) => {
        const dir = directoryOfEntries(all);
        ing.putDirectory(dir);
        return directoryEntry(name, dir);
      });
      entry.catch(() => {}); // awaited by the parent directory
      done(entry);
    },
  };
}

const SLASH = Buffer.from("/");

/**
 * Ingests the tree at `fsPath` into castore and feeds its NAR serialisation,
 * chunk by chunk, to `onNarChunk` (chunks must not be modified; they may be
 * kept; a returned promise is awaited before the walk goes on). Resolves to the root entry, named after the last component of
 * `fsPath` (callers rename it). On failure nothing is reachable: a blob
 * being written is aborted and the directory putter is never closed.
 */
export async function ingestTreeWithNar(
  fsPath: string,
  blobs: BlobService,
  directories: DirectoryService,
  onNarChunk: (chunk: Uint8Array) => void | Promise<void>,
  onProgress?: ProgressCallback,
): Promise<Entry> {
  const ing = new TreeIngester(blobs, directories, onProgress);
  const path = Buffer.from(fsPath);
  let st: Stats;
  try {
    st = fs.lstatSync(path);
  } catch (e) {
    throw fsError(e, "cannot import", path);
  }
  let root: Pending | undefined;
  let entry: Entry;
  try {
    const node = makeNode(
      ing,
      path,
      new TextEncoder().encode(basename(fsPath)),
      st,
      (e) => (root = e),
    );
    for await (const chunk of narChunks(node)) {
      const waiting = onNarChunk(chunk);
      if (waiting) await waiting;
    }
    if (!root) throw new Error(`internal error: ${fsPath} was not ingested`);
    entry = await root;
    await ing.closePutter();
  } catch (e) {
    await ing.abort();
    throw e;
  }
  return entry;
}

/**
 * Ingests the tree at `fsPath` (file, directory or symlink) into castore and
 * resolves to its root entry, named after the last component of `fsPath`.
 */
export function ingestTree(
  fsPath: string,
  blobs: BlobService,
  directories: DirectoryService,
  onProgress?: ProgressCallback,
): Promise<Entry> {
  return ingestTreeWithNar(fsPath, blobs, directories, () => {}, onProgress);
}
