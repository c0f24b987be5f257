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
import { getLogger } from "@logtape/logtape";
import type { BlobService } from "../castore/blob_service.ts";
import type { DirectoryService } from "../castore/directory_service.ts";
import { digestToHex, digestToString } from "../castore/digest.ts";
import type {
  Directory,
  Entry,
} from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { PathInfoService } from "../store/path_info_service.ts";
import { StorePath } from "../nix/store_path.ts";
import { BlobReader } from "./blob_reader.ts";
import {
  type DirEntry,
  FuseError,
  type FuseFilesystem,
  type OpenResult,
  type StatFs,
} from "./filesystem.ts";
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
}

/** The services the file system reads. */
export interface CastoreServices {
  blobs: BlobService;
  directories: DirectoryService;
  pathInfos: PathInfoService;
}

type Node =
  | { kind: "root"; ino: bigint }
  | { kind: "dir"; ino: bigint; parent: bigint; digest: Uint8Array }
  | {
    kind: "file";
    ino: bigint;
    digest: Uint8Array;
    size: number;
    executable: boolean;
    /** Where the file was first seen, for prefetching the files after it. */
    seenIn?: { listing: Listing; index: number };
  }
  | { kind: "symlink"; ino: bigint; target: Uint8Array };

/** A directory's children, merged and sorted by name bytes. */
interface Listing {
  children: Child[];
  /** Position in `children` by name key. */
  byName: Map<string, number>;
}

type Child =
  | { kind: "dir"; name: Uint8Array; key: string; digest: Uint8Array }
  | {
    kind: "file";
    name: Uint8Array;
    key: string;
    digest: Uint8Array;
    size: number;
    executable: boolean;
  }
  | { kind: "symlink"; name: Uint8Array; key: string; target: Uint8Array };

const MTIME = 1;
const LISTING_CACHE = 32768;
/** Directories fetched ahead of demand at once. */
const DIR_PREFETCH_CONCURRENCY = 8;
/** Files after a file being read in the same directory to fetch ahead. */
const FILE_PREFETCH_AHEAD = 32;
/** Largest file fetched ahead that way. */
const FILE_PREFETCH_MAX = 1 << 20;
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

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
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
  #dirHandles = new Map<bigint, DirEntry[]>();
  #entryCache = new Map<bigint, DirEntry[]>();
  #lastFileRead = 0;
  #dirPrefetchQueue: Uint8Array[] = [];
  #dirPrefetching = 0;
  #nextFh = 1n;

  constructor(services: CastoreServices, options: CastoreFsOptions = {}) {
    this.#services = services;
    this.#opts = options;
    this.entryTimeout = options.entryTimeout ?? 86400;
    this.#reader = new BlobReader(services.blobs, options.cacheBytes);
    this.#nodes.set(FUSE_ROOT_ID, { kind: "root", ino: FUSE_ROOT_ID });
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

  #childNode(
    parent: bigint,
    c: Child,
    seenIn?: { listing: Listing; index: number },
  ): Node {
    switch (c.kind) {
      case "dir":
        return this.#intern(`${parent}/${c.key}`, (ino) => ({
          kind: "dir",
          ino,
          parent,
          digest: c.digest,
        }));
      case "file":
        return this.#intern(
          `f:${digestToHex(c.digest)}:${c.executable ? 1 : 0}`,
          (ino) => ({
            kind: "file",
            ino,
            digest: c.digest,
            size: c.size,
            executable: c.executable,
            seenIn,
          }),
        );
      case "symlink":
        return this.#intern(
          `${parent}/${c.key}`,
          (ino) => ({ kind: "symlink", ino, target: c.target }),
        );
    }
  }

  #attr(n: Node): Attr {
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
          key: bkey(e.name),
          digest: e.digest,
        });
      }
      for (const e of d.files) {
        children.push({
          kind: "file",
          name: e.name,
          key: bkey(e.name),
          digest: e.digest,
          size: Number(e.size),
          executable: e.executable,
        });
      }
      for (const e of d.symlinks) {
        children.push({
          kind: "symlink",
          name: e.name,
          key: bkey(e.name),
          target: e.target,
        });
      }
      children.sort((a, b) => compareBytes(a.name, b.name));
      const listing = {
        children,
        byName: new Map(children.map((c, i) => [c.key, i])),
      };
      this.#prefetchDirs(listing);
      // In a content-reading walk, directories listed ahead bring their
      // small files along (as far as prefetch slots allow).
      if (performance.now() - this.#lastFileRead < 1000) {
        this.#prefetchListed(listing, 0);
      }
      return listing;
    })();
    p.catch(() => this.#listings.delete(hex));
    this.#listings.set(hex, p);
    if (this.#listings.size > LISTING_CACHE) {
      const oldest = this.#listings.keys().next().value;
      if (oldest !== undefined) this.#listings.delete(oldest);
    }
    return p;
  }

  /**
   * Fetches the subdirectories of a listed directory ahead of demand (a tree
   * walk will want them), depth first in name order like `find`, a few at a
   * time, while the listing cache has room.
   */
  #prefetchDirs(listing: Listing): void {
    const q = this.#dirPrefetchQueue;
    for (let i = listing.children.length - 1; i >= 0; i--) {
      const c = listing.children[i];
      if (c.kind === "dir" && q.length < LISTING_CACHE) q.push(c.digest);
    }
    while (
      this.#dirPrefetching < DIR_PREFETCH_CONCURRENCY && q.length > 0 &&
      this.#listings.size < LISTING_CACHE * 0.75
    ) {
      const d = q.pop()!;
      if (this.#listings.has(digestToHex(d))) continue;
      this.#dirPrefetching++;
      this.#listing(d).catch(() => {}).finally(() => {
        this.#dirPrefetching--;
        this.#prefetchDirs({ children: [], byName: new Map() });
      });
    }
  }

  /** Starts fetching small files that follow `n` in its directory (tar, cp -r, diff -r read in order). */
  #prefetchFiles(n: Node & { kind: "file" }): void {
    this.#lastFileRead = performance.now();
    if (n.seenIn) this.#prefetchListed(n.seenIn.listing, n.seenIn.index + 1);
  }

  /** Starts fetching the small files of a listing from position `from` on. */
  #prefetchListed(listing: Listing, from: number): void {
    const end = Math.min(listing.children.length, from + FILE_PREFETCH_AHEAD);
    for (let i = from; i < end; i++) {
      const c = listing.children[i];
      if (c.kind === "file" && c.size > 0 && c.size <= FILE_PREFETCH_MAX) {
        this.#reader.prefetch(c.digest, c.size);
      }
    }
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
    return n;
  }

  async lookup(parent: bigint, name: Uint8Array): Promise<Attr> {
    const p = this.#node(parent);
    if (p.kind === "root") return this.#attr(await this.#lookupRoot(name));
    if (p.kind !== "dir") throw new FuseError(Errno.ENOTDIR);
    const listing = await this.#listing(p.digest);
    const index = listing.byName.get(bkey(name));
    if (index === undefined) throw new FuseError(Errno.ENOENT);
    const c = listing.children[index];
    return this.#attr(this.#childNode(p.ino, c, { listing, index }));
  }

  getattr(ino: bigint): Promise<Attr> {
    return Promise.resolve(this.#attr(this.#node(ino)));
  }

  readlink(ino: bigint): Promise<Uint8Array> {
    const n = this.#node(ino);
    if (n.kind !== "symlink") throw new FuseError(Errno.EINVAL);
    return Promise.resolve(n.target);
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

  async read(
    ino: bigint,
    _fh: bigint,
    offset: number,
    size: number,
  ): Promise<Uint8Array> {
    const n = this.#node(ino);
    if (n.kind !== "file") throw new FuseError(Errno.EISDIR);
    if (offset === 0) this.#prefetchFiles(n);
    try {
      return await this.#reader.read(n.digest, n.size, offset, size);
    } catch (e) {
      log.warn("read of blob {digest} at {offset} failed: {error}", {
        digest: digestToString(n.digest),
        offset,
        error: (e as Error).message,
      });
      throw new FuseError(Errno.EIO);
    }
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
    this.#dirHandles.set(fh, await this.#dirEntries(n));
    // A castore directory never changes: let the kernel cache its listing.
    return { fh, flags: FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR };
  }

  /** `.`, `..` and the children of a directory node (the last few are kept). */
  async #dirEntries(n: Node & { kind: "dir" }): Promise<DirEntry[]> {
    const cached = this.#entryCache.get(n.ino);
    if (cached) return cached;
    const entries = await this.#buildDirEntries(n);
    this.#entryCache.set(n.ino, entries);
    if (this.#entryCache.size > 256) {
      this.#entryCache.delete(this.#entryCache.keys().next().value!);
    }
    return entries;
  }

  async #buildDirEntries(n: Node & { kind: "dir" }): Promise<DirEntry[]> {
    const listing = await this.#listing(n.digest);
    const parent = this.#attr(this.#node(n.parent));
    const entries: DirEntry[] = [
      { name: DOT, attr: this.#attr(n), lookup: false },
      { name: DOTDOT, attr: parent, lookup: false },
    ];
    listing.children.forEach((c, index) => {
      entries.push({
        name: c.name,
        attr: this.#attr(this.#childNode(n.ino, c, { listing, index })),
        lookup: true,
      });
    });
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

  async readdir(ino: bigint, fh: bigint, offset: number): Promise<DirEntry[]> {
    let entries = this.#dirHandles.get(fh);
    if (!entries) {
      // No handle: opened without OPENDIR (zero-message open).
      const n = this.#node(ino);
      if (n.kind === "root") throw new FuseError(Errno.EPERM);
      if (n.kind !== "dir") throw new FuseError(Errno.ENOTDIR);
      entries = await this.#dirEntries(n);
      // Someone is reading file contents along a walk (tar, cp -r, diff -r):
      // fetch this directory's small files before they are asked for. A
      // walk that reads no contents (find, ls -R) does not trigger this.
      if (offset === 0 && performance.now() - this.#lastFileRead < 1000) {
        this.#prefetchListed(await this.#listing(n.digest), 0);
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
