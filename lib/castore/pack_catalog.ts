/**
 * The catalog of a packs directory: every record of the packs it names,
 * sorted by digest, in one file, so that a process opening a big store finds
 * records by reading a few KiB of it instead of loading and hashing every
 * pack's index (a 1 TB store at 256 KiB chunks has ~4M records: ~2 s and
 * ~250 MiB per process, measured with synthetic packs).
 *
 * Layout of `catalog` (all integers little-endian):
 * - magic `SNIXPC1\n`, the header length (u32), the number of packs (u32)
 *   and of entries (u64);
 * - per pack: its file name's length (u16) and bytes (UTF-8), its size in
 *   bytes (u64) and its record count (u32);
 * - the fan-out: 65,537 u32, entry `i` = how many entries have a digest
 *   whose first two bytes are below `i`;
 * - the BLAKE3 of everything above (up to here);
 * - the entries, {@linkcode ENTRY_SIZE} bytes each, sorted by digest:
 *   digest (32), offset (u64), stored length (u32), raw size (u32), kind
 *   (u8), 3 zero bytes, pack number (u32, in the list above), entry number
 *   in that pack's own index (u32), 4 zero bytes;
 * - magic `SNIXPCE\n`.
 *
 * The head is checked when the catalog is opened; entries are not (that
 * would mean reading the whole file): a damaged entry can only point to
 * wrong bytes, which fail the verification every read does, or hide a
 * record. A pack the catalog names counts only while a pack of that name
 * and size is in the directory.
 *
 * Written here: the pack format is ours (./pack.ts).
 *
 * @module
 */
import * as fs from "node:fs";
import { join } from "node:path";
import { createBlake3, DIGEST_LENGTH, digestEquals } from "./digest.ts";
import { randomHex, storageError } from "./atomic_file.ts";
import { fsyncDir, preadAtLeast, preadExact, writeAll } from "./file_io.ts";

/** The catalog's file name in a packs directory. */
export const CATALOG_FILE = "catalog";
/** Bytes per catalog entry. */
export const ENTRY_SIZE = 64;
/** Bytes per entry of a pack's own index (see ./pack.ts). */
const PACK_ENTRY_SIZE = 56;
const MAGIC = new TextEncoder().encode("SNIXPC1\n");
const END_MAGIC = new TextEncoder().encode("SNIXPCE\n");
const BUCKETS = 65536;

/** A pack the catalog covers. */
export interface CatalogPack {
  /** File name in the packs directory. */
  name: string;
  /** Its size in bytes when cataloged. */
  size: number;
  /** Its record count. */
  count: number;
}

/** One record as the catalog has it. */
export interface CatalogEntry {
  /** Number of its pack in {@linkcode PackCatalog.packs}. */
  pack: number;
  /** Entry number in that pack's own index. */
  index: number;
  offset: number;
  length: number;
  rawSize: number;
  kind: number;
}

/** A pack to catalog: its name, size and its own index (56-byte entries). */
export interface PackToCatalog {
  name: string;
  size: number;
  index: Uint8Array;
}

/** An open catalog; {@linkcode lookup} reads from the file as needed. */
export class PackCatalog {
  /** The packs it covers, by number. */
  readonly packs: readonly CatalogPack[];
  /** Its entries. */
  readonly count: number;
  /** Identity of the file (to notice a newer catalog replacing it). */
  readonly ino: number;
  readonly #fd: number;
  readonly #fanout: Uint32Array;
  readonly #entriesAt: number;
  #buf = new Uint8Array(64 * ENTRY_SIZE);

  private constructor(
    fd: number,
    ino: number,
    packs: CatalogPack[],
    count: number,
    fanout: Uint32Array,
    entriesAt: number,
  ) {
    this.#fd = fd;
    this.ino = ino;
    this.packs = packs;
    this.count = count;
    this.#fanout = fanout;
    this.#entriesAt = entriesAt;
  }

  /**
   * Opens the catalog in `dir`: `undefined` if there is none; throws an
   * Error naming the file if it is damaged.
   */
  static open(dir: string): PackCatalog | undefined {
    const path = join(dir, CATALOG_FILE);
    let fd: number;
    try {
      fd = fs.openSync(path, "r");
    } catch (e) {
      if ((e as { code?: string }).code === "ENOENT") return undefined;
      throw storageError(`cannot open ${path}`, e);
    }
    try {
      return PackCatalog.#read(fd, path);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  static #read(fd: number, path: string): PackCatalog {
    const bad = (why: string) =>
      new Error(`pack catalog ${path} is damaged: ${why}`);
    const st = fs.fstatSync(fd);
    const size = st.size;
    const fixed = MAGIC.length + 4 + 4 + 8;
    if (size < fixed + END_MAGIC.length) throw bad("too short");
    const start = preadExact(fd, 0, fixed);
    if (!digestEquals(start.subarray(0, MAGIC.length), MAGIC)) {
      throw bad("not a catalog");
    }
    const sv = new DataView(start.buffer);
    const headLength = sv.getUint32(8, true);
    const packCount = sv.getUint32(12, true);
    const count = Number(sv.getBigUint64(16, true));
    const fanoutAt = headLength;
    const sumAt = fanoutAt + 4 * (BUCKETS + 1);
    const entriesAt = sumAt + DIGEST_LENGTH;
    if (
      headLength < fixed ||
      entriesAt + count * ENTRY_SIZE + END_MAGIC.length !== size
    ) throw bad("sizes do not add up");
    const head = preadExact(fd, 0, entriesAt);
    const sum = createBlake3().update(head.subarray(0, sumAt)).digest();
    if (!digestEquals(sum, head.subarray(sumAt, entriesAt))) {
      throw bad("checksum mismatch");
    }
    if (
      !digestEquals(
        preadExact(fd, size - END_MAGIC.length, END_MAGIC.length),
        END_MAGIC,
      )
    ) throw bad("no end marker");
    const hv = new DataView(head.buffer);
    const packs: CatalogPack[] = [];
    const dec = new TextDecoder();
    let at = fixed;
    let total = 0;
    for (let i = 0; i < packCount; i++) {
      if (at + 2 > headLength) throw bad("pack list out of place");
      const n = hv.getUint16(at, true);
      if (at + 2 + n + 12 > headLength) throw bad("pack list out of place");
      const name = dec.decode(head.subarray(at + 2, at + 2 + n));
      at += 2 + n;
      const psize = Number(hv.getBigUint64(at, true));
      const pcount = hv.getUint32(at + 8, true);
      at += 12;
      packs.push({ name, size: psize, count: pcount });
      total += pcount;
    }
    if (total !== count) throw bad("pack counts do not add up");
    const fanout = new Uint32Array(BUCKETS + 1);
    for (let i = 0; i <= BUCKETS; i++) {
      fanout[i] = hv.getUint32(fanoutAt + 4 * i, true);
      if (i > 0 && fanout[i] < fanout[i - 1]) throw bad("fan-out decreases");
    }
    if (fanout[0] !== 0 || fanout[BUCKETS] !== count) {
      throw bad("fan-out does not cover the entries");
    }
    return new PackCatalog(fd, st.ino, packs, count, fanout, entriesAt);
  }

  /**
   * The entries for `digest`, in catalog order, that `usable` accepts (by
   * pack number); the first one is returned.
   */
  lookup(
    digest: Uint8Array,
    usable: (pack: number) => boolean,
  ): CatalogEntry | undefined {
    if (digest.length !== DIGEST_LENGTH) return undefined;
    const b = digest[0] << 8 | digest[1];
    const lo = this.#fanout[b], hi = this.#fanout[b + 1];
    const n = hi - lo;
    if (n === 0) return undefined;
    if (this.#buf.length < n * ENTRY_SIZE) {
      this.#buf = new Uint8Array(n * ENTRY_SIZE);
    }
    const buf = this.#buf.subarray(0, n * ENTRY_SIZE);
    preadAtLeast(this.#fd, buf, buf.length, this.#entriesAt + lo * ENTRY_SIZE);
    // The first entry not below `digest`.
    let l = 0, h = n;
    while (l < h) {
      const m = (l + h) >> 1;
      if (compareAt(buf, m * ENTRY_SIZE, digest) < 0) l = m + 1;
      else h = m;
    }
    const v = new DataView(buf.buffer, buf.byteOffset, buf.length);
    for (
      let i = l;
      i < n && compareAt(buf, i * ENTRY_SIZE, digest) === 0;
      i++
    ) {
      const e = i * ENTRY_SIZE;
      const pack = v.getUint32(e + 52, true);
      if (!usable(pack)) continue;
      return {
        pack,
        index: v.getUint32(e + 56, true),
        offset: v.getUint32(e + 32, true) +
          v.getUint32(e + 36, true) * 2 ** 32,
        length: v.getUint32(e + 40, true),
        rawSize: v.getUint32(e + 44, true),
        kind: v.getUint8(e + 48),
      };
    }
    return undefined;
  }

  /**
   * Every entry in order, read in blocks: its pack and entry numbers and a
   * view of its first 49 bytes (digest, offset, length, raw size, kind: as
   * in the pack's own index), valid until the next step.
   */
  *scan(): Iterable<{ pack: number; index: number; entry: Uint8Array }> {
    const block = new Uint8Array(16384 * ENTRY_SIZE);
    const v = new DataView(block.buffer);
    for (let done = 0; done < this.count;) {
      const n = Math.min(16384, this.count - done);
      const part = block.subarray(0, n * ENTRY_SIZE);
      preadAtLeast(
        this.#fd,
        part,
        part.length,
        this.#entriesAt + done * ENTRY_SIZE,
      );
      for (let i = 0, e = 0; i < n; i++, e += ENTRY_SIZE) {
        yield {
          pack: v.getUint32(e + 52, true),
          index: v.getUint32(e + 56, true),
          entry: block.subarray(e, e + 49),
        };
      }
      done += n;
    }
  }

  /** Closes the file. */
  close(): void {
    try {
      fs.closeSync(this.#fd);
    } catch { /* nothing to do */ }
  }
}

/**
 * Writes the catalog of `packs` into `dir` (through a temporary file in
 * `tmpDir`, fsynced, renamed over the old one). Memory: 8 bytes a record
 * besides the packs' own indexes.
 */
export function writeCatalog(
  dir: string,
  tmpDir: string,
  packs: PackToCatalog[],
): void {
  let count = 0;
  for (const p of packs) count += p.index.length / PACK_ENTRY_SIZE;
  // Records grouped by the first two bytes of their digest (counting sort),
  // then each group sorted by digest.
  const fanout = new Uint32Array(BUCKETS + 1);
  for (const p of packs) {
    for (let e = 0; e < p.index.length; e += PACK_ENTRY_SIZE) {
      fanout[(p.index[e] << 8 | p.index[e + 1]) + 1]++;
    }
  }
  for (let i = 1; i <= BUCKETS; i++) fanout[i] += fanout[i - 1];
  const next = fanout.slice(0, BUCKETS);
  const refPack = new Uint32Array(count);
  const refEntry = new Uint32Array(count);
  packs.forEach((p, pi) => {
    for (let e = 0, i = 0; e < p.index.length; e += PACK_ENTRY_SIZE, i++) {
      const at = next[p.index[e] << 8 | p.index[e + 1]]++;
      refPack[at] = pi;
      refEntry[at] = i;
    }
  });
  const enc = new TextEncoder();
  const names = packs.map((p) => enc.encode(p.name));
  const fixed = MAGIC.length + 4 + 4 + 8;
  const headLength = fixed + names.reduce((n, b) => n + 2 + b.length + 12, 0);
  const head = new Uint8Array(headLength + 4 * (BUCKETS + 1) + DIGEST_LENGTH);
  const hv = new DataView(head.buffer);
  head.set(MAGIC, 0);
  hv.setUint32(8, headLength, true);
  hv.setUint32(12, packs.length, true);
  hv.setBigUint64(16, BigInt(count), true);
  let at = fixed;
  packs.forEach((p, i) => {
    hv.setUint16(at, names[i].length, true);
    head.set(names[i], at + 2);
    at += 2 + names[i].length;
    hv.setBigUint64(at, BigInt(p.size), true);
    hv.setUint32(at + 8, p.index.length / PACK_ENTRY_SIZE, true);
    at += 12;
  });
  for (let i = 0; i <= BUCKETS; i++) {
    hv.setUint32(headLength + 4 * i, fanout[i], true);
  }
  const sumAt = headLength + 4 * (BUCKETS + 1);
  head.set(createBlake3().update(head.subarray(0, sumAt)).digest(), sumAt);

  fs.mkdirSync(tmpDir, { recursive: true });
  const tmp = join(tmpDir, `catalog-${randomHex()}.tmp`);
  const fd = fs.openSync(tmp, "w", 0o644);
  try {
    writeAll(fd, head);
    const out = new Uint8Array(1 << 20);
    const ov = new DataView(out.buffer);
    let used = 0;
    const order: number[] = [];
    for (let b = 0; b < BUCKETS; b++) {
      const lo = fanout[b], hi = fanout[b + 1];
      order.length = 0;
      for (let i = lo; i < hi; i++) order.push(i);
      order.sort((x, y) =>
        compareEntries(
          packs[refPack[x]].index,
          refEntry[x] * PACK_ENTRY_SIZE,
          packs[refPack[y]].index,
          refEntry[y] * PACK_ENTRY_SIZE,
        )
      );
      for (const r of order) {
        if (used + ENTRY_SIZE > out.length) {
          writeAll(fd, out.subarray(0, used));
          used = 0;
        }
        const src = packs[refPack[r]].index;
        const e = refEntry[r] * PACK_ENTRY_SIZE;
        // digest, offset, length, raw size, kind as in the pack's index
        out.set(src.subarray(e, e + 49), used);
        out.fill(0, used + 49, used + ENTRY_SIZE);
        ov.setUint32(used + 52, refPack[r], true);
        ov.setUint32(used + 56, refEntry[r], true);
        used += ENTRY_SIZE;
      }
    }
    out.set(END_MAGIC, used);
    writeAll(fd, out.subarray(0, used + END_MAGIC.length));
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw storageError(`cannot write the pack catalog of ${dir}`, e);
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, join(dir, CATALOG_FILE));
  fsyncDir(dir);
}

function compareEntries(
  a: Uint8Array,
  ao: number,
  b: Uint8Array,
  bo: number,
): number {
  for (let i = 0; i < DIGEST_LENGTH; i++) {
    const d = a[ao + i] - b[bo + i];
    if (d !== 0) return d;
  }
  return 0;
}

function compareAt(buf: Uint8Array, at: number, digest: Uint8Array): number {
  return compareEntries(buf, at, digest, 0);
}
