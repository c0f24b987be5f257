/**
 * The `snix.castore.v1.DirectoryService` gRPC server over any
 * {@linkcode DirectoryService}.
 *
 * Put validates every directory as it arrives and hands it to a
 * DirectoryPutter, which checks that its children were sent before it (or
 * already exist); the last directory is the root. Get streams a tree root
 * first, breadth first.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { Directory } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import {
  DirectoryService as DirectoryServiceDesc,
  PutDirectoryResponseSchema,
} from "../../proto/gen/snix/castore/protos/rpc_directory_pb.ts";
import type { DirectoryService } from "../castore/directory_service.ts";
import { validateDirectory } from "../castore/directory.ts";
import { readOnlyError, requireB3Digest, showDigest } from "./check.ts";

/** Options of {@linkcode directoryServer}. */
export interface DirectoryServerOptions {
  /** Refuse Put with PERMISSION_DENIED. */
  readOnly?: boolean;
}

/** Implements DirectoryService over `directories`. */
export function directoryServer(
  directories: DirectoryService,
  opts: DirectoryServerOptions = {},
): ServiceImpl<typeof DirectoryServiceDesc> {
  return {
    async *get(req, ctx) {
      if (req.byWhat.case !== "digest") {
        throw new ConnectError(
          "GetDirectoryRequest: by_what must be set (digest)",
          Code.InvalidArgument,
        );
      }
      const digest = req.byWhat.value;
      requireB3Digest(digest, "digest");
      if (!req.recursive) {
        const dir = await directories.get(digest);
        if (!dir) {
          throw new ConnectError(
            `directory ${showDigest(digest)} not found`,
            Code.NotFound,
          );
        }
        yield dir;
        return;
      }
      let first = true;
      for await (const dir of directories.getRecursive(digest)) {
        if (ctx.signal.aborted) return;
        first = false;
        yield dir;
      }
      if (first) {
        throw new ConnectError(
          `directory ${showDigest(digest)} not found`,
          Code.NotFound,
        );
      }
    },

    async put(requests: AsyncIterable<Directory>) {
      if (opts.readOnly) throw readOnlyError("DirectoryService.Put");
      const putter = directories.put();
      let n = 0;
      for await (const dir of requests) {
        try {
          validateDirectory(dir);
        } catch (e) {
          throw prefixed(e, `directory #${n} in the stream`);
        }
        await putter.put(dir);
        n++;
      }
      if (n === 0) {
        throw new ConnectError(
          "DirectoryService.Put: no directories sent",
          Code.InvalidArgument,
        );
      }
      const rootDigest = await putter.close();
      return create(PutDirectoryResponseSchema, { rootDigest });
    },
  };
}

function prefixed(e: unknown, where: string): unknown {
  if (e instanceof ConnectError) {
    return new ConnectError(`${where}: ${e.rawMessage}`, e.code);
  }
  return e;
}
