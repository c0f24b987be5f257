/**
 * A batching writer of worker-protocol values onto a
 * `WritableStream<Uint8Array>`: small values collect in a buffer that goes
 * out on {@linkcode WireWriter.flush} (or when it fills); large byte arrays
 * go straight through.
 *
 * @module
 */

const encoder = new TextEncoder();
const ZEROS = new Uint8Array(8);
/** Flushes below this size are copied out of the batch buffer; larger ones take it over. */
const SMALL = 16 << 10;
/**
 * {@linkcode WireWriter.write} sends chunks at least this big straight to
 * the sink when nothing is buffered.
 */
const DIRECT = 64 << 10;

/**
 * A direct byte sink: `write` resolves when the chunk may be reused and
 * more may be written (backpressure). Faster than a WritableStream for
 * many small replies.
 */
export interface ByteSink {
  /** Takes a chunk; the writer does not touch it afterwards. */
  write(chunk: Uint8Array): Promise<void> | void;
  /**
   * Optional: takes a chunk and calls `release` once the sink no longer
   * needs it (after which the writer may reuse its memory). Lets small
   * replies go out of a few reused buffers instead of a new one each time.
   */
  writeThen?(chunk: Uint8Array, release: () => void): Promise<void> | void;
  /**
   * Optional: once everything handed to the sink is out, a file descriptor
   * the caller may write to directly (a duplicate of the socket's, or
   * stdout) until it uses the sink again, and closes when done;
   * `undefined` if there is none.
   */
  directFd?(): Promise<DirectFd | undefined>;
  /** Ends the stream. */
  close(): Promise<void> | void;
  /** Drops the stream. */
  abort(reason?: unknown): Promise<void> | void;
}

function isWritableStream(x: unknown): x is WritableStream<Uint8Array> {
  return typeof (x as WritableStream).getWriter === "function";
}

/** A file descriptor for direct writes (see {@linkcode ByteSink.directFd}). */
export interface DirectFd {
  readonly fd: number;
  /** Releases it (a duplicate is closed). */
  close(): void;
}

/** A ByteSink over a WritableStream. */
function streamSink(stream: WritableStream<Uint8Array>): ByteSink {
  const w = stream.getWriter();
  return {
    async write(c) {
      await w.ready;
      await w.write(c);
    },
    close: () => w.close(),
    abort: (r) => w.abort(r),
  };
}

/** Writes worker-protocol values. */
export class WireWriter {
  #out: ByteSink;
  #buf: Uint8Array;
  #view: DataView;
  #len = 0;
  #written = 0;
  #pending: Uint8Array[] = [];
  /** Reply buffers released by the sink, ready for reuse (see ByteSink.writeThen). */
  #spare: Uint8Array[] = [];
  #spares = 0;

  /** Wraps a stream (takes its lock); `bufferSize` is the batching threshold. */
  constructor(
    sink: WritableStream<Uint8Array> | ByteSink,
    readonly bufferSize = 64 << 10,
  ) {
    this.#out = isWritableStream(sink) ? streamSink(sink) : sink;
    this.#buf = new Uint8Array(bufferSize);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Bytes handed to the sink or buffered so far. */
  get offset(): number {
    return this.#written + this.#len +
      this.#pending.reduce((a, b) => a + b.length, 0);
  }

  #room(n: number) {
    if (this.#len + n <= this.#buf.length) return;
    // Full: park the filled part for the next flush and start a new buffer.
    if (this.#len > 0) this.#pending.push(this.#buf.subarray(0, this.#len));
    this.#buf = new Uint8Array(Math.max(this.bufferSize, n));
    this.#view = new DataView(this.#buf.buffer);
    this.#len = 0;
  }

  /** Appends a u64 (a safe integer or a bigint). */
  u64(n: number | bigint): this {
    this.#room(8);
    if (typeof n === "bigint") {
      this.#view.setBigUint64(this.#len, n, true);
    } else {
      if (!Number.isSafeInteger(n) || n < 0) {
        throw new RangeError(`not a u64: ${n}`);
      }
      this.#view.setUint32(this.#len, n >>> 0, true);
      this.#view.setUint32(this.#len + 4, Math.floor(n / 2 ** 32), true);
    }
    this.#len += 8;
    return this;
  }

  /** Appends a boolean as 0 or 1. */
  bool(b: boolean): this {
    return this.u64(b ? 1 : 0);
  }

  /** Appends raw bytes without a length or padding. */
  raw(b: Uint8Array): this {
    if (b.length > this.bufferSize) {
      if (this.#len > 0) this.#pending.push(this.#buf.subarray(0, this.#len));
      this.#pending.push(b);
      this.#buf = new Uint8Array(this.bufferSize);
      this.#view = new DataView(this.#buf.buffer);
      this.#len = 0;
      return this;
    }
    this.#room(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
    return this;
  }

  /** Appends a byte string: length, bytes, zero padding to 8. */
  bytes(b: Uint8Array): this {
    this.u64(b.length);
    this.raw(b);
    const pad = (8 - (b.length % 8)) % 8;
    if (pad) this.raw(ZEROS.subarray(0, pad));
    return this;
  }

  /** Appends a string (UTF-8). */
  string(s: string): this {
    return this.bytes(encoder.encode(s));
  }

  /** Appends a list of strings in the given order. */
  strings(list: Iterable<string>): this {
    const arr = [...list];
    this.u64(arr.length);
    for (const s of arr) this.string(s);
    return this;
  }

  /** Appends a set of strings, sorted by their UTF-8 bytes (as `std::set` does). */
  stringSet(set: Iterable<string>): this {
    return this.strings(sortedByBytes(set));
  }

  /** Appends a string map, sorted by key bytes (as `std::map` does). */
  stringMap(m: Iterable<[string, string]>): this {
    const entries = [...m].sort((a, b) =>
      compareBytes(encoder.encode(a[0]), encoder.encode(b[0]))
    );
    this.u64(entries.length);
    for (const [k, v] of entries) this.string(k).string(v);
    return this;
  }

  /**
   * Takes everything buffered as one new byte array, without sending it
   * (for encoding a value once and sending it again with {@linkcode raw}).
   */
  take(): Uint8Array {
    const parts = [...this.#pending, this.#buf.subarray(0, this.#len)];
    const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    this.#pending = [];
    this.#len = 0;
    return out;
  }

  /** Sends everything buffered to the sink and waits for it to accept it. */
  async flush(): Promise<void> {
    const chunks = this.#pending;
    this.#pending = [];
    let small: Uint8Array | undefined;
    if (this.#len > 0) {
      if (this.#len >= SMALL) {
        // Hand the filled buffer over (the sink may keep it) and start a new one.
        chunks.push(this.#buf.subarray(0, this.#len));
        this.#buf = new Uint8Array(this.bufferSize);
        this.#view = new DataView(this.#buf.buffer);
      } else if (this.#out.writeThen && (small = this.#spareBuffer())) {
        small.set(this.#buf.subarray(0, this.#len));
      } else {
        chunks.push(this.#buf.slice(0, this.#len));
      }
    }
    const len = this.#len;
    this.#len = 0;
    for (const c of chunks) {
      this.#written += c.length;
      await this.#out.write(c);
    }
    if (small) {
      // A copy into a reused buffer: a new ArrayBuffer per reply costs more
      // than the copy (measured under Deno's node:net, ~1-3 µs per reply).
      const buf = small;
      this.#written += len;
      await this.#out.writeThen!(
        buf.subarray(0, len),
        () => void this.#spare.push(buf),
      );
    }
  }

  /** A free reply buffer of SMALL bytes: a released one, or one of at most two new ones. */
  #spareBuffer(): Uint8Array | undefined {
    const b = this.#spare.pop();
    if (b || this.#spares >= 2) return b;
    this.#spares++;
    return new Uint8Array(SMALL);
  }

  /** Flushes, then sends `b` directly (for large data such as NAR chunks). */
  async write(b: Uint8Array): Promise<void> {
    if (b.length >= DIRECT && this.#len === 0 && this.#pending.length === 0) {
      // Big and nothing buffered: straight to the sink. Copying it into the
      // batch buffer cost a copy and a new buffer per flush (NarFromPath of
      // a 76 MiB NAR whose renderer yields 256 KiB chunks: see DIRECT).
      this.#written += b.length;
      await this.#out.write(b);
      return;
    }
    // Coalesce: copying into the batch buffer is far cheaper than a socket
    // write per chunk (measured ~50 µs per write under Deno's node:net).
    if (
      this.#len + b.length <= this.#buf.length && this.#pending.length === 0
    ) {
      this.#buf.set(b, this.#len);
      this.#len += b.length;
      if (this.#len >= this.#buf.length - 4096) await this.flush();
      return;
    }
    await this.flush();
    if (b.length < this.#buf.length) {
      this.#buf.set(b, 0);
      this.#len = b.length;
      return;
    }
    this.#written += b.length;
    await this.#out.write(b);
  }

  /**
   * Flushes and returns the sink's file descriptor for direct writes (see
   * {@linkcode ByteSink.directFd}; e.g. a NAR written by worker threads),
   * or `undefined` if it has none. Bytes written there do not count in
   * {@linkcode offset}.
   */
  async directFd(): Promise<DirectFd | undefined> {
    if (!this.#out.directFd) return undefined;
    await this.flush();
    return await this.#out.directFd();
  }

  /** Flushes and closes the sink. */
  async close(): Promise<void> {
    await this.flush();
    await this.#out.close();
  }

  /** Aborts the sink. */
  async abort(reason?: unknown): Promise<void> {
    this.#pending = [];
    this.#len = 0;
    try {
      await this.#out.abort(reason);
    } catch {
      // already closed
    }
  }
}

/** Compares byte strings lexicographically. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** Sorts strings by their UTF-8 bytes and removes duplicates. */
export function sortedByBytes(items: Iterable<string>): string[] {
  const uniq = [...new Set(items)];
  if (uniq.every(isAscii)) {
    return uniq.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }
  return uniq
    .map((s) => [s, encoder.encode(s)] as const)
    .sort((a, b) => compareBytes(a[1], b[1]))
    .map((x) => x[0]);
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}
