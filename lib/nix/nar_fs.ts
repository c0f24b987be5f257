/**
 * A {@link NarNode} tree over the local file system (lstat-based, symlinks
 * are not followed), ready for {@link narStream}. Names stay raw bytes, so
 * names that are not valid UTF-8 survive on runtimes with byte paths (Bun,
 * Node; Deno's paths are strings).
 *
 * Metadata and file contents are read with synchronous calls (through
 * lib/runtime/sync_fs.ts, the fastest binding per runtime): for files in the
 * page cache one such call costs far less than an async round trip, and many
 * small files dominate typical trees. The writer reads file contents straight
 * into its output buffers ({@link NarRegularNode.openSync}); `contents()`
 * streams 256 KiB chunks, one per pull.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import type { NarNode, NarRegularNode } from "./nar_writer.ts";
import { NarError } from "./nar_common.ts";
import {
  type SyncDirent,
  type SyncFs,
  syncFs as defaultFs,
} from "../runtime/sync_fs.ts";

const READ_CHUNK = 256 * 1024;
const SLASH = 0x2f;
const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * Builds the node for `fsPath` (lstat). Rejects with a clear `Error` for
 * unsupported file types (sockets, devices, fifos) and with the binding's
 * error (`code` ENOENT, ...) when the path cannot be read.
 */
export function narNodeFromPath(
  fsPath: string | Uint8Array,
  fs: SyncFs = defaultFs,
): Promise<NarNode> {
  try {
    const p = typeof fsPath === "string" ? enc.encode(fsPath) : fsPath;
    return Promise.resolve(nodeFor(fs, p));
  } catch (e) {
    return Promise.reject(e);
  }
}

function show(p: Uint8Array): string {
  return JSON.stringify(dec.decode(p));
}

/**
 * The node at `p`. `kind` (from the directory listing's d_type) saves the
 * lstat for directories and symlinks; files always need it (size, mode).
 */
function nodeFor(
  fs: SyncFs,
  p: Uint8Array,
  kind?: SyncDirent["kind"],
): NarNode {
  const st = kind === "directory" || kind === "symlink"
    ? { kind, size: 0, executable: false }
    : fs.lstat(p);
  switch (st.kind) {
    case "file": {
      const size = st.size;
      const node: NarRegularNode = {
        type: "regular",
        executable: st.executable,
        size,
        contents: () => Promise.resolve(fileStream(fs, p, size)),
        bytes: () => {
          try {
            const b = fs.readFile(p);
            if (b.length !== size) {
              throw changed(p, size, b.length > size ? "grew" : "shrank");
            }
            return Promise.resolve(b);
          } catch (e) {
            return Promise.reject(e);
          }
        },
        openSync: () => fs.open(p),
        localPath: p,
      };
      return node;
    }
    case "symlink":
      return { type: "symlink", target: fs.readlink(p) };
    case "directory":
      return { type: "directory", entries: () => dirEntries(fs, p) };
    default:
      throw new NarError(
        `${
          show(p)
        } has an unsupported file type (not a file, directory or symlink)`,
      );
  }
}

/**
 * A directory's entries, sorted by name bytes, each lstat-ed when reached.
 * Iterable both ways: the NAR writer walks it synchronously (no await per
 * entry); other consumers can use `for await`.
 */
function dirEntries(
  fs: SyncFs,
  dir: Uint8Array,
): AsyncIterable<[Uint8Array, NarNode]> & Iterable<[Uint8Array, NarNode]> {
  return {
    [Symbol.iterator]: () => new DirIterator(fs, dir),
    async *[Symbol.asyncIterator]() {
      yield* new DirIterator(fs, dir);
    },
  };
}

/**
 * Lists the directory once, sorted by name bytes, and lstats each entry when
 * it is reached. A plain iterator rather than a generator: short runs execute
 * mostly in the JS engines' interpreters, where generators are slow.
 */
class DirIterator implements IterableIterator<[Uint8Array, NarNode]> {
  readonly #fs: SyncFs;
  readonly #prefix: Uint8Array;
  readonly #entries: SyncDirent[];
  #i = 0;

  constructor(fs: SyncFs, dir: Uint8Array) {
    this.#fs = fs;
    this.#entries = fs.readdir(dir);
    this.#entries.sort((a, b) => Buffer.compare(a.name, b.name));
    this.#prefix = new Uint8Array(dir.length + 1);
    this.#prefix.set(dir);
    this.#prefix[dir.length] = SLASH;
  }

  next(): IteratorResult<[Uint8Array, NarNode]> {
    if (this.#i >= this.#entries.length) {
      return { done: true, value: undefined };
    }
    const { name, kind } = this.#entries[this.#i++];
    const prefix = this.#prefix;
    const child = new Uint8Array(prefix.length + name.length);
    child.set(prefix);
    child.set(name, prefix.length);
    return { done: false, value: [name, nodeFor(this.#fs, child, kind)] };
  }

  [Symbol.iterator](): IterableIterator<[Uint8Array, NarNode]> {
    return this;
  }
}

/** Streams a file's bytes in 256 KiB chunks; errors if it no longer has `size` bytes. */
function fileStream(
  fs: SyncFs,
  p: Uint8Array,
  size: number,
): ReadableStream<Uint8Array> {
  let f: ReturnType<SyncFs["open"]> | undefined;
  let pos = 0;
  const close = () => {
    f?.close();
    f = undefined;
  };
  return new ReadableStream<Uint8Array>({
    start() {
      f = fs.open(p);
    },
    pull(c) {
      try {
        const want = Math.min(READ_CHUNK, size - pos);
        if (want <= 0) {
          // Check we are at the end of the file, as lstat said.
          const n = f!.read(new Uint8Array(1), 0, 1, pos);
          close();
          if (n !== 0) c.error(changed(p, size, "grew"));
          else c.close();
          return;
        }
        const buf = new Uint8Array(want);
        let got = 0;
        while (got < want) {
          const n = f!.read(buf, got, want - got, pos + got);
          if (n === 0) break;
          got += n;
        }
        pos += got;
        if (got < want) {
          close();
          c.error(changed(p, size, "shrank"));
          return;
        }
        c.enqueue(buf);
      } catch (e) {
        close();
        c.error(e);
      }
    },
    cancel() {
      close();
    },
  }, { highWaterMark: 0 });
}

function changed(p: Uint8Array, size: number, how: string): NarError {
  return new NarError(
    `${show(p)} ${how} while being read (lstat said ${size} bytes)`,
  );
}
