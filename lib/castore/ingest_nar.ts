/**
 * Ingests a NAR stream into castore: file contents go through
 * {@linkcode BlobWriter}s as they arrive, directories are put leaves first
 * (the NAR's post-order), and the NAR's SHA-256 and size are computed on the
 * way. The directory putter is closed only after the NAR was read to its end
 * and matched what the caller expected, so a bad NAR leaves nothing reachable
 * (blobs written before the failure stay as unreferenced garbage).
 *
 * Local services write without per-object syncs here (see
 * ./data_dir_sync.ts): everything is made durable by one commit before the
 * result is returned, so a caller may record it (a PathInfo) right away.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { createHash } from "node:crypto";
import {
  type Entry,
  EntrySchema,
  FileEntrySchema,
  SymlinkEntrySchema,
} from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { BlobService, BlobWriter } from "./blob_service.ts";
import type { DirectoryPutter, DirectoryService } from "./directory_service.ts";
import { directoryEntry, directoryOfEntries } from "./directory.ts";
import { readNar } from "../nix/nar_reader.ts";
import { WriteBatch } from "./data_dir_sync.ts";
import { maxInFlight } from "./chunk_pipeline.ts";
import { encodeNixBase32 } from "../nix/nixbase32.ts";

/** What the caller knows about the NAR in advance (checked at the end). */
export interface NarExpectation {
  /** The NAR's size in bytes. */
  narSize?: number;
  /** The NAR's SHA-256. */
  narSha256?: Uint8Array;
}

/** The result of {@linkcode ingestNar}. */
export interface NarIngestResult {
  /** The root entry (unnamed: name is empty; callers rename it). */
  entry: Entry;
  /** Bytes of NAR read. */
  narSize: number;
  /** SHA-256 of the NAR bytes. */
  narSha256: Uint8Array;
}

/** A NAR that is fine as a NAR but not the one the caller expected. */
export class NarMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NarMismatchError";
  }
}

const EMPTY = new Uint8Array();
/** Pieces of the NAR smaller than a quarter of this are gathered up to it. */
const GATHER = 256 << 10;
/** Blob closes allowed in flight at once. */
const MAX_IN_FLIGHT = 32;

/**
 * Reads the NAR from `source` into castore. Throws `NarError` (from lib/nix)
 * for a malformed NAR, {@linkcode NarMismatchError} when size or hash differ
 * from `expect`; in both cases no directory becomes reachable.
 */
export async function ingestNar(
  source: ReadableStream<Uint8Array>,
  blobs: BlobService,
  directories: DirectoryService,
  expect?: NarExpectation,
): Promise<NarIngestResult> {
  const hasher = createHash("sha256");
  const batch = new WriteBatch(blobs, directories);
  let narSize = 0;
  // Small pieces (a socket's reads: ~13 KB on average from `nix copy`) are
  // gathered into bigger ones first: every piece costs a hash update and a
  // trip through the streams and the NAR reader (~0.8 s per GiB measured in
  // the nix-daemon's SHA-256 updates alone).
  let gather = new Uint8Array(GATHER);
  let gathered = 0;
  const pass = (
    b: Uint8Array,
    controller: TransformStreamDefaultController<Uint8Array>,
  ) => {
    hasher.update(b);
    narSize += b.length;
    if (expect?.narSize !== undefined && narSize > expect.narSize) {
      throw new NarMismatchError(
        `NAR size mismatch: expected ${expect.narSize} bytes, got more`,
      );
    }
    controller.enqueue(b);
  };
  const flush = (controller: TransformStreamDefaultController<Uint8Array>) => {
    if (gathered === 0) return;
    const b = gather.subarray(0, gathered);
    gather = new Uint8Array(GATHER);
    gathered = 0;
    pass(b, controller);
  };
  const counted = source.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        if (chunk.length >= GATHER >> 2) {
          flush(controller);
          pass(chunk, controller);
          return;
        }
        if (gathered + chunk.length > GATHER) flush(controller);
        gather.set(chunk, gathered);
        gathered += chunk.length;
      },
      flush,
    }),
  );

  // Blob closes (chunk flushes) run in the background, at most
  // MAX_IN_FLIGHT at once, while the NAR keeps streaming; a directory is
  // built once its children's blobs are stored. Directory puts are queued in
  // NAR order (children before parents) on one putter.
  let putter: DirectoryPutter | undefined;
  let putChain: Promise<void> = Promise.resolve();
  const stack: Promise<Entry>[][] = [];
  let root: Promise<Entry> | undefined;
  const writers = new Set<BlobWriter>();
  const inflight = new Set<Promise<unknown>>();
  /** The first blob that failed. */
  let failure: { error: unknown } | undefined;

  const add = (path: Uint8Array[], entry: Promise<Entry>) => {
    entry.catch(() => {}); // awaited by the parent (or as the root)
    if (path.length === 0) root = entry;
    else stack[stack.length - 1].push(entry);
  };
  const nameOf = (
    path: Uint8Array[],
  ) => (path.length ? path[path.length - 1] : EMPTY);

  try {
    for await (const ev of readNar(counted)) {
      switch (ev.type) {
        case "regular": {
          const w = batch.putBlob();
          writers.add(w);
          while (inflight.size >= maxInFlight(w, MAX_IN_FLIGHT)) {
            await Promise.race(inflight);
          }
          // Directories do not wait for their blobs: a failed blob stops
          // the NAR here, at the next file.
          if (failure) throw failure.error;
          let got = 0;
          // chunks(): the contents without a web stream in between.
          for await (const chunk of ev.chunks()) {
            got += chunk.length;
            await w.write(chunk);
          }
          const closing = w.close().then((digest) => {
            writers.delete(w);
            return digest;
          });
          const done = closing.then(() => {}, (error) => {
            failure ??= { error };
          });
          inflight.add(done);
          done.then(() => inflight.delete(done));
          const name = nameOf(ev.path);
          const size = BigInt(got);
          const executable = ev.executable;
          add(
            ev.path,
            closing.then((digest) =>
              create(EntrySchema, {
                entry: {
                  case: "file",
                  value: create(FileEntrySchema, {
                    name,
                    digest,
                    size,
                    executable,
                  }),
                },
              })
            ),
          );
          break;
        }
        case "symlink":
          add(
            ev.path,
            Promise.resolve(create(EntrySchema, {
              entry: {
                case: "symlink",
                value: create(SymlinkEntrySchema, {
                  name: nameOf(ev.path),
                  target: ev.target,
                }),
              },
            })),
          );
          break;
        case "directory":
          stack.push([]);
          break;
        case "directory-end": {
          // Not awaited here: the NAR goes on while this directory's last
          // blobs are still being chunked (on the ingest worker, see
          // ./chunk_pipeline.ts) instead of waiting for them at every
          // directory's end. Its put is queued once its children are
          // known, so after its child directories' puts.
          const name = nameOf(ev.path);
          add(
            ev.path,
            Promise.all(stack.pop()!).then((children) => {
              const dir = directoryOfEntries(children);
              const p = putter ??= batch.putDirectories();
              putChain = putChain.then(() => p.put(dir));
              putChain.catch(() => {});
              return directoryEntry(name, dir);
            }),
          );
          break;
        }
      }
    }
    if (!root) throw new NarMismatchError("NAR ended without a root node");
    const entry = await root;
    await putChain;
    const narSha256 = new Uint8Array(hasher.digest());
    if (expect?.narSize !== undefined && expect.narSize !== narSize) {
      throw new NarMismatchError(
        `NAR size mismatch: expected ${expect.narSize} bytes, got ${narSize}`,
      );
    }
    if (expect?.narSha256 && !sameBytes(expect.narSha256, narSha256)) {
      throw new NarMismatchError(
        `NAR hash mismatch: expected sha256:${
          encodeNixBase32(expect.narSha256)
        }, got sha256:${encodeNixBase32(narSha256)}`,
      );
    }
    if (putter) await putter.close();
    await batch.commit();
    return { entry, narSize, narSha256 };
  } catch (e) {
    await Promise.all(inflight);
    await Promise.all([...writers].map((w) => w.abort().catch(() => {})));
    await putChain.catch(() => {});
    await batch.abort();
    throw e;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
