/**
 * `GrpcDirectoryService`: the directory service seam over a remote
 * `snix.castore.v1.DirectoryService`.
 *
 * Every directory received is validated and checked against the digest it
 * was asked for (or that its parent names); a recursive Get must deliver
 * exactly the tree below the root, root first, each directory once.
 * Directories are content addressed and immutable, so verified ones are kept
 * in a bounded LRU cache; a recursive get whose whole tree is cached is
 * answered without a round trip.
 *
 * @module
 */
import {
  type Client,
  Code,
  ConnectError,
  createClient,
  type Transport,
} from "@connectrpc/connect";
import { LRUCache } from "lru-cache";
import type { Directory } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import { DirectoryService as DirectoryServiceDesc } from "../../proto/gen/snix/castore/protos/rpc_directory_pb.ts";
import type {
  DirectoryPutter,
  DirectoryService,
} from "../castore/directory_service.ts";
import {
  blake3Sync,
  digestEquals,
  digestToHex,
  digestToString,
  validateDigest,
} from "../castore/digest.ts";
import {
  decodeDirectory,
  encodeDirectory,
  validateDirectory,
} from "../castore/directory.ts";
import {
  type ClientOptions,
  connectClient,
  type GrpcAddress,
} from "./transport.ts";
import { PushQueue } from "./push_queue.ts";
import { dataLoss, isNotFound, rethrowFrom } from "./client_errors.ts";

/** Options of {@linkcode GrpcDirectoryService}. */
export interface GrpcDirectoryServiceOptions extends ClientOptions {
  /** Bytes of encoded directories the cache may hold (default 64 MiB; 0 disables it). */
  cacheBytes?: number;
}

/** A DirectoryService backed by a remote gRPC DirectoryService. */
export class GrpcDirectoryService implements DirectoryService {
  readonly #client: Client<typeof DirectoryServiceDesc>;
  readonly #peer: string;
  readonly #cache: LRUCache<string, Uint8Array> | undefined;
  readonly #onClose?: () => void;

  /** Uses an existing transport (which the caller closes). */
  constructor(transport: Transport, opts: GrpcDirectoryServiceOptions = {}) {
    this.#client = createClient(DirectoryServiceDesc, transport);
    this.#peer = opts.peer ?? "directory service";
    const cacheBytes = opts.cacheBytes ?? 64 << 20;
    this.#cache = cacheBytes > 0
      ? new LRUCache<string, Uint8Array>({
        maxSize: cacheBytes,
        sizeCalculation: (b) => b.length + 64,
      })
      : undefined;
    this.#onClose = opts.onClose;
  }

  /** Connects to `grpc+http://host:port` or `grpc+unix:///path`; `close()` closes the connection. */
  static connect(
    address: string | GrpcAddress,
    opts: GrpcDirectoryServiceOptions = {},
  ): GrpcDirectoryService {
    return connectClient(
      address,
      opts,
      (t, o) => new GrpcDirectoryService(t, o),
    );
  }

  /** One directory (cached, or a non-recursive Get), verified; `undefined` if missing. */
  async get(digest: Uint8Array): Promise<Directory | undefined> {
    validateDigest(digest, "directory digest");
    const cached = this.#cache?.get(digestToHex(digest));
    if (cached) return decodeDirectory(cached);
    let dir: Directory | undefined;
    try {
      for await (
        const d of this.#client.get({
          byWhat: { case: "digest", value: digest },
          recursive: false,
        })
      ) {
        if (dir) {
          throw dataLoss(
            this.#peer,
            `non-recursive Get of ${
              digestToString(digest)
            } sent more than one directory`,
          );
        }
        dir = d;
      }
    } catch (e) {
      if (isNotFound(e)) return undefined;
      rethrowFrom(this.#peer, e);
    }
    if (!dir) {
      throw dataLoss(
        this.#peer,
        `Get of ${digestToString(digest)} sent no directory`,
      );
    }
    this.#accept(dir, digest);
    return dir;
  }

  /** The tree below `root`, root first, breadth first, each once; `NotFound` if the root is missing. */
  async *getRecursive(root: Uint8Array): AsyncGenerator<Directory> {
    validateDigest(root, "directory digest");
    const fromCache = this.#cachedTree(root);
    if (fromCache) {
      yield* fromCache;
      return;
    }
    // Directories we expect (named by a directory received so far) and those received.
    const expected = new Set<string>([digestToHex(root)]);
    const received = new Set<string>();
    let first = true;
    const abort = new AbortController();
    try {
      for await (
        const d of this.#client.get({
          byWhat: { case: "digest", value: root },
          recursive: true,
        }, {
          signal: abort.signal,
        })
      ) {
        const bytes = this.#check(d);
        const digest = blake3Sync(bytes);
        const key = digestToHex(digest);
        if (first && !digestEquals(digest, root)) {
          throw dataLoss(
            this.#peer,
            `recursive Get of ${
              digestToString(root)
            } started with another directory`,
          );
        }
        first = false;
        if (!expected.delete(key)) {
          throw dataLoss(
            this.#peer,
            `recursive Get of ${digestToString(root)} sent ${
              received.has(key) ? "a repeated" : "an unrequested"
            } directory ${digestToString(digest)}`,
          );
        }
        received.add(key);
        for (const e of d.directories) {
          const k = digestToHex(e.digest);
          if (!received.has(k)) expected.add(k);
        }
        this.#cache?.set(key, bytes);
        yield d;
      }
    } catch (e) {
      abort.abort();
      if (isNotFound(e)) {
        throw new ConnectError(
          `${this.#peer}: directory ${digestToString(root)} not found`,
          Code.NotFound,
        );
      }
      rethrowFrom(this.#peer, e);
    } finally {
      // The consumer may stop early: cancel the call.
      abort.abort();
    }
    if (first) {
      throw new ConnectError(
        `${this.#peer}: directory ${digestToString(root)} not found`,
        Code.NotFound,
      );
    }
    if (expected.size > 0) {
      throw dataLoss(
        this.#peer,
        `recursive Get of ${
          digestToString(root)
        } ended with ${expected.size} referenced directories missing`,
      );
    }
  }

  /** The whole tree from the cache, or `undefined` if any part is not cached. */
  #cachedTree(root: Uint8Array): Directory[] | undefined {
    const cache = this.#cache;
    if (!cache) return undefined;
    const out: Directory[] = [];
    const seen = new Set<string>([digestToHex(root)]);
    const queue = [digestToHex(root)];
    for (let i = 0; i < queue.length; i++) {
      const bytes = cache.get(queue[i]);
      if (!bytes) return undefined;
      const d = decodeDirectory(bytes);
      out.push(d);
      for (const e of d.directories) {
        const k = digestToHex(e.digest);
        if (!seen.has(k)) {
          seen.add(k);
          queue.push(k);
        }
      }
    }
    return out;
  }

  /** Validates a received directory; returns its canonical bytes. */
  #check(d: Directory): Uint8Array {
    try {
      validateDirectory(d);
    } catch (e) {
      throw dataLoss(
        this.#peer,
        `received an invalid directory: ${ConnectError.from(e).rawMessage}`,
      );
    }
    return encodeDirectory(d);
  }

  /** Checks `d` is the directory `digest` names, and caches it. */
  #accept(d: Directory, digest: Uint8Array): void {
    const bytes = this.#check(d);
    const actual = blake3Sync(bytes);
    if (!digestEquals(actual, digest)) {
      throw dataLoss(
        this.#peer,
        `asked for directory ${digestToString(digest)}, got ${
          digestToString(actual)
        }`,
      );
    }
    this.#cache?.set(digestToHex(digest), bytes);
  }

  /** Streams a tree to the server (Put); directories are validated before they are sent. */
  put(): DirectoryPutter {
    const peer = this.#peer;
    const queue = new PushQueue<Directory>();
    const abort = new AbortController();
    const call = this.#client.put(queue, { signal: abort.signal });
    call.catch((e) => queue.fail(e));
    let last: Uint8Array | undefined;
    let closed = false;
    return {
      async put(directory: Directory): Promise<void> {
        if (closed) {
          throw new ConnectError(
            "directory putter already closed",
            Code.FailedPrecondition,
          );
        }
        try {
          validateDirectory(directory);
        } catch (e) {
          abort.abort();
          queue.fail(e);
          throw e;
        }
        last = blake3Sync(encodeDirectory(directory));
        try {
          await queue.push(directory);
        } catch (e) {
          await call.catch(() => {});
          rethrowFrom(peer, e);
        }
      },
      async close(): Promise<Uint8Array> {
        if (closed) {
          throw new ConnectError(
            "directory putter already closed",
            Code.FailedPrecondition,
          );
        }
        closed = true;
        queue.end();
        let resp;
        try {
          resp = await call;
        } catch (e) {
          rethrowFrom(peer, e);
        }
        if (last && !digestEquals(resp.rootDigest, last)) {
          throw dataLoss(
            peer,
            `Put answered root ${
              digestToString(resp.rootDigest)
            }, but the last directory sent is ${digestToString(last)}`,
          );
        }
        return resp.rootDigest;
      },
    };
  }

  /** Closes the connection if this service owns it. */
  close(): Promise<void> {
    this.#onClose?.();
    return Promise.resolve();
  }
}
