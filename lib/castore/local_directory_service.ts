/**
 * The embedded directory service: each Directory stored as its canonical
 * protobuf bytes in `<dataDir>/castore/directories/<hex[0:2]>/<hex>`, or,
 * when written by an ingestion (`putDeferred` with a session from
 * `openSession`), as a record of one pack file per ingestion in
 * `<dataDir>/castore/packs/directories/` (./pack.ts). Reads look in packs
 * first, then at loose files.
 *
 * A putter checks the whole tree (./directory_graph.ts) and only then writes
 * it, leaves first, each file atomically (temp file, rename). Durability as
 * for blobs (./data_dir_sync.ts): a `put()` putter's close() resolves after
 * one commit (syncfs) of all its directories, a `putDeferred()` putter's
 * directories are durable after the ingestion's commit, and a power loss is
 * repaired at the next open. Without syncfs each file is fsynced and the
 * shard directories are fsynced level by level, so a directory never becomes
 * durable before the children it names. Every get re-hashes the bytes; a
 * small LRU keeps recently read (already verified) bytes.
 *
 * @module
 */
import { join } from "node:path";
import type { Directory } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { DirectoryPutter, DirectoryService } from "./directory_service.ts";
import { digestToHex, validateDigest } from "./digest.ts";
import { decodeDirectory } from "./directory.ts";
import {
  type EncodedDirectory,
  GraphPutter,
  traverseDirectories,
} from "./directory_graph.ts";
import { checkStoredDirectory } from "./memory_directory_service.ts";
import {
  existsNow,
  listShardedDigests,
  prepareDataDir,
  readFileNow,
  shardsEmpty,
} from "./atomic_file.ts";
import {
  DataDirSync,
  type DeferredDirectoryService,
  type WriteSession,
} from "./data_dir_sync.ts";
import { PackKind, PackSet, PackWriter, type StoredRange } from "./pack.ts";

/** Directories whose verified bytes are kept in memory. */
const CACHE_ENTRIES = 4096;

/** What is wrong with a pack record's stored bytes (for pack compaction). */
function checkRecord(
  kind: number,
  digest: Uint8Array,
  stored: Uint8Array,
): string | undefined {
  if (kind !== PackKind.directory) return `unknown record kind ${kind}`;
  try {
    checkStoredDirectory(digest, stored);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Directory storage in `<dataDir>/castore/directories`. */
export class LocalDirectoryService
  implements DirectoryService, DeferredDirectoryService {
  readonly #dir: string;
  readonly #tmpDir: string;
  readonly #sync: DataDirSync;
  readonly #packs: PackSet;
  /** Whether ingestion sessions write packs (else loose files). */
  #packing = true;
  /** Whether loose directories existed when an ingestion first looked. */
  #looseMayExist: boolean | undefined;
  #cache = new Map<string, Uint8Array>();

  private constructor(dataDir: string, sync: DataDirSync) {
    this.#dir = join(dataDir, "castore", "directories");
    this.#tmpDir = join(dataDir, "tmp");
    this.#packs = new PackSet(
      join(dataDir, "castore", "packs", "directories"),
      this.#tmpDir,
      { check: (kind, digest, stored) => checkRecord(kind, digest, stored) },
    );
    this.#sync = sync;
  }

  /**
   * Opens (creating if needed) the directory store in `dataDir`. Throws an
   * `Error` with one line naming the path if it cannot be written.
   */
  static async open(
    dataDir: string,
    options: { packs?: boolean } = {},
  ): Promise<LocalDirectoryService> {
    await prepareDataDir(dataDir, ["castore/directories"]);
    const svc = new LocalDirectoryService(
      dataDir,
      await DataDirSync.open(dataDir),
    );
    svc.#packing = options.packs ?? true;
    return svc;
  }

  /** The commit point of this data directory (see ./data_dir_sync.ts). */
  get syncPoint(): DataDirSync {
    return this.#sync;
  }

  /** Pack files that could not be loaded (damaged), one line each (for `verify`). */
  storageProblems(): string[] {
    return [...this.#packs.problems];
  }

  /**
   * Where a directory's stored bytes are: a range of a pack file, or a whole
   * loose file (`length` -1); `undefined` if missing. For readers that load
   * files themselves (the FUSE loader threads); the bytes are not checked here.
   */
  locate(digest: Uint8Array): StoredRange | undefined {
    const r = this.#packs.lookup(digest);
    if (r?.kind === PackKind.directory) {
      return { path: r.pack.path, offset: r.offset, length: r.length };
    }
    const path = this.directoryPath(digest);
    return existsNow(path) ? { path, offset: 0, length: -1 } : undefined;
  }

  /** The pack files (for `snix store compact`; see ./pack.ts). */
  get packs(): PackSet {
    return this.#packs;
  }

  /** Path of a directory's loose file (for tests and `verify`). */
  directoryPath(digest: Uint8Array): string {
    const h = digestToHex(digest);
    return join(this.#dir, h.slice(0, 2), h);
  }

  /** One directory, or `undefined`; `DataLoss` if the stored bytes do not match the digest. */
  // deno-lint-ignore require-await -- async so a bad digest rejects
  async get(digest: Uint8Array): Promise<Directory | undefined> {
    validateDigest(digest, "directory digest");
    const key = digestToHex(digest);
    const cached = this.#cache.get(key);
    if (cached) {
      this.#cache.delete(key);
      this.#cache.set(key, cached);
      return decodeDirectory(cached);
    }
    // Synchronous: directory files are small and a warm read takes
    // microseconds, less than the thread-pool round trips of readFile.
    // A packed one through the pack's read window (a walk reads them in
    // the order they were written), copied: the decoded message's bytes
    // fields are views of it.
    const r = this.#packs.lookup(digest);
    const bytes = r?.kind === PackKind.directory
      ? r.pack.readTransient(r).slice()
      : readFileNow(this.directoryPath(digest), true);
    if (!bytes) return undefined;
    const d = checkStoredDirectory(digest, bytes);
    this.#remember(key, bytes);
    return d;
  }

  #remember(key: string, bytes: Uint8Array): void {
    this.#cache.set(key, bytes);
    if (this.#cache.size > CACHE_ENTRIES) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
  }

  /** Root first, breadth first, each directory once. */
  getRecursive(root: Uint8Array): AsyncIterable<Directory> {
    return traverseDirectories(root, (d) => this.get(d));
  }

  /** A putter that checks the tree and writes it on close; close() resolves once it is durable. */
  put(): DirectoryPutter {
    return new GraphPutter(
      (d) => this.get(d),
      (dirs) => this.#commit(dirs, false),
    );
  }

  /**
   * A putter like {@linkcode put}'s whose directories are durable only after
   * a later `syncPoint.commit()` (for ingestion, which commits once at its end).
   */
  putDeferred(session?: WriteSession): DirectoryPutter {
    const pack = session instanceof PackWriter ? session : undefined;
    return new GraphPutter(
      (d) => this.get(d),
      (dirs) => pack ? this.#pack(dirs, pack) : this.#commit(dirs, true),
    );
  }

  /**
   * A session for {@linkcode putDeferred}: its directories go into one new
   * pack file, published (durably) by the session's `finish()`.
   * `undefined` (loose files) if opened with `packs: false`.
   */
  openSession(): WriteSession | undefined {
    return this.#packing ? this.#packs.writer() : undefined;
  }

  // deno-lint-ignore require-await -- async so failures reject
  async #pack(dirs: EncodedDirectory[], pack: PackWriter): Promise<void> {
    for (const { digest, bytes } of dirs) {
      if (pack.holds(digest) || this.#packs.has(digest, false)) continue;
      // Loose files only if there were any (see LocalBlobService#stored).
      this.#looseMayExist ??= !shardsEmpty(this.#dir);
      if (this.#looseMayExist && existsNow(this.directoryPath(digest))) {
        continue;
      }
      pack.add(PackKind.directory, digest, bytes);
    }
  }

  async #commit(dirs: EncodedDirectory[], deferred: boolean): Promise<void> {
    if (this.#sync.deferred) {
      // Unsynced writes (synchronous: no window needed), one commit at the
      // end unless the caller commits later.
      for (const { digest, bytes } of dirs) {
        const path = this.directoryPath(digest);
        if (!existsNow(path)) {
          await this.#sync.write(this.#tmpDir, path, [bytes]);
        }
      }
      if (!deferred) await this.#sync.commit();
      return;
    }
    // Without syncfs, level by level from the leaves: write a level (a
    // bounded window at a time), then fsync the shard directories it
    // touched, so no directory is durable before the children it names.
    const levels: EncodedDirectory[][] = [];
    for (const d of dirs) (levels[d.level] ??= []).push(d);
    const WINDOW = 64;
    for (const level of levels) {
      if (!level) continue;
      const shards = new Set<string>();
      for (let i = 0; i < level.length; i += WINDOW) {
        await Promise.all(
          level.slice(i, i + WINDOW).map(async ({ digest, bytes }) => {
            const path = this.directoryPath(digest);
            shards.add(join(this.#dir, digestToHex(digest).slice(0, 2)));
            if (!existsNow(path)) {
              await this.#sync.write(this.#tmpDir, path, [bytes]);
            }
          }),
        );
      }
      // All of a level's shards at once (the file system commits them together).
      await this.#sync.dirsDurable(shards);
    }
  }

  /** Every stored directory digest (for `snix store verify`). */
  async *listDirectories(): AsyncIterable<Uint8Array> {
    for (const { digest } of this.#packs.entries()) yield digest;
    yield* listShardedDigests(this.#dir);
  }

  /** Drops the cache. */
  close(): Promise<void> {
    this.#cache.clear();
    return Promise.resolve();
  }
}
