/**
 * The `snix.store.v1.PathInfoService` gRPC server over a
 * {@linkcode PathInfoService} and the castore it points into.
 *
 * Put checks the PathInfo (store-path name, 20-byte references, narinfo with
 * a 32-byte nar_sha256, ...) and that its root node is present in castore, so
 * a PathInfo never points at nothing. CalculateNAR renders the node's NAR
 * (through the cached calculation) and reports size and SHA-256.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { Entry } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { PathInfo } from "../../proto/gen/snix/store/protos/pathinfo_pb.ts";
import {
  CalculateNARResponseSchema,
  PathInfoService as PathInfoServiceDesc,
} from "../../proto/gen/snix/store/protos/rpc_pathinfo_pb.ts";
import type { BlobService } from "../castore/blob_service.ts";
import type { DirectoryService } from "../castore/directory_service.ts";
import type { PathInfoService } from "../store/path_info_service.ts";
import { validatePathInfo } from "../store/path_info.ts";
import { calculateNar } from "../store/nar_calculation.ts";
import { STORE_PATH_DIGEST_SIZE } from "../nix/store_path.ts";
import { readOnlyError, requireB3Digest, showDigest } from "./check.ts";

/** Options of {@linkcode pathInfoServer}. */
export interface PathInfoServerOptions {
  /** Refuse Put with PERMISSION_DENIED. */
  readOnly?: boolean;
}

/** The services a PathInfo server needs. */
export interface PathInfoServerBackends {
  pathInfos: PathInfoService;
  blobs: BlobService;
  directories: DirectoryService;
}

/** Implements PathInfoService over `backends`. */
export function pathInfoServer(
  backends: PathInfoServerBackends,
  opts: PathInfoServerOptions = {},
): ServiceImpl<typeof PathInfoServiceDesc> {
  const { pathInfos, blobs, directories } = backends;
  return {
    async get(req) {
      if (req.byWhat.case !== "byOutputHash") {
        throw new ConnectError(
          "GetPathInfoRequest: by_what must be set (by_output_hash)",
          Code.InvalidArgument,
        );
      }
      const hash = req.byWhat.value;
      if (hash.length !== STORE_PATH_DIGEST_SIZE) {
        throw new ConnectError(
          `by_output_hash must be ${STORE_PATH_DIGEST_SIZE} bytes, got ${hash.length}`,
          Code.InvalidArgument,
        );
      }
      const info = await pathInfos.get(hash);
      if (!info) throw new ConnectError("PathInfo not found", Code.NotFound);
      return info;
    },

    async put(info: PathInfo) {
      if (opts.readOnly) throw readOnlyError("PathInfoService.Put");
      validatePathInfo(info);
      checkSignatures(info);
      await requireRootPresent(info.entry!, blobs, directories);
      return await pathInfos.put(info);
    },

    async calculateNAR(entry: Entry) {
      checkNode(entry);
      const { narSize, narSha256 } = await calculateNar(
        entry,
        blobs,
        directories,
      );
      return create(CalculateNARResponseSchema, {
        narSize: BigInt(narSize),
        narSha256,
      });
    },

    async *list(_req, ctx) {
      for await (const info of pathInfos.list()) {
        if (ctx.signal.aborted) return;
        yield info;
      }
    },
  };
}

/** Signatures must be named ed25519 signatures (64 bytes), as Nix's narinfo has them. */
function checkSignatures(info: PathInfo): void {
  info.narinfo?.signatures.forEach((sig, i) => {
    if (sig.name.length === 0 || sig.name.includes(":")) {
      throw new ConnectError(
        `signature ${i}: key name ${
          JSON.stringify(sig.name)
        } must be non-empty without ':'`,
        Code.InvalidArgument,
      );
    }
    if (sig.data.length !== 64) {
      throw new ConnectError(
        `signature ${i} (${sig.name}): must be 64 bytes (ed25519), got ${sig.data.length}`,
        Code.InvalidArgument,
      );
    }
  });
}

function checkNode(entry: Entry): void {
  const node = entry.entry;
  switch (node.case) {
    case "directory":
    case "file":
      requireB3Digest(node.value.digest, `${node.case} digest`);
      return;
    case "symlink":
      if (
        node.value.target.length === 0 || node.value.target.length > 4095 ||
        node.value.target.includes(0)
      ) {
        throw new ConnectError(
          "symlink target must be 1..4095 bytes without NUL",
          Code.InvalidArgument,
        );
      }
      return;
    default:
      throw new ConnectError(
        "entry has no node (directory, file or symlink)",
        Code.InvalidArgument,
      );
  }
}

/** Throws `FailedPrecondition` unless the entry's directory or blob is in castore. */
async function requireRootPresent(
  entry: Entry,
  blobs: BlobService,
  directories: DirectoryService,
): Promise<void> {
  const node = entry.entry;
  if (node.case === "directory") {
    if (!(await directories.get(node.value.digest))) {
      throw new ConnectError(
        `root directory ${
          showDigest(node.value.digest)
        } is not in the directory service (put it first)`,
        Code.FailedPrecondition,
      );
    }
  } else if (node.case === "file") {
    if (!(await blobs.has(node.value.digest))) {
      throw new ConnectError(
        `root blob ${
          showDigest(node.value.digest)
        } is not in the blob service (put it first)`,
        Code.FailedPrecondition,
      );
    }
  }
}
