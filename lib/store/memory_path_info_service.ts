/**
 * An in-memory PathInfoService (`memory://`): a map from the 20-byte store
 * path digest to a validated copy of the PathInfo.
 *
 * @module
 */
import { clone } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type PathInfo,
  PathInfoSchema,
} from "../../proto/gen/snix/store/protos/pathinfo_pb.ts";
import type { PathInfoService } from "./path_info_service.ts";
import { bytesEqual, validatePathInfo } from "./path_info.ts";
import { encodeNixBase32 } from "../nix/nixbase32.ts";

function checkDigest(digest: Uint8Array): string {
  if (digest.length !== 20) {
    throw new ConnectError(
      `store path digest must be 20 bytes, got ${digest.length}`,
      Code.InvalidArgument,
    );
  }
  return encodeNixBase32(digest);
}

/** PathInfos kept in memory; gone when the process exits. */
export class MemoryPathInfoService implements PathInfoService {
  #infos = new Map<string, PathInfo>();

  /** The PathInfo for this 20-byte digest, or `undefined`. */
  get(outputHash: Uint8Array): Promise<PathInfo | undefined> {
    try {
      const info = this.#infos.get(checkDigest(outputHash));
      return Promise.resolve(info ? clone(PathInfoSchema, info) : undefined);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Validates and stores a copy; returns it. */
  put(info: PathInfo): Promise<PathInfo> {
    try {
      const sp = validatePathInfo(info);
      const copy = clone(PathInfoSchema, info);
      this.#infos.set(sp.hashPart, copy);
      return Promise.resolve(clone(PathInfoSchema, copy));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Every PathInfo. */
  async *list(): AsyncIterable<PathInfo> {
    for (const info of [...this.#infos.values()]) {
      yield clone(PathInfoSchema, info);
    }
  }

  /** Every PathInfo referencing the store path with this digest (a scan). */
  async *referrers(digest: Uint8Array): AsyncIterable<PathInfo> {
    checkDigest(digest);
    for (const info of [...this.#infos.values()]) {
      if (info.references.some((r) => bytesEqual(r, digest))) {
        yield clone(PathInfoSchema, info);
      }
    }
  }
}
