/**
 * Random-access reads of castore blobs for the FUSE file system: a blob is
 * cut into segments (its chunks as the BlobService lists them, or fixed
 * 1 MiB blocks when the service has no finer granularity); missing segments
 * are fetched with one ranged `read` per contiguous run and kept in a
 * bounded LRU cache of decompressed bytes, so the kernel's many small READs
 * of one region cost one backend read. A sequential reader gets the next
 * window prefetched.
 *
 * @module
 */
import type { BlobService } from "../castore/blob_service.ts";
import { digestToHex } from "../castore/digest.ts";

/** Segment size for blobs without chunks. */
export const BLOCK_SIZE = 1 << 20;
/** Longest single ranged read. */
const MAX_SPAN = 1 << 20;
/** Most whole-file prefetches running at once. */
const MAX_PREFETCHES = 8;
/** How far ahead of a read to prefetch. */
const PREFETCH = 8 << 20;

/** A piece of a blob, cached as a unit. */
interface Segment {
  key: string;
  offset: number;
  size: number;
}

/** A blob's segments, ordered by offset. */
interface Layout {
  segments: Segment[];
  size: number;
}

/** Thrown when a blob cannot be read (missing, short, corrupt). */
export class BlobReadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BlobReadError";
  }
}

/** A byte-bounded LRU map (insertion order of a Map is the recency order). */
class LruBytes {
  #map = new Map<string, Uint8Array>();
  #bytes = 0;
  constructor(readonly capacity: number) {}
  get(key: string): Uint8Array | undefined {
    const v = this.#map.get(key);
    if (v !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, v);
    }
    return v;
  }
  set(key: string, value: Uint8Array): void {
    const old = this.#map.get(key);
    if (old) {
      this.#bytes -= old.byteLength;
      this.#map.delete(key);
    }
    this.#map.set(key, value);
    this.#bytes += value.byteLength;
    for (const [k, v] of this.#map) {
      if (this.#bytes <= this.capacity || k === key) break;
      this.#map.delete(k);
      this.#bytes -= v.byteLength;
    }
  }
  get bytes(): number {
    return this.#bytes;
  }
}

/** Reads byte ranges of blobs through a shared segment cache. */
export class BlobReader {
  #blobs: BlobService;
  #cache: LruBytes;
  #layouts = new Map<string, Promise<Layout>>();
  #inflight = new Map<string, Promise<Uint8Array>>();
  #prefetches = 0;
  #prefetchWindow: number;

  /** `cacheBytes` bounds the decompressed data kept in memory. */
  constructor(blobs: BlobService, cacheBytes = 128 << 20) {
    this.#blobs = blobs;
    this.#cache = new LruBytes(cacheBytes);
    // Several sequential readers must not evict each other's prefetched data.
    this.#prefetchWindow = Math.min(PREFETCH, Math.floor(cacheBytes / 16));
  }

  /** Bytes currently cached. */
  get cachedBytes(): number {
    return this.#cache.bytes;
  }

  /** Forgets what is known about a blob's layout (on the last close of a file). */
  dropLayout(digest: Uint8Array): void {
    this.#layouts.delete(digestToHex(digest));
  }

  /**
   * Up to `length` bytes of the blob (`size` bytes long, as its entry says)
   * at `offset`. Throws {@linkcode BlobReadError} if the blob is missing or
   * does not match; errors of the service pass through.
   */
  async read(
    digest: Uint8Array,
    size: number,
    offset: number,
    length: number,
    readAhead = true,
  ): Promise<Uint8Array> {
    const end = Math.min(size, offset + length);
    if (offset >= end) return new Uint8Array(0);
    const layout = await this.#layout(digest, size);
    const segs = layout.segments;
    const first = findSegment(segs, offset);
    let last = first;
    while (last + 1 < segs.length && segs[last + 1].offset < end) last++;
    const parts = this.#fetch(digest, segs, first, last);
    // Prefetch the window after this read for sequential readers.
    if (readAhead && end < size) {
      const p = last + 1;
      let q = p;
      while (
        q + 1 < segs.length && segs[q + 1].offset < end + this.#prefetchWindow
      ) q++;
      if (p < segs.length) {
        this.#fetch(digest, segs, p, q).forEach((x) => x.catch(() => {}));
      }
    }
    const datas = await Promise.all(parts);
    if (first === last) {
      const s = segs[first];
      return datas[0].subarray(offset - s.offset, end - s.offset);
    }
    const out = new Uint8Array(end - offset);
    for (let i = first; i <= last; i++) {
      const s = segs[i];
      const from = Math.max(offset, s.offset);
      const to = Math.min(end, s.offset + s.size);
      out.set(
        datas[i - first].subarray(from - s.offset, to - s.offset),
        from - offset,
      );
    }
    return out;
  }

  /**
   * Starts fetching the start of a blob (up to {@linkcode BLOCK_SIZE}) into
   * the cache, unless cached, already coming, or too many prefetches run.
   */
  prefetch(digest: Uint8Array, size: number): void {
    if (this.#prefetches >= MAX_PREFETCHES) return;
    this.#prefetches++;
    this.read(digest, size, 0, Math.min(size, BLOCK_SIZE), false)
      .catch(() => {})
      .finally(() => this.#prefetches--);
  }

  #layout(digest: Uint8Array, size: number): Promise<Layout> {
    const hex = digestToHex(digest);
    let p = this.#layouts.get(hex);
    if (!p) {
      p = (async () => {
        if (size <= BLOCK_SIZE) {
          // One segment whatever the chunking: skip asking for chunks.
          return { segments: [{ key: `${hex}:0`, offset: 0, size }], size };
        }
        const chunks = await this.#blobs.chunks(digest);
        if (chunks === undefined) {
          throw new BlobReadError(`blob ${hex} is missing`);
        }
        const segments: Segment[] = [];
        if (chunks.length > 1) {
          let off = 0;
          for (const c of chunks) {
            segments.push({
              key: digestToHex(c.digest),
              offset: off,
              size: c.size,
            });
            off += c.size;
          }
          if (off !== size) {
            throw new BlobReadError(
              `blob ${hex}: chunks add up to ${off} bytes, expected ${size}`,
            );
          }
        } else {
          for (let off = 0; off < size; off += BLOCK_SIZE) {
            segments.push({
              key: `${hex}:${off / BLOCK_SIZE}`,
              offset: off,
              size: Math.min(BLOCK_SIZE, size - off),
            });
          }
        }
        return { segments, size };
      })();
      p.catch(() => this.#layouts.delete(hex));
      this.#layouts.set(hex, p);
      // The layout map only needs to cover open files; keep it bounded.
      if (this.#layouts.size > 4096) {
        const oldest = this.#layouts.keys().next().value;
        if (oldest !== undefined) this.#layouts.delete(oldest);
      }
    }
    return p;
  }

  /** Promises for segments first..last, starting backend reads for missing runs. */
  #fetch(
    digest: Uint8Array,
    segs: Segment[],
    first: number,
    last: number,
  ): Promise<Uint8Array>[] {
    const out: Promise<Uint8Array>[] = [];
    let runStart = -1;
    const flush = (upTo: number) => {
      if (runStart < 0) return;
      this.#fetchRun(digest, segs, runStart, upTo);
      for (let j = runStart; j <= upTo; j++) {
        out[j - first] = this.#inflight.get(segs[j].key)!;
      }
      runStart = -1;
    };
    for (let i = first; i <= last; i++) {
      const s = segs[i];
      const cached = this.#cache.get(s.key);
      if (cached) {
        flush(i - 1);
        out[i - first] = Promise.resolve(cached);
        continue;
      }
      const inflight = this.#inflight.get(s.key);
      if (inflight) {
        flush(i - 1);
        out[i - first] = inflight;
        continue;
      }
      if (runStart < 0) runStart = i;
      else if (s.offset + s.size - segs[runStart].offset > MAX_SPAN) {
        flush(i - 1);
        runStart = i;
      }
    }
    flush(last);
    return out;
  }

  /** One ranged read for segments a..b; registers a promise per segment. */
  #fetchRun(digest: Uint8Array, segs: Segment[], a: number, b: number): void {
    const start = segs[a].offset;
    const end = segs[b].offset + segs[b].size;
    const all = this.#readRange(digest, start, end - start);
    for (let i = a; i <= b; i++) {
      const s = segs[i];
      const p = all.then(
        (buf) => buf.subarray(s.offset - start, s.offset - start + s.size),
        // A bad chunk fails the whole run: retry each segment on its own
        // so that only the bad one fails.
        (e) =>
          a === b
            ? Promise.reject(e)
            : this.#readRange(digest, s.offset, s.size),
      ).then((piece) => {
        this.#cache.set(s.key, piece);
        return piece;
      });
      this.#inflight.set(s.key, p);
      p.catch(() => {}).finally(() => {
        if (this.#inflight.get(s.key) === p) this.#inflight.delete(s.key);
      });
    }
  }

  async #readRange(
    digest: Uint8Array,
    offset: number,
    length: number,
  ): Promise<Uint8Array> {
    const stream = await this.#blobs.read(digest, { offset, length });
    if (!stream) {
      throw new BlobReadError(`blob ${digestToHex(digest)} is missing`);
    }
    const buf = new Uint8Array(length);
    let pos = 0;
    for await (const piece of stream) {
      if (pos + piece.byteLength > length) {
        throw new BlobReadError(
          `blob ${digestToHex(digest)}: read returned too many bytes`,
        );
      }
      buf.set(piece, pos);
      pos += piece.byteLength;
    }
    if (pos !== length) {
      throw new BlobReadError(
        `blob ${
          digestToHex(digest)
        }: got ${pos} of ${length} bytes at offset ${offset}`,
      );
    }
    return buf;
  }
}

/** Index of the segment containing `offset` (binary search). */
function findSegment(segs: Segment[], offset: number): number {
  let lo = 0, hi = segs.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (segs[mid].offset <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
