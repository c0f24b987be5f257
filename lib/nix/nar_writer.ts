/**
 * Writes a NAR (Nix ARchive) from a tree of {@link NarNode}s as a stream of
 * bytes, in the one canonical form Nix produces:
 *
 * ```
 * nar       = str("nix-archive-1") node
 * node      = str("(") str("type") body str(")")
 * body      = str("regular") [str("executable") str("")] str("contents") str(<bytes>)
 *           | str("symlink") str("target") str(<target>)
 *           | str("directory") { str("entry") str("(") str("name") str(<name>) str("node") node str(")") }
 * str(s)    = u64le(len(s)) s <zero bytes up to a multiple of 8>
 * ```
 *
 * Directory entries come strictly sorted by their raw name bytes. Output is
 * coalesced into 256 KiB chunks (many small files become one chunk); file
 * contents are read straight into those chunks when the node offers a
 * synchronous reader, and big chunks of streamed contents pass through
 * without copying. With `reuseBuffers` the same few buffers serve the whole
 * NAR.
 *
 * Our own code: no maintained npm package implements this Nix format.
 *
 * @module
 */
import {
  compareBytes,
  MAX_NAR_DEPTH,
  NAR_MAGIC,
  NarError,
  showBytes as showName,
  showPath,
  validateEntryName,
  validateSymlinkTarget,
} from "./nar_common.ts";

export { NarError } from "./nar_common.ts";

/** A file system object to serialise. */
export type NarNode =
  | NarRegularNode
  | { type: "symlink"; target: Uint8Array }
  | {
    type: "directory";
    /**
     * The entries, strictly sorted by name bytes (checked). When the returned
     * object is also a synchronous `Iterable`, the writer iterates it that
     * way (no await per entry).
     */
    entries: () => AsyncIterable<[name: Uint8Array, node: NarNode]>;
  };

/** A regular file node. */
export interface NarRegularNode {
  type: "regular";
  /** Whether the file is executable. */
  executable: boolean;
  /** Exact size in bytes; the contents must have exactly this many bytes. */
  size: number;
  /** Opens the contents. */
  contents: () => Promise<ReadableStream<Uint8Array>>;
  /**
   * Optional fast path for small files: the whole contents in one call. The
   * writer uses it (instead of `contents`) for files up to
   * {@link SMALL_FILE_LIMIT} bytes.
   */
  bytes?: () => Promise<Uint8Array>;
  /**
   * Optional fast path for local files: a synchronous positional reader. The
   * writer reads straight into its output buffers (no per-file allocation)
   * and calls `close` when done. Preferred over `bytes` and `contents`.
   */
  openSync?: () => SyncFileReader;
  /**
   * The file's local path, when it has one: lets a
   * {@link NarChunksOptions.copyContents} hook copy the contents itself
   * (e.g. with sendfile(2)).
   */
  localPath?: Uint8Array;
}

/** A synchronous positional reader, see {@link NarRegularNode.openSync}. */
export interface SyncFileReader {
  /** Reads up to `length` bytes at file `position` into `buf[offset..]`; returns the count (0 at the end). */
  read(
    buf: Uint8Array,
    offset: number,
    length: number,
    position: number,
  ): number;
  /** Releases the file. */
  close(): void;
}

/** Options for {@link narChunks}. */
export interface NarChunksOptions {
  /**
   * Reuse output buffers: each chunk is only valid until the next one is
   * requested. Safe for consumers that copy or consume a chunk at once
   * (hashing, a synchronous write); saves allocation and page faults.
   */
  reuseBuffers?: boolean;
  /**
   * Lets the consumer copy the contents of big local files itself (e.g. the
   * kernel with sendfile(2) from the file to stdout) instead of receiving
   * them as chunks. For a regular file of at least `minSize` bytes with
   * {@link NarRegularNode.localPath} and {@link NarRegularNode.openSync}, the
   * writer first yields everything before the contents, then (once the
   * consumer asks for the next chunk, so it must have written the previous
   * ones by then) calls `copy(node)`, which writes a prefix of the contents
   * to the output and returns its length in bytes (0: none, e.g. not
   * supported). The writer reads and emits the rest itself, and reports a
   * short file as usual.
   */
  copyContents?: {
    minSize: number;
    copy: (node: NarRegularNode) => Promise<number> | number;
  };
}

/** Files up to this size are read with `bytes()` when a node offers it. */
export const SMALL_FILE_LIMIT = 256 * 1024;

/** Size of the chunks the writer emits (except pass-through file chunks). */
const CHUNK_SIZE = 256 * 1024;
/** File chunks at least this big are emitted as they are, not copied. */
const PASS_THROUGH = 64 * 1024;

const enc = new TextEncoder();

/** Pre-encodes a sequence of string tokens into their NAR bytes. */
function tokens(...strs: string[]): Uint8Array {
  const parts = strs.map((s) => enc.encode(s));
  const len = parts.reduce((n, p) => n + 8 + pad8(p.length), 0);
  const out = new Uint8Array(len);
  let o = 0;
  for (const p of parts) {
    writeU64(out, o, p.length);
    out.set(p, o + 8);
    o += 8 + pad8(p.length);
  }
  return out;
}

function pad8(n: number): number {
  return (n + 7) & ~7;
}

function writeU64(buf: Uint8Array, o: number, n: number): void {
  buf[o] = n & 0xff;
  buf[o + 1] = (n >>> 8) & 0xff;
  buf[o + 2] = (n >>> 16) & 0xff;
  buf[o + 3] = (n >>> 24) & 0xff;
  const hi = Math.floor(n / 0x1_0000_0000);
  buf[o + 4] = hi & 0xff;
  buf[o + 5] = (hi >>> 8) & 0xff;
  buf[o + 6] = (hi >>> 16) & 0xff;
  buf[o + 7] = (hi >>> 24) & 0xff;
}

const T_MAGIC_OPEN = tokens(NAR_MAGIC);
const T_REGULAR = tokens("(", "type", "regular");
const T_EXECUTABLE = tokens("executable", "");
const T_CONTENTS = tokens("contents");
const T_SYMLINK = tokens("(", "type", "symlink", "target");
const T_DIRECTORY = tokens("(", "type", "directory");
const T_ENTRY_NAME = tokens("entry", "(", "name");
const T_NODE = tokens("node");
const T_CLOSE = tokens(")");
const ZEROS = new Uint8Array(8);

/**
 * The NAR's fixed token sequences, encoded (for writers that lay out a NAR
 * themselves, e.g. lib/castore/nar_plan.ts): `magic` is followed by the
 * root node; a node is `regular` [`executable`] `contents` + the size +
 * the bytes + padding, or `symlink` + the target string, or `directory` +
 * entries (`entryName` + name string + `node` + node + `close`); every node
 * ends with `close`.
 */
export const NAR_TOKENS = {
  magic: T_MAGIC_OPEN,
  regular: T_REGULAR,
  executable: T_EXECUTABLE,
  contents: T_CONTENTS,
  symlink: T_SYMLINK,
  directory: T_DIRECTORY,
  entryName: T_ENTRY_NAME,
  node: T_NODE,
  close: T_CLOSE,
} as const;

/** Accumulates small writes into large chunks. */
class ChunkBuilder {
  buf: Uint8Array;
  pos = 0;
  /** Finished chunks waiting to be emitted. */
  ready: Uint8Array[] = [];
  /** Buffers free for reuse (only with `reuse`). */
  #free: Uint8Array[] = [];
  readonly #reuse: boolean;
  readonly #owned = new WeakSet<ArrayBufferLike>();

  constructor(reuse: boolean) {
    this.#reuse = reuse;
    this.buf = this.#alloc();
  }

  write(b: Uint8Array): void {
    let src = b;
    while (src.length > 0) {
      const room = this.buf.length - this.pos;
      if (src.length <= room) {
        this.buf.set(src, this.pos);
        this.pos += src.length;
        return;
      }
      this.buf.set(src.subarray(0, room), this.pos);
      this.pos += room;
      src = src.subarray(room);
      this.flush();
    }
  }

  /** Writes u64 length + bytes + padding. */
  writeString(b: Uint8Array): void {
    this.writeU64(b.length);
    this.write(b);
    this.writePadding(b.length);
  }

  writeU64(n: number): void {
    if (this.buf.length - this.pos < 8) this.flush();
    writeU64(this.buf, this.pos, n);
    this.pos += 8;
  }

  writePadding(n: number): void {
    const p = pad8(n) - n;
    if (p > 0) this.write(ZEROS.subarray(0, p));
  }

  /** Moves the buffered bytes (if any) to `ready`. */
  flush(): void {
    if (this.pos === 0) return;
    this.ready.push(this.buf.subarray(0, this.pos));
    this.buf = this.#free.pop() ?? this.#alloc();
    this.pos = 0;
  }

  /** Emits a big chunk as it is, after what is buffered. */
  passThrough(b: Uint8Array): void {
    this.flush();
    this.ready.push(b);
  }

  /** Hands a consumed chunk's buffer back for reuse. */
  recycle(chunk: Uint8Array): void {
    if (this.#reuse && this.#owned.has(chunk.buffer)) {
      this.#free.push(new Uint8Array(chunk.buffer, 0, CHUNK_SIZE));
    }
  }

  #alloc(): Uint8Array {
    const b = new Uint8Array(CHUNK_SIZE);
    if (this.#reuse) this.#owned.add(b.buffer);
    return b;
  }

  /** Yields the ready chunks; recycles each once the consumer asks for more. */
  *drain(): Generator<Uint8Array> {
    const ready = this.ready;
    this.ready = [];
    for (const c of ready) {
      yield c;
      this.recycle(c);
    }
  }
}

type Frame = {
  /** Set when the entries are also a synchronous iterable (no await per entry). */
  sync: Iterator<[Uint8Array, NarNode]> | undefined;
  iter: AsyncIterator<[Uint8Array, NarNode]> | undefined;
  prev: Uint8Array | undefined;
  path: Uint8Array[];
};

/** Opens a directory's entries, preferring a synchronous iterator when offered. */
function openEntries(
  node: Extract<NarNode, { type: "directory" }>,
  path: Uint8Array[],
): Frame {
  const it = node.entries() as
    & AsyncIterable<[Uint8Array, NarNode]>
    & Partial<Iterable<[Uint8Array, NarNode]>>;
  const sync = it[Symbol.iterator];
  return sync
    ? { sync: sync.call(it), iter: undefined, prev: undefined, path }
    : {
      sync: undefined,
      iter: it[Symbol.asyncIterator](),
      prev: undefined,
      path,
    };
}

/**
 * Serialises `root` as a NAR. The stream errors with a {@link NarError} if
 * entries are unsorted or duplicated, names or targets are invalid, or a
 * file's contents do not have exactly its declared size.
 */
export function narStream(root: NarNode): ReadableStream<Uint8Array> {
  const gen = narChunks(root);
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const r = await gen.next();
        if (r.done) controller.close();
        else controller.enqueue(r.value);
      } catch (e) {
        controller.error(e);
      }
    },
    async cancel() {
      await gen.return(undefined).catch(() => {});
    },
  }, { highWaterMark: 1 });
}

/**
 * The NAR as an async iterable of chunks (what {@link narStream} wraps).
 * Throws {@link NarError} as described there.
 */
export async function* narChunks(
  root: NarNode,
  options: NarChunksOptions = {},
): AsyncGenerator<Uint8Array> {
  const out = new ChunkBuilder(options.reuseBuffers ?? false);
  const copier = options.copyContents;
  const copyMin = copier ? copier.minSize : Infinity;
  out.write(T_MAGIC_OPEN);
  const stack: Frame[] = [];
  try {
    let node: NarNode = root;
    let path: Uint8Array[] = [];
    while (true) {
      // Write `node` (for a directory: its opening; entries follow via the stack).
      switch (node.type) {
        case "regular":
          if (node.size >= copyMin || !writeSmallSync(out, node, path)) {
            yield* writeRegular(out, node, path, copier);
          }
          out.write(T_CLOSE);
          if (stack.length > 0) out.write(T_CLOSE); // closes the "entry"
          break;
        case "symlink":
          validateSymlinkTarget(node.target, () => showPath(path));
          out.write(T_SYMLINK);
          out.writeString(node.target);
          out.write(T_CLOSE);
          if (stack.length > 0) out.write(T_CLOSE);
          break;
        case "directory":
          if (path.length >= MAX_NAR_DEPTH) {
            throw new NarError(
              `directory ${
                showPath(path)
              } is nested deeper than ${MAX_NAR_DEPTH} levels`,
            );
          }
          out.write(T_DIRECTORY);
          stack.push(openEntries(node, path));
          break;
        default:
          throw new NarError(
            `node ${showPath(path)} has unknown type ${
              JSON.stringify((node as { type: unknown }).type)
            }`,
          );
      }
      if (out.ready.length > 0) yield* out.drain();
      // Find the next entry, closing finished directories.
      let next: [Uint8Array, NarNode] | undefined;
      while (stack.length > 0) {
        const top = stack[stack.length - 1];
        const r = top.sync ? top.sync.next() : await top.iter!.next();
        if (!r.done) {
          next = r.value;
          const name = next[0];
          validateEntryName(name, () => showPath(top.path));
          if (top.prev !== undefined) {
            const cmp = compareBytes(top.prev, name);
            if (cmp >= 0) {
              throw new NarError(
                `directory ${showPath(top.path)}: entry ${showName(name)} ${
                  cmp === 0
                    ? "is duplicated"
                    : `comes after ${showName(top.prev)}`
                } (entries must be sorted by name bytes)`,
              );
            }
          }
          top.prev = name;
          out.write(T_ENTRY_NAME);
          out.writeString(name);
          out.write(T_NODE);
          path = [...top.path, name];
          node = next[1];
          break;
        }
        stack.pop();
        out.write(T_CLOSE); // closes the directory node
        if (stack.length > 0) out.write(T_CLOSE); // closes its "entry" in the parent
      }
      if (next === undefined) break;
    }
    out.flush();
    yield* out.drain();
  } finally {
    // On errors or early return, let open directory iterators clean up.
    for (const f of stack) {
      try {
        f.sync?.return?.();
        await f.iter?.return?.();
      } catch {
        // cleanup only
      }
    }
  }
}

/** Room for a small file's tokens around its contents (type, executable, contents, size, padding, closers). */
const SMALL_OVERHEAD = 160;

/**
 * Fast path without any await: a file with `openSync` that fits in the
 * current output buffer is read straight into it. Returns false (having
 * written nothing) when the general path must be used.
 */
function writeSmallSync(
  out: ChunkBuilder,
  node: NarRegularNode,
  path: Uint8Array[],
): boolean {
  const size = node.size;
  if (
    !node.openSync || !(size >= 0) ||
    size + SMALL_OVERHEAD > out.buf.length - out.pos
  ) return false;
  if (!Number.isSafeInteger(size)) return false;
  out.write(T_REGULAR);
  if (node.executable) out.write(T_EXECUTABLE);
  out.write(T_CONTENTS);
  out.writeU64(size);
  if (size > 0) {
    const f = node.openSync();
    try {
      let got = 0;
      while (got < size) {
        const n = f.read(out.buf, out.pos, size - got, got);
        if (n === 0) throw sizeMismatch(path, size, got);
        got += n;
        out.pos += n;
      }
    } finally {
      f.close();
    }
  }
  out.writePadding(size);
  return true;
}

/** Writes a regular file node after `(`; yields chunks as the buffer fills. */
async function* writeRegular(
  out: ChunkBuilder,
  node: NarRegularNode,
  path: Uint8Array[],
  copier?: NarChunksOptions["copyContents"],
): AsyncGenerator<Uint8Array> {
  const size = node.size;
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new NarError(`file ${showPath(path)} has invalid size ${size}`);
  }
  out.write(T_REGULAR);
  if (node.executable) out.write(T_EXECUTABLE);
  out.write(T_CONTENTS);
  out.writeU64(size);
  let copied = 0;
  if (
    copier && size > 0 && size >= copier.minSize && node.localPath &&
    node.openSync
  ) {
    out.flush();
    yield* out.drain();
    copied = await copier.copy(node);
    if (!(copied >= 0 && copied <= size)) {
      throw new Error(
        `copyContents returned ${copied} for a ${size}-byte file`,
      );
    }
  }
  if (copied === size && size > 0) {
    // All copied by the consumer.
  } else if (node.openSync) {
    const f = node.openSync();
    try {
      let got = copied;
      while (got < size) {
        if (out.pos === out.buf.length) {
          out.flush();
          yield* out.drain();
        }
        const n = f.read(
          out.buf,
          out.pos,
          Math.min(out.buf.length - out.pos, size - got),
          got,
        );
        if (n === 0) throw sizeMismatch(path, size, got);
        got += n;
        out.pos += n;
      }
    } finally {
      f.close();
    }
  } else if (node.bytes && size <= SMALL_FILE_LIMIT) {
    const b = await node.bytes();
    if (b.length !== size) throw sizeMismatch(path, size, b.length);
    if (size >= PASS_THROUGH) out.passThrough(b);
    else out.write(b);
  } else {
    let got = 0;
    const stream = await node.contents();
    const reader = stream.getReader();
    try {
      while (true) {
        const r = await reader.read();
        if (r.done) break;
        const chunk = r.value;
        got += chunk.length;
        if (got > size) throw sizeMismatch(path, size, got);
        if (chunk.length >= PASS_THROUGH) out.passThrough(chunk);
        else out.write(chunk);
        if (out.ready.length > 0) yield* out.drain();
      }
    } catch (e) {
      await reader.cancel(e).catch(() => {});
      throw e;
    } finally {
      reader.releaseLock();
    }
    if (got !== size) throw sizeMismatch(path, size, got);
  }
  out.writePadding(size);
}

function sizeMismatch(path: Uint8Array[], size: number, got: number): NarError {
  return new NarError(
    `file ${showPath(path)} declared ${size} bytes but its contents ${
      got > size ? "exceed that" : `have ${got}`
    }`,
  );
}
