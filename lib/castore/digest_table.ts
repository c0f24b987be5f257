/**
 * A hash table from digests to record numbers that stores only the numbers:
 * 4 bytes a slot in one typed array, the digests themselves staying where
 * they already are (a pack's index in memory), read back through a callback
 * to confirm a hit.
 *
 * Why: the pack sets of a big store hold millions of records, and a JS
 * `Map` from a digest prefix to a record costs ~70 bytes and ~250-600 ns an
 * entry to build (measured: 4M entries, a 1 TB store at 256 KiB chunks,
 * took 2.5 s and 275 MiB under Deno, 1.1 s and 415 MiB under Bun), paid by
 * every process that opens the store. This table takes 8-16 bytes an entry
 * and a fraction of that time. Written here: no npm package offers an
 * open-addressing table over external keys.
 *
 * Open addressing with linear probing; digests are BLAKE3 (uniform), so
 * their first four bytes serve as the hash. A record number is below 2^32 - 1.
 *
 * @module
 */

/**
 * Where the digests live: record `ref`'s 32-byte digest is
 * `bytes(ref)[offset(ref) .. offset(ref) + 32]` (no view is made per look).
 */
export interface DigestSource {
  /** The array holding record `ref`'s digest. */
  bytes(ref: number): Uint8Array;
  /** Where in it the digest starts. */
  offset(ref: number): number;
}

const DIGEST = 32;
const MIN_CAPACITY = 1024;

function hashAt(b: Uint8Array, o: number): number {
  return (b[o] | b[o + 1] << 8 | b[o + 2] << 16 | b[o + 3] << 24) >>> 0;
}

function equalAt(a: Uint8Array, ao: number, b: Uint8Array, bo: number) {
  for (let i = 0; i < DIGEST; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}

/** Digest -> record number, for records whose digests a source holds. */
export class DigestTable {
  readonly #src: DigestSource;
  /** Record number + 1 per slot; 0 = empty. */
  #slots: Uint32Array;
  #mask: number;
  #count = 0;

  /** An empty table (see {@linkcode reserve} to size it for many adds). */
  constructor(src: DigestSource) {
    this.#src = src;
    this.#slots = new Uint32Array(MIN_CAPACITY);
    this.#mask = MIN_CAPACITY - 1;
  }

  /** Records in the table. */
  get size(): number {
    return this.#count;
  }

  /** The record holding `digest` (32 bytes), or undefined. */
  get(digest: Uint8Array): number | undefined {
    if (digest.length !== DIGEST) return undefined;
    const v = this.#probe(digest, 0);
    return v > 0 ? this.#slots[v - 1] - 1 : undefined;
  }

  /**
   * Adds record `ref` under its digest, unless a record with the same digest
   * is there already (the first one stays); true if added.
   */
  add(ref: number): boolean {
    if ((this.#count + 1) * 2 > this.#slots.length) {
      this.#grow(this.#slots.length * 2);
    }
    const b = this.#src.bytes(ref);
    const at = this.#probe(b, this.#src.offset(ref));
    if (at > 0) return false;
    this.#slots[-at - 1] = ref + 1;
    this.#count++;
    return true;
  }

  /** Makes room for `more` records beyond those in the table (grows once). */
  reserve(more: number): void {
    let cap = this.#slots.length;
    while ((this.#count + more) * 2 > cap) cap *= 2;
    if (cap > this.#slots.length) this.#grow(cap);
  }

  /** Empties the table. */
  clear(): void {
    this.#slots = new Uint32Array(MIN_CAPACITY);
    this.#mask = MIN_CAPACITY - 1;
    this.#count = 0;
  }

  /**
   * Looks for the digest at `b[o..o+32]`: slot + 1 where it is, else
   * -(slot + 1) of the empty slot where it would go.
   */
  #probe(b: Uint8Array, o: number): number {
    const slots = this.#slots;
    const mask = this.#mask;
    const src = this.#src;
    for (let i = hashAt(b, o) & mask;; i = (i + 1) & mask) {
      const v = slots[i];
      if (v === 0) return -(i + 1);
      if (equalAt(src.bytes(v - 1), src.offset(v - 1), b, o)) return i + 1;
    }
  }

  #grow(capacity: number): void {
    const old = this.#slots;
    const slots = new Uint32Array(capacity);
    const mask = slots.length - 1;
    const src = this.#src;
    for (const v of old) {
      if (v === 0) continue;
      let i = hashAt(src.bytes(v - 1), src.offset(v - 1)) & mask;
      while (slots[i] !== 0) i = (i + 1) & mask;
      slots[i] = v;
    }
    this.#slots = slots;
    this.#mask = mask;
  }
}
