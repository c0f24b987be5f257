/**
 * Renders a castore tree as a NAR: a lazy {@linkcode NarNode} over the blob
 * and directory services, serialised by lib/nix's NAR writer. The output is
 * byte-identical to `nix-store --dump` of the original tree.
 *
 * Reading one small blob at a time costs a round trip each (a file read and
 * a decompression on the thread pool, or a gRPC call), so a read-ahead walker
 * runs through the tree in NAR order ahead of the writer: it fetches
 * directories and starts reading small files (up to {@linkcode SMALL_BLOB})
 * while the writer is still busy with earlier entries, within a bounded
 * window of files and bytes. Big files are streamed when the writer reaches
 * them. Memory stays bounded by the window.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type {
  Directory,
  Entry,
} from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { BlobService } from "./blob_service.ts";
import type { DirectoryService } from "./directory_service.ts";
import { compareBytes, directoryDigest } from "./directory.ts";
import { digestToString } from "./digest.ts";
import { narChunks, type NarNode } from "../nix/nar_writer.ts";

/** Files up to this size are read ahead whole. */
export const SMALL_BLOB = 256 * 1024;
/** At most this many small files are read ahead. */
const WINDOW_FILES = 64;
/** At most this many bytes of small files are held read ahead. */
const WINDOW_BYTES = 16 << 20;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

type Child = [name: Uint8Array, entry: Entry];

/** The entries of a directory, merged into one list sorted by name bytes. */
export function directoryChildren(d: Directory): Child[] {
  const all: Child[] = [];
  for (const v of d.directories) {
    all.push([v.name, { entry: { case: "directory", value: v } } as Entry]);
  }
  for (const v of d.files) {
    all.push([v.name, { entry: { case: "file", value: v } } as Entry]);
  }
  for (const v of d.symlinks) {
    all.push([v.name, { entry: { case: "symlink", value: v } } as Entry]);
  }
  all.sort((a, b) => compareBytes(a[0], b[0]));
  return all;
}

/** A directory by digest, checked against it (`NotFound`/`DataLoss` naming it otherwise). */
export async function fetchDirectory(
  directories: DirectoryService,
  digest: Uint8Array,
): Promise<Directory> {
  const d = await directories.get(digest);
  if (!d) {
    throw new ConnectError(
      `directory ${digestToString(digest)} is missing`,
      Code.NotFound,
    );
  }
  if (!sameBytes(await directoryDigest(d), digest)) {
    throw new ConnectError(
      `directory ${digestToString(digest)} does not match its digest`,
      Code.DataLoss,
    );
  }
  return d;
}

async function openBlob(
  blobs: BlobService,
  digest: Uint8Array,
): Promise<ReadableStream<Uint8Array>> {
  const s = await blobs.read(digest);
  if (!s) {
    throw new ConnectError(
      `blob ${digestToString(digest)} is missing`,
      Code.NotFound,
    );
  }
  return s;
}

/** A blob service that can hand over a small blob without a stream. */
interface SmallBlobReader {
  readSmallSync(digest: Uint8Array, size: number): Uint8Array | undefined;
}

async function readBlob(
  blobs: BlobService,
  digest: Uint8Array,
  size: number,
): Promise<Uint8Array> {
  const direct = (blobs as Partial<SmallBlobReader>).readSmallSync?.(
    digest,
    size,
  );
  if (direct) return direct;
  const s = await openBlob(blobs, digest);
  const out = new Uint8Array(size);
  let o = 0;
  for await (const chunk of s) {
    if (o + chunk.length > size) {
      throw new ConnectError(
        `blob ${
          digestToString(digest)
        } is longer than the ${size} bytes its entry declares`,
        Code.DataLoss,
      );
    }
    out.set(chunk, o);
    o += chunk.length;
  }
  if (o !== size) {
    throw new ConnectError(
      `blob ${
        digestToString(digest)
      } has ${o} bytes, its entry declares ${size}`,
      Code.DataLoss,
    );
  }
  return out;
}

/** One step of the walk, in the order the NAR writer will ask for it. */
type Item =
  | { kind: "dir"; digest: Uint8Array; dir: Promise<Directory> }
  | {
    kind: "file";
    digest: Uint8Array;
    size: number;
    bytes?: Promise<Uint8Array>;
  };

/** Walks the tree in NAR order ahead of the writer, reading small files early. */
class ReadAhead {
  #queue: Item[] = [];
  #heldBytes = 0;
  #heldFiles = 0;
  #wakeWalker?: () => void;
  #wakeConsumer?: () => void;
  #done = false;
  #failure: unknown;
  stopped = false;

  constructor(
    readonly blobs: BlobService,
    readonly directories: DirectoryService,
  ) {}

  /** Starts walking below `root` (a directory entry). */
  start(root: Uint8Array): void {
    this.#walk(root).then(
      () => (this.#done = true),
      (e) => {
        this.#failure = e;
        this.#done = true;
      },
    ).finally(() => this.#wakeConsumer?.());
  }

  async #walk(digest: Uint8Array): Promise<void> {
    if (this.stopped) return;
    const dir = fetchDirectory(this.directories, digest);
    dir.catch(() => {});
    this.#push({ kind: "dir", digest, dir });
    const children = directoryChildren(await dir);
    for (const [, child] of children) {
      const e = child.entry;
      if (e.case === "directory") await this.#walk(e.value.digest);
      else if (e.case === "file") {
        const size = Number(e.value.size);
        if (size <= SMALL_BLOB) {
          while (
            !this.stopped &&
            (this.#heldFiles >= WINDOW_FILES ||
              this.#heldBytes + size > WINDOW_BYTES)
          ) {
            await new Promise<void>((r) => (this.#wakeWalker = r));
          }
          if (this.stopped) return;
          const bytes = readBlob(this.blobs, e.value.digest, size);
          bytes.catch(() => {});
          this.#heldFiles++;
          this.#heldBytes += size;
          this.#push({ kind: "file", digest: e.value.digest, size, bytes });
        } else {
          this.#push({ kind: "file", digest: e.value.digest, size });
        }
      }
      if (this.stopped) return;
    }
  }

  #push(item: Item): void {
    this.#queue.push(item);
    const w = this.#wakeConsumer;
    this.#wakeConsumer = undefined;
    w?.();
  }

  /** The next item; it must be the one the writer is at. */
  async next(kind: Item["kind"], digest: Uint8Array): Promise<Item> {
    while (this.#queue.length === 0) {
      if (this.#done) {
        throw this.#failure ??
          new Error("internal error: NAR read-ahead ran out of items");
      }
      await new Promise<void>((r) => (this.#wakeConsumer = r));
    }
    const item = this.#queue.shift()!;
    if (item.kind !== kind || !sameBytes(item.digest, digest)) {
      throw new Error(
        "internal error: NAR read-ahead is out of step with the writer",
      );
    }
    if (item.kind === "file" && item.bytes) {
      this.#heldFiles--;
      this.#heldBytes -= item.size;
      const w = this.#wakeWalker;
      this.#wakeWalker = undefined;
      w?.();
    }
    return item;
  }

  /** Queues the single item of a tree that is one file (no walk needed). */
  preload(item: Item): void {
    if (item.kind === "file" && item.bytes) {
      this.#heldFiles++;
      this.#heldBytes += item.size;
    }
    this.#push(item);
    this.#done = true;
  }

  /** Stops the walker (the NAR stream was cancelled or failed). */
  stop(): void {
    this.stopped = true;
    const w = this.#wakeWalker;
    this.#wakeWalker = undefined;
    w?.();
  }
}

function nodeOf(entry: Entry, ra: ReadAhead): NarNode {
  const e = entry.entry;
  switch (e.case) {
    case "symlink":
      return { type: "symlink", target: e.value.target };
    case "file": {
      const { digest, executable } = e.value;
      const size = Number(e.value.size);
      if (size <= SMALL_BLOB) {
        const bytes = async () => (await (await ra.next("file", digest) as {
          bytes: Promise<Uint8Array>;
        }).bytes);
        return {
          type: "regular",
          executable,
          size,
          bytes,
          contents: async () => {
            const b = await bytes();
            return new ReadableStream({
              start(c) {
                c.enqueue(b);
                c.close();
              },
            });
          },
        };
      }
      return {
        type: "regular",
        executable,
        size,
        contents: async () => {
          await ra.next("file", digest);
          return await openBlob(ra.blobs, digest);
        },
      };
    }
    case "directory": {
      const digest = e.value.digest;
      return {
        type: "directory",
        entries: async function* () {
          const item = await ra.next("dir", digest) as {
            dir: Promise<Directory>;
          };
          for (const [name, child] of directoryChildren(await item.dir)) {
            yield [name, nodeOf(child, ra)];
          }
        },
      };
    }
    default:
      throw new ConnectError("entry has no node", Code.InvalidArgument);
  }
}

/**
 * The NAR serialisation of `entry` (its name is ignored), streamed. The
 * stream errors on missing or corrupt data (`NotFound`/`DataLoss` naming the
 * digest).
 */
export function renderNar(
  entry: Entry,
  blobs: BlobService,
  directories: DirectoryService,
): ReadableStream<Uint8Array> {
  const ra = new ReadAhead(blobs, directories);
  let gen: AsyncGenerator<Uint8Array> | undefined;
  return new ReadableStream<Uint8Array>({
    start() {
      if (entry.entry.case === "directory") ra.start(entry.entry.value.digest);
      else if (entry.entry.case === "file") {
        // a lone file: the walker has nothing to do; feed the one item
        const v = entry.entry.value;
        const size = Number(v.size);
        const item: Item = size <= SMALL_BLOB
          ? {
            kind: "file",
            digest: v.digest,
            size,
            bytes: readBlob(blobs, v.digest, size),
          }
          : { kind: "file", digest: v.digest, size };
        if (item.bytes) item.bytes.catch(() => {});
        ra.preload(item);
      }
      gen = narChunks(nodeOf(entry, ra));
    },
    async pull(controller) {
      try {
        const r = await gen!.next();
        if (r.done) controller.close();
        else controller.enqueue(r.value);
      } catch (e) {
        ra.stop();
        controller.error(e);
      }
    },
    async cancel() {
      ra.stop();
      await gen?.return(undefined).catch(() => {});
    },
  }, { highWaterMark: 1 });
}
