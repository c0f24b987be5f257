/**
 * A DirectoryService kept in process memory (`memory://`). Directories are
 * stored as their canonical bytes, so callers never share mutable messages
 * with the service, and every get re-checks the digest.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Directory } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { DirectoryPutter, DirectoryService } from "./directory_service.ts";
import {
  blake3Sync,
  digestEquals,
  digestFromHex,
  digestToHex,
  digestToString,
  validateDigest,
} from "./digest.ts";
import { decodeDirectory, validateDirectory } from "./directory.ts";
import { GraphPutter, traverseDirectories } from "./directory_graph.ts";

/** Directories in a `Map`, keyed by digest. */
export class MemoryDirectoryService implements DirectoryService {
  #dirs = new Map<string, Uint8Array>();

  /** One directory, or `undefined` if missing; `DataLoss` if it no longer matches its digest. */
  get(digest: Uint8Array): Promise<Directory | undefined> {
    try {
      validateDigest(digest, "directory digest");
      const bytes = this.#dirs.get(digestToHex(digest));
      if (!bytes) return Promise.resolve(undefined);
      return Promise.resolve(checkStoredDirectory(digest, bytes));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Root first, breadth first, each directory once. */
  getRecursive(root: Uint8Array): AsyncIterable<Directory> {
    return traverseDirectories(root, (d) => this.get(d));
  }

  /** A putter that stores the tree on close. */
  put(): DirectoryPutter {
    return new GraphPutter((d) => this.get(d), (dirs) => {
      for (const { digest, bytes } of dirs) {
        this.#dirs.set(digestToHex(digest), bytes);
      }
      return Promise.resolve();
    });
  }

  /** Every stored directory digest. */
  async *listDirectories(): AsyncIterable<Uint8Array> {
    for (const k of [...this.#dirs.keys()]) yield digestFromHex(k);
  }

  /** For tests: replaces the stored bytes of `digest` (to simulate corruption). */
  corruptForTesting(digest: Uint8Array, bytes: Uint8Array): void {
    this.#dirs.set(digestToHex(digest), bytes);
  }

  /** Nothing to release. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Decodes stored directory bytes after checking they still hash to `digest`
 * and form a valid Directory; `DataLoss` naming the digest otherwise.
 */
export function checkStoredDirectory(
  digest: Uint8Array,
  bytes: Uint8Array,
): Directory {
  const actual = blake3Sync(bytes);
  if (!digestEquals(actual, digest)) {
    throw new ConnectError(
      `directory ${digestToString(digest)} is corrupt: stored bytes hash to ${
        digestToString(actual)
      }`,
      Code.DataLoss,
    );
  }
  try {
    const d = decodeDirectory(bytes);
    validateDirectory(d);
    return d;
  } catch (e) {
    throw new ConnectError(
      `directory ${digestToString(digest)} is corrupt: ${
        e instanceof ConnectError ? e.rawMessage : (e as Error).message
      }`,
      Code.DataLoss,
    );
  }
}
