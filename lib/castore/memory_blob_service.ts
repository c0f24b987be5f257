/**
 * A BlobService kept in process memory (`memory://`): whole blobs in a
 * `Map`, no chunking (so `chunks()` answers an empty list).
 *
 * @module
 */
import type {
  BlobService,
  BlobWriter,
  ByteRange,
  ChunkMeta,
} from "./blob_service.ts";
import {
  createBlake3,
  digestFromHex,
  digestToHex,
  validateDigest,
} from "./digest.ts";
import { checkRange } from "./range.ts";

/** How many bytes a read stream hands out at once. */
const READ_PIECE = 1 << 20;

/** Blobs in a `Map`, keyed by BLAKE3 digest. */
export class MemoryBlobService implements BlobService {
  #blobs = new Map<string, Uint8Array>();

  /** Whether the blob is present. */
  has(digest: Uint8Array): Promise<boolean> {
    try {
      validateDigest(digest, "blob digest");
      return Promise.resolve(this.#blobs.has(digestToHex(digest)));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** An empty list (no finer granularity) if present, else `undefined`. */
  chunks(digest: Uint8Array): Promise<ChunkMeta[] | undefined> {
    try {
      validateDigest(digest, "blob digest");
      return Promise.resolve(
        this.#blobs.has(digestToHex(digest)) ? [] : undefined,
      );
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The blob's bytes (or a range of them), or `undefined` if missing. */
  read(
    digest: Uint8Array,
    range?: ByteRange,
  ): Promise<ReadableStream<Uint8Array> | undefined> {
    try {
      validateDigest(digest, "blob digest");
      const blob = this.#blobs.get(digestToHex(digest));
      if (!blob) return Promise.resolve(undefined);
      const [start, end] = checkRange(range, blob.length);
      let pos = start;
      return Promise.resolve(
        new ReadableStream<Uint8Array>({
          pull(controller) {
            if (pos >= end) {
              controller.close();
              return;
            }
            const n = Math.min(READ_PIECE, end - pos);
            controller.enqueue(blob.slice(pos, pos + n));
            pos += n;
            if (pos >= end) controller.close();
          },
        }),
      );
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** A writer that keeps the bytes and stores them on close. */
  put(): BlobWriter {
    const pieces: Uint8Array[] = [];
    const hasher = createBlake3();
    let total = 0;
    let state: "open" | "closed" | "aborted" = "open";
    const blobs = this.#blobs;
    const checkOpen = () => {
      if (state !== "open") throw new Error(`blob writer already ${state}`);
    };
    return {
      write(data: Uint8Array): Promise<void> {
        try {
          checkOpen();
          hasher.update(data);
          pieces.push(data.slice());
          total += data.length;
          return Promise.resolve();
        } catch (e) {
          return Promise.reject(e);
        }
      },
      close(): Promise<Uint8Array> {
        try {
          checkOpen();
          state = "closed";
          const blob = new Uint8Array(total);
          let o = 0;
          for (const p of pieces) {
            blob.set(p, o);
            o += p.length;
          }
          pieces.length = 0;
          const digest = hasher.digest();
          blobs.set(digestToHex(digest), blob);
          return Promise.resolve(digest);
        } catch (e) {
          return Promise.reject(e);
        }
      },
      abort(): Promise<void> {
        if (state === "open") state = "aborted";
        pieces.length = 0;
        return Promise.resolve();
      },
    };
  }

  /** Every stored blob digest. */
  async *listBlobs(): AsyncIterable<Uint8Array> {
    for (const k of [...this.#blobs.keys()]) yield digestFromHex(k);
  }

  /** Nothing to release. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
