/**
 * Content-defined chunking with FastCDC (Xia et al., "FastCDC: a Fast and
 * Efficient Content-Defined Chunking Approach for Data Deduplication",
 * USENIX ATC 2016): a gear rolling hash, cut-point skipping below the
 * minimum size, and normalized chunking (a harder mask before the average
 * size, an easier one after it).
 *
 * Why our own: the only FastCDC package on npm
 * (`@dstanesc/wasm-chunking-fastcdc-node`, one release, Dec 2024) chunks a
 * whole in-memory buffer and loads its WebAssembly through CommonJS `fs`;
 * castore needs a streaming chunker (a 2 GiB blob must not be buffered) that
 * runs unchanged under Deno and Bun. The algorithm is ~60 lines.
 *
 * Parameters as snix's object store blob service uses them
 * (snix/castore/src/blobservice/object_store.rs): average 256 KiB, minimum
 * avg/2, maximum 2·avg. The gear table is generated from a fixed seed, so
 * boundaries are deterministic across runs, processes and runtimes (they are
 * not byte-identical to snix's Rust `fastcdc` crate, whose table differs;
 * that affects only dedup between the two implementations, never
 * correctness).
 *
 * @module
 */

/** Default average chunk size: 256 KiB. */
export const DEFAULT_AVG_CHUNK_SIZE = 256 * 1024;

/** Chunk size bounds derived from an average size. */
export interface ChunkerOptions {
  /** Average chunk size, a power of two between 256 bytes and 64 MiB. */
  avgSize?: number;
}

/** 256 pseudo-random 32-bit values (splitmix32 from a fixed seed). */
// Int32Array, not Uint32Array: the same bits (the rolling hash is taken
// mod 2^32 with `| 0` either way), but entries above 2^31 stay small
// integers, so the hot loop never leaves int32 arithmetic (measured ~1.6x).
const CHUNKER_GEAR_TABLE: Int32Array = (() => {
  const t = new Int32Array(256);
  let s = 0x5a17c0de;
  for (let i = 0; i < 256; i++) {
    s = (s + 0x9e3779b9) | 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    t[i] = z ^ (z >>> 16);
  }
  return t;
})();

/**
 * A streaming FastCDC chunker: feed bytes with {@linkcode push}, get finished
 * chunks back; {@linkcode finish} returns the last one. Holds at most one
 * maximum-size chunk of data.
 */
export class Chunker {
  // It refers to one module-level name, CHUNKER_GEAR_TABLE, on purpose:
  // the ingest worker runs this class from its source text (see
  // `chunkerSource`), and JavaScriptCore (Bun) ran the hot loop ~1.6x
  // slower with the table in a static or instance field.
  /** `bits` one-bits at the top of a 32-bit word (the gear hash's best-mixed bits). */
  static #topMask(bits: number): number {
    return (((1 << bits) - 1) << (32 - bits)) | 0;
  }

  /** Minimum chunk size (except for the last chunk). */
  readonly minSize: number;
  /** Average (target) chunk size. */
  readonly avgSize: number;
  /** Maximum chunk size. */
  readonly maxSize: number;
  #maskS: number;
  #maskL: number;
  #buf: Uint8Array;
  #len = 0;
  #scanned = 0;
  #h = 0;

  constructor(options: ChunkerOptions = {}) {
    const avg = options.avgSize ?? 256 * 1024; // DEFAULT_AVG_CHUNK_SIZE
    const bits = Math.log2(avg);
    if (!Number.isInteger(bits) || bits < 8 || bits > 26) {
      throw new RangeError(
        `chunker: average size ${avg} is not a power of two in 256..64Mi`,
      );
    }
    this.avgSize = avg;
    this.minSize = avg / 2;
    this.maxSize = avg * 2;
    // Normalization level 1: one bit harder before the average, one easier after.
    this.#maskS = Chunker.#topMask(bits + 1);
    this.#maskL = Chunker.#topMask(bits - 1);
    this.#buf = new Uint8Array(0);
  }

  /**
   * Adds bytes; returns the chunks completed by them (possibly none). The
   * returned arrays are owned by the caller; `data` is copied, not kept.
   */
  push(data: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    this.#feed(data, (c) => out.push(c.slice()));
    return out;
  }

  /**
   * Like {@linkcode push}, but hands each completed chunk to `fn` as a view
   * (of `data` or of the internal buffer) valid only during the call: no
   * copies, for callers that hash and compress a chunk right away.
   */
  pushEach(data: Uint8Array, fn: (chunk: Uint8Array) => void): void {
    this.#feed(data, fn);
  }

  // Bytes are scanned where they are; only the tail that does not end a
  // chunk yet is copied (and completed from the next input).
  #feed(data: Uint8Array, fn: (chunk: Uint8Array) => void): void {
    let p = 0;
    while (p < data.length) {
      if (this.#len > 0) {
        // Complete the carried chunk: its next bytes are scanned where they
        // are in `data` (chunk position k is data[p + k - before]; the scan
        // resumes at or after `before`, as the carried bytes were scanned
        // or lie below the minimum), and only the bytes up to the cut (or
        // all available ones, if none) are copied after the carried ones.
        const before = this.#len;
        const n = Math.min(this.maxSize - before, data.length - p);
        const cut = this.#findCut(data, p - before, before + n);
        const take = cut < 0 ? n : cut - before;
        this.#reserve(before + take);
        this.#buf.set(data.subarray(p, p + take), before);
        this.#len += take;
        if (cut < 0) return; // all of `data` is carried now
        fn(this.#buf.subarray(0, cut));
        // What follows the cut is still in `data`, scanned there.
        p += take;
        this.#len = 0;
        this.#scanned = 0;
        this.#h = 0;
        continue;
      }
      const cut = this.#findCut(data, p, data.length - p);
      if (cut < 0) {
        // Carry the tail; its scan state stays valid from its start.
        const rest = data.length - p;
        this.#reserve(rest);
        this.#buf.set(data.subarray(p), 0);
        this.#len = rest;
        return;
      }
      fn(data.subarray(p, p + cut));
      p += cut;
      this.#scanned = 0;
      this.#h = 0;
    }
  }

  /** Ends the input; returns the last chunk, if any bytes are left. */
  finish(): Uint8Array[] {
    if (this.#len === 0) return [];
    const last = this.#buf.subarray(0, this.#len);
    this.#buf = new Uint8Array(0);
    this.#len = 0;
    this.#scanned = 0;
    this.#h = 0;
    return [last];
  }

  /** Grows the buffer (small blobs never pay for a maximum-size one). */
  #reserve(n: number): void {
    if (n <= this.#buf.length) return;
    let size = Math.max(this.#buf.length * 2, 4096);
    while (size < n) size *= 2;
    const b = new Uint8Array(Math.min(size, this.maxSize));
    b.set(this.#buf.subarray(0, this.#len));
    this.#buf = b;
  }

  /**
   * Scans the chunk starting at `buf[base]` (`len` bytes available) for a
   * cut point, resuming where the last scan of this chunk stopped; returns
   * the chunk length or -1.
   */
  #findCut(buf: Uint8Array, base: number, len: number): number {
    let i = Math.max(this.#scanned, this.minSize);
    if (i >= len) return -1;
    let h = this.#h;
    const gear = CHUNKER_GEAR_TABLE;
    const mS = this.#maskS;
    const mL = this.#maskL;
    // Absolute positions in the loops: one index per byte.
    let j = base + i;
    const end1 = base + Math.min(len, this.avgSize);
    for (; j < end1; j++) {
      h = ((h << 1) + gear[buf[j]]) | 0;
      if ((h & mS) === 0) return j + 1 - base;
    }
    const end2 = base + Math.min(len, this.maxSize);
    for (; j < end2; j++) {
      h = ((h << 1) + gear[buf[j]]) | 0;
      if ((h & mL) === 0) return j + 1 - base;
    }
    i = j - base;
    if (i >= this.maxSize) return this.maxSize;
    this.#h = h;
    this.#scanned = i;
    return -1;
  }
}

/**
 * The source text of {@linkcode Chunker} as plain JavaScript, for a worker
 * started from source text (../runtime/ingest_worker.ts): the class and its
 * gear table (the one other name of this module it uses), or `undefined` if
 * a bundler renamed that. Evaluating the text defines the class under the
 * name {@linkcode chunkerClassName}.
 */
export function chunkerSource(): string | undefined {
  const text = Chunker.toString();
  // A bundler renames a module-level name only if another module has it.
  if (!text.includes("CHUNKER_GEAR_TABLE")) return undefined;
  return `const CHUNKER_GEAR_TABLE = new Int32Array([${CHUNKER_GEAR_TABLE}]);\n${text}`;
}

/** The class name {@linkcode chunkerSource} defines (a bundler may rename it). */
export const chunkerClassName: string = Chunker.name;

/** Chunks a whole array (for tests and small inputs). */
export function chunkAll(
  data: Uint8Array,
  options?: ChunkerOptions,
): Uint8Array[] {
  const c = new Chunker(options);
  return [...c.push(data), ...c.finish()];
}
