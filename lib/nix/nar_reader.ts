/**
 * A strict, streaming NAR reader: turns a byte stream into a sequence of
 * {@link NarEvent}s (depth first, parents before children), never holding
 * more than one source chunk and one name at a time.
 *
 * Only the canonical form Nix writes is accepted: exact tokens in their
 * order, `executable` before `contents`, entries strictly sorted by name
 * bytes, valid names and symlink targets, zero padding, no bytes after the
 * root node. Every string length is bounded before anything is allocated.
 * Anything else raises a {@link NarError} whose message carries the byte
 * offset of the offending token.
 *
 * Speed: every token has a synchronous path taken when the current source
 * chunk holds it whole (almost always); only chunk boundaries await.
 *
 * Our own code: no maintained npm package implements this Nix format.
 *
 * @module
 */
import {
  compareBytes,
  MAX_NAME_LENGTH,
  MAX_NAR_DEPTH,
  MAX_TARGET_LENGTH,
  NAR_MAGIC,
  NarError,
  showBytes,
  showPath,
  validateEntryName,
  validateSymlinkTarget,
} from "./nar_common.ts";

export { NarError } from "./nar_common.ts";

/** One step of a NAR: `path` holds the name components from the root ([] for the root). */
export type NarEvent =
  | {
    type: "regular";
    path: Uint8Array[];
    executable: boolean;
    size: number;
    /** The file's bytes. Consume it fully (or cancel it) before pulling the next event. */
    contents: ReadableStream<Uint8Array>;
    /**
     * The file's bytes without a web stream (cheaper per file: no stream is
     * made). Iterate it at most once, fully or until `break`, before pulling
     * the next event; use either this or `contents`, not both.
     */
    chunks(): AsyncIterable<Uint8Array>;
  }
  | { type: "symlink"; path: Uint8Array[]; target: Uint8Array }
  | { type: "directory"; path: Uint8Array[] }
  | { type: "directory-end"; path: Uint8Array[] };

/** Longest keyword token (`executable`, `directory`, ...) we read before giving up. */
const MAX_TAG = 16;
/** Largest chunk of file contents handed out at once. */
const MAX_CONTENT_CHUNK = 1024 * 1024;
const EMPTY = new Uint8Array(0);
const enc = new TextEncoder();
const dec = new TextDecoder();

const TAG = {
  magic: enc.encode(NAR_MAGIC),
  open: enc.encode("("),
  close: enc.encode(")"),
  type: enc.encode("type"),
  regular: enc.encode("regular"),
  symlink: enc.encode("symlink"),
  directory: enc.encode("directory"),
  executable: enc.encode("executable"),
  contents: enc.encode("contents"),
  target: enc.encode("target"),
  entry: enc.encode("entry"),
  name: enc.encode("name"),
  node: enc.encode("node"),
};

function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Keyword tokens by length, for {@linkcode interned}. */
const TAGS_BY_LENGTH: Uint8Array[][] = [];
for (const t of [...Object.values(TAG), EMPTY]) {
  (TAGS_BY_LENGTH[t.length] ??= []).push(t);
}

/**
 * The keyword constant equal to `b[at, at + len)`, if there is one: tokens
 * read with a {@linkcode MAX_TAG} bound are keywords in a well-formed NAR,
 * and returning the shared constant spares a copy per token (~3 per node).
 */
function interned(
  b: Uint8Array,
  at: number,
  len: number,
): Uint8Array | undefined {
  const cands = TAGS_BY_LENGTH[len];
  if (!cands) return undefined;
  outer: for (const t of cands) {
    for (let i = 0; i < len; i++) if (b[at + i] !== t[i]) continue outer;
    return t;
  }
  return undefined;
}

function pad8(n: number): number {
  return (8 - (n % 8)) % 8;
}

/** A description for error messages, computed only when an error happens. */
type What = string | (() => string);

function say(w: What): string {
  return typeof w === "string" ? w : w();
}

/**
 * Buffered, offset-tracking reads over a ReadableStream. `*Sync` methods
 * return `undefined`/`false` when the buffered bytes do not suffice (the
 * caller then awaits the async twin); both throw NarError on bad input.
 */
class Source {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf: Uint8Array = EMPTY;
  #pos = 0;
  /** Rest of a chunk whose head was copied into a small joined buffer. */
  #pending: Uint8Array | undefined;
  /** Bytes consumed so far. */
  offset = 0;
  done = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  get avail(): number {
    return this.#buf.length - this.#pos;
  }

  /** The next non-empty chunk, or undefined at the end of the stream. */
  async #next(): Promise<Uint8Array | undefined> {
    if (this.#pending) {
      const p = this.#pending;
      this.#pending = undefined;
      return p;
    }
    while (!this.done) {
      const r = await this.#reader.read();
      if (r.done) {
        this.done = true;
        return undefined;
      }
      if (r.value.length > 0) return r.value;
    }
    return undefined;
  }

  truncated(what: What): NarError {
    return new NarError(`unexpected end of input in ${say(what)}`, this.offset);
  }

  /** Makes at least `n` (small) bytes contiguous at the read position. */
  async fill(n: number, what: What): Promise<void> {
    const have = this.avail;
    if (have >= n) return;
    if (have === 0) {
      const c = await this.#next();
      if (!c) throw this.truncated(what);
      this.#buf = c;
      this.#pos = 0;
      if (c.length >= n) return;
    }
    const out = new Uint8Array(n);
    let o = this.avail;
    out.set(this.#buf.subarray(this.#pos));
    while (o < n) {
      const c = await this.#next();
      if (!c) {
        this.#buf = out.subarray(0, o);
        this.#pos = 0;
        throw this.truncated(what);
      }
      const k = Math.min(n - o, c.length);
      out.set(c.subarray(0, k), o);
      o += k;
      if (k < c.length) this.#pending = c.subarray(k);
    }
    this.#buf = out;
    this.#pos = 0;
  }

  #peekU64(what: What): number {
    const b = this.#buf, p = this.#pos;
    const lo =
      (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) >>> 0;
    const hi =
      (b[p + 4] | (b[p + 5] << 8) | (b[p + 6] << 16) | (b[p + 7] << 24)) >>> 0;
    if (hi > 0x1f_ffff) {
      throw new NarError(
        `length ${(BigInt(hi) << 32n) | BigInt(lo)} in ${
          say(what)
        } is too large`,
        this.offset,
      );
    }
    return hi * 0x1_0000_0000 + lo;
  }

  #skip(n: number): void {
    this.#pos += n;
    this.offset += n;
  }

  /** A u64 (< 2^53) if 8 bytes are buffered. */
  u64Sync(what: What): number | undefined {
    if (this.avail < 8) return undefined;
    const n = this.#peekU64(what);
    this.#skip(8);
    return n;
  }

  async u64(what: What): Promise<number> {
    await this.fill(8, what);
    return this.u64Sync(what)!;
  }

  #checkPadding(n: number, what: What): void {
    const b = this.#buf, p = this.#pos;
    for (let i = 0; i < n; i++) {
      if (b[p + i] !== 0) {
        throw new NarError(
          `non-zero padding after ${say(what)}`,
          this.offset + i,
        );
      }
    }
    this.#skip(n);
  }

  /** Checks the zero padding after a string of `len` bytes, if buffered. */
  paddingSync(len: number, what: What): boolean {
    const p = pad8(len);
    if (p === 0) return true;
    if (this.avail < p) return false;
    this.#checkPadding(p, what);
    return true;
  }

  async padding(len: number, what: What): Promise<void> {
    await this.fill(pad8(len), () => `padding of ${say(what)}`);
    this.paddingSync(len, what);
  }

  /**
   * A length-prefixed string of at most `max` bytes (copied out), if it is
   * buffered whole. Throws when the length exceeds `max`.
   */
  stringSync(max: number, what: What): Uint8Array | undefined {
    if (this.avail < 8) return undefined;
    const len = this.#peekU64(what);
    if (len > max) {
      throw new NarError(
        `${say(what)} is ${len} bytes long, at most ${max} allowed`,
        this.offset,
      );
    }
    const total = 8 + len + pad8(len);
    if (this.avail < total) return undefined;
    this.#skip(8);
    const s = (max === MAX_TAG && interned(this.#buf, this.#pos, len)) ||
      this.#buf.slice(this.#pos, this.#pos + len);
    this.#skip(len);
    this.#checkPadding(pad8(len), what);
    return s;
  }

  async string(max: number, what: What): Promise<Uint8Array> {
    await this.fill(8, what);
    const len = this.#peekU64(what);
    if (len > max) {
      throw new NarError(
        `${say(what)} is ${len} bytes long, at most ${max} allowed`,
        this.offset,
      );
    }
    await this.fill(8 + len + pad8(len), what);
    return this.stringSync(max, what)!;
  }

  /** Checks the next token is `tag`, if buffered; false when more bytes are needed. */
  expectSync(tag: Uint8Array, context: What): boolean {
    if (this.avail < 8) return false;
    const at = this.offset;
    const len = this.#peekU64(() => `token ${showBytes(tag)} ${say(context)}`);
    if (len !== tag.length) {
      if (len > MAX_TAG) {
        throw new NarError(
          `expected ${showBytes(tag)} ${say(context)}, got a longer string`,
          at,
        );
      }
      const got = this.stringSync(MAX_TAG, () => `token ${say(context)}`);
      if (got === undefined) return false;
      throw new NarError(
        `expected ${showBytes(tag)} ${say(context)}, got ${showBytes(got)}`,
        at,
      );
    }
    const total = 8 + len + pad8(len);
    if (this.avail < total) return false;
    const b = this.#buf, p = this.#pos + 8;
    for (let i = 0; i < len; i++) {
      if (b[p + i] !== tag[i]) {
        throw new NarError(
          `expected ${showBytes(tag)} ${say(context)}, got ${
            showBytes(b.subarray(p, p + len))
          }`,
          at,
        );
      }
    }
    this.#skip(8 + len);
    this.#checkPadding(pad8(len), () => `token ${showBytes(tag)}`);
    return true;
  }

  async expect(tag: Uint8Array, context: What): Promise<void> {
    const what = () => `token ${showBytes(tag)} ${say(context)}`;
    await this.fill(8, what);
    const len = this.#peekU64(what);
    await this.fill(
      8 + Math.min(len, MAX_TAG + 8) + pad8(Math.min(len, MAX_TAG + 8)),
      what,
    );
    if (!this.expectSync(tag, context)) throw this.truncated(what);
  }

  /** Up to `max` (> 0) bytes, at least one; a view into the source chunk. */
  someSync(max: number): Uint8Array | undefined {
    const avail = this.avail;
    if (avail === 0) return undefined;
    const k = Math.min(max, avail);
    const r = this.#buf.subarray(this.#pos, this.#pos + k);
    this.#skip(k);
    return r;
  }

  async some(max: number, what: What): Promise<Uint8Array> {
    if (this.avail === 0) {
      const c = await this.#next();
      if (!c) throw this.truncated(what);
      this.#buf = c;
      this.#pos = 0;
    }
    return this.someSync(max)!;
  }

  /** Whether the stream has ended (no bytes left). */
  async atEnd(): Promise<boolean> {
    if (this.avail > 0) return false;
    const c = await this.#next();
    if (!c) return true;
    this.#buf = c;
    this.#pos = 0;
    return false;
  }

  async close(cancel: boolean): Promise<void> {
    if (cancel && !this.done) await this.#reader.cancel().catch(() => {});
    this.#reader.releaseLock();
  }
}

/**
 * Reads a NAR from `source` as events. Throws {@link NarError} on any
 * malformed or non-canonical input (truncation included). Breaking out of
 * the iteration cancels `source`.
 */
export async function* readNar(
  source: ReadableStream<Uint8Array>,
): AsyncGenerator<NarEvent> {
  const src = new Source(source);
  const expect = (tag: Uint8Array, context: What): true | Promise<void> =>
    src.expectSync(tag, context) || src.expect(tag, context);
  const string = (max: number, what: What): Uint8Array | Promise<Uint8Array> =>
    src.stringSync(max, what) ?? src.string(max, what);
  let ok = false;
  try {
    let magic: Uint8Array;
    try {
      magic = await src.string(MAX_TAG, "the NAR header");
    } catch (e) {
      if (e instanceof NarError) {
        throw new NarError(`input does not look like a NAR (${e.reason})`, 0);
      }
      throw e;
    }
    if (!same(magic, TAG.magic)) {
      throw new NarError(
        `input does not look like a NAR (header ${showBytes(magic)})`,
        0,
      );
    }

    // Directories being read, innermost last.
    const stack: { path: Uint8Array[]; prev: Uint8Array | undefined }[] = [];
    let path: Uint8Array[] = [];
    while (true) {
      // A node at `path`.
      const here = path;
      const where = () => `node ${showPath(here)}`;
      const r1 = expect(TAG.open, () => `opening ${where()}`);
      if (r1 !== true) await r1;
      const r2 = expect(TAG.type, () => `in ${where()}`);
      if (r2 !== true) await r2;
      const typeAt = src.offset;
      let type: Uint8Array;
      try {
        const t = string(MAX_TAG, () => `type of ${where()}`);
        type = t instanceof Uint8Array ? t : await t;
      } catch (e) {
        if (e instanceof NarError && /bytes long/.test(e.message)) {
          throw new NarError(
            `unknown node type (too long) at ${where()}`,
            typeAt,
          );
        }
        throw e;
      }
      const isDirectory = same(type, TAG.directory);
      if (same(type, TAG.regular)) {
        const tagAt = src.offset;
        let t = string(MAX_TAG, () => `token in ${where()}`);
        let tag = t instanceof Uint8Array ? t : await t;
        let executable = false;
        if (same(tag, TAG.executable)) {
          executable = true;
          const markAt = src.offset;
          const m = string(MAX_TAG, () => `executable marker of ${where()}`);
          const mark = m instanceof Uint8Array ? m : await m;
          if (mark.length !== 0) {
            throw new NarError(
              `executable marker of ${where()} is not empty`,
              markAt,
            );
          }
          t = string(MAX_TAG, () => `token in ${where()}`);
          tag = t instanceof Uint8Array ? t : await t;
        }
        if (!same(tag, TAG.contents)) {
          throw new NarError(
            `expected ${
              executable ? "" : '"executable" or '
            }"contents" in ${where()}, got ${showBytes(tag)}`,
            tagAt,
          );
        }
        const size = src.u64Sync(() => `size of ${where()}`) ??
          await src.u64(() => `size of ${where()}`);
        let remaining = size;
        let pending: Promise<void> | undefined;
        const contentWhat = () => `contents of ${where()}`;
        const makeContents = () =>
          new ReadableStream<Uint8Array>({
            pull(c) {
              if (remaining === 0) {
                c.close();
                return;
              }
              const max = Math.min(remaining, MAX_CONTENT_CHUNK);
              const chunk = src.someSync(max);
              if (chunk) {
                remaining -= chunk.length;
                c.enqueue(chunk);
                if (remaining === 0) c.close();
                return;
              }
              const p = src.some(max, contentWhat).then((chunk) => {
                remaining -= chunk.length;
                c.enqueue(chunk);
                if (remaining === 0) c.close();
              });
              pending = p;
              return p.finally(() => {
                if (pending === p) pending = undefined;
              });
            },
          }, { highWaterMark: 0 });
        /**
         * `for await` over the contents: straight from the source, without
         * the stream's reader. A web stream's reader costs ~15-25 µs per
         * file under Deno (releasing it creates an error object with a
         * stack trace), against ~3 µs here: 0.1-0.2 s per GiB on the bench
         * corpus (7k files), more for trees of many small files.
         */
        const iterate = async function* (): AsyncGenerator<Uint8Array> {
          while (remaining > 0) {
            const max = Math.min(remaining, MAX_CONTENT_CHUNK);
            let chunk = src.someSync(max);
            if (!chunk) {
              const p = src.some(max, contentWhat);
              pending = p.then(() => {}, () => {});
              chunk = await p;
              pending = undefined;
            }
            remaining -= chunk.length;
            yield chunk;
          }
        };
        const fastContents = () => {
          const s = makeContents();
          Object.defineProperty(s, Symbol.asyncIterator, {
            value: () => {
              if (s.locked) {
                throw new TypeError("the contents stream is locked");
              }
              return iterate();
            },
          });
          return s;
        };
        // Created on first access: listings that never look at contents pay nothing.
        let contents: ReadableStream<Uint8Array> | undefined;
        yield {
          type: "regular",
          path,
          executable,
          size,
          get contents() {
            return contents ??= fastContents();
          },
          chunks: () => {
            if (contents) throw new TypeError("contents already in use");
            return { [Symbol.asyncIterator]: iterate };
          },
        };
        if (pending) await pending.catch(() => {});
        // Skip whatever the consumer left unread.
        while (remaining > 0) {
          const max = Math.min(remaining, MAX_CONTENT_CHUNK);
          const chunk = src.someSync(max) ?? await src.some(max, contentWhat);
          remaining -= chunk.length;
        }
        if (!src.paddingSync(size, contentWhat)) {
          await src.padding(size, contentWhat);
        }
        const r3 = expect(TAG.close, () => `closing ${where()}`);
        if (r3 !== true) await r3;
      } else if (same(type, TAG.symlink)) {
        const r4 = expect(TAG.target, () => `in ${where()}`);
        if (r4 !== true) await r4;
        const targetAt = src.offset;
        const t = string(
          MAX_TARGET_LENGTH,
          () => `symlink target of ${where()}`,
        );
        const target = t instanceof Uint8Array ? t : await t;
        validateSymlinkTarget(target, where, targetAt);
        const r5 = expect(TAG.close, () => `closing ${where()}`);
        if (r5 !== true) await r5;
        yield { type: "symlink", path, target };
      } else if (isDirectory) {
        if (path.length >= MAX_NAR_DEPTH) {
          throw new NarError(
            `directories nested deeper than ${MAX_NAR_DEPTH}`,
            typeAt,
          );
        }
        yield { type: "directory", path };
        stack.push({ path, prev: undefined });
      } else {
        throw new NarError(
          `unknown node type ${showBytes(type)} at ${where()}`,
          typeAt,
        );
      }

      // A file or symlink inside a directory: close its "entry".
      if (!isDirectory && stack.length > 0) {
        const r6 = expect(
          TAG.close,
          () => `closing the entry ${showPath(here)}`,
        );
        if (r6 !== true) await r6;
      }
      // Next entry of the innermost open directory, closing finished ones.
      let found = false;
      while (stack.length > 0) {
        const top = stack[stack.length - 1];
        const dirWhere = () => `directory ${showPath(top.path)}`;
        const tagAt = src.offset;
        const t = string(MAX_TAG, () => `entry of ${dirWhere()}`);
        const tag = t instanceof Uint8Array ? t : await t;
        if (same(tag, TAG.close)) {
          stack.pop();
          yield { type: "directory-end", path: top.path };
          if (stack.length > 0) {
            const r7 = expect(
              TAG.close,
              () => `closing the entry ${showPath(top.path)}`,
            );
            if (r7 !== true) await r7;
          }
          continue;
        }
        if (!same(tag, TAG.entry)) {
          throw new NarError(
            `expected "entry" or ")" in ${dirWhere()}, got ${showBytes(tag)}`,
            tagAt,
          );
        }
        const r8 = expect(TAG.open, () => `opening an entry of ${dirWhere()}`);
        if (r8 !== true) await r8;
        const r9 = expect(TAG.name, () => `in an entry of ${dirWhere()}`);
        if (r9 !== true) await r9;
        const nameAt = src.offset;
        const n = string(MAX_NAME_LENGTH, () => `entry name in ${dirWhere()}`);
        const name = n instanceof Uint8Array ? n : await n;
        validateEntryName(name, () => showPath(top.path), nameAt);
        if (top.prev !== undefined) {
          const cmp = compareBytes(top.prev, name);
          if (cmp >= 0) {
            throw new NarError(
              `${dirWhere()}: entry ${showBytes(name)} ${
                cmp === 0
                  ? "is duplicated"
                  : `comes after ${showBytes(top.prev)}`
              } (entries must be sorted by name bytes)`,
              nameAt,
            );
          }
        }
        top.prev = name;
        const r10 = expect(
          TAG.node,
          () => `after the entry name ${showBytes(name)} in ${dirWhere()}`,
        );
        if (r10 !== true) await r10;
        path = [...top.path, name];
        found = true;
        break;
      }
      if (!found) break;
    }
    if (!(await src.atEnd())) {
      throw new NarError("trailing bytes after the end of the NAR", src.offset);
    }
    ok = true;
  } finally {
    await src.close(!ok);
  }
}

/** Decodes a path of name components as `a/b/c` (lossy UTF-8), for listings. */
export function pathToString(path: readonly Uint8Array[]): string {
  return path.map((p) => dec.decode(p)).join("/");
}
