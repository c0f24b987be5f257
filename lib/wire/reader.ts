/**
 * A buffered reader of worker-protocol values over a
 * `ReadableStream<Uint8Array>`: u64 little-endian numbers, booleans, byte
 * strings padded to 8 bytes, lists, sets and maps. Every length read from the
 * wire is checked against a bound the caller passes; large byte strings can be
 * streamed instead of buffered.
 *
 * Written here rather than taken from a library: the protocol's framing is
 * Nix-specific and no maintained npm package implements it on web streams.
 *
 * @module
 */
import { UnexpectedEofError, WireError } from "./errors.ts";

const EMPTY = new Uint8Array(0);
const decoder = new TextDecoder();
const TWO_32 = 2 ** 32;

/**
 * A direct byte source: what a `ReadableStreamDefaultReader` offers, and
 * all the reader needs. Cheaper than a ReadableStream for many small
 * messages (see lib/daemon/socket_streams.ts).
 */
export interface ByteSource {
  /** The next chunk, or `done` at the end. */
  read(): Promise<ReadableStreamReadResult<Uint8Array>>;
  /** Drops the rest of the source. */
  cancel(reason?: unknown): Promise<void>;
}

/** Reads worker-protocol values from a byte stream. */
export class WireReader {
  #src: ByteSource;
  #buf: Uint8Array = EMPTY;
  #view: DataView = new DataView(EMPTY.buffer);
  #pos = 0;
  #consumed = 0;
  #eof = false;
  #busy = false;

  /** Wraps a stream (the reader takes its lock) or a direct source. */
  constructor(source: ReadableStream<Uint8Array> | ByteSource) {
    this.#src = "getReader" in source ? source.getReader() : source;
  }

  /** Bytes consumed so far (for error messages and logs). */
  get offset(): number {
    return this.#consumed + this.#pos;
  }

  /** Bytes already buffered and not yet consumed. */
  get buffered(): number {
    return this.#buf.length - this.#pos;
  }

  /** Releases the underlying stream (cancels it). */
  async cancel(reason?: unknown): Promise<void> {
    this.#eof = true;
    try {
      await this.#src.cancel(reason);
    } catch {
      // already errored or closed
    }
  }

  #checkIdle() {
    if (this.#busy) {
      throw new WireError(
        "reader used while a byte stream from it is still open",
      );
    }
  }

  /** Pulls the next chunk; false at the end of the stream. */
  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    for (;;) {
      const { value, done } = await this.#src.read();
      if (done) {
        this.#eof = true;
        return false;
      }
      if (value.length === 0) continue;
      this.#consumed += this.#buf.length;
      this.#buf = value;
      this.#view = new DataView(
        value.buffer,
        value.byteOffset,
        value.byteLength,
      );
      this.#pos = 0;
      return true;
    }
  }

  /**
   * Whether the stream has ended at a value boundary (no byte buffered and
   * none to come). Waits for data otherwise.
   */
  async atEnd(): Promise<boolean> {
    this.#checkIdle();
    if (this.#pos < this.#buf.length) return false;
    return !(await this.#fill());
  }

  /** Exactly `n` bytes (a view into the buffer when possible). */
  async readExact(n: number, what = "bytes"): Promise<Uint8Array> {
    this.#checkIdle();
    const avail = this.#buf.length - this.#pos;
    if (avail >= n) {
      const out = this.#buf.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      return out;
    }
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      if (this.#pos >= this.#buf.length && !(await this.#fill())) {
        throw new UnexpectedEofError(what, this.offset);
      }
      const take = Math.min(n - got, this.#buf.length - this.#pos);
      out.set(this.#buf.subarray(this.#pos, this.#pos + take), got);
      this.#pos += take;
      got += take;
    }
    return out;
  }

  /** Skips `n` bytes without keeping them. */
  async skip(n: number, what = "bytes"): Promise<void> {
    this.#checkIdle();
    let left = n;
    while (left > 0) {
      if (this.#pos >= this.#buf.length && !(await this.#fill())) {
        throw new UnexpectedEofError(what, this.offset);
      }
      const take = Math.min(left, this.#buf.length - this.#pos);
      this.#pos += take;
      left -= take;
    }
  }

  /** A u64 as a bigint. */
  async readU64(what = "number"): Promise<bigint> {
    this.#checkIdle();
    if (this.#buf.length - this.#pos >= 8) {
      const v = this.#view.getBigUint64(this.#pos, true);
      this.#pos += 8;
      return v;
    }
    const b = await this.readExact(8, what);
    return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
  }

  /**
   * A u64 as a number, at most `max` (default: the largest safe integer).
   * Larger values are an error naming `what`.
   */
  async readNumber(
    what = "number",
    max = Number.MAX_SAFE_INTEGER,
  ): Promise<number> {
    this.#checkIdle();
    let lo: number, hi: number;
    const at = this.offset;
    if (this.#buf.length - this.#pos >= 8) {
      lo = this.#view.getUint32(this.#pos, true);
      hi = this.#view.getUint32(this.#pos + 4, true);
      this.#pos += 8;
    } else {
      const b = await this.readExact(8, what);
      const v = new DataView(b.buffer, b.byteOffset, 8);
      lo = v.getUint32(0, true);
      hi = v.getUint32(4, true);
    }
    if (hi >= 0x200000) {
      const big = (BigInt(hi) << 32n) | BigInt(lo);
      throw new WireError(
        `${what} ${big} is out of range (at most ${max})`,
        at,
      );
    }
    const n = hi * TWO_32 + lo;
    if (n > max) {
      throw new WireError(`${what} ${n} is out of range (at most ${max})`, at);
    }
    return n;
  }

  /** A boolean: the number 0 or 1. */
  async readBool(what = "boolean"): Promise<boolean> {
    const at = this.offset;
    const n = await this.readNumber(what);
    if (n > 1) throw new WireError(`${what} must be 0 or 1, got ${n}`, at);
    return n === 1;
  }

  async #checkPadding(len: number, what: string) {
    const pad = (8 - (len % 8)) % 8;
    if (pad === 0) return;
    const at = this.offset;
    const p = await this.readExact(pad, `${what} padding`);
    for (const b of p) {
      if (b !== 0) throw new WireError(`non-zero padding after ${what}`, at);
    }
  }

  /** A length-prefixed, zero-padded byte string of at most `max` bytes (copied). */
  async readBytes(max: number, what = "string"): Promise<Uint8Array> {
    const len = await this.readNumber(`${what} length`, max);
    const b = (await this.readExact(len, what)).slice();
    await this.#checkPadding(len, what);
    return b;
  }

  /** A byte string decoded as UTF-8. */
  async readString(max: number, what = "string"): Promise<string> {
    // Fast path: the whole string is buffered and well-formed (most
    // requests). Anything else takes the checked path below.
    const pos = this.#pos, avail = this.#buf.length - pos;
    if (
      !this.#busy && avail >= 8 && this.#view.getUint32(pos + 4, true) === 0
    ) {
      const n = this.#view.getUint32(pos, true);
      const end = pos + 8 + n, padded = end + ((8 - (n % 8)) % 8);
      if (n <= max && padded <= this.#buf.length) {
        let zero = true;
        for (let i = end; i < padded; i++) zero &&= this.#buf[i] === 0;
        if (zero) {
          this.#pos = padded;
          return decoder.decode(this.#buf.subarray(pos + 8, end));
        }
      }
    }
    const len = await this.readNumber(`${what} length`, max);
    const b = await this.readExact(len, what);
    const s = decoder.decode(b);
    await this.#checkPadding(len, what);
    return s;
  }

  /** A count-prefixed list; `item` reads one element. */
  async readList<T>(
    maxCount: number,
    item: (r: WireReader) => Promise<T>,
    what = "list",
  ): Promise<T[]> {
    const n = await this.readNumber(`${what} size`, maxCount);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(await item(this));
    return out;
  }

  /** A list of strings, each at most `maxLen` bytes and all together at most `maxTotal`. */
  async readStrings(
    maxCount: number,
    maxLen: number,
    what = "strings",
    maxTotal = 64 << 20,
  ): Promise<string[]> {
    // Bound the whole list too: maxCount * maxLen may be far more than memory.
    let total = 0;
    const at = this.offset;
    return await this.readList(maxCount, async (r) => {
      const s = await r.readString(maxLen, what);
      total += s.length + 8;
      if (total > maxTotal) {
        throw new WireError(`${what} exceed ${maxTotal} bytes in total`, at);
      }
      return s;
    }, what);
  }

  /** A map of string to string, in wire order; at most `maxTotal` bytes in all. */
  async readStringMap(
    maxCount: number,
    maxLen: number,
    what = "map",
    maxTotal = 64 << 20,
  ): Promise<Map<string, string>> {
    const at = this.offset;
    const n = await this.readNumber(`${what} size`, maxCount);
    const m = new Map<string, string>();
    let total = 0;
    for (let i = 0; i < n; i++) {
      const k = await this.readString(maxLen, `${what} key`);
      const v = await this.readString(maxLen, `${what} value`);
      total += k.length + v.length + 16;
      if (total > maxTotal) {
        throw new WireError(`${what} exceeds ${maxTotal} bytes in total`, at);
      }
      m.set(k, v);
    }
    return m;
  }

  /**
   * Streams exactly `len` bytes (then skips padding if `padded`). The stream
   * must be read to its end (or cancelled) before this reader is used again;
   * cancelling skips the rest.
   */
  streamExact(
    len: number,
    padded: boolean,
    what = "data",
  ): ReadableStream<Uint8Array> {
    this.#checkIdle();
    this.#busy = true;
    let left = len;
    const finish = async () => {
      this.#busy = false;
      if (padded) await this.#checkPadding(len, what);
    };
    return new ReadableStream<Uint8Array>({
      pull: async (ctl) => {
        try {
          if (left === 0) {
            await finish();
            ctl.close();
            return;
          }
          if (this.#pos >= this.#buf.length && !(await this.#fill())) {
            this.#busy = false;
            throw new UnexpectedEofError(what, this.offset);
          }
          const take = Math.min(left, this.#buf.length - this.#pos);
          ctl.enqueue(this.#buf.subarray(this.#pos, this.#pos + take));
          this.#pos += take;
          left -= take;
          if (left === 0) {
            await finish();
            ctl.close();
          }
        } catch (e) {
          this.#busy = false;
          ctl.error(e);
        }
      },
      cancel: async () => {
        this.#busy = false;
        await this.skip(left, what);
        left = 0;
        if (padded) await this.#checkPadding(len, what);
      },
    }, { highWaterMark: 0 });
  }

  /**
   * Takes the next buffered chunk of at most `max` bytes, pulling one
   * chunk from the stream if nothing is buffered; `undefined` at the end.
   */
  async readSome(max: number): Promise<Uint8Array | undefined> {
    this.#checkIdle();
    if (this.#pos >= this.#buf.length && !(await this.#fill())) {
      return undefined;
    }
    const take = Math.min(max, this.#buf.length - this.#pos);
    const out = this.#buf.subarray(this.#pos, this.#pos + take);
    this.#pos += take;
    return out;
  }

  /**
   * Like {@linkcode readSome}, but only from what is buffered: `undefined`
   * when nothing is (no waiting). For hot loops that await only at chunk
   * boundaries.
   */
  readSomeSync(max: number): Uint8Array | undefined {
    this.#checkIdle();
    const avail = this.#buf.length - this.#pos;
    if (avail <= 0) return undefined;
    const take = Math.min(max, avail);
    const out = this.#buf.subarray(this.#pos, this.#pos + take);
    this.#pos += take;
    return out;
  }

  /**
   * Like {@linkcode readNumber}, but only if its 8 bytes are buffered and
   * the value is at most `max`: `undefined` otherwise, with nothing
   * consumed (the async twin then reads it, or reports it).
   */
  readNumberSync(max = Number.MAX_SAFE_INTEGER): number | undefined {
    this.#checkIdle();
    const pos = this.#pos;
    if (this.#buf.length - pos < 8) return undefined;
    const lo = this.#view.getUint32(pos, true);
    const hi = this.#view.getUint32(pos + 4, true);
    if (hi >= 0x200000 || hi * TWO_32 + lo > max) return undefined;
    this.#pos = pos + 8;
    return hi * TWO_32 + lo;
  }

  /**
   * Hands the reader to a sub-stream (framed data, a NAR copy): other reads
   * fail until {@linkcode release}. The owner reads with `borrow`.
   */
  claim(): void {
    this.#checkIdle();
    this.#busy = true;
  }

  /** Ends a {@linkcode claim}. */
  release(): void {
    this.#busy = false;
  }

  /** Like {@linkcode borrow}, for synchronous reads. */
  borrowSync<T>(fn: () => T): T {
    this.#busy = false;
    try {
      return fn();
    } finally {
      this.#busy = true;
    }
  }

  /** Runs `fn` (reads on behalf of the claiming sub-stream) while claimed. */
  async borrow<T>(fn: () => Promise<T>): Promise<T> {
    this.#busy = false;
    try {
      return await fn();
    } finally {
      this.#busy = true;
    }
  }
}
