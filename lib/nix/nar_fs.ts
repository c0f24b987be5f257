/**
 * A {@link NarNode} tree over the local file system (lstat-based, symlinks
 * are not followed), ready for {@link narStream}. Names stay raw bytes: paths
 * are handled as Buffers so names that are not valid UTF-8 survive on
 * runtimes that support byte paths (Bun, Node; Deno's node:fs decodes them
 * lossily).
 *
 * Metadata and small files are read with the synchronous node:fs calls: for
 * files in the page cache one such call costs far less than an async round
 * trip, and many small files dominate typical trees. Large files are read
 * in 1 MiB chunks, one chunk per pull.
 *
 * @module
 */
import * as fs from "node:fs";
import { Buffer } from "node:buffer";
import type { NarNode, SyncFileReader } from "./nar_writer.ts";
import { NarError } from "./nar_common.ts";

const READ_CHUNK = 256 * 1024;
const SLASH = Buffer.from("/");

/** Builds the node for `fsPath` (lstat). Throws a clear `Error` for unsupported file types. */
export function narNodeFromPath(fsPath: string | Uint8Array): Promise<NarNode> {
  try {
    const p = typeof fsPath === "string"
      ? Buffer.from(fsPath)
      : Buffer.from(fsPath);
    return Promise.resolve(nodeFor(p, fs.lstatSync(p)));
  } catch (e) {
    return Promise.reject(e);
  }
}

function nodeFor(p: Buffer, st: fs.Stats): NarNode {
  if (st.isFile()) {
    const size = st.size;
    return {
      type: "regular",
      executable: (st.mode & 0o100) !== 0,
      size,
      contents: () => Promise.resolve(fileStream(p, size)),
      bytes: () => Promise.resolve(readSmall(p, size)),
      openSync: () => openSync(p),
    };
  }
  if (st.isSymbolicLink()) {
    const t = fs.readlinkSync(p, { encoding: "buffer" });
    return {
      type: "symlink",
      target: new Uint8Array(t.buffer, t.byteOffset, t.byteLength),
    };
  }
  if (st.isDirectory()) {
    return {
      type: "directory",
      entries: () => dirEntries(p),
    };
  }
  throw new NarError(
    `${
      JSON.stringify(p.toString())
    } has an unsupported file type (not a file, directory or symlink)`,
  );
}

function openSync(p: Buffer): SyncFileReader {
  const fd = fs.openSync(p, "r");
  return {
    read: (buf, offset, length, position) =>
      fs.readSync(fd, buf, offset, length, position),
    close: () => fs.closeSync(fd),
  };
}

function readSmall(p: Buffer, size: number): Uint8Array {
  const b = fs.readFileSync(p);
  if (b.length !== size) {
    throw changed(p, size, b.length > size ? "grew" : "shrank");
  }
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

async function* dirEntries(dir: Buffer): AsyncGenerator<[Uint8Array, NarNode]> {
  const names = fs.readdirSync(dir, { encoding: "buffer" });
  names.sort(Buffer.compare);
  const prefix = Buffer.concat([dir, SLASH]);
  for (const name of names) {
    const child = Buffer.concat([prefix, name]);
    yield [
      new Uint8Array(name.buffer, name.byteOffset, name.byteLength),
      nodeFor(child, fs.lstatSync(child)),
    ];
  }
}

/** Streams a file's bytes in 1 MiB chunks; errors if it no longer has `size` bytes. */
function fileStream(p: Buffer, size: number): ReadableStream<Uint8Array> {
  let fd: number | undefined;
  let pos = 0;
  const close = () => {
    if (fd !== undefined) fs.closeSync(fd);
    fd = undefined;
  };
  return new ReadableStream<Uint8Array>({
    start() {
      fd = fs.openSync(p, "r");
    },
    pull(c) {
      try {
        const want = Math.min(READ_CHUNK, size - pos);
        if (want <= 0) {
          // Check we are at the end of the file, as lstat said.
          const n = fs.readSync(fd!, new Uint8Array(1), 0, 1, pos);
          close();
          if (n !== 0) c.error(changed(p, size, "grew"));
          else c.close();
          return;
        }
        const buf = new Uint8Array(want);
        let got = 0;
        while (got < want) {
          const n = fs.readSync(fd!, buf, got, want - got, pos + got);
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

function changed(p: Buffer, size: number, how: string): NarError {
  return new NarError(
    `${
      JSON.stringify(p.toString())
    } ${how} while being read (lstat said ${size} bytes)`,
  );
}
