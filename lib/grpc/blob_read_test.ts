import process from "node:process";
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  compressionGzip,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import {
  BlobChunkSchema,
  BlobService as BlobServiceDesc,
} from "../../proto/gen/snix/castore/protos/rpc_blobstore_pb.ts";
import type { ByteRange } from "../castore/blob_service.ts";
import { MemoryBlobService } from "../castore/memory_blob_service.ts";
import { MemoryDirectoryService } from "../castore/memory_directory_service.ts";
import { blake3Sync } from "../castore/digest.ts";
import { MemoryPathInfoService } from "../store/memory_path_info_service.ts";
import { readAll } from "../castore/_test_blob_service.ts";
import { BlobChunkParser } from "./blob_read_client.ts";
import { BLOB_READ_PATH, messageHeader } from "./blob_read_server.ts";
import { GrpcBlobService } from "./blob_client.ts";
import { startStoreServer } from "./server.ts";
import { MAX_MESSAGE_BYTES } from "./limits.ts";
import { openGrpcChannel } from "./transport.ts";
import { concatBytes } from "../nix/bytes.ts";

function envelope(message: Uint8Array, flags = 0): Uint8Array {
  const out = new Uint8Array(5 + message.length);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

/** Feeds `body` to a parser in pieces cut at `cuts`; returns the data bytes. */
function parse(body: Uint8Array, cuts: number[]): Uint8Array {
  const out: Uint8Array[] = [];
  const p = new BlobChunkParser((d) => {
    assert.equal(Object.getPrototypeOf(d), Uint8Array.prototype);
    out.push(d.slice());
  });
  let o = 0;
  for (const c of [...cuts, body.length]) {
    p.push(body.subarray(o, c));
    o = c;
  }
  p.end();
  return concatBytes(out);
}

Deno.test("BlobChunkParser: data of every message layout, cut anywhere", () => {
  const a = bytes(300, 1);
  const b = bytes(200, 2);
  const c = bytes(5, 3);
  // Field 1 twice in one message: protobuf says the last one wins.
  const twice = concatBytes([
    toBinary(BlobChunkSchema, create(BlobChunkSchema, { data: bytes(7, 9) })),
    toBinary(BlobChunkSchema, create(BlobChunkSchema, { data: c })),
  ]);
  // An unknown field after the data (another encoder's extension).
  const extra = concatBytes([
    toBinary(BlobChunkSchema, create(BlobChunkSchema, { data: b })),
    new Uint8Array([0x10, 0x05]),
  ]);
  const body = concatBytes([
    envelope(toBinary(BlobChunkSchema, create(BlobChunkSchema, { data: a }))),
    envelope(new Uint8Array()), // an empty message
    envelope(new Uint8Array([0x0a, 0x00])), // empty data, spelt out
    envelope(extra),
    envelope(twice),
    concatBytes([messageHeader(a.length), a]), // what our server writes
  ]);
  const want = concatBytes([a, b, c, a]);
  assert.deepEqual(parse(body, []), want);
  for (let cut = 1; cut < body.length; cut++) {
    assert.deepEqual(parse(body, [cut]), want, `cut at ${cut}`);
  }
  const ones = Array.from({ length: body.length - 1 }, (_, i) => i + 1);
  assert.deepEqual(parse(body, ones), want, "one byte at a time");
});

Deno.test("BlobChunkParser: compressed, oversized, undecodable and truncated bodies are errors", () => {
  const msg = toBinary(
    BlobChunkSchema,
    create(BlobChunkSchema, { data: bytes(10, 1) }),
  );
  const fails = (body: Uint8Array, code: Code, re: RegExp) => {
    assert.throws(() => parse(body, []), (e: unknown) => {
      assert.ok(e instanceof ConnectError);
      assert.equal(e.code, code, e.message);
      assert.match(e.message, re);
      return true;
    });
  };
  fails(envelope(msg, 1), Code.Internal, /compressed/);
  fails(envelope(msg, 0x80), Code.Internal, /flags/);
  const big = new Uint8Array(5);
  new DataView(big.buffer).setUint32(1, MAX_MESSAGE_BYTES + 1);
  fails(big, Code.ResourceExhausted, /readMaxBytes/);
  fails(envelope(new Uint8Array([0x0a, 0x05, 1, 2])), Code.Internal, /parse/);
  fails(envelope(msg).subarray(0, 9), Code.InvalidArgument, /ended/);
  fails(envelope(msg).subarray(0, 3), Code.InvalidArgument, /ended/);
});

/**
 * A memory blob service whose reads of `slow` send one piece and then
 * stall until cancelled, recording the cancellation.
 */
class StallingBlobService extends MemoryBlobService {
  slow: Uint8Array | undefined;
  cancelled = 0;
  override async read(
    digest: Uint8Array,
    range?: ByteRange,
  ): Promise<ReadableStream<Uint8Array> | undefined> {
    if (!this.slow || !sameDigest(digest, this.slow)) {
      return await super.read(digest, range);
    }
    let sent = false;
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        if (!sent) {
          sent = true;
          controller.enqueue(new Uint8Array(200 << 10));
          return;
        }
        await new Promise(() => {}); // never more
      },
      cancel: () => {
        this.cancelled++;
      },
    }, { highWaterMark: 0 });
  }
}

function sameDigest(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One raw HTTP/2 request; returns the status headers/trailers and body size. */
function rawCall(
  base: string,
  headers: http2.OutgoingHttpHeaders,
  body: Uint8Array,
): Promise<{ status: string | undefined; message: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(base);
    session.on("error", reject);
    const s = session.request({
      ":method": "POST",
      ":path": BLOB_READ_PATH,
      "te": "trailers",
      ...headers,
    });
    let status: string | undefined;
    let message = "";
    let n = 0;
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h["grpc-status"] !== undefined) {
        status = String(h["grpc-status"]);
        message = decodeURIComponent(String(h["grpc-message"] ?? ""));
      }
    };
    s.on("response", take);
    s.on("trailers", take);
    s.on("data", (d: Uint8Array) => n += d.length);
    s.on("close", () => {
      session.close();
      resolve({ status, message, bytes: n });
    });
    s.on("error", reject);
    s.end(body);
  });
}

Deno.test({
  name:
    "Read fast path: deadline, client cancel, bad bodies; gzip and gRPC-web go through Connect",
  // The daemon takes the direct Read path only outside Bun (see
  // DIRECT_READ in ./server.ts).
  ignore: typeof process.versions.bun === "string",
}, async () => {
  const blobs = new StallingBlobService();
  const server = await startStoreServer({
    blobs,
    directories: new MemoryDirectoryService(),
    pathInfos: new MemoryPathInfoService(),
  }, { listen: ["127.0.0.1:0"] });
  const base = `http://${server.addresses[0]}`;
  const url = `grpc+${base}`;
  try {
    const w = blobs.put();
    const data = bytes(3 << 20, 7);
    await w.write(data);
    const digest = await w.close();
    const w2 = blobs.put();
    await w2.write(new TextEncoder().encode("slow"));
    blobs.slow = await w2.close();
    const request = envelope(new Uint8Array([0x0a, 32, ...blobs.slow]));

    // grpc-timeout: the server ends the call with DEADLINE_EXCEEDED and
    // stops reading the blob.
    const t = await rawCall(base, {
      "content-type": "application/grpc",
      "grpc-timeout": "300m",
    }, request);
    assert.equal(t.status, String(Code.DeadlineExceeded), t.message);
    assert.ok(t.bytes > 200 << 10, `got ${t.bytes} bytes first`);
    await until(() => blobs.cancelled === 1, "read cancelled on deadline");
    const badTimeout = await rawCall(base, {
      "content-type": "application/grpc",
      "grpc-timeout": "soon",
    }, request);
    assert.equal(badTimeout.status, String(Code.InvalidArgument));

    // The client cancels: the server cancels the blob read.
    const client = GrpcBlobService.connect(url);
    try {
      const reader = (await client.read(blobs.slow))!.getReader();
      // The stream stalls after its first piece; the client sees nothing
      // yet (it delivers whole verified blobs), so cancel while waiting.
      const pending = reader.read();
      await new Promise((r) => setTimeout(r, 200));
      await reader.cancel();
      await pending.catch(() => {});
      await until(() => blobs.cancelled === 2, "read cancelled by the client");
    } finally {
      await client.close();
    }

    // Malformed request bodies.
    for (
      const [body, code] of [
        [new Uint8Array([1, 2, 3]), Code.InvalidArgument],
        [envelope(new Uint8Array([0xff, 0xff])), Code.InvalidArgument],
        [concatBytes([request, request]), Code.Unimplemented],
        [envelope(new Uint8Array([0x0a, 2, 1, 2])), Code.InvalidArgument],
      ] as const
    ) {
      const r = await rawCall(
        base,
        { "content-type": "application/grpc+proto" },
        body,
      );
      assert.equal(r.status, String(code), `${body}: ${r.message}`);
      assert.equal(r.bytes, 0);
    }

    // A gzip-compressed request and gRPC-web are served by Connect.
    for (
      const transport of [
        createGrpcTransport({
          baseUrl: base,
          sendCompression: compressionGzip,
          compressMinBytes: 0,
        }),
        createGrpcWebTransport({ baseUrl: base, httpVersion: "2" }),
      ]
    ) {
      const raw = createClient(BlobServiceDesc, transport);
      const got: Uint8Array[] = [];
      for await (const m of raw.read({ digest })) got.push(m.data);
      assert.deepEqual(concatBytes(got), data);
    }
    // And the fast path itself, through a plain Connect client.
    const channel = openGrpcChannel(url);
    try {
      const raw = createClient(BlobServiceDesc, channel.transport);
      const got: Uint8Array[] = [];
      for await (const m of raw.read({ digest })) got.push(m.data);
      assert.deepEqual(concatBytes(got), data);
      assert.deepEqual(blake3Sync(concatBytes(got)), digest);
      // Both clients: direct HTTP/2 reads and reads through Connect.
      const viaConnect = new GrpcBlobService(channel.transport);
      assert.deepEqual(await readAll(await viaConnect.read(digest)), data);
    } finally {
      channel.close();
    }
  } finally {
    await server.shutdown(1000);
  }
});
