/**
 * Random-access reads of castore blobs for the FUSE file system.
 *
 * A blob is cut into segments: its chunks as the BlobService lists them, or
 * fixed 1 MiB blocks when the service has no finer granularity. Segments
 * live in a bounded LRU cache of decompressed bytes, so the kernel's many
 * READs of one region cost one backend read.
 *
 * Missing segments come from a *sequential stream*: one ranged `read` from
 * the first missing segment to the end of the blob, consumed only as far as
 * readers want (plus a prefetch window) and parked otherwise. A sequential
 * reader thus costs one backend read per file (the backend pipelines its
 * chunk loads, and a remote one needs a single RPC), and the next READ finds
 * its data already arriving. A READ outside every stream's reach starts a
 * new one (a few per blob, a bounded number overall, least recently used
 * parked ones are cancelled). If a stream fails, the segment it failed on
 * fails; the other segments it owed are fetched one by one, so one bad
 * chunk fails only the reads that touch it.
 *
 * @module
 */
import type { BlobService } from "../castore/blob_service.ts";
import { digestToHex } from "../castore/digest.ts";
import { concatBytes } from "../nix/bytes.ts";

/** Segment size for blobs without chunks. */
export const BLOCK_SIZE = 1 << 20;
/** How far beyond the last wanted byte a stream may read ahead. */
const PREFETCH = 8 << 20;
/** A stream serves a READ starting at most this far beyond its position. */
const REACH = 16 << 20;
/** Streams per blob, and overall. */
const STREAMS_PER_BLOB = 4;
const MAX_STREAMS = 64;
/** Most whole-file prefetches running at once. */
const MAX_PREFETCHES = 32;

/** A piece of a blob, cached as a unit. */
interface Segment {
  key: string;
  offset: number;
  size: number;
}

/** A blob's segments, ordered by offset. */
interface Layout {
  hex: string;
  digest: Uint8Array;
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

interface Waiter {
  promise: Promise<Uint8Array>;
  resolve: (b: Uint8Array) => void;
  reject: (e: unknown) => void;
}

function waiter(): Waiter {
  let resolve!: (b: Uint8Array) => void, reject!: (e: unknown) => void;
  const promise = new Promise<Uint8Array>((a, b) => {
    resolve = a;
    reject = b;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** One ranged read of a blob, consumed segment by segment. */
interface SeqStream {
  layout: Layout;
  /** Index of the segment being filled. */
  seg: number;
  /** Byte offset in the blob of the next byte the stream delivers. */
  pos: number;
  /** The stream may read up to this offset before parking. */
  wantedUpTo: number;
  /** Segments someone waits for that this stream is to deliver. */
  owed: Set<number>;
  buf?: Uint8Array;
  filled: number;
  wake?: () => void;
  dead: boolean;
  lastUsed: number;
  cancel?: () => void;
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
  /** Segments on their way, by key. */
  #waiters = new Map<string, Waiter>();
  #streams = new Map<string, SeqStream[]>();
  #streamCount = 0;
  #prefetches = 0;
  #prefetchWindow: number;
  #active = 0;

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

  /** Backend streams currently open. */
  get openStreams(): number {
    return this.#streamCount;
  }

  /** Backend reads under way (streams not parked, single reads). */
  get active(): number {
    return this.#active;
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
    const parts = await this.readParts(
      digest,
      size,
      offset,
      length,
      readAhead,
    );
    return concatBytes(parts);
  }

  /**
   * {@linkcode read} as views of the cached segments, in order, without
   * copying them together (a reply can go out with one writev). At least
   * one part; an empty read is one empty part.
   */
  async readParts(
    digest: Uint8Array,
    size: number,
    offset: number,
    length: number,
    readAhead = true,
  ): Promise<Uint8Array[]> {
    const end = Math.min(size, offset + length);
    if (offset >= end) return [new Uint8Array(0)];
    const layout = await this.#layout(digest, size);
    const segs = layout.segments;
    const first = findSegment(segs, offset);
    let last = first;
    while (last + 1 < segs.length && segs[last + 1].offset < end) last++;
    const datas = await Promise.all(this.#want(
      layout,
      first,
      last,
      readAhead ? this.#prefetchWindow : 0,
    ));
    return datas.map((d, k) => {
      const s = segs[first + k];
      const from = Math.max(offset, s.offset);
      const to = Math.min(end, s.offset + s.size);
      return d.subarray(from - s.offset, to - s.offset);
    });
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

  /** Promises for segments first..last; missing ones are requested from a stream. */
  #want(
    layout: Layout,
    first: number,
    last: number,
    ahead: number,
  ): Promise<Uint8Array>[] {
    const segs = layout.segments;
    const out: Promise<Uint8Array>[] = [];
    const missing: number[] = [];
    for (let i = first; i <= last; i++) {
      const key = segs[i].key;
      const cached = this.#cache.get(key);
      if (cached) {
        out.push(Promise.resolve(cached));
        continue;
      }
      let w = this.#waiters.get(key);
      if (!w) {
        w = waiter();
        this.#waiters.set(key, w);
        missing.push(i);
      }
      out.push(w.promise);
    }
    const lastEnd = segs[last].offset + segs[last].size;
    const st = missing.length > 0
      ? this.#streamFor(layout, missing[0])
      : this.#findStream(layout, first);
    if (st) {
      for (const i of missing) st.owed.add(i);
      st.wantedUpTo = Math.max(
        st.wantedUpTo,
        Math.min(layout.size, lastEnd + ahead),
      );
      st.lastUsed = performance.now();
      st.wake?.();
    }
    return out;
  }

  /** A live stream that will reach segment `i` soon, if any. */
  #findStream(layout: Layout, i: number): SeqStream | undefined {
    const off = layout.segments[i].offset;
    for (const st of this.#streams.get(layout.hex) ?? []) {
      if (!st.dead && st.seg <= i && off < st.pos + REACH) return st;
    }
    return undefined;
  }

  #streamFor(layout: Layout, i: number): SeqStream {
    const found = this.#findStream(layout, i);
    if (found) return found;
    const list = this.#streams.get(layout.hex) ?? [];
    if (list.length >= STREAMS_PER_BLOB) this.#evictParked(list);
    if (this.#streamCount >= MAX_STREAMS) {
      this.#evictParked([...this.#streams.values()].flat());
    }
    const st: SeqStream = {
      layout,
      seg: i,
      pos: layout.segments[i].offset,
      wantedUpTo: 0,
      owed: new Set(),
      filled: 0,
      dead: false,
      lastUsed: performance.now(),
    };
    list.push(st);
    this.#streams.set(layout.hex, list);
    this.#streamCount++;
    this.#pump(st);
    return st;
  }

  /** Cancels the least recently used stream of `list` that owes nothing. */
  #evictParked(list: SeqStream[]): void {
    let victim: SeqStream | undefined;
    for (const st of list) {
      if (
        !st.dead && st.owed.size === 0 &&
        (!victim || st.lastUsed < victim.lastUsed)
      ) victim = st;
    }
    if (victim) this.#kill(victim);
  }

  #kill(st: SeqStream): void {
    if (st.dead) return;
    st.dead = true;
    st.cancel?.();
    st.wake?.();
  }

  #remove(st: SeqStream): void {
    st.dead = true;
    const list = this.#streams.get(st.layout.hex);
    const i = list?.indexOf(st) ?? -1;
    if (list && i >= 0) {
      list.splice(i, 1);
      this.#streamCount--;
      if (list.length === 0) this.#streams.delete(st.layout.hex);
    }
  }

  #deliver(layout: Layout, i: number, data: Uint8Array): void {
    const key = layout.segments[i].key;
    this.#cache.set(key, data);
    const w = this.#waiters.get(key);
    if (w) {
      this.#waiters.delete(key);
      w.resolve(data);
    }
  }

  #fail(layout: Layout, i: number, e: unknown): void {
    const key = layout.segments[i].key;
    const w = this.#waiters.get(key);
    if (w) {
      this.#waiters.delete(key);
      w.reject(e);
    }
  }

  async #pump(st: SeqStream): Promise<void> {
    const { layout } = st;
    const segs = layout.segments;
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    this.#active++;
    try {
      const stream = await this.#blobs.read(layout.digest, {
        offset: st.pos,
        length: layout.size - st.pos,
        blobSize: layout.size,
      });
      if (!stream) throw new BlobReadError(`blob ${layout.hex} is missing`);
      reader = stream.getReader();
      const r = reader;
      st.cancel = () => void r.cancel().catch(() => {});
      while (st.seg < segs.length) {
        if (st.dead) return;
        if (st.pos >= st.wantedUpTo) {
          this.#active--; // parked
          await new Promise<void>((wake) => st.wake = wake);
          this.#active++;
          st.wake = undefined;
          continue;
        }
        const { value, done } = await r.read();
        if (done) {
          throw new BlobReadError(
            `blob ${layout.hex}: stream ended at byte ${st.pos} of ${layout.size}`,
          );
        }
        let p = 0;
        while (p < value.byteLength) {
          if (st.seg >= segs.length) {
            throw new BlobReadError(
              `blob ${layout.hex}: read returned too many bytes`,
            );
          }
          const s = segs[st.seg];
          const need = s.size - st.filled;
          if (st.filled === 0 && value.byteLength - p >= s.size) {
            // A whole segment in one piece: keep a view, no copy.
            this.#complete(st, value.subarray(p, p + s.size));
            p += s.size;
            continue;
          }
          st.buf ??= new Uint8Array(s.size);
          const n = Math.min(need, value.byteLength - p);
          st.buf.set(value.subarray(p, p + n), st.filled);
          st.filled += n;
          p += n;
          if (st.filled === s.size) this.#complete(st, st.buf);
        }
      }
    } catch (e) {
      if (!st.dead || st.owed.size > 0) this.#broken(st, e);
    } finally {
      this.#active--;
      this.#remove(st);
      if (st.seg < segs.length) reader?.cancel().catch(() => {});
    }
  }

  #complete(st: SeqStream, data: Uint8Array): void {
    this.#deliver(st.layout, st.seg, data);
    st.owed.delete(st.seg);
    st.pos += data.byteLength;
    st.seg++;
    st.buf = undefined;
    st.filled = 0;
  }

  /** The stream failed at its current segment: fail that, refetch the rest it owed one by one. */
  #broken(st: SeqStream, e: unknown): void {
    const { layout } = st;
    st.dead = true;
    if (st.seg < layout.segments.length) this.#fail(layout, st.seg, e);
    for (const i of st.owed) {
      if (i === st.seg) continue;
      const s = layout.segments[i];
      if (!this.#waiters.has(s.key)) continue;
      this.#readRange(layout, s.offset, s.size).then(
        (data) => this.#deliver(layout, i, data),
        (err) => this.#fail(layout, i, err),
      );
    }
    st.owed.clear();
  }

  #layout(digest: Uint8Array, size: number): Promise<Layout> {
    const hex = digestToHex(digest);
    let p = this.#layouts.get(hex);
    if (!p) {
      p = (async () => {
        if (size <= BLOCK_SIZE) {
          // One segment whatever the chunking: skip asking for chunks.
          return {
            hex,
            digest,
            segments: [{ key: `${hex}:0`, offset: 0, size }],
            size,
          };
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
        return { hex, digest, segments, size };
      })();
      p.catch(() => this.#layouts.delete(hex));
      this.#layouts.set(hex, p);
      // The layout map only needs to cover files in use; keep it bounded.
      if (this.#layouts.size > 4096) {
        const oldest = this.#layouts.keys().next().value;
        if (oldest !== undefined) this.#layouts.delete(oldest);
      }
    }
    return p;
  }

  async #readRange(
    layout: Layout,
    offset: number,
    length: number,
  ): Promise<Uint8Array> {
    this.#active++;
    const buf = new Uint8Array(length);
    let pos = 0;
    try {
      const stream = await this.#blobs.read(layout.digest, {
        offset,
        length,
        blobSize: layout.size,
      });
      if (!stream) throw new BlobReadError(`blob ${layout.hex} is missing`);
      for await (const piece of stream) {
        if (pos + piece.byteLength > length) {
          throw new BlobReadError(
            `blob ${layout.hex}: read returned too many bytes`,
          );
        }
        buf.set(piece, pos);
        pos += piece.byteLength;
      }
    } finally {
      this.#active--;
    }
    if (pos !== length) {
      throw new BlobReadError(
        `blob ${layout.hex}: got ${pos} of ${length} bytes at offset ${offset}`,
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
