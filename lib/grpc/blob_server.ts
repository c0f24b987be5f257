/**
 * The `snix.castore.v1.BlobService` gRPC server over any {@linkcode BlobService}.
 *
 * Read streams the blob in messages of 256 KiB..1 MiB, never holding it
 * whole; a chunk digest (as listed by Stat) reads like a blob, which is how
 * snix's chunk-aware clients fetch chunks. Put streams into a BlobWriter,
 * which computes the digest itself.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type BlobChunk,
  BlobChunkSchema,
  BlobService as BlobServiceDesc,
  PutBlobResponseSchema,
  StatBlobResponse_ChunkMetaSchema,
  StatBlobResponseSchema,
} from "../../proto/gen/snix/castore/protos/rpc_blobstore_pb.ts";
import type { BlobService } from "../castore/blob_service.ts";
import { readOnlyError, requireB3Digest, showDigest } from "./check.ts";
import { MAX_DATA_MESSAGE_BYTES, MIN_DATA_MESSAGE_BYTES } from "./limits.ts";
import { rechunk } from "./rechunk.ts";

/** Options of {@linkcode blobServer}. */
export interface BlobServerOptions {
  /** Refuse Put with PERMISSION_DENIED. */
  readOnly?: boolean;
}

/** Implements BlobService over `blobs`. */
export function blobServer(
  blobs: BlobService,
  opts: BlobServerOptions = {},
): ServiceImpl<typeof BlobServiceDesc> {
  return {
    async stat(req) {
      requireB3Digest(req.digest, "digest");
      const chunks = await blobs.chunks(req.digest);
      if (chunks === undefined) {
        throw new ConnectError(
          `blob ${showDigest(req.digest)} not found`,
          Code.NotFound,
        );
      }
      return create(StatBlobResponseSchema, {
        chunks: req.sendChunks
          ? chunks.map((c) =>
            create(StatBlobResponse_ChunkMetaSchema, {
              digest: c.digest,
              size: BigInt(c.size),
            })
          )
          : [],
      });
    },

    async *read(req, ctx) {
      requireB3Digest(req.digest, "digest");
      const stream = await blobs.read(req.digest);
      if (stream === undefined) {
        throw new ConnectError(
          `blob ${showDigest(req.digest)} not found`,
          Code.NotFound,
        );
      }
      const reader = stream.getReader();
      const onAbort = () => void reader.cancel().catch(() => {});
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      try {
        for await (
          const data of rechunk(
            readerIterable(reader),
            MIN_DATA_MESSAGE_BYTES,
            MAX_DATA_MESSAGE_BYTES,
          )
        ) {
          yield create(BlobChunkSchema, { data });
        }
      } finally {
        ctx.signal.removeEventListener("abort", onAbort);
        reader.releaseLock();
      }
    },

    async put(requests: AsyncIterable<BlobChunk>) {
      if (opts.readOnly) throw readOnlyError("BlobService.Put");
      const writer = blobs.put();
      try {
        for await (const msg of requests) {
          if (msg.data.length > 0) await writer.write(msg.data);
        }
      } catch (e) {
        await writer.abort().catch(() => {});
        throw e;
      }
      const digest = await writer.close();
      return create(PutBlobResponseSchema, { digest });
    },
  };
}

async function* readerIterable(
  reader: ReadableStreamDefaultReader<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  let done = false;
  try {
    while (true) {
      const r = await reader.read();
      if (r.done) {
        done = true;
        return;
      }
      yield r.value;
    }
  } finally {
    if (!done) await reader.cancel().catch(() => {});
  }
}
