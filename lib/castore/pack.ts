/**
 * Pack files: many castore objects (chunks, chunk lists, directories) in one
 * immutable file, written by one ingestion.
 *
 * Why: one file per object made file creation the biggest single cost of an
 * import (on the ext4 of the test machines each new inode costs 50-350 us of
 * kernel time, measured with perf in `__ext4_new_inode`; the 1 GiB mixed
 * corpus made 23k objects), and a cold walk of a mounted store read every
 * object from its own place on the disk. A pack is written sequentially in
 * walk order, so it is also read back sequentially.
 *
 * Layout of `<id>.pack` (all integers little-endian):
 * - magic `SNIXPK1\n`;
 * - the records, back to back (a record is the object's stored bytes:
 *   a zstd frame for a chunk, the encoded list or directory otherwise);
 * - the index: per record its digest (32 bytes), offset (u64), stored length
 *   (u32), raw size (u32, the uncompressed size of a chunk), kind (u8) and 7
 *   zero bytes: {@linkcode ENTRY_SIZE} bytes each;
 * - the trailer: record count (u64), index offset (u64), the BLAKE3 of the
 *   index followed by those two numbers, and magic `SNIXPKE\n`.
 *
 * Crash safety: a pack is written under `<dataDir>/tmp/`, fsynced, renamed
 * into the packs directory and the directory fsynced, all at the ingestion's
 * commit; so a pack is either whole and durable or absent, and a failed or
 * killed ingestion leaves only a temporary file (removed when stale). The
 * index is checked when a pack is loaded; every record is verified when read
 * (by the services: BLAKE3 of the chunk, checksum of the list, digest of the
 * directory), like loose object files. Several processes may write packs
 * into one directory; each reader notices packs published by others when a
 * lookup misses (the packs directory's mtime changed, or is too recent to
 * trust).
 *
 * Compaction: every ingestion publishes its own pack, so a store filled by
 * `nix copy` (one ingestion per store path) gathers thousands of small
 * packs, and every process pays for loading each one's index and opening
 * its file. Once {@linkcode CompactionPolicy.minPacks} small packs exist,
 * the writer that published the last one merges them (see
 * {@linkcode PackSet.compact}): it copies their records into one new pack
 * (each record checked on the way), publishes it like any pack, and only
 * then deletes the merged ones. A record is thus in some published pack at
 * every instant; a reader that finds a pack deleted under it looks the
 * record up again (its open descriptor, if it had one, still reads the old
 * file). A crash mid-way leaves the old packs, and perhaps the new one too:
 * duplicate records, merged away by the next compaction.
 *
 * Written here (no library stores content-addressed records in one file
 * with the crash semantics above).
 *
 * @module
 */
import * as fs from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { createBlake3, DIGEST_LENGTH, digestEquals } from "./digest.ts";
import { randomHex, storageError } from "./atomic_file.ts";
import { DigestTable } from "./digest_table.ts";
import { fsyncDir, preadAtLeast, preadExact, writeAll } from "./file_io.ts";
import { CATALOG_FILE, PackCatalog, writeCatalog } from "./pack_catalog.ts";
import { getLogger } from "@logtape/logtape";

const log = getLogger(["snix", "castore"]);

/** What a record holds. */
export const PackKind = {
  /** A chunk: zstd frame of bytes whose BLAKE3 is the digest. */
  chunk: 1,
  /** A blob's chunk list (see ./local_blob_service.ts). */
  list: 2,
  /** A directory's canonical protobuf bytes. */
  directory: 3,
} as const;

const MAGIC = new TextEncoder().encode("SNIXPK1\n");
const END_MAGIC = new TextEncoder().encode("SNIXPKE\n");
/** Bytes per index entry. */
export const ENTRY_SIZE = 56;
const TRAILER_SIZE = 8 + 8 + DIGEST_LENGTH + 8;
/** Buffered bytes before a write (records smaller than this are gathered). */
const WRITE_BUFFER = 1 << 20;
/** Bytes written between starts of early write-back (see PackWriter#writeBack). */
const EARLY_SYNC = 64 << 20;
/** Pack files kept open for reading at once. */
const MAX_OPEN = 128;
/**
 * A packs directory whose last listing was made less than this (ms) after
 * its mtime is listed again on a miss.
 */
const MTIME_TRUST_MS = 2000;

/** A stored object's bytes: `length` bytes at `offset` of `path` (-1: the whole file). */
export interface StoredRange {
  path: string;
  offset: number;
  length: number;
}

/** Where a record is. */
export interface PackRecord {
  readonly pack: PackFile;
  /** Its entry number in the pack's index. */
  readonly index: number;
  readonly offset: number;
  readonly length: number;
  readonly rawSize: number;
  readonly kind: number;
  /** Its digest, where the pack's index may not be in memory (catalog). */
  readonly digest?: Uint8Array;
}

/** The key of the lookup map: the first 48 bits of a digest. */
function keyOf(d: Uint8Array): number {
  return (d[0] * 2 ** 40) + (d[1] * 2 ** 32) +
    ((d[2] << 24) >>> 0) + (d[3] << 16) + (d[4] << 8) + d[5];
}

const openFds = new Map<PackFile, number>();

/** Bytes read at once by {@linkcode PackFile.readTransient} when reading sequentially. */
const READ_WINDOW = 1 << 20;
/** Packs holding a read window, least recently used first (at most {@linkcode MAX_WINDOWS}). */
const windows = new Set<PackFile>();
const MAX_WINDOWS = 4;
/** Scratch for {@linkcode PackFile.readTransient} reads outside a window. */
let scratch = new Uint8Array(256 << 10);

/**
 * Checks one record's stored bytes (`rawSize` as in the index); returns
 * what is wrong with it, or `undefined` if it is sound.
 */
export type RecordCheck = (
  kind: number,
  digest: Uint8Array,
  bytes: Uint8Array,
  rawSize: number,
) => string | undefined;

/** When packs are merged (see {@linkcode PackSet.compact}). */
export interface CompactionPolicy {
  /** Packs smaller than this many bytes count as small. */
  smallBytes: number;
  /** Merge once this many small packs exist. */
  minPacks: number;
  /** At most this many bytes are copied by one compaction. */
  maxBytes: number;
  /**
   * Write the directory's catalog once this many records are not in it (and
   * they are at least a quarter of those that are).
   */
  catalogRecords: number;
}

/**
 * The default policy: each merge copies at most 64 MiB, so an ingestion
 * that triggers one waits a fraction of a second, and each stored byte is
 * copied a few times at most before it sits in a pack of 32 MiB or more.
 */
export const DEFAULT_COMPACTION: CompactionPolicy = {
  smallBytes: 32 << 20,
  minPacks: 32,
  maxBytes: 64 << 20,
  // ~25 GiB of chunks; a catalog of 4M records takes a few seconds to write.
  catalogRecords: 100_000,
};

/** What a compaction did. */
export interface CompactionResult {
  /** Packs merged (and deleted). */
  merged: number;
  /** Records in the new pack. */
  records: number;
  /** Bytes of the merged packs. */
  bytes: number;
  /** Packs left as they were because a record failed its check. */
  kept: string[];
}

/** Opens a pack for reading; the error says whether the file is gone. */
function openPack(path: string): number {
  try {
    return fs.openSync(path, "r");
  } catch (e) {
    throw Object.assign(storageError(`cannot open pack ${path}`, e), {
      packGone: isGone(e),
    });
  }
}

/** Whether `e` says a pack file does not exist (any more). */
function isGone(e: unknown): boolean {
  return (e as { code?: unknown })?.code === "ENOENT" ||
    (e as { packGone?: unknown })?.packGone === true;
}

/** One published (immutable) pack file. */
export class PackFile {
  #index: Uint8Array | undefined;
  readonly count: number;
  /** Asynchronous reads in flight (its descriptor stays open meanwhile). */
  #reading = 0;
  /** The set it belongs to (to find a record again once it was merged away). */
  set: PackSet | undefined;
  /** Read window: bytes of the file from `#winAt` (see readTransient). */
  #win: Uint8Array | undefined;
  #winAt = 0;
  #winLen = 0;
  /** Where the last transient read ended (sequential reads get a window). */
  #lastEnd = -1;

  private constructor(
    readonly path: string,
    index: Uint8Array | undefined,
    /** The file's size in bytes. */
    readonly size: number,
    count?: number,
  ) {
    this.#index = index;
    this.count = count ?? index!.length / ENTRY_SIZE;
  }

  /**
   * The index entries, {@linkcode ENTRY_SIZE} bytes each (read and checked
   * on first use for a pack known from the catalog).
   */
  get index(): Uint8Array {
    if (!this.#index) {
      const loaded = PackFile.load(this.path).#index!;
      if (loaded.length !== this.count * ENTRY_SIZE) {
        throw new Error(
          `pack ${this.path} is damaged: ${
            loaded.length / ENTRY_SIZE
          } records where the catalog says ${this.count}`,
        );
      }
      this.#index = loaded;
    }
    return this.#index;
  }

  /**
   * A pack the catalog lists (`count` records, `size` bytes): its index is
   * read only if a record is asked for by number (merging, listing).
   */
  static cataloged(path: string, size: number, count: number): PackFile {
    return new PackFile(path, undefined, size, count);
  }

  /** Reads and checks a pack's index; throws an Error naming the file if damaged. */
  static load(path: string): PackFile {
    const fd = openPack(path);
    try {
      const size = fs.fstatSync(fd).size;
      const bad = (why: string) => new Error(`pack ${path} is damaged: ${why}`);
      if (size < MAGIC.length + TRAILER_SIZE) throw bad("too short");
      const trailer = preadExact(fd, size - TRAILER_SIZE, TRAILER_SIZE);
      if (!digestEquals(trailer.subarray(TRAILER_SIZE - 8), END_MAGIC)) {
        throw bad("no trailer");
      }
      const dv = new DataView(trailer.buffer, trailer.byteOffset, 16);
      const count = Number(dv.getBigUint64(0, true));
      const at = Number(dv.getBigUint64(8, true));
      if (
        at < MAGIC.length || at + count * ENTRY_SIZE !== size - TRAILER_SIZE
      ) {
        throw bad("index out of place");
      }
      const index = preadExact(fd, at, count * ENTRY_SIZE);
      const sum = createBlake3().update(index).update(trailer.subarray(0, 16))
        .digest();
      if (!digestEquals(sum, trailer.subarray(16, 16 + DIGEST_LENGTH))) {
        throw bad("index checksum mismatch");
      }
      const iv = new DataView(index.buffer, index.byteOffset, index.length);
      for (let i = 0, e = 0; i < count; i++, e += ENTRY_SIZE) {
        const offset = iv.getUint32(e + 32, true) +
          iv.getUint32(e + 36, true) * 2 ** 32;
        if (offset < MAGIC.length || offset + iv.getUint32(e + 40, true) > at) {
          throw bad(`record ${i} out of bounds`);
        }
      }
      return new PackFile(path, index, size);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * The pack this process has just written (index and size as written, not
   * read back: another process may merge it away and delete it at once).
   */
  static written(path: string, index: Uint8Array, size: number): PackFile {
    return new PackFile(path, index, size);
  }

  /** The digest of entry `i` (a view). */
  digest(i: number): Uint8Array {
    return this.index.subarray(i * ENTRY_SIZE, i * ENTRY_SIZE + DIGEST_LENGTH);
  }

  /** Entry `i`'s location. */
  record(i: number): PackRecord {
    const dv = new DataView(
      this.index.buffer,
      this.index.byteOffset + i * ENTRY_SIZE,
      ENTRY_SIZE,
    );
    return {
      pack: this,
      index: i,
      offset: Number(dv.getBigUint64(32, true)),
      length: dv.getUint32(40, true),
      rawSize: dv.getUint32(44, true),
      kind: dv.getUint8(48),
    };
  }

  #fd(): number {
    let fd = openFds.get(this);
    if (fd !== undefined) {
      openFds.delete(this); // most recently used last
      openFds.set(this, fd);
      return fd;
    }
    fd = openPack(this.path);
    openFds.set(this, fd);
    if (openFds.size > MAX_OPEN) {
      // The least recently used one without reads in flight (closing under
      // an asynchronous read could make it read another file's bytes).
      for (const [p, pfd] of openFds) {
        if (p.#reading > 0 || p === this) continue;
        openFds.delete(p);
        try {
          fs.closeSync(pfd);
        } catch { /* nothing to do */ }
        break;
      }
    }
    return fd;
  }

  /** Closes this pack's descriptor unless reads are in flight. */
  close(): void {
    const fd = openFds.get(this);
    if (fd === undefined || this.#reading > 0) return;
    openFds.delete(this);
    try {
      fs.closeSync(fd);
    } catch { /* nothing to do */ }
  }

  /**
   * A record's stored bytes as a view that is valid only until the next
   * `readTransient` of any pack: for callers that decompress or decode
   * right away. Records read in file order (a walk over what one
   * ingestion wrote) are served from a window of
   * {@linkcode READ_WINDOW} bytes read at once, so many small records cost
   * one system call instead of one each.
   */
  readTransient(r: PackRecord): Uint8Array {
    const win = this.#win;
    if (win && r.offset >= this.#winAt) {
      const at = r.offset - this.#winAt;
      if (at + r.length <= this.#winLen) {
        this.#lastEnd = r.offset + r.length;
        return win.subarray(at, at + r.length);
      }
    }
    const sequential = r.offset === this.#lastEnd;
    this.#lastEnd = r.offset + r.length;
    if (!sequential || r.length >= READ_WINDOW / 2) {
      if (scratch.length < r.length) scratch = new Uint8Array(r.length);
      return this.readSync(r, scratch);
    }
    const fd = this.#fdFor(r);
    if (typeof fd !== "number") return fd.pack.readSync(fd);
    let buf = this.#win;
    if (!buf) {
      if (windows.size >= MAX_WINDOWS) {
        const oldest: PackFile = windows.values().next().value!;
        windows.delete(oldest);
        buf = oldest.#win;
        oldest.#win = undefined;
      }
      buf ??= new Uint8Array(READ_WINDOW);
    }
    windows.delete(this); // most recently used last
    windows.add(this);
    let n: number;
    try {
      n = preadAtLeast(fd, buf, r.length, r.offset);
    } catch (e) {
      this.#win = undefined;
      windows.delete(this);
      throw storageError(`cannot read pack ${this.path}`, e);
    }
    this.#win = buf;
    this.#winLen = n;
    this.#winAt = r.offset;
    return buf.subarray(0, r.length);
  }

  /**
   * Where record `r` is now if this pack was merged away (deleted) since
   * it was looked up, else `undefined`.
   */
  #moved(r: PackRecord, e: unknown): PackRecord | undefined {
    if (!isGone(e) || !this.set) return undefined;
    const now = this.set.relocate(r.digest ?? this.digest(r.index));
    return now && now.pack !== this ? now : undefined;
  }

  /**
   * This pack's descriptor for reading `r`, or where `r` is now if the
   * pack was merged away (throws if neither).
   */
  #fdFor(r: PackRecord): number | PackRecord {
    try {
      return this.#fd();
    } catch (e) {
      const moved = this.#moved(r, e);
      if (moved) return moved;
      throw e;
    }
  }

  /** A record's stored bytes, read on this thread (into `into` if big enough). */
  readSync(r: PackRecord, into?: Uint8Array): Uint8Array {
    const fd = this.#fdFor(r);
    if (typeof fd !== "number") return fd.pack.readSync(fd, into);
    const buf = into && into.length >= r.length
      ? into.subarray(0, r.length)
      : new Uint8Array(r.length);
    try {
      preadAtLeast(fd, buf, r.length, r.offset);
    } catch (e) {
      throw storageError(`cannot read pack ${this.path}`, e);
    }
    return buf;
  }

  /** A record's stored bytes, read in the runtime's I/O threads. */
  read(r: PackRecord): Promise<Uint8Array> {
    let fd: number | PackRecord;
    try {
      fd = this.#fdFor(r);
    } catch (e) {
      return Promise.reject(e);
    }
    if (typeof fd !== "number") return fd.pack.read(fd);
    const buf = new Uint8Array(r.length);
    this.#reading++;
    return new Promise<Uint8Array>((resolve, reject) => {
      const step = (n: number) => {
        if (n >= r.length) return resolve(buf);
        fs.read(fd, buf, n, r.length - n, r.offset + n, (e, got) => {
          if (e || got === 0) {
            reject(
              storageError(
                `cannot read pack ${this.path}`,
                e ?? new Error("unexpected end of file"),
              ),
            );
          } else step(n + got);
        });
      };
      step(0);
    }).finally(() => this.#reading--);
  }
}

/**
 * Every pack of one packs directory, indexed by digest. Packs are loaded on
 * the first lookup (a process that never reads pays nothing).
 */
export class PackSet {
  readonly #dir: string;
  readonly #tmpDir: string;
  #loaded = false;
  #names = new Set<string>();
  /** The packs in {@linkcode #table} (those the catalog does not cover). */
  #packs: PackFile[] = [];
  /** The directory's catalog (see ./pack_catalog.ts), if it has one. */
  #catalog: PackCatalog | undefined;
  /** The catalog's packs by number, while they exist. */
  #cataloged: (PackFile | undefined)[] = [];
  /** Pack number in the catalog, by file name. */
  #catalogNames = new Map<string, number>();
  /** The inode of a catalog that could not be read (not tried again). */
  #badCatalog = -1;
  /**
   * Records are numbered across the packs of the table: pack `n`'s entry
   * `i` is record `#bases[n] + i`.
   */
  #bases: number[] = [];
  #records = 0;
  /** Digest -> record number. */
  #table = new DigestTable({
    bytes: (ref) => this.#packs[this.#packOf(ref)].index,
    offset: (ref) => (ref - this.#bases[this.#packOf(ref)]) * ENTRY_SIZE,
  });
  /** The last answer of {@linkcode #packOf} (looks come in runs). */
  #lastPack = 0;
  #dirMtimeMs = -1;
  /** When the directory was last listed (ms since the epoch). */
  #listedAt = 0;
  /** Packs that could not be loaded: path and reason (for `verify`). */
  readonly problems: string[] = [];
  readonly #check: RecordCheck | undefined;
  readonly #policy: CompactionPolicy;
  #compacting = false;

  /**
   * `dir` holds the packs; `tmpDir` (same file system) their temporary
   * files. Packs are merged (see {@linkcode compact}) only with a `check`
   * for their records.
   */
  constructor(
    dir: string,
    tmpDir: string,
    options: { check?: RecordCheck; compaction?: Partial<CompactionPolicy> } =
      {},
  ) {
    this.#dir = dir;
    this.#tmpDir = tmpDir;
    this.#check = options.check;
    this.#policy = { ...DEFAULT_COMPACTION, ...options.compaction };
  }

  /** The published packs this process knows of. */
  get packs(): readonly PackFile[] {
    if (!this.#loaded) this.#refresh(true);
    return this.#all();
  }

  #all(): PackFile[] {
    const all: PackFile[] = [];
    for (const p of this.#cataloged) if (p) all.push(p);
    return all.concat(this.#packs);
  }

  /** Records the catalog covers (0 without one). */
  get cataloged(): number {
    if (!this.#loaded) this.#refresh(true);
    let n = 0;
    for (const p of this.#cataloged) if (p) n += p.count;
    return n;
  }

  /** The packs directory. */
  get dir(): string {
    return this.#dir;
  }

  /**
   * Finds a record; on a miss re-lists the directory if it may have changed
   * (unless `recheck` is false: for dedup checks, where missing a pack just
   * published by another process only costs a duplicate record).
   */
  lookup(digest: Uint8Array, recheck = true): PackRecord | undefined {
    if (!this.#loaded) this.#refresh(true);
    const r = this.#find(digest);
    if (r || !recheck || !this.#refresh(false)) return r;
    return this.#find(digest);
  }

  /** Whether some pack holds `digest` (`recheck` as for {@linkcode lookup}). */
  has(digest: Uint8Array, recheck = true): boolean {
    return this.lookup(digest, recheck) !== undefined;
  }

  #find(digest: Uint8Array): PackRecord | undefined {
    const ref = this.#table.get(digest);
    if (ref !== undefined) {
      const n = this.#packOf(ref);
      return this.#packs[n].record(ref - this.#bases[n]);
    }
    const e = this.#catalog?.lookup(digest, (n) => !!this.#cataloged[n]);
    if (!e) return undefined;
    return {
      pack: this.#cataloged[e.pack]!,
      index: e.index,
      offset: e.offset,
      length: e.length,
      rawSize: e.rawSize,
      kind: e.kind,
      digest: digest.slice(),
    };
  }

  /** The pack number of record `ref` (binary search of the bases). */
  #packOf(ref: number): number {
    const bases = this.#bases;
    const last = this.#lastPack;
    if (
      bases[last] <= ref &&
      ref < bases[last] + this.#packs[last].count
    ) return last;
    let lo = 0, hi = bases.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (bases[mid] <= ref) lo = mid;
      else hi = mid - 1;
    }
    this.#lastPack = lo;
    return lo;
  }

  /**
   * Where `digest` is after the pack it was found in disappeared (merged by
   * a compaction): the directory is listed again first.
   */
  relocate(digest: Uint8Array): PackRecord | undefined {
    this.#refresh(true);
    return this.#find(digest);
  }

  /** Lists the directory again if it may have changed; true if packs were added. */
  #refresh(force: boolean): boolean {
    this.#loaded = true;
    let mtimeMs: number;
    try {
      // (existsSync first: a failing statSync costs an exception)
      if (!fs.existsSync(this.#dir)) return false; // no packs yet
      mtimeMs = fs.statSync(this.#dir).mtimeMs;
    } catch {
      return false;
    }
    // An unchanged mtime proves nothing new only if the last listing was
    // made well after it: the file system's clock is coarse, so a pack
    // renamed in just after a listing can leave the mtime as it was.
    if (
      !force && mtimeMs === this.#dirMtimeMs &&
      this.#listedAt - mtimeMs > MTIME_TRUST_MS
    ) {
      return false;
    }
    this.#dirMtimeMs = mtimeMs;
    this.#listedAt = Date.now();
    let added = this.#syncCatalog();
    const listed = new Set<string>();
    for (const name of fs.readdirSync(this.#dir)) {
      if (!name.endsWith(".pack")) continue;
      listed.add(name);
      if (this.#names.has(name)) continue;
      this.#names.add(name);
      const path = join(this.#dir, name);
      try {
        if (!this.#addCataloged(name, path)) this.#add(PackFile.load(path));
        added = true;
      } catch (e) {
        // (gone since the listing: merged by a compaction)
        if (!isGone(e)) this.problems.push((e as Error).message);
      }
    }
    const gone = this.#all().filter((p) => !listed.has(baseName(p.path)));
    if (gone.length > 0) this.#retire(new Set(gone));
    return added || gone.length > 0;
  }

  /**
   * A pack the catalog lists with this name and the size it has: known
   * without reading its index. False if the catalog does not cover it.
   */
  #addCataloged(name: string, path: string): boolean {
    const n = this.#catalogNames.get(name);
    if (n === undefined) return false;
    const c = this.#catalog!.packs[n];
    if (fs.statSync(path).size !== c.size) return false;
    const pack = PackFile.cataloged(path, c.size, c.count);
    pack.set = this;
    this.#cataloged[n] = pack;
    return true;
  }

  /**
   * Opens the directory's catalog if it is new (another process wrote it)
   * and then forgets every pack, to learn them again through it; true if
   * it did. A damaged catalog is reported once and ignored.
   */
  #syncCatalog(): boolean {
    let ino = -1;
    try {
      ino = fs.statSync(join(this.#dir, CATALOG_FILE)).ino;
    } catch { /* none */ }
    if (ino === (this.#catalog?.ino ?? -1) || ino === this.#badCatalog) {
      return false;
    }
    let catalog: PackCatalog | undefined;
    try {
      catalog = PackCatalog.open(this.#dir);
    } catch (e) {
      this.#badCatalog = ino;
      this.problems.push((e as Error).message);
      if (!this.#catalog) return false;
    }
    for (const p of this.#all()) p.close();
    this.#catalog?.close();
    this.#catalog = catalog;
    this.#names.clear();
    this.#cataloged = [];
    this.#catalogNames = new Map(catalog?.packs.map((p, i) => [p.name, i]));
    this.#clearTable();
    return true;
  }

  /**
   * Writes a catalog of every pack of the directory now (under the merge
   * lock); false if another process holds that lock.
   */
  writeCatalog(): boolean {
    const unlock = this.#lock();
    if (!unlock) return false;
    try {
      this.#refresh(true);
      const packs = this.#all().map((p) => ({
        name: baseName(p.path),
        size: p.size,
        index: p.index,
      }));
      writeCatalog(this.#dir, this.#tmpDir, packs);
    } finally {
      unlock();
    }
    this.#refresh(true);
    return true;
  }

  /** Forgets packs that were deleted (their records are in another pack). */
  #retire(gone: Set<PackFile>): void {
    const keep = this.#packs.filter((p) => !gone.has(p));
    for (const p of gone) {
      this.#names.delete(baseName(p.path));
      p.close();
    }
    this.#cataloged = this.#cataloged.map((p) =>
      p && gone.has(p) ? undefined : p
    );
    this.#clearTable();
    for (const p of keep) this.#add(p);
  }

  /** Empties the table and forgets the packs in it. */
  #clearTable(): void {
    this.#packs = [];
    this.#bases = [];
    this.#records = 0;
    this.#table.clear();
  }

  #add(pack: PackFile): void {
    pack.set = this;
    this.#packs.push(pack);
    const base = this.#records;
    this.#bases.push(base);
    this.#records += pack.count;
    this.#table.reserve(pack.count);
    // (a digest already in an earlier pack keeps pointing there)
    for (let i = 0; i < pack.count; i++) this.#table.add(base + i);
  }

  /** Registers a pack this process just published. */
  published(path: string, pack: PackFile): void {
    const name = baseName(path);
    if (this.#names.has(name)) return;
    this.#names.add(name);
    this.#add(pack);
  }

  /**
   * After a pack was published: merges the small packs if the policy says
   * so. A failed merge is logged and changes nothing (the ingestion that
   * called this succeeded already).
   */
  compactIfDue(): void {
    if (this.#compacting || !this.#check) return;
    try {
      this.#refresh(false);
      const small = this.#all().filter((p) => p.size < this.#policy.smallBytes);
      const r = small.length >= this.#policy.minPacks
        ? this.compact()
        : undefined;
      if (r) {
        log.debug(
          "merged {merged} packs ({bytes} bytes, {records} records) in {dir}",
          { ...r, dir: this.#dir },
        );
      }
      // (the packs this process does not know through the catalog)
      const inTable = this.#records;
      if (
        inTable >= this.#policy.catalogRecords &&
        inTable * 4 >= this.cataloged && this.writeCatalog()
      ) {
        log.debug("wrote the catalog of {dir}: {records} records", {
          dir: this.#dir,
          records: this.cataloged,
        });
      }
    } catch (e) {
      log.warn("cannot merge the packs in {dir}: {error}", {
        dir: this.#dir,
        error: (e as Error).message,
      });
    }
  }

  /**
   * Merges small packs into one new pack: the smallest first, at most
   * {@linkcode CompactionPolicy.maxBytes} of them, if at least
   * {@linkcode CompactionPolicy.minPacks} (with `force`: two) qualify.
   * Every record is checked as it is copied; a pack with a bad record is
   * left as it is (`kept`), so that `verify` still reports the damage.
   * Returns `undefined` if there was nothing to merge, or another process
   * is merging this directory right now.
   */
  compact(force = false): CompactionResult | undefined {
    const check = this.#check;
    if (!check) return undefined;
    this.#refresh(true);
    const small = this.#all()
      .filter((p) => p.size < this.#policy.smallBytes)
      .sort((a, b) => a.size - b.size);
    const picked: PackFile[] = [];
    let total = 0;
    for (const p of small) {
      if (picked.length >= 2 && total + p.size > this.#policy.maxBytes) break;
      picked.push(p);
      total += p.size;
    }
    if (picked.length < (force ? 2 : this.#policy.minPacks)) return undefined;
    const unlock = this.#lock();
    if (!unlock) return undefined;
    this.#compacting = true;
    try {
      return this.#merge(picked, check);
    } finally {
      this.#compacting = false;
      unlock();
    }
  }

  /**
   * Merges small packs until no two are left (for `snix store compact`);
   * `onProgress` gets the running totals after each merge.
   */
  compactAll(
    onProgress?: (sum: CompactionResult) => void,
  ): CompactionResult {
    const sum: CompactionResult = { merged: 0, records: 0, bytes: 0, kept: [] };
    for (;;) {
      const r = this.compact(true);
      if (!r || r.merged === 0) return sum;
      sum.merged += r.merged;
      sum.records += r.records;
      sum.bytes += r.bytes;
      sum.kept.push(...r.kept);
      onProgress?.(sum);
      if (r.merged < 2) return sum;
    }
  }

  #merge(picked: PackFile[], check: RecordCheck): CompactionResult {
    const w = this.writer();
    const merged: PackFile[] = [];
    const kept: string[] = [];
    let buf = new Uint8Array(1 << 20);
    let records = 0;
    let bytes = 0;
    try {
      for (const p of picked) {
        let bad: string | undefined;
        try {
          for (let i = 0; i < p.count && !bad; i++) {
            const r = p.record(i);
            if (buf.length < r.length) buf = new Uint8Array(r.length);
            const stored = p.readSync(r, buf);
            bad = check(r.kind, p.digest(i), stored, r.rawSize);
            if (!bad) w.add(r.kind, p.digest(i), stored, r.rawSize);
          }
        } catch (e) {
          bad = (e as Error).message;
        }
        if (bad) kept.push(`${p.path}: ${bad}`);
        else {
          merged.push(p);
          bytes += p.size;
        }
      }
      records = w.count;
      if (merged.length < 2) {
        // Nothing gained by rewriting a single pack.
        w.abort();
        return { merged: 0, records: 0, bytes: 0, kept };
      }
      w.publish();
    } catch (e) {
      w.abort();
      throw e;
    }
    // The new pack is durable and listed: the old ones can go.
    for (const p of merged) fs.rmSync(p.path, { force: true });
    fsyncDir(this.#dir);
    this.#retire(new Set(merged));
    return { merged: merged.length, records, bytes, kept };
  }

  /**
   * Takes this directory's merge lock (a file naming our pid); returns its
   * release, or `undefined` if a live process holds it.
   */
  #lock(): (() => void) | undefined {
    const path = join(this.#dir, "compact.lock");
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.writeFileSync(path, `${process.pid}\n`, { flag: "wx" });
        return () => fs.rmSync(path, { force: true });
      } catch (e) {
        if ((e as { code?: string }).code !== "EEXIST") throw e;
      }
      if (lockHolderAlive(path)) return undefined;
      fs.rmSync(path, { force: true }); // stale: its process is gone
    }
    return undefined;
  }

  /**
   * Every record: digest and kind (for `verify`). Then the catalog is
   * compared with the packs' indexes, entry by entry; a difference is added
   * to {@linkcode problems} (lookups through it could miss records).
   */
  *entries(): Iterable<{ digest: Uint8Array; kind: number }> {
    this.#refresh(true);
    for (const p of this.#all()) {
      for (let i = 0; i < p.count; i++) {
        yield { digest: p.digest(i).slice(), kind: p.record(i).kind };
      }
    }
    const bad = this.#checkCatalog();
    if (bad > 0) {
      this.problems.push(
        `pack catalog ${
          join(this.#dir, CATALOG_FILE)
        } disagrees with the packs in ${bad} records: run snix store compact to write it again`,
      );
    }
  }

  /** Catalog entries (of packs that exist) unlike their pack's index entry. */
  #checkCatalog(): number {
    const catalog = this.#catalog;
    if (!catalog) return 0;
    let bad = 0;
    for (const { pack, index, entry } of catalog.scan()) {
      const p = this.#cataloged[pack];
      if (!p) continue;
      if (index >= p.count) {
        bad++;
        continue;
      }
      const own = p.index.subarray(index * ENTRY_SIZE, index * ENTRY_SIZE + 49);
      if (!digestEquals(own, entry)) bad++;
    }
    return bad;
  }

  /** A writer of a new pack into this directory. */
  writer(): PackWriter {
    return new PackWriter(this, this.#tmpDir);
  }
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** Whether the process named in lock file `path` still runs (or the file is fresh). */
function lockHolderAlive(path: string): boolean {
  let text: string;
  let ageMs: number;
  try {
    text = fs.readFileSync(path, "utf8");
    ageMs = Date.now() - fs.statSync(path).mtimeMs;
  } catch {
    return false; // released meanwhile
  }
  const pid = Number.parseInt(text, 10);
  // Just created, pid not written yet; or an old lock whose pid was reused.
  if (!Number.isInteger(pid) || pid <= 0) return ageMs < 10_000;
  if (ageMs > 3_600_000) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === "EPERM";
  }
}

/**
 * A set of digests keyed by their first 48 bits (no hex string per
 * digest: a pack writer checks every record it is given), with the rare
 * prefix collisions kept by full hex digest.
 */
export class DigestSet {
  #first = new Map<number, Uint8Array>();
  #overflow = new Set<string>();

  /** Whether `d` is in the set. */
  has(d: Uint8Array): boolean {
    const f = this.#first.get(keyOf(d));
    if (f !== undefined && digestEquals(f, d)) return true;
    return this.#overflow.size > 0 && this.#overflow.has(hex(d));
  }

  /** Adds `d`; false if it was there already. */
  add(d: Uint8Array): boolean {
    if (this.has(d)) return false;
    const k = keyOf(d);
    if (this.#first.has(k)) this.#overflow.add(hex(d));
    else this.#first.set(k, d.slice());
    return true;
  }

  /** Removes `d`. */
  delete(d: Uint8Array): void {
    const k = keyOf(d);
    const f = this.#first.get(k);
    if (f !== undefined && digestEquals(f, d)) this.#first.delete(k);
    else if (this.#overflow.size > 0) this.#overflow.delete(hex(d));
  }

  /** Empties the set. */
  clear(): void {
    this.#first.clear();
    this.#overflow.clear();
  }
}

function hex(d: Uint8Array): string {
  let s = "";
  for (const x of d) s += x.toString(16).padStart(2, "0");
  return s;
}

/**
 * Writes one pack: records are appended as they come (synchronously, through
 * a buffer); {@linkcode finish} publishes the pack, {@linkcode abort} drops it.
 */
export class PackWriter {
  readonly #set: PackSet;
  readonly #tmpPath: string;
  #fd: number | undefined;
  #pos = MAGIC.length;
  #buf = new Uint8Array(WRITE_BUFFER);
  #bufLen = 0;
  #entries: Uint8Array[] = [];
  #own = new DigestSet();
  /** Bytes written since write-back was last started (see #writeBack). */
  #unsynced = 0;
  /** Write-backs under way (each holds a descriptor until it ends). */
  #syncing = 0;
  #state: "open" | "done" = "open";

  constructor(set: PackSet, tmpDir: string) {
    this.#set = set;
    this.#tmpPath = join(
      tmpDir,
      `pack-${process.pid}-${randomHex()}.tmp`,
    );
  }

  /** Records written so far. */
  get count(): number {
    return this.#entries.length;
  }

  /** Whether this pack already holds `digest`. */
  holds(digest: Uint8Array): boolean {
    return this.#own.has(digest);
  }

  /** Appends a record (skipped if this pack holds the digest already). */
  add(
    kind: number,
    digest: Uint8Array,
    bytes: Uint8Array,
    rawSize = bytes.length,
  ): void {
    if (!this.#claim(digest)) return;
    this.#entry(kind, digest, bytes.length, rawSize);
    this.#append(bytes);
  }

  /**
   * Appends a record that `write` puts straight into the write buffer (at
   * most `maxLength` bytes; it returns how many): a chunk is compressed
   * into place, with no array of its own (skipped if held already).
   */
  addWith(
    kind: number,
    digest: Uint8Array,
    rawSize: number,
    maxLength: number,
    write: (dst: Uint8Array) => number,
  ): void {
    if (!this.#claim(digest)) return;
    const big = maxLength > this.#buf.length;
    if (!big && this.#bufLen + maxLength > this.#buf.length) this.#flush();
    const dst = big
      ? new Uint8Array(maxLength)
      : this.#buf.subarray(this.#bufLen, this.#bufLen + maxLength);
    let n: number;
    try {
      n = write(dst);
    } catch (e) {
      this.#own.delete(digest); // not written: may come again
      throw e;
    }
    this.#entry(kind, digest, n, rawSize);
    if (big) {
      this.#append(dst.subarray(0, n));
    } else {
      this.#bufLen += n;
      this.#pos += n;
    }
  }

  /** Whether `digest` is new to this pack (then remembered); opens the file. */
  #claim(digest: Uint8Array): boolean {
    if (this.#state !== "open") throw new Error("pack writer is closed");
    if (!this.#own.add(digest)) return false;
    if (this.#fd === undefined) {
      try {
        this.#fd = fs.openSync(this.#tmpPath, "wx", 0o644);
      } catch (e) {
        this.#own.delete(digest);
        throw storageError(`cannot create ${this.#tmpPath}`, e);
      }
      this.#buf.set(MAGIC, 0);
      this.#bufLen = MAGIC.length;
    }
    return true;
  }

  /** The index entry of a record of `length` bytes starting here. */
  #entry(kind: number, digest: Uint8Array, length: number, rawSize: number) {
    const e = new Uint8Array(ENTRY_SIZE);
    e.set(digest, 0);
    const dv = new DataView(e.buffer);
    dv.setBigUint64(32, BigInt(this.#pos), true);
    dv.setUint32(40, length, true);
    dv.setUint32(44, rawSize, true);
    dv.setUint8(48, kind);
    this.#entries.push(e);
  }

  #append(bytes: Uint8Array): void {
    if (this.#bufLen + bytes.length > this.#buf.length) this.#flush();
    if (bytes.length >= this.#buf.length) {
      this.#write(bytes);
    } else {
      this.#buf.set(bytes, this.#bufLen);
      this.#bufLen += bytes.length;
    }
    this.#pos += bytes.length;
  }

  #flush(): void {
    if (this.#bufLen === 0) return;
    this.#write(this.#buf.subarray(0, this.#bufLen));
    this.#bufLen = 0;
  }

  #write(b: Uint8Array): void {
    try {
      writeAll(this.#fd!, b);
    } catch (e) {
      throw storageError(`cannot write ${this.#tmpPath}`, e);
    }
    this.#unsynced += b.length;
    if (this.#unsynced >= EARLY_SYNC && this.#syncing < 16) this.#writeBack();
  }

  /**
   * Starts writing back what is written so far, in the runtime's I/O
   * threads, while this thread goes on: the fsync at the end then finds
   * little left to write (on the 1 GiB mixed corpus it took ~0.2 s of the
   * import's wall time, the disk idle until then). It goes through a
   * descriptor of its own, so closing or publishing the pack never waits
   * for it, and a write-back error is still reported to the pack's own
   * fsync (Linux reports it to every open description of the file). Its
   * result is not needed: durability is that final fsync's.
   */
  #writeBack(): void {
    this.#unsynced = 0;
    let fd: number;
    try {
      fd = fs.openSync(this.#tmpPath, "r");
    } catch {
      return;
    }
    this.#syncing++;
    fs.fdatasync(fd, () => {
      fs.close(fd, () => {});
      this.#syncing--;
    });
  }

  /**
   * Writes the index, makes the pack durable (fsync, rename, fsync of the
   * packs directory) and makes its records visible to this process. Nothing
   * to do for an empty pack.
   */
  async finish(): Promise<void> {
    const fd = this.#close();
    if (fd === undefined) return;
    let open = true;
    try {
      const index = this.#seal(fd);
      // fsync in the runtime's I/O threads: a daemon's other connections
      // (and the socket this ingestion reads from) go on meanwhile.
      await new Promise<void>((ok, fail) =>
        fs.fsync(fd, (e) => e ? fail(e) : ok())
      );
      open = false;
      fs.closeSync(fd);
      const path = this.#rename();
      await new Promise<void>((ok, fail) =>
        fs.open(this.#set.dir, "r", (e, dfd) => {
          if (e) return fail(e);
          fs.fsync(dfd, (e2) => {
            fs.close(dfd, () => {});
            e2 ? fail(e2) : ok();
          });
        })
      );
      this.#adopt(path, index);
    } catch (e) {
      // (a closed descriptor's number may belong to another file by now)
      this.#failed(open ? fd : undefined, e);
    }
    this.#set.compactIfDue();
  }

  /**
   * {@linkcode finish}, synchronous and without the merge check that
   * follows it (for merges); returns whether a pack was published (an
   * empty one is not).
   */
  publish(): boolean {
    const fd = this.#close();
    if (fd === undefined) return false;
    let open = true;
    try {
      const index = this.#seal(fd);
      fs.fsyncSync(fd);
      open = false;
      fs.closeSync(fd);
      const path = this.#rename();
      fsyncDir(this.#set.dir);
      this.#adopt(path, index);
    } catch (e) {
      this.#failed(open ? fd : undefined, e);
    }
    return true;
  }

  /** Ends writing; the open file, or `undefined` if nothing was written. */
  #close(): number | undefined {
    if (this.#state !== "open") return undefined;
    this.#state = "done";
    const fd = this.#fd;
    this.#fd = undefined;
    return fd;
  }

  /** Appends the index and the trailer and writes out the buffer. */
  #seal(fd: number): Uint8Array {
    const indexAt = this.#pos;
    const index = new Uint8Array(this.#entries.length * ENTRY_SIZE);
    this.#entries.forEach((e, i) => index.set(e, i * ENTRY_SIZE));
    const nums = new Uint8Array(16);
    const dv = new DataView(nums.buffer);
    dv.setBigUint64(0, BigInt(this.#entries.length), true);
    dv.setBigUint64(8, BigInt(indexAt), true);
    const sum = createBlake3().update(index).update(nums).digest();
    this.#fd = fd; // (#append and #flush write through it)
    this.#append(index);
    this.#append(nums);
    this.#append(sum);
    this.#append(END_MAGIC);
    this.#flush();
    this.#fd = undefined;
    return index;
  }

  /** Renames the durable temporary file into the packs directory; its path. */
  #rename(): string {
    const path = join(this.#set.dir, `${randomHex()}${randomHex()}.pack`);
    fs.mkdirSync(this.#set.dir, { recursive: true });
    fs.renameSync(this.#tmpPath, path);
    return path;
  }

  /** Makes the published pack's records visible to this process. */
  #adopt(path: string, index: Uint8Array): void {
    this.#set.published(path, PackFile.written(path, index, this.#pos));
    this.#entries = [];
    this.#own.clear();
  }

  /** Cleans up after a failed publication (`fd`: still open) and throws. */
  #failed(fd: number | undefined, e: unknown): never {
    try {
      if (fd !== undefined) fs.closeSync(fd);
    } catch { /* already closed */ }
    fs.rmSync(this.#tmpPath, { force: true });
    throw e instanceof Error && e.name === "ConnectError"
      ? e
      : storageError(`cannot publish pack ${this.#tmpPath}`, e);
  }

  /** Drops the pack (its records never become visible). */
  abort(): Promise<void> {
    if (this.#state === "open") {
      this.#state = "done";
      if (this.#fd !== undefined) {
        try {
          fs.closeSync(this.#fd);
        } catch { /* already closed */ }
        this.#fd = undefined;
        fs.rmSync(this.#tmpPath, { force: true });
      }
      this.#entries = [];
      this.#own.clear();
    }
    return Promise.resolve();
  }
}
