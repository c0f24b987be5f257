/**
 * A read-only file system over castore: `MNT/<hash>-<name>` for every store
 * path the PathInfoService knows, with directories fetched lazily from the
 * DirectoryService and file contents read from the BlobService.
 *
 * Inode numbers are stable for the life of the mount and never reused:
 * - `1` is the root;
 * - directories and symlinks get one per (parent inode, name), allocated on
 *   first sight;
 * - regular files get one per (blob digest, executable bit): identical files
 *   share one inode and so one page cache, like hard links. `nlink` stays 1,
 *   so tools that look for hard links (tar, cp -a, du) treat them as
 *   separate files. Directories are never shared because the kernel
 *   refuses a directory inode under two parents.
 *
 * Everything has mtime 1 (as in a Nix store), files are 0444 or 0555,
 * directories 0555, symlinks 0777, owner root.
 *
 * @module
 */
import * as fs from "node:fs";
import * as zlib from "node:zlib";
import { getLogger } from "@logtape/logtape";
import type { BlobService } from "../castore/blob_service.ts";
import type { DirectoryService } from "../castore/directory_service.ts";
import {
  blake3Sync,
  digestEquals,
  digestToHex,
  digestToString,
} from "../castore/digest.ts";
import type {
  Directory,
  Entry,
} from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { PathInfoService } from "../store/path_info_service.ts";
import { StorePath } from "../nix/store_path.ts";
import { type ZstdDecompressor, zstdDecompressor } from "../runtime/zstd.ts";
import { BlobReader } from "./blob_reader.ts";
import { chunkLayout, DirectReads } from "./direct_reads.ts";
import {
  type DirEntry,
  type FuseDevice,
  FuseError,
  type FuseFilesystem,
  type FuseNotifier,
  type OpenResult,
  type StatFs,
} from "./filesystem.ts";
import {
  FileLoader,
  PACK_BLOCK,
  type Priority,
  type StoredRange,
} from "./file_loader.ts";
import {
  type Attr,
  Errno,
  FOPEN_CACHE_DIR,
  FOPEN_KEEP_CACHE,
  FUSE_ROOT_ID,
  S_IFDIR,
  S_IFLNK,
  S_IFREG,
} from "./protocol.ts";

const log = getLogger(["snix", "fuse"]);

/** Extended attribute holding a directory's castore digest. */
export const XATTR_DIRECTORY_DIGEST = "user.snix.castore.directory.digest";
/** Extended attribute holding a file's blob digest. */
export const XATTR_BLOB_DIGEST = "user.snix.castore.blob.digest";

/** Options of {@linkcode CastoreFs}. */
export interface CastoreFsOptions {
  /** READDIR on the root lists every PathInfo (otherwise EPERM). */
  listRoot?: boolean;
  /** Expose castore digests as `user.snix.castore.*` xattrs (otherwise xattr ops are ENOSYS). */
  showXattr?: boolean;
  /** Bytes of decompressed chunk data to keep cached (default 128 MiB). */
  cacheBytes?: number;
  /** Seconds the kernel may cache names and attributes (default one day). */
  entryTimeout?: number;
  /**
   * Answer OPEN (and OPENDIR unless `listRoot`) with ENOSYS, which makes the
   * kernel open files and directories without asking us again and keep their
   * page cache (the kernel's "zero-message open"): no OPEN/RELEASE round trips
   * per file. Default true.
   */
  zeroMessageOpen?: boolean;
  /**
   * During a walk that reads file contents (tar, cp -r, diff -r), push the
   * contents of small files into the kernel's page cache as soon as their
   * directory has been listed (FUSE_NOTIFY_STORE), so reading them needs no
   * READ round trip. Default: true for stores that do not say where their
   * chunks are (remote ones), false for the local store (with its pack
   * files in the page cache ahead of the walker, answering the READs costs
   * less than the pushes: the tar of the ~50k-entry bench tree took about
   * 5 s without pushes and 6.5-9 s with them, cold cache, fresh mount). It
   * needs a notifier from the session.
   */
  pushSmallFiles?: boolean;
  /**
   * Read the local store's directories and chunks into the page cache ahead
   * of a walk, many at once (see ./file_loader.ts). Default true; has an
   * effect only on services that say where their objects are stored
   * (`locate`, `locateChunk`: the local data directory).
   */
  warmPageCache?: boolean;
  /**
   * Answer READs of big files of the local store on worker threads (see
   * ./direct_reads.ts); default true. Needs `warmPageCache` and a session
   * that offers its device.
   */
  directReads?: boolean;
}

/** The services the file system reads. */
export interface CastoreServices {
  blobs: BlobService;
  directories: DirectoryService;
  pathInfos: PathInfoService;
}

/** Every node keeps its attributes once asked for (they never change). */
type Node =
  | { kind: "root"; ino: bigint; attr?: Attr }
  | {
    kind: "dir";
    ino: bigint;
    parent: bigint;
    digest: Uint8Array;
    attr?: Attr;
    /**
     * The nodes of its listing's children by position, made on first sight
     * (a directory's children never change; see {@linkcode CastoreFs.#kid}).
     */
    kids?: (Node | undefined)[];
  }
  | {
    kind: "file";
    ino: bigint;
    digest: Uint8Array;
    size: number;
    executable: boolean;
    attr?: Attr;
    /** Where the file was first seen, for prefetching the files after it. */
    seenIn?: { listing: Listing; index: number };
    /** Whether its contents were pushed (see {@linkcode PushState}). */
    push?: PushState;
    /** Where a big file's chunks are stored (see {@linkcode ChunkMap}). */
    chunkMap?: Promise<ChunkMap | undefined>;
  }
  | { kind: "symlink"; ino: bigint; target: Uint8Array; attr?: Attr };

/**
 * Where a big file's chunks are stored, for warming the page cache ahead of
 * a reader: chunk `i` starts at byte `starts[i]` of the file and is stored
 * at `ranges[i]`; chunks before `warmedTo` have been asked for.
 */
interface ChunkMap {
  starts: number[];
  ranges: (StoredRange | undefined)[];
  warmedTo: number;
}

/** A directory's children, merged and sorted by name bytes. */
interface Listing {
  children: Child[];
  /** Position in `children` by name key (made on first use). */
  byName?: Map<string, number>;
}

/** `key`: the name as a binary string, set for the mount root's children. */
type Child =
  | { kind: "dir"; name: Uint8Array; key?: string; digest: Uint8Array }
  | {
    kind: "file";
    name: Uint8Array;
    key?: string;
    digest: Uint8Array;
    size: number;
    executable: boolean;
  }
  | { kind: "symlink"; name: Uint8Array; key?: string; target: Uint8Array };

/**
 * Where pushing a file's contents into the kernel's page cache stands:
 * running, or done (pushed, READ by the kernel, or given up).
 */
type PushState = "busy" | "done";

const MTIME = 1;
const LISTING_CACHE = 32768;
/** Directories whose entries (with attributes) are kept for READDIR. */
const ENTRY_CACHE = 1024;
/** Directories fetched ahead of demand at once. */
const DIR_PREFETCH_CONCURRENCY = 16;
/** Whole store path trees fetched ahead from a remote service at once. */
const TREE_PREFETCH_CONCURRENCY = 2;
/** Longest run of directory fetches ahead in one timer turn (ms). */
const PREFETCH_SLICE_MS = 1;
/** Files after a file being read in the same directory to fetch ahead. */
const FILE_PREFETCH_AHEAD = 32;
/** Largest file fetched ahead that way. */
const FILE_PREFETCH_MAX = 1 << 20;
/** Small files of a freshly listed directory warmed ahead in a content walk. */
const LISTING_WARM_AHEAD = 256;
/** The local blob service keeps blobs up to this size as one chunk. */
const SINGLE_CHUNK_MAX = 128 << 10;
/**
 * Largest file whose contents are pushed into the kernel's page cache (the
 * workers load a pushed file as the one chunk of its blob).
 */
const PUSH_MAX = SINGLE_CHUNK_MAX;
/** Longest wait for pushed data before answering a READDIR anyway (ms). */
const PUSH_WAIT_MS = 50;
/** Small files loaded (or loading) ahead of a content walk at most, and their bytes. */
const PRELOAD_AHEAD = 2048;
const PRELOAD_BYTES = 32 << 20;
/** Small files waiting to be loaded at most. */
const PRELOAD_QUEUE_MAX = 65536;
/**
 * A pack of directories up to this size is read whole on first use (one
 * ingestion's directories, ~1.7 MB per GiB of tree): a walk then finds
 * every directory in the page cache.
 */
const DIR_PACK_WHOLE = 64 << 20;
/** Blocks of a bigger directory pack warmed after the one in use. */
const DIR_PACK_AHEAD_BLOCKS = 4;
/**
 * Blocks of a blob pack warmed ahead of the records a content walk asks
 * for: a pack holds one ingestion's files in walk order, so a walk of that
 * tree reads it front to back.
 */
const BLOB_PACK_AHEAD_BLOCKS = 8;
/**
 * File bytes ahead of a READ of a big file whose stored chunks are warmed
 * (read into the page cache by the loader threads, in big sequential
 * reads), so the blob service finds them there.
 */
const BIG_FILE_AHEAD = 64 << 20;
/** Loaded contents not pushed within this time are dropped (ms). */
const PRELOAD_TTL_MS = 5000;
/** A READ this recent means a walk reads contents (ms). */
const CONTENT_WALK_MS = 1000;
const utf8 = new TextEncoder();
const utf8d = new TextDecoder("utf-8", { fatal: true });
const DOT = utf8.encode(".");
const DOTDOT = utf8.encode("..");

/** Bytes as a binary string (one char per byte), usable as a Map key. */
function bkey(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return s;
}

/**
 * The key of a regular file's node: its digest's bytes as a string (one
 * char per byte; about half the cost of hex) and the executable bit.
 */
function fileKey(digest: Uint8Array, executable: boolean): string {
  return "f" +
    String.fromCharCode.apply(null, digest as unknown as number[]) +
    (executable ? "x" : "-");
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** Index of the chunk holding byte `offset` (binary search over chunk starts). */
function chunkIndex(starts: number[], offset: number): number {
  let lo = 0, hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid] <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return compareBytes(a, b) === 0;
}

/** The castore as a FUSE file system. */
export class CastoreFs implements FuseFilesystem {
  readonly entryTimeout: number;
  #services: CastoreServices;
  #opts: CastoreFsOptions;
  #reader: BlobReader;
  #nodes = new Map<bigint, Node>();
  #inoByKey = new Map<string, bigint>();
  #nextIno = 2n;
  #listings = new Map<string, Promise<Listing>>();
  /** The listings of {@linkcode #listings} that are built, for synchronous use. */
  #built = new Map<string, Listing>();
  #dirHandles = new Map<bigint, DirEntry[]>();
  #entryCache = new Map<bigint, DirEntry[]>();
  #lastFileRead = -Infinity;
  #dirPrefetchQueue: Uint8Array[] = [];
  #dirPrefetching = 0;
  /** Store path trees whose recursive prefetch started (remote services). */
  #treesFetched = new Set<string>();
  #treesFetching = 0;
  #destroyed = false;
  #prefetchTimer: ReturnType<typeof setTimeout> | undefined;
  #nextFh = 1n;
  #notifier: FuseNotifier | undefined;
  /** How far the files of a directory (by inode) have been pushed. */
  #pushedUpTo = new Map<bigint, number>();
  /** Small-file contents loaded for pushes, by digest, with when. */
  #ready = new Map<
    string,
    {
      /** The contents, or "warm": a pack record now in the page cache. */
      data: Promise<Uint8Array | undefined | "warm">;
      range: StoredRange;
      at: number;
      size: number;
      done?: boolean;
      urgent?: boolean;
    }
  >();
  /** Small files to load next, in walk order. */
  #preloadQueue: (Child & { kind: "file" })[] = [];
  #preloadHead = 0;
  #readyBytes = 0;
  #loader: FileLoader | undefined;
  #locateChunk: ((digest: Uint8Array) => StoredRange | undefined) | undefined;
  #locateDir: ((digest: Uint8Array) => StoredRange | undefined) | undefined;
  /** Directory packs seen (and warmed whole, if small enough): path -> size. */
  #dirPacks = new Map<string, number>();
  /** Per blob pack, the block a content walk last asked for. */
  #walkBlock = new Map<string, number>();
  /** Open pack files (read by {@linkcode #readPacked}). */
  #packFds = new Map<string, number>();
  /** libzstd, once loaded (node:zlib until then, or without it). */
  #unzstd: ZstdDecompressor | undefined;
  /** READs of big files answered on worker threads (see ./direct_reads.ts). */
  #direct: DirectReads | undefined;
  #directStarted: Promise<boolean> | undefined;
  /** Layouts being built for {@linkcode #direct}, by blob digest (hex). */
  #directPending = new Map<string, Promise<number | undefined>>();
  /** Files whose contents were pushed to the kernel (for tests and stats). */
  pushedFiles = 0;
  /**
   * Where pushed contents came from (for diagnostics): loaded ahead (of
   * which `settled` were there already, `urgentPending` were asked for only
   * when the walker listed their directory), and the summed wait for them;
   * `urgent`: not asked for before the push; `loaded`: given by the loader
   * (pack records: warmed by it, read here); `fallback`: read through the
   * blob service instead (not loaded, or the loaded bytes did not check out).
   */
  readonly pushStats = {
    ready: 0,
    settled: 0,
    urgentPending: 0,
    readyWaitMs: 0,
    urgent: 0,
    fallback: 0,
    loaded: 0,
  };

  constructor(services: CastoreServices, options: CastoreFsOptions = {}) {
    this.#services = services;
    this.#opts = options;
    this.entryTimeout = options.entryTimeout ?? 86400;
    this.#reader = new BlobReader(services.blobs, options.cacheBytes);
    this.#nodes.set(FUSE_ROOT_ID, { kind: "root", ino: FUSE_ROOT_ID });
    if (options.warmPageCache ?? true) {
      // The local services say where a directory's or a single-chunk blob's
      // stored bytes are (a pack range or a loose file); remote ones do not
      // (and need no warming).
      const b = services.blobs as {
        locateChunk?: (d: Uint8Array) => StoredRange | undefined;
      };
      const d = services.directories as {
        locate?: (d: Uint8Array) => StoredRange | undefined;
      };
      if (typeof b.locateChunk === "function") {
        this.#locateChunk = (x) => b.locateChunk!(x);
      }
      if (typeof d.locate === "function") {
        this.#locateDir = (x) => d.locate!(x);
      }
      if (this.#locateChunk || this.#locateDir) {
        this.#loader = new FileLoader();
        zstdDecompressor().then((z) => this.#unzstd = z, () => {});
      }
    }
  }

  /**
   * Before the mount is usable: boots the loader threads and loads the
   * local store's pack indexes (both read on first use otherwise, which
   * stalled the first directory of a fresh mount's walk by ~0.3-0.7 s).
   */
  async prepare(): Promise<void> {
    if (!this.#loader) return;
    const started = Promise.all([this.#loader.start(), this.#directStarted]);
    const none = new Uint8Array(32);
    try {
      this.#locateDir?.(none);
      this.#locateChunk?.(none);
    } catch {
      // The first real lookup reports what is wrong.
    }
    await started;
  }

  /** Objects and pack blocks read ahead of demand (for tests and stats). */
  get warmedFiles(): number {
    return this.#loader?.reads ?? 0;
  }

  /**
   * Pushed small files whose contents came by the loader (pack records it
   * warmed, loose files it decompressed), not the fallback (for tests and
   * stats).
   */
  get loadedFiles(): number {
    return this.pushStats.loaded;
  }

  /** Messages sent to the loader workers (for diagnostics). */
  get loaderMessages(): number {
    return this.#loader?.messages ?? 0;
  }

  destroy(): void {
    this.#destroyed = true;
    if (this.#direct) {
      log.debug(
        "READs answered on worker threads: {dispatched}, given back: {failed}",
        {
          ...this.directReads,
        },
      );
    }
    this.#direct?.close();
    clearTimeout(this.#prefetchTimer);
    this.#dirPrefetchQueue = [];
    this.#loader?.close();
    for (const fd of this.#packFds.values()) fs.closeSync(fd);
    this.#packFds.clear();
    this.#notifier = undefined;
    this.#ready.clear();
    this.#readyBytes = 0;
    this.#preloadQueue = [];
  }

  busy(): boolean {
    // Warming ahead may wait a little; what a request waits for, and the
    // blob reader's streams (they read ahead on this thread), may not.
    return (this.#loader?.urgent ?? 0) > 0 || this.#reader.active > 0;
  }

  attachNotifier(notifier: FuseNotifier): void {
    if (this.#opts.pushSmallFiles ?? !this.#locateChunk) {
      this.#notifier = notifier;
    }
  }

  /** Whether a walk that reads file contents is under way. */
  #contentWalk(): boolean {
    return performance.now() - this.#lastFileRead < CONTENT_WALK_MS;
  }

  #node(ino: bigint): Node {
    const n = this.#nodes.get(ino);
    if (!n) throw new FuseError(Errno.ENOENT, `unknown inode ${ino}`);
    return n;
  }

  /** The inode for `key`, creating the node with `make` on first sight. */
  #intern(key: string, make: (ino: bigint) => Node): Node {
    const ino = this.#inoByKey.get(key);
    if (ino !== undefined) return this.#nodes.get(ino)!;
    const n = make(this.#nextIno++);
    this.#inoByKey.set(key, n.ino);
    this.#nodes.set(n.ino, n);
    return n;
  }

  /**
   * The node of child `index` of directory node `p`, whose listing is
   * `listing`: made once and kept in `p.kids` (no key strings and map
   * lookups per entry and listing).
   */
  #kid(p: Node & { kind: "dir" }, listing: Listing, index: number): Node {
    const kids = p.kids ??= new Array(listing.children.length);
    return kids[index] ??= this.#childNode(p.ino, listing.children[index], {
      listing,
      index,
    });
  }

  /**
   * A new node for child `c` of `parent` (files: the one node of their
   * digest and executable bit). Only the mount root's children are found
   * again by name here; a directory's are kept by {@linkcode #kid}.
   */
  #childNode(
    parent: bigint,
    c: Child,
    seenIn?: { listing: Listing; index: number },
  ): Node {
    if (c.kind === "file") {
      return this.#intern(
        fileKey(c.digest, c.executable),
        (ino) => ({
          kind: "file",
          ino,
          digest: c.digest,
          size: c.size,
          executable: c.executable,
          seenIn,
        }),
      );
    }
    const make = (ino: bigint): Node =>
      c.kind === "dir"
        ? { kind: "dir", ino, parent, digest: c.digest }
        : { kind: "symlink", ino, target: c.target };
    if (parent === FUSE_ROOT_ID) {
      return this.#intern(`${parent}/${c.key ?? bkey(c.name)}`, make);
    }
    const n = make(this.#nextIno++);
    this.#nodes.set(n.ino, n);
    return n;
  }

  #attr(n: Node): Attr {
    return n.attr ??= this.#makeAttr(n);
  }

  #makeAttr(n: Node): Attr {
    switch (n.kind) {
      case "root":
      case "dir":
        return {
          ino: n.ino,
          size: 0,
          mode: S_IFDIR | 0o555,
          nlink: 1,
          time: MTIME,
        };
      case "file":
        return {
          ino: n.ino,
          size: n.size,
          mode: S_IFREG | (n.executable ? 0o555 : 0o444),
          nlink: 1,
          time: MTIME,
        };
      case "symlink":
        return {
          ino: n.ino,
          size: n.target.length,
          mode: S_IFLNK | 0o777,
          nlink: 1,
          time: MTIME,
        };
    }
  }

  /** A directory's children, from the cache or the DirectoryService. */
  #listing(digest: Uint8Array): Promise<Listing> {
    const hex = digestToHex(digest);
    let p = this.#listings.get(hex);
    if (p) {
      this.#listings.delete(hex);
      this.#listings.set(hex, p);
      return p;
    }
    p = (async () => {
      let d: Directory | undefined;
      try {
        // The service reads synchronously: have a cold record read on a
        // loader thread first (with the rest of its pack, see #warmDir).
        const warming = this.#warmDir(digest);
        if (warming) await warming;
        d = await this.#services.directories.get(digest);
      } catch (e) {
        log.warn("directory {digest}: {error}", {
          digest: digestToString(digest),
          error: (e as Error).message,
        });
        throw new FuseError(Errno.EIO);
      }
      if (!d) {
        log.warn("directory {digest} is missing", {
          digest: digestToString(digest),
        });
        throw new FuseError(Errno.EIO);
      }
      const children: Child[] = [];
      for (const e of d.directories) {
        children.push({
          kind: "dir",
          name: e.name,
          digest: e.digest,
        });
      }
      for (const e of d.files) {
        children.push({
          kind: "file",
          name: e.name,
          digest: e.digest,
          size: Number(e.size),
          executable: e.executable,
        });
      }
      for (const e of d.symlinks) {
        children.push({
          kind: "symlink",
          name: e.name,
          target: e.target,
        });
      }
      children.sort((a, b) => compareBytes(a.name, b.name));
      const listing: Listing = { children };
      this.#built.set(hex, listing);
      this.#prefetchDirs(listing);
      // In a content-reading walk, directories listed ahead bring their
      // small files along (as far as prefetch slots allow).
      if (this.#contentWalk()) {
        this.#prefetchListed(listing, 0, LISTING_WARM_AHEAD);
      }
      return listing;
    })();
    p.catch(() => this.#listings.delete(hex));
    this.#listings.set(hex, p);
    if (this.#listings.size > LISTING_CACHE) {
      const oldest = this.#listings.keys().next().value;
      if (oldest !== undefined) {
        this.#listings.delete(oldest);
        this.#built.delete(oldest);
      }
    }
    return p;
  }

  /** A directory's listing if it is built (see {@linkcode #listing}). */
  #listingNow(digest: Uint8Array): Listing | undefined {
    return this.#built.get(digestToHex(digest));
  }

  /**
   * Queues the subdirectories of a listed directory to be fetched ahead of
   * demand (a tree walk will want them), depth first in name order like
   * `find`, while the listing cache has room. The fetching itself happens
   * in {@linkcode idle} slices between requests (or in a timer turn), never
   * in the middle of answering one: decoding a directory costs tens of
   * microseconds, and a fresh walk's first listing had waited ~0.8 s while
   * microtasks decoded the whole tree ahead of its reply.
   */
  #prefetchDirs(listing: Listing): void {
    const q = this.#dirPrefetchQueue;
    for (let i = listing.children.length - 1; i >= 0; i--) {
      const c = listing.children[i];
      if (c.kind === "dir" && q.length < LISTING_CACHE) q.push(c.digest);
    }
    if (q.length > 0 && !this.#prefetchTimer) {
      this.#prefetchTimer = setTimeout(() => {
        this.#prefetchTimer = undefined;
        const until = performance.now() + PREFETCH_SLICE_MS;
        while (this.idle() && performance.now() < until) { /* more */ }
        if (this.#dirPrefetchQueue.length > 0) {
          this.#prefetchDirs({ children: [] });
        }
      }, 0);
    }
  }

  /**
   * Fetches the next queued directory (see {@linkcode #prefetchDirs}); its
   * listing is finished by microtasks. A directory whose stored bytes are
   * not in the page cache yet is fetched once they are. At most
   * {@linkcode DIR_PREFETCH_CONCURRENCY} fetches are under way at once.
   * Returns whether more is queued and can start now.
   */
  idle(): boolean {
    const q = this.#dirPrefetchQueue;
    while (q.length > 0) {
      if (this.#listings.size >= LISTING_CACHE * 0.75) {
        q.length = 0;
        break;
      }
      const d = q[q.length - 1];
      if (this.#listings.has(digestToHex(d))) {
        q.pop();
        continue;
      }
      // A bounded number at once: a remote service answers later (a local
      // one within the slice's microtasks).
      if (this.#dirPrefetching >= DIR_PREFETCH_CONCURRENCY) return false;
      q.pop();
      this.#dirPrefetching++;
      const warming = this.#warmDir(d, 1);
      (warming ? warming.then(() => this.#listing(d)) : this.#listing(d))
        .catch(() => {}).finally(() => this.#dirPrefetching--);
      // One fetch per slice (a cold one only starts the read).
      if (!warming) break;
    }
    return q.length > 0;
  }

  /**
   * Starts reading a directory's stored bytes into the page cache unless
   * they are there (`undefined` then, or without a local store). A pack is
   * read whole on first use if small (one ingestion's directories),
   * otherwise a few blocks after the record.
   */
  #warmDir(
    digest: Uint8Array,
    priority: Priority = 0,
  ): Promise<void> | undefined {
    const loader = this.#loader;
    const r = loader && this.#locateDir?.(digest);
    if (!r || loader.isWarm(r)) return undefined;
    const p = loader.warm(r, priority);
    if (r.length >= 0) {
      let size = this.#dirPacks.get(r.path);
      if (size === undefined) {
        try {
          size = fs.statSync(r.path).size;
        } catch {
          size = Infinity;
        }
        this.#dirPacks.set(r.path, size);
        if (size <= DIR_PACK_WHOLE) loader.warmSpan(r.path, 0, size, 1);
      }
      if (size > DIR_PACK_WHOLE) {
        const next = (Math.floor(r.offset / PACK_BLOCK) + 1) * PACK_BLOCK;
        loader.warmSpan(
          r.path,
          next,
          next + DIR_PACK_AHEAD_BLOCKS * PACK_BLOCK,
          2,
        );
      }
    }
    return p;
  }

  /**
   * Where a small file's one chunk is stored; in a pack, the blocks after
   * it are warmed too (a content walk of the tree that pack was written
   * from reads it front to back).
   */
  #locateForWalk(digest: Uint8Array): StoredRange | undefined {
    const r = this.#locateChunk?.(digest);
    if (!r || r.length < 0) return r;
    const b = Math.floor(r.offset / PACK_BLOCK);
    if (this.#walkBlock.get(r.path) !== b) {
      this.#walkBlock.set(r.path, b);
      this.#loader!.warmSpan(
        r.path,
        b * PACK_BLOCK,
        (b + 1 + BLOB_PACK_AHEAD_BLOCKS) * PACK_BLOCK,
        1,
      );
    }
    return r;
  }

  /** Starts fetching small files that follow `n` in its directory (tar, cp -r, diff -r read in order). */
  #prefetchFiles(n: Node & { kind: "file" }): void {
    this.#lastFileRead = performance.now();
    if (n.seenIn) this.#prefetchListed(n.seenIn.listing, n.seenIn.index + 1);
  }

  /**
   * Starts fetching the small files of a listing from position `from` on:
   * into the page cache where the store has local files (asynchronous, so
   * this never waits for the disk), else into the blob reader's cache.
   */
  #prefetchListed(
    listing: Listing,
    from: number,
    ahead = FILE_PREFETCH_AHEAD,
  ): void {
    const end = Math.min(listing.children.length, from + ahead);
    for (let i = from; i < end; i++) {
      const c = listing.children[i];
      if (c.kind !== "file" || c.size === 0 || c.size > FILE_PREFETCH_MAX) {
        continue;
      }
      if (this.#notifier && c.size <= PUSH_MAX && this.#loader?.canDecompress) {
        this.#preload(c);
      } else if (this.#locateChunk) {
        const r = this.#locateForWalk(c.digest);
        if (r) this.#loader!.warm(r);
      } else this.#reader.prefetch(c.digest, c.size);
    }
  }

  /**
   * In a content walk, the walker has come back for more of directory
   * `dir` from position `offset` on, so the kernel has processed the
   * entries before it: push the contents of the small files among them into
   * its page cache before answering, so reading them needs no READ. (An
   * entry of a READDIRPLUS reply becomes an inode only once the kernel has
   * processed the reply, so a push right after the reply could come too
   * early.) Waits at most {@linkcode PUSH_WAIT_MS} for data still loading;
   * the session sends our answer only after the pushes queued before it.
   */
  async #pushListed(
    node: Node & { kind: "dir" },
    listing: Listing,
    offset: number,
  ) {
    const dir = node.ino;
    // Entries 0 and 1 are `.` and `..`.
    const upTo = Math.min(listing.children.length, offset - 2);
    const from = this.#pushedUpTo.get(dir) ?? 0;
    if (upTo >= listing.children.length) this.#pushedUpTo.delete(dir);
    else this.#pushedUpTo.set(dir, Math.max(from, upTo));
    const pushes: Promise<void>[] = [];
    for (let i = from; i < upTo; i++) {
      const c = listing.children[i];
      if (c.kind !== "file" || c.size === 0 || c.size > PUSH_MAX) continue;
      const n = this.#kid(node, listing, i);
      if (n.kind === "file" && n.push === undefined) {
        n.push = "busy";
        pushes.push(this.#push(n));
      } else this.#dropReady(digestToHex(c.digest)); // already in the kernel
    }
    if (pushes.length === 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(pushes),
      new Promise<void>((r) => timer = setTimeout(r, PUSH_WAIT_MS)),
    ]);
    clearTimeout(timer);
  }

  /**
   * Queues a small file's contents to be loaded for a later push, in walk
   * order; at most {@linkcode PRELOAD_AHEAD} are loaded ahead at once.
   */
  #preload(c: Child & { kind: "file" }): void {
    if (this.#preloadQueue.length - this.#preloadHead >= PRELOAD_QUEUE_MAX) {
      return;
    }
    this.#preloadQueue.push(c);
    this.#pumpPreloads();
  }

  /**
   * The walker is listing this directory: it will read the small files next,
   * so load them first thing (loads already under way are hurried).
   */
  #loadListedNow(listing: Listing): void {
    const now = performance.now();
    for (const c of listing.children) {
      if (c.kind !== "file" || c.size === 0 || c.size > PUSH_MAX) continue;
      const hex = digestToHex(c.digest);
      const known = this.#ready.get(hex);
      if (known) {
        this.#hurry(known.range);
        continue;
      }
      const range = this.#locateForWalk(c.digest);
      if (!range) continue; // not local: the push reads it like a READ
      const r = {
        data: this.#fetch(range, c.size, 0),
        range,
        at: now,
        size: c.size,
        done: false,
        urgent: true,
      };
      this.#readyBytes += c.size;
      r.data.then(() => r.done = true);
      this.#ready.set(hex, r);
    }
  }

  /**
   * Starts loads from the queue while fewer than PRELOAD_AHEAD wait to be
   * pushed (a blob of up to 128 KiB is one chunk named by the blob's
   * digest; see {@linkcode #fetch}).
   */
  #pumpPreloads(): void {
    const now = performance.now();
    for (const [hex, r] of this.#ready) {
      if (now - r.at < PRELOAD_TTL_MS) break;
      this.#dropReady(hex); // never pushed: the walk went elsewhere
    }
    const q = this.#preloadQueue;
    while (
      this.#ready.size < PRELOAD_AHEAD && this.#readyBytes < PRELOAD_BYTES &&
      this.#preloadHead < q.length
    ) {
      const c = q[this.#preloadHead++];
      const hex = digestToHex(c.digest);
      if (this.#ready.has(hex)) continue;
      const n = this.#nodes.get(
        this.#inoByKey.get(fileKey(c.digest, c.executable)) ?? 0n,
      );
      if (n?.kind === "file" && n.push !== undefined) continue;
      const range = this.#locateForWalk(c.digest);
      if (!range) continue;
      const r = {
        data: this.#fetch(range, c.size, 1),
        range,
        at: now,
        size: c.size,
        done: false,
      };
      this.#readyBytes += c.size;
      r.data.then(() => r.done = true);
      this.#ready.set(hex, r);
    }
    if (this.#preloadHead > 4096 && this.#preloadHead * 2 > q.length) {
      this.#preloadQueue = q.slice(this.#preloadHead);
      this.#preloadHead = 0;
    }
  }

  /**
   * Starts loading a small file's one chunk, stored at `range`, without
   * disk waits on this thread. A pack record: its block is read into the
   * page cache on a loader thread (one read per MiB, in pack order) and the
   * promise says "warm"; then this thread reads and decompresses it, a few
   * microseconds for a small file (less than a message to a worker and
   * back, which cost the main thread a write(2) each). A loose file: read
   * and decompressed on a loader thread.
   */
  #fetch(
    range: StoredRange,
    size: number,
    priority: Priority,
  ): Promise<Uint8Array | undefined | "warm"> {
    const loader = this.#loader!;
    if (range.length < 0) return loader.readZstd(range, size, priority);
    if (loader.isWarm(range)) return Promise.resolve("warm");
    return loader.warm(range, priority).then(() => "warm");
  }

  /** Moves the load of `range` (see {@linkcode #fetch}) to the front. */
  #hurry(range: StoredRange): void {
    if (range.length < 0) this.#loader!.hurry(range);
    else this.#loader!.warm(range, 0);
  }

  /**
   * A pack record's chunk, read (from the page cache, see
   * {@linkcode #fetch}) and decompressed on this thread; `undefined` if
   * that fails. The caller checks the bytes.
   */
  #readPacked(r: StoredRange, size: number): Uint8Array | undefined {
    try {
      let fd = this.#packFds.get(r.path);
      if (fd === undefined) {
        fd = fs.openSync(r.path, "r");
        this.#packFds.set(r.path, fd);
        if (this.#packFds.size > 64) {
          const [p, old] = this.#packFds.entries().next().value!;
          this.#packFds.delete(p);
          fs.closeSync(old);
        }
      }
      const buf = new Uint8Array(r.length);
      for (let n = 0; n < r.length;) {
        const got = fs.readSync(fd, buf, n, r.length - n, r.offset + n);
        if (got === 0) return undefined;
        n += got;
      }
      if (this.#unzstd) return this.#unzstd.decompress(buf, size);
      const out = zlib.zstdDecompressSync(buf, {
        maxOutputLength: Math.max(size, 1),
      });
      return out.length === size
        ? new Uint8Array(out.buffer, out.byteOffset, out.byteLength)
        : undefined;
    } catch {
      return undefined;
    }
  }

  #dropReady(hex: string): void {
    const r = this.#ready.get(hex);
    if (!r) return;
    this.#ready.delete(hex);
    this.#readyBytes -= r.size;
  }

  /**
   * A small file's contents for a push: loaded ahead (and checked against
   * its BLAKE3 here), else read through the blob service as a READ would
   * (so is anything that does not check out).
   */
  async #pushData(n: Node & { kind: "file" }): Promise<Uint8Array> {
    const hex = digestToHex(n.digest);
    const ready = this.#ready.get(hex);
    let data: Uint8Array | undefined | "warm";
    let range: StoredRange | undefined;
    if (ready) {
      if (ready.done) this.pushStats.settled++;
      else if (ready.urgent) this.pushStats.urgentPending++;
      range = ready.range;
      if (!ready.done) this.#hurry(range);
      const t0 = performance.now();
      data = await ready.data;
      this.pushStats.readyWaitMs += performance.now() - t0;
      this.pushStats.ready++;
      this.#dropReady(hex);
      this.#pumpPreloads();
    } else if (this.#locateChunk && this.#loader!.canDecompress) {
      // Not loaded ahead (yet): load it first thing.
      this.pushStats.urgent++;
      range = this.#locateChunk(n.digest);
      if (range) data = await this.#fetch(range, n.size, 0);
    }
    if (data === "warm") data = this.#readPacked(range!, n.size);
    if (data && digestEquals(blake3Sync(data), n.digest)) {
      this.pushStats.loaded++;
      return data;
    }
    this.pushStats.fallback++;
    return await this.#reader.read(n.digest, n.size, 0, n.size, false);
  }

  /** Loads a file's contents and queues their push (not waiting for it). */
  async #push(n: Node & { kind: "file" }): Promise<void> {
    try {
      const data = await this.#pushData(n);
      // `n.push` turns "done" when the kernel READs the file meanwhile.
      if ((n.push as PushState) === "done") return;
      this.#notifier!.store(n.ino, 0, data).then((ok) => {
        if (ok) this.pushedFiles++;
      });
    } catch {
      // A READ will report what is wrong with this file.
    }
    n.push = "done";
  }

  /** The node of a store path's root entry, as a child of the mount root. */
  #rootChild(baseName: Uint8Array, entry: Entry): Node | undefined {
    const key = bkey(baseName);
    const e = entry.entry;
    switch (e.case) {
      case "directory":
        return this.#childNode(FUSE_ROOT_ID, {
          kind: "dir",
          name: baseName,
          key,
          digest: e.value.digest,
        });
      case "file":
        return this.#childNode(FUSE_ROOT_ID, {
          kind: "file",
          name: baseName,
          key,
          digest: e.value.digest,
          size: Number(e.value.size),
          executable: e.value.executable,
        });
      case "symlink":
        return this.#childNode(FUSE_ROOT_ID, {
          kind: "symlink",
          name: baseName,
          key,
          target: e.value.target,
        });
      default:
        return undefined;
    }
  }

  async #lookupRoot(name: Uint8Array): Promise<Node> {
    const known = this.#inoByKey.get(`${FUSE_ROOT_ID}/${bkey(name)}`);
    if (known !== undefined) return this.#nodes.get(known)!;
    let sp: StorePath;
    try {
      sp = StorePath.fromBaseName(utf8d.decode(name));
    } catch {
      throw new FuseError(Errno.ENOENT);
    }
    let info;
    try {
      info = await this.#services.pathInfos.get(sp.digest);
    } catch (e) {
      log.warn("path info {name}: {error}", {
        name: sp.baseName,
        error: (e as Error).message,
      });
      throw new FuseError(Errno.EIO);
    }
    if (!info?.entry) throw new FuseError(Errno.ENOENT);
    const e = info.entry.entry;
    // The name must match exactly: the digest alone would alias other names.
    if (e.case === undefined || !bytesEqual(e.value.name, name)) {
      throw new FuseError(Errno.ENOENT);
    }
    const n = this.#rootChild(name, info.entry);
    if (!n) throw new FuseError(Errno.ENOENT);
    if (n.kind === "dir" && !this.#loader) this.#prefetchTree(n.digest);
    return n;
  }

  /**
   * A remote directory service: asks for a store path's whole tree in one
   * recursive Get, in the background, as soon as the path is looked up. The
   * client keeps what it receives (verified) in its cache, so a walk's
   * directory Gets are answered there instead of one round trip each (a
   * fresh `find` of a 50k-entry tree took 11 s over a unix socket). Errors
   * only cost the prefetch: each Get still works on its own.
   */
  #prefetchTree(root: Uint8Array): void {
    const key = digestToHex(root);
    if (
      this.#treesFetched.has(key) ||
      this.#treesFetching >= TREE_PREFETCH_CONCURRENCY
    ) return;
    this.#treesFetched.add(key);
    this.#treesFetching++;
    (async () => {
      for await (const _ of this.#services.directories.getRecursive(root)) {
        if (this.#destroyed) break;
      }
    })().catch((e) => {
      log.debug("prefetching the tree of {digest}: {error}", {
        digest: digestToString(root),
        error: (e as Error).message,
      });
    }).finally(() => this.#treesFetching--);
  }

  lookup(parent: bigint, name: Uint8Array): Attr | Promise<Attr> {
    const p = this.#node(parent);
    if (p.kind === "root") {
      return this.#lookupRoot(name).then((n) => this.#attr(n));
    }
    if (p.kind !== "dir") throw new FuseError(Errno.ENOTDIR);
    // Synchronous when the listing is built (most of a walk).
    const now = this.#listingNow(p.digest);
    if (now) return this.#lookupIn(p, now, name);
    return this.#listing(p.digest).then((l) => this.#lookupIn(p, l, name));
  }

  #lookupIn(p: Node & { kind: "dir" }, listing: Listing, name: Uint8Array) {
    // Positions by name, made on the first lookup (a walk that lists
    // everything, with READDIRPLUS, looks up little).
    listing.byName ??= new Map(
      listing.children.map((c, i) => [bkey(c.name), i]),
    );
    const index = listing.byName.get(bkey(name));
    if (index === undefined) throw new FuseError(Errno.ENOENT);
    return this.#attr(this.#kid(p, listing, index));
  }

  getattr(ino: bigint): Attr {
    return this.#attr(this.#node(ino));
  }

  readlink(ino: bigint): Uint8Array {
    const n = this.#node(ino);
    if (n.kind !== "symlink") throw new FuseError(Errno.EINVAL);
    return n.target;
  }

  open(ino: bigint, _flags: number): Promise<OpenResult> {
    const n = this.#node(ino);
    if (n.kind !== "file") {
      throw new FuseError(n.kind === "symlink" ? Errno.EINVAL : Errno.EISDIR);
    }
    if (this.#zeroMessageOpen) throw new FuseError(Errno.ENOSYS);
    return Promise.resolve({ fh: 0n, flags: FOPEN_KEEP_CACHE });
  }

  get #zeroMessageOpen(): boolean {
    return this.#opts.zeroMessageOpen ?? true;
  }

  read(
    ino: bigint,
    _fh: bigint,
    offset: number,
    size: number,
  ): Uint8Array[] | Promise<Uint8Array[]> {
    const n = this.#node(ino);
    if (n.kind !== "file") throw new FuseError(Errno.EISDIR);
    n.push = "done";
    if (offset === 0) this.#prefetchFiles(n);
    // A small file in a pack (one chunk): once its block is in the page
    // cache (waited for off this thread), read and check it here, without
    // the blob reader's stream machinery (a walk reads thousands of them);
    // synchronously when the block is warm already (most of a walk).
    const r = n.size <= PUSH_MAX ? this.#locateChunk?.(n.digest) : undefined;
    if (r && r.length >= 0) {
      if (!this.#loader!.isWarm(r)) return this.#readCold(n, r, offset, size);
      return this.#readRecord(n, r, offset, size) ??
        this.#readBlob(n, offset, size);
    }
    return this.#readBlob(n, offset, size);
  }

  /** {@linkcode read} of a packed small file whose block is not warm yet. */
  async #readCold(
    n: Node & { kind: "file" },
    r: StoredRange,
    offset: number,
    size: number,
  ): Promise<Uint8Array[]> {
    await this.#loader!.warm(r, 0);
    return this.#readRecord(n, r, offset, size) ??
      await this.#readBlob(n, offset, size);
  }

  /**
   * A packed small file's bytes from its record, if they check out
   * (otherwise the blob reader reports what is wrong).
   */
  #readRecord(
    n: Node & { kind: "file" },
    r: StoredRange,
    offset: number,
    size: number,
  ): Uint8Array[] | undefined {
    const data = this.#readPacked(r, n.size);
    if (data && digestEquals(blake3Sync(data), n.digest)) {
      return [data.subarray(offset, Math.min(n.size, offset + size))];
    }
    return undefined;
  }

  /** {@linkcode read} through the blob reader. */
  async #readBlob(
    n: Node & { kind: "file" },
    offset: number,
    size: number,
  ): Promise<Uint8Array[]> {
    if (n.size > PUSH_MAX && this.#locateChunk && this.#loader) {
      this.#warmBigFile(n, offset);
    }
    try {
      return await this.#reader.readParts(n.digest, n.size, offset, size);
    } catch (e) {
      log.warn("read of blob {digest} at {offset} failed: {error}", {
        digest: digestToString(n.digest),
        offset,
        error: (e as Error).message,
      });
      throw new FuseError(Errno.EIO);
    }
  }

  /**
   * Warms the stored chunks of a big file from `offset` to
   * {@linkcode BIG_FILE_AHEAD} beyond, in storage order: consecutive chunks
   * of a pack become one span (read as 1 MiB blocks), so a cold sequential
   * read costs the disk big sequential reads, done on the loader threads
   * ahead of the blob service's own reads.
   */
  #warmBigFile(n: Node & { kind: "file" }, offset: number): void {
    n.chunkMap ??= (async () => {
      const chunks = await this.#services.blobs.chunks(n.digest);
      if (!chunks || chunks.length < 2) return undefined;
      const starts: number[] = [];
      const ranges: (StoredRange | undefined)[] = [];
      let at = 0;
      for (const c of chunks) {
        starts.push(at);
        ranges.push(this.#locateChunk!(c.digest));
        at += c.size;
      }
      return { starts, ranges, warmedTo: 0 };
    })().catch(() => undefined);
    n.chunkMap.then((m) => {
      if (!m) return;
      const end = offset + BIG_FILE_AHEAD;
      let i = Math.max(m.warmedTo, chunkIndex(m.starts, offset));
      while (i < m.starts.length && m.starts[i] < end) {
        // One span per run of chunks stored back to back.
        const first = m.ranges[i];
        let last = first;
        let j = i + 1;
        while (j < m.starts.length && m.starts[j] < end) {
          const r = m.ranges[j];
          if (
            !r || !last || r.path !== last.path || r.length < 0 ||
            r.offset !== last.offset + last.length
          ) break;
          last = r;
          j++;
        }
        if (first && last) {
          if (first.length < 0) this.#loader!.warm(first, 1);
          else {
            this.#loader!.warmSpan(
              first.path,
              first.offset,
              last.offset + last.length,
              1,
            );
          }
        }
        i = j;
      }
      m.warmedTo = Math.max(m.warmedTo, i);
    });
  }

  /**
   * Starts the reply workers that answer READs of big files of the local
   * store (see ./direct_reads.ts), unless turned off.
   */
  attachDevice(device: FuseDevice): void {
    if (this.#direct || !this.#locateChunk || !this.#loader) return;
    if (!(this.#opts.directReads ?? true)) return;
    const direct = new DirectReads((unique, _id, offset, size, ino) =>
      device.read(BigInt(unique), ino, offset, size)
    );
    this.#direct = direct;
    this.#directStarted = direct.start(device.fd).then((ok) => {
      if (!ok) {
        log.debug("READs of big files stay on the main thread");
        this.#direct = undefined;
      } else log.debug("READs of big files are answered on worker threads");
      return ok;
    });
  }

  /** READs handed to the reply workers (for tests and diagnostics). */
  get directReads(): { dispatched: number; failed: number } {
    return {
      dispatched: this.#direct?.dispatched ?? 0,
      failed: this.#direct?.failed ?? 0,
    };
  }

  /** Replies the reply workers wrote (for tests). */
  directReplies(): Promise<number> {
    return this.#direct?.replies() ?? Promise.resolve(0);
  }

  readDirect(
    ino: bigint,
    offset: number,
    size: number,
    unique: bigint,
  ): boolean | Promise<boolean> {
    const direct = this.#direct;
    if (!direct?.running) return false;
    const n = this.#nodes.get(ino);
    if (n?.kind !== "file" || n.size <= PUSH_MAX) return false;
    n.push = "done";
    this.#warmBigFile(n, offset);
    const key = digestToHex(n.digest);
    const id = direct.idOf(key);
    if (id !== undefined) {
      direct.read(unique, id, offset, size, ino);
      return true;
    }
    let p = this.#directPending.get(key);
    if (!p) {
      p = chunkLayout(
        this.#services.blobs,
        this.#locateChunk!,
        n.digest,
        n.size,
      ).then((layout) => {
        if (!layout || !direct.running) return undefined;
        return direct.register(key, layout);
      }, () => undefined).finally(() => this.#directPending.delete(key));
      this.#directPending.set(key, p);
    }
    return p.then((id) => {
      if (id === undefined || !direct.running) return false;
      direct.read(unique, id, offset, size, ino);
      return true;
    });
  }

  release(_ino: bigint, _fh: bigint): void {}

  async opendir(ino: bigint): Promise<OpenResult> {
    const n = this.#node(ino);
    if (n.kind === "root") {
      const fh = this.#nextFh++;
      if (this.#opts.listRoot) {
        this.#dirHandles.set(fh, await this.#rootEntries());
      }
      return { fh, flags: 0 };
    }
    if (n.kind !== "dir") throw new FuseError(Errno.ENOTDIR);
    // The root listing must stay fresh, so with --list-root every directory
    // is opened explicitly (the kernel's choice is global).
    if (this.#zeroMessageOpen && !this.#opts.listRoot) {
      throw new FuseError(Errno.ENOSYS);
    }
    const fh = this.#nextFh++;
    this.#dirHandles.set(
      fh,
      this.#dirEntries(n, await this.#listing(n.digest)),
    );
    // A castore directory never changes: let the kernel cache its listing.
    return { fh, flags: FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR };
  }

  /**
   * `.`, `..` and the children of a directory node, whose listing is
   * `listing` (the last few are kept).
   */
  #dirEntries(n: Node & { kind: "dir" }, listing: Listing): DirEntry[] {
    const cached = this.#entryCache.get(n.ino);
    if (cached) return cached;
    const entries: DirEntry[] = [
      { name: DOT, attr: this.#attr(n), lookup: false },
      { name: DOTDOT, attr: this.#attr(this.#node(n.parent)), lookup: false },
    ];
    for (let i = 0; i < listing.children.length; i++) {
      entries.push({
        name: listing.children[i].name,
        attr: this.#attr(this.#kid(n, listing, i)),
        lookup: true,
      });
    }
    this.#entryCache.set(n.ino, entries);
    if (this.#entryCache.size > ENTRY_CACHE) {
      this.#entryCache.delete(this.#entryCache.keys().next().value!);
    }
    return entries;
  }

  async #rootEntries(): Promise<DirEntry[]> {
    const root = this.#attr(this.#node(FUSE_ROOT_ID));
    const entries: DirEntry[] = [
      { name: DOT, attr: root, lookup: false },
      { name: DOTDOT, attr: root, lookup: false },
    ];
    try {
      for await (const info of this.#services.pathInfos.list()) {
        const e = info.entry?.entry;
        if (!info.entry || e?.case === undefined) continue;
        const n = this.#rootChild(e.value.name, info.entry);
        if (n) {
          entries.push({
            name: e.value.name,
            attr: this.#attr(n),
            lookup: true,
          });
        }
      }
    } catch (e) {
      log.warn("listing path infos failed: {error}", {
        error: (e as Error).message,
      });
      throw new FuseError(Errno.EIO);
    }
    return entries;
  }

  readdir(
    ino: bigint,
    fh: bigint,
    offset: number,
  ): DirEntry[] | Promise<DirEntry[]> {
    const handle = this.#dirHandles.get(fh);
    const n = this.#node(ino);
    if (n.kind !== "dir") {
      if (handle) return handle.slice(offset);
      // No handle: opened without OPENDIR (zero-message open).
      if (n.kind === "root") throw new FuseError(Errno.EPERM);
      throw new FuseError(Errno.ENOTDIR);
    }
    // Synchronous when the listing is built (fetched ahead, or listed
    // before): most of a walk, and always the end-of-directory call.
    const now = this.#listingNow(n.digest);
    if (now) return this.#readdirIn(n, handle, now, offset);
    return this.#listing(n.digest).then((l) =>
      this.#readdirIn(n, handle, l, offset)
    );
  }

  #readdirIn(
    n: Node & { kind: "dir" },
    handle: DirEntry[] | undefined,
    listing: Listing,
    offset: number,
  ): DirEntry[] | Promise<DirEntry[]> {
    const entries = handle ?? this.#dirEntries(n, listing);
    // Someone is reading file contents along a walk (tar, cp -r, diff -r):
    // fetch this directory's small files before they are asked for, and
    // once the kernel knows them, push them. A walk that reads no contents
    // (find, ls -R) does not trigger this.
    if (this.#contentWalk()) {
      if (offset === 0) {
        if (this.#notifier && this.#loader?.canDecompress) {
          this.#loadListedNow(listing);
          // The walker goes into the subdirectories next: load their small
          // files ahead (in order, a bounded number at a time).
          for (const c of listing.children) {
            if (c.kind !== "dir") continue;
            this.#listings.get(digestToHex(c.digest))?.then((l) => {
              for (const f of l.children) {
                if (f.kind === "file" && f.size > 0 && f.size <= PUSH_MAX) {
                  this.#preload(f);
                }
              }
            }, () => {});
          }
        } else if (this.#locateChunk) this.#prefetchListed(listing, 0);
        // Synchronous backend reads must not hold up this reply.
        else setTimeout(() => this.#prefetchListed(listing, 0), 0);
      } else if (this.#notifier) {
        return this.#pushListed(n, listing, offset).then(() =>
          entries.slice(offset)
        );
      }
    }
    return entries.slice(offset);
  }

  releasedir(_ino: bigint, fh: bigint): void {
    this.#dirHandles.delete(fh);
  }

  getxattr(ino: bigint, name: Uint8Array): Promise<Uint8Array> {
    if (!this.#opts.showXattr) throw new FuseError(Errno.ENOSYS);
    const n = this.#node(ino);
    const key = bkey(name);
    if (n.kind === "dir" && key === XATTR_DIRECTORY_DIGEST) {
      return Promise.resolve(utf8.encode(digestToString(n.digest)));
    }
    if (n.kind === "file" && key === XATTR_BLOB_DIGEST) {
      return Promise.resolve(utf8.encode(digestToString(n.digest)));
    }
    throw new FuseError(Errno.ENODATA);
  }

  listxattr(ino: bigint): Promise<Uint8Array[]> {
    if (!this.#opts.showXattr) throw new FuseError(Errno.ENOSYS);
    const n = this.#node(ino);
    if (n.kind === "dir") {
      return Promise.resolve([utf8.encode(XATTR_DIRECTORY_DIGEST)]);
    }
    if (n.kind === "file") {
      return Promise.resolve([utf8.encode(XATTR_BLOB_DIGEST)]);
    }
    return Promise.resolve([]);
  }

  statfs(): StatFs {
    return { blocks: 0, files: this.#nodes.size, bsize: 4096, namelen: 255 };
  }
}
