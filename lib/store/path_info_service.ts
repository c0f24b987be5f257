/**
 * The path info service seam: PathInfo records keyed by the 20-byte digest
 * in a store path's name (`/nix/store/<nixbase32 of these 20 bytes>-name`).
 *
 * Errors are `ConnectError`s (`InvalidArgument`, `DataLoss`, `Unavailable`).
 *
 * @module
 */
import type { PathInfo } from "../../proto/gen/snix/store/protos/pathinfo_pb.ts";

/** Store path metadata storage. */
export interface PathInfoService {
  /** The PathInfo whose store path has this 20-byte digest, or `undefined`. */
  get(outputHash: Uint8Array): Promise<PathInfo | undefined>;
  /** Records (or replaces) a PathInfo and returns what was stored. */
  put(info: PathInfo): Promise<PathInfo>;
  /** Every PathInfo, in no particular order. */
  list(): AsyncIterable<PathInfo>;
  /**
   * Optional: every PathInfo whose references include the store path with
   * this 20-byte digest (Nix's QueryReferrers), in no particular order.
   */
  referrers?(digest: Uint8Array): AsyncIterable<PathInfo>;
  /** Releases resources. */
  close?(): Promise<void>;
}
