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
  return a.length === b.length && compareBytes(a, b) === 0;
}

/** A description for error messages, computed only when an error happens. */
type What = string | (() => string);

function say(w: What): string {
  return typeof w === "string" ? w : w();
}

/** Buffered, offset-tracking reads over a ReadableStream. */
class Source {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf: Uint8Array = EMPTY;
  #pos = 0;
  /** Bytes consumed so far. */
  offset = 0;
  done = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** Loads the next non-empty chunk; false at the end of the stream. */
  async #more(): Promise<boolean> {
    while (!this.done) {
      const r = await this.#reader.read();
      if (r.done) {
        this.done = true;
        return false;
      }
      if (r.value.length > 0) {
        this.#buf = r.value;
        this.#pos = 0;
        return true;
      }
    }
    return false;
  }

  truncated(what: What): NarError {
    return new NarError(`unexpected end of input in ${say(what)}`, this.offset);
  }

  /** Exactly `n` bytes (a view into the source chunk when possible). */
  async readExact(n: number, what: What): Promise<Uint8Array> {
    const avail = this.#buf.length - this.#pos;
    if (avail >= n) {
      const r = this.#buf.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      this.offset += n;
      return r;
    }
    const out = new Uint8Array(n);
    let o = 0;
    while (o < n) {
      if (this.#pos === this.#buf.length && !(await this.#more())) {
        throw this.truncated(what);
      }
      const k = Math.min(n - o, this.#buf.length - this.#pos);
      out.set(this.#buf.subarray(this.#pos, this.#pos + k), o);
      o += k;
      this.#pos += k;
      this.offset += k;
    }
    return out;
  }

  /** Up to `max` (> 0) bytes, at least one; a view into the source chunk. */
  async readSome(max: number, what: What): Promise<Uint8Array> {
    if (this.#pos === this.#buf.length && !(await this.#more())) {
      throw this.truncated(what);
    }
    const k = Math.min(max, this.#buf.length - this.#pos);
    const r = this.#buf.subarray(this.#pos, this.#pos + k);
    this.#pos += k;
    this.offset += k;
    return r;
  }

  /** A u64 that must fit in 2^53 - 1. */
  async readU64(what: What): Promise<number> {
    const at = this.offset;
    const b = await this.readExact(8, what);
    const lo = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
    const hi = (b[4] | (b[5] << 8) | (b[6] << 16) | (b[7] << 24)) >>> 0;
    if (hi > 0x1f_ffff) {
      throw new NarError(
        `length ${(BigInt(hi) << 32n) | BigInt(lo)} in ${
          say(what)
        } is too large`,
        at,
      );
    }
    return hi * 0x1_0000_0000 + lo;
  }

  /** Reads and checks the zero padding after `len` bytes of a string. */
  async readPadding(len: number, what: What): Promise<void> {
    const p = (8 - (len % 8)) % 8;
    if (p === 0) return;
    const at = this.offset;
    const b = await this.readExact(p, () => `padding of ${say(what)}`);
    for (let i = 0; i < p; i++) {
      if (b[i] !== 0) {
        throw new NarError(`non-zero padding after ${say(what)}`, at + i);
      }
    }
  }

  /** A length-prefixed string of at most `max` bytes (copied out). */
  async readString(max: number, what: What): Promise<Uint8Array> {
    const at = this.offset;
    const len = await this.readU64(what);
    if (len > max) {
      throw new NarError(
        `${say(what)} is ${len} bytes long, at most ${max} allowed`,
        at,
      );
    }
    const s = (await this.readExact(len, what)).slice();
    await this.readPadding(len, what);
    return s;
  }

  /** Reads a keyword token and checks it is `tag`. */
  async expect(tag: Uint8Array, context: What): Promise<void> {
    const at = this.offset;
    const len = await this.readU64(() =>
      `token ${showBytes(tag)} ${say(context)}`
    );
    if (len !== tag.length) {
      const got = len > MAX_TAG
        ? "a longer string"
        : showBytes(await this.readExact(len, () => `token ${say(context)}`));
      throw new NarError(
        `expected ${showBytes(tag)} ${say(context)}, got ${got}`,
        at,
      );
    }
    const got = await this.readExact(
      len,
      () => `token ${showBytes(tag)} ${say(context)}`,
    );
    if (compareBytes(got, tag) !== 0) {
      throw new NarError(
        `expected ${showBytes(tag)} ${say(context)}, got ${showBytes(got)}`,
        at,
      );
    }
    await this.readPadding(len, () => `token ${showBytes(tag)}`);
  }

  /** Whether the stream has ended (no bytes left). */
  async atEnd(): Promise<boolean> {
    if (this.#pos < this.#buf.length) return false;
    return !(await this.#more());
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
  let ok = false;
  try {
    const at = src.offset;
    let magic: Uint8Array;
    try {
      magic = await src.readString(MAX_TAG, "the NAR header");
    } catch (e) {
      if (e instanceof NarError) {
        throw new NarError(`input does not look like a NAR (${e.reason})`, at);
      }
      throw e;
    }
    if (!same(magic, TAG.magic)) {
      throw new NarError(
        `input does not look like a NAR (header ${showBytes(magic)})`,
        at,
      );
    }

    // Directories being read, innermost last.
    const stack: { path: Uint8Array[]; prev: Uint8Array | undefined }[] = [];
    let path: Uint8Array[] = [];
    while (true) {
      // A node at `path`.
      const here = path;
      const where = () => `node ${showPath(here)}`;
      await src.expect(TAG.open, () => `opening ${where()}`);
      await src.expect(TAG.type, () => `in ${where()}`);
      const typeAt = src.offset;
      const type = await src.readString(MAX_TAG, () => `type of ${where()}`)
        .catch(
          (e) => {
            if (e instanceof NarError && /bytes long/.test(e.message)) {
              throw new NarError(
                `unknown node type (too long) at ${where()}`,
                typeAt,
              );
            }
            throw e;
          },
        );
      if (same(type, TAG.regular)) {
        const tagAt = src.offset;
        let tag = await src.readString(MAX_TAG, () => `token in ${where()}`);
        let executable = false;
        if (same(tag, TAG.executable)) {
          executable = true;
          const markAt = src.offset;
          const mark = await src.readString(
            MAX_TAG,
            () => `executable marker of ${where()}`,
          );
          if (mark.length !== 0) {
            throw new NarError(
              `executable marker of ${where()} is not empty`,
              markAt,
            );
          }
          tag = await src.readString(MAX_TAG, () => `token in ${where()}`);
        }
        if (!same(tag, TAG.contents)) {
          throw new NarError(
            `expected ${
              executable ? "" : '"executable" or '
            }"contents" in ${where()}, got ${showBytes(tag)}`,
            tagAt,
          );
        }
        const size = await src.readU64(() => `size of ${where()}`);
        let remaining = size;
        let pending: Promise<void> | undefined;
        const contentWhat = () => `contents of ${where()}`;
        const contents = new ReadableStream<Uint8Array>({
          pull(c) {
            if (remaining === 0) {
              c.close();
              return;
            }
            pending = src.readSome(
              Math.min(remaining, MAX_CONTENT_CHUNK),
              contentWhat,
            ).then(
              (chunk) => {
                remaining -= chunk.length;
                c.enqueue(chunk);
                if (remaining === 0) c.close();
              },
            );
            const p = pending;
            return p.finally(() => {
              if (pending === p) pending = undefined;
            });
          },
        }, { highWaterMark: 0 });
        yield { type: "regular", path, executable, size, contents };
        if (pending) await pending.catch(() => {});
        // Skip whatever the consumer left unread.
        while (remaining > 0) {
          const chunk = await src.readSome(
            Math.min(remaining, MAX_CONTENT_CHUNK),
            contentWhat,
          );
          remaining -= chunk.length;
        }
        await src.readPadding(size, contentWhat);
        await src.expect(TAG.close, () => `closing ${where()}`);
      } else if (same(type, TAG.symlink)) {
        await src.expect(TAG.target, () => `in ${where()}`);
        const targetAt = src.offset;
        const target = await src.readString(
          MAX_TARGET_LENGTH,
          () => `symlink target of ${where()}`,
        );
        validateSymlinkTarget(target, where, targetAt);
        await src.expect(TAG.close, () => `closing ${where()}`);
        yield { type: "symlink", path, target };
      } else if (same(type, TAG.directory)) {
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
      if (!same(type, TAG.directory) && stack.length > 0) {
        await src.expect(
          TAG.close,
          () => `closing the entry ${showPath(path)}`,
        );
      }
      // Next entry of the innermost open directory, closing finished ones.
      let found = false;
      while (stack.length > 0) {
        const top = stack[stack.length - 1];
        const dirWhere = () => `directory ${showPath(top.path)}`;
        const tagAt = src.offset;
        const tag = await src.readString(
          MAX_TAG,
          () => `entry of ${dirWhere()}`,
        );
        if (same(tag, TAG.close)) {
          stack.pop();
          yield { type: "directory-end", path: top.path };
          if (stack.length > 0) {
            await src.expect(
              TAG.close,
              () => `closing the entry ${showPath(top.path)}`,
            );
          }
          continue;
        }
        if (!same(tag, TAG.entry)) {
          throw new NarError(
            `expected "entry" or ")" in ${dirWhere()}, got ${showBytes(tag)}`,
            tagAt,
          );
        }
        await src.expect(TAG.open, () => `opening an entry of ${dirWhere()}`);
        await src.expect(TAG.name, () => `in an entry of ${dirWhere()}`);
        const nameAt = src.offset;
        const name = await src.readString(
          MAX_NAME_LENGTH,
          () => `entry name in ${dirWhere()}`,
        );
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
        await src.expect(
          TAG.node,
          () => `after the entry name ${showBytes(name)} in ${dirWhere()}`,
        );
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
