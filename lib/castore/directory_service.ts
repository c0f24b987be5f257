/**
 * The directory service seam: Directory messages keyed by the BLAKE3 digest
 * of their canonical protobuf encoding.
 *
 * Errors are `ConnectError`s: `InvalidArgument` for an invalid directory or a
 * put order that breaks the rules, `NotFound` for a missing recursive root,
 * `DataLoss` for stored data that does not match its digest.
 *
 * @module
 */
import type { Directory } from "../../proto/gen/snix/castore/protos/castore_pb.ts";

/** Receives a directory tree leaves first; `close()` checks it and returns the root digest. */
export interface DirectoryPutter {
  /**
   * Adds one directory. It is validated at once; every child it names must
   * have been put before (in this putter) or already exist in the service.
   */
  put(directory: Directory): Promise<void>;
  /** Finishes: the last directory put is the root. Returns its digest. */
  close(): Promise<Uint8Array>;
}

/** Content-addressed directory storage. */
export interface DirectoryService {
  /** One directory, or `undefined` if missing. */
  get(digest: Uint8Array): Promise<Directory | undefined>;
  /**
   * The root and every directory below it: root first, breadth first, each
   * directory once. Throws `NotFound` if the root is missing.
   */
  getRecursive(root: Uint8Array): AsyncIterable<Directory>;
  /** Starts putting a tree (leaves first, root last). */
  put(): DirectoryPutter;
  /** Releases resources. */
  close?(): Promise<void>;
}
