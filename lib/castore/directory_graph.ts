/**
 * What every directory service shares: the putter's graph checks and the
 * breadth-first recursive get.
 *
 * The putter follows snix's `SimplePutter` + `DirectoryGraph`
 * (snix/castore/src/directoryservice/simple_putter.rs, directory_graph.rs,
 * order_validator.rs): each directory is validated when put; a child must
 * have been put before (snix: in the same putter; we also accept a child that
 * already exists in the service); a child's entry size must equal the child's
 * {@linkcode directorySize}; on close the put directories must form one tree
 * with a single root (snix rejects "no single root"), and only then is
 * anything stored, leaves first.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Directory } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { DirectoryPutter } from "./directory_service.ts";
import { digestToHex, digestToString, validateDigest } from "./digest.ts";
import {
  directoryDigestSync,
  directorySize,
  encodeDirectory,
  quoteBytes,
  validateDirectory,
} from "./directory.ts";

/** One directory ready to be stored: its digest and canonical bytes. */
export interface EncodedDirectory {
  digest: Uint8Array;
  bytes: Uint8Array;
  /**
   * 0 for a directory with no children put in the same putter, else 1 + the
   * highest level of those children: everything of one level may be written
   * at once after all lower levels are durable.
   */
  level: number;
}

interface Pending extends EncodedDirectory {
  size: bigint;
  referenced: boolean;
}

/**
 * A {@linkcode DirectoryPutter} that checks the tree and hands the
 * directories (leaves first, deduplicated) to `commit` on close.
 */
export class GraphPutter implements DirectoryPutter {
  #pending = new Map<string, Pending>();
  #order: Pending[] = [];
  #closed = false;
  #lookup: (digest: Uint8Array) => Promise<Directory | undefined>;
  #commit: (dirs: EncodedDirectory[]) => Promise<void>;

  /**
   * @param lookup finds a directory already in the service (for children not put here)
   * @param commit stores the checked directories, leaves first
   */
  constructor(
    lookup: (digest: Uint8Array) => Promise<Directory | undefined>,
    commit: (dirs: EncodedDirectory[]) => Promise<void>,
  ) {
    this.#lookup = lookup;
    this.#commit = commit;
  }

  /** Validates `directory` and its links to children; keeps it until close. */
  async put(directory: Directory): Promise<void> {
    if (this.#closed) {
      throw new ConnectError(
        "directory putter already closed",
        Code.FailedPrecondition,
      );
    }
    validateDirectory(directory);
    const bytes = encodeDirectory(directory);
    const digest = directoryDigestSync(directory);
    const key = digestToHex(digest);
    if (this.#pending.has(key)) return; // a repeat: snix accepts and deduplicates
    for (const e of directory.directories) {
      const child = this.#pending.get(digestToHex(e.digest));
      let childSize: bigint;
      if (child) {
        childSize = child.size;
      } else {
        const existing = await this.#lookup(e.digest);
        if (!existing) {
          throw new ConnectError(
            `directory ${digestToString(digest)} refers to missing directory ${
              digestToString(e.digest)
            } (entry ${
              quoteBytes(e.name)
            }): children must be put before their parents`,
            Code.InvalidArgument,
          );
        }
        childSize = directorySize(existing);
      }
      if (BigInt(e.size) !== childSize) {
        throw new ConnectError(
          `directory entry ${quoteBytes(e.name)} (${
            digestToString(e.digest)
          }) has wrong size ${e.size}, expected ${childSize}`,
          Code.InvalidArgument,
        );
      }
    }
    let level = 0;
    for (const e of directory.directories) {
      const child = this.#pending.get(digestToHex(e.digest));
      if (child) {
        child.referenced = true;
        level = Math.max(level, child.level + 1);
      }
    }
    const p: Pending = {
      digest,
      bytes,
      level,
      size: directorySize(directory),
      referenced: false,
    };
    this.#pending.set(key, p);
    this.#order.push(p);
  }

  /** Checks there is exactly one root, stores everything, returns the root digest. */
  async close(): Promise<Uint8Array> {
    if (this.#closed) {
      throw new ConnectError(
        "directory putter already closed",
        Code.FailedPrecondition,
      );
    }
    this.#closed = true;
    if (this.#order.length === 0) {
      throw new ConnectError("no directories were put", Code.InvalidArgument);
    }
    const roots = this.#order.filter((p) => !p.referenced);
    if (roots.length !== 1) {
      const root = roots[roots.length - 1];
      const others = roots.filter((r) => r !== root).map((r) =>
        digestToString(r.digest)
      );
      throw new ConnectError(
        `directories not reachable from the root ${
          digestToString(root.digest)
        }: ${others.slice(0, 5).join(", ")}${
          others.length > 5 ? ` and ${others.length - 5} more` : ""
        }`,
        Code.InvalidArgument,
      );
    }
    const order = this.#order;
    this.#order = [];
    this.#pending.clear();
    await this.#commit(
      order.map(({ digest, bytes, level }) => ({ digest, bytes, level })),
    );
    return roots[0].digest;
  }
}

/**
 * The root and all directories below it: root first, breadth first, each
 * directory once. `get` must verify what it returns (DataLoss otherwise);
 * up to `prefetch` lookups run ahead of the consumer.
 * Throws `NotFound` if the root is missing and `DataLoss` if a child is.
 */
export async function* traverseDirectories(
  root: Uint8Array,
  get: (digest: Uint8Array) => Promise<Directory | undefined>,
  prefetch = 16,
): AsyncGenerator<Directory> {
  validateDigest(root, "directory digest");
  const queue: Uint8Array[] = [root];
  // Lookups already started for queue[i] (up to `prefetch` ahead), in order.
  const started: Promise<Directory | undefined>[] = [];
  const seen = new Set<string>([digestToHex(root)]);
  let next = 0; // next queue index to start a lookup for
  const fill = (i: number) => {
    while (next < queue.length && next < i + prefetch) {
      const p = get(queue[next]);
      p.catch(() => {}); // awaited below, in order
      started[next] = p;
      next++;
    }
  };
  for (let i = 0; i < queue.length; i++) {
    fill(i);
    const digest = queue[i];
    const d = await started[i];
    queue[i] = undefined as unknown as Uint8Array; // let it be collected
    started[i] = undefined as unknown as Promise<Directory | undefined>;
    if (!d) {
      if (i === 0) {
        throw new ConnectError(
          `directory ${digestToString(digest)} not found`,
          Code.NotFound,
        );
      }
      throw new ConnectError(
        `directory ${
          digestToString(digest)
        } is referenced but missing from the store`,
        Code.DataLoss,
      );
    }
    for (const e of d.directories) {
      const k = digestToHex(e.digest);
      if (!seen.has(k)) {
        seen.add(k);
        queue.push(e.digest);
      }
    }
    yield d;
  }
}
