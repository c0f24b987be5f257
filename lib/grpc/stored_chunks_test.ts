import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import { join } from "node:path";
import process from "node:process";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { BlobChunkSchema } from "../../proto/gen/snix/castore/protos/rpc_blobstore_pb.ts";
import type { BlobService } from "../castore/blob_service.ts";
import { LocalBlobService } from "../castore/local_blob_service.ts";
import { MemoryDirectoryService } from "../castore/memory_directory_service.ts";
import { blake3Sync } from "../castore/digest.ts";
import { MemoryPathInfoService } from "../store/memory_path_info_service.ts";
import { pseudoRandom, readAll } from "../castore/_test_blob_service.ts";
import { concatBytes } from "../nix/bytes.ts";
import { startStoreServer } from "./server.ts";
import { GrpcBlobService } from "./blob_client.ts";
import {
  decodeZstd,
  frameContentSize,
  loadZstd,
  rawFrame,
} from "./zstd_message.ts";
import type { ChunkLocator, StoredRange } from "./stored_chunks.ts";

/** `zstd` (the real tool) on `data` with `args`. */
function zstd(args: string[], data: Uint8Array): Uint8Array {
  return new Uint8Array(execFileSync("zstd", args, { input: data }));
}

/** `bytes` cut into pieces of `n` bytes (views). */
function cut(bytes: Uint8Array, n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let o = 0; o < bytes.length; o += n) out.push(bytes.subarray(o, o + n));
  return out;
}

function decodeAll(b: Uint8Array, piece: number, max = 64 << 20) {
  return concatBytes(decodeZstd(cut(b, piece), b.length, max));
}

const text = new TextEncoder().encode(
  "the quick brown fox jumps over the lazy dog\n".repeat(20_000),
);

Deno.test("zstd messages: a raw prefix frame + a stored frame is the BlobChunk for zstd(1); decoding cut anywhere", async () => {
  await loadZstd();
  const data = pseudoRandom(300_000, 5); // incompressible: raw blocks
  const stored = zstd(
    ["-c", "-q", "--no-check", `--stream-size=${data.length}`],
    data,
  );
  assert.equal(frameContentSize(stored), data.length);
  const pb = toBinary(BlobChunkSchema, create(BlobChunkSchema, { data }));
  const prefix = rawFrame(pb.subarray(0, pb.length - data.length));
  const message = concatBytes([prefix, stored]);
  // The real decoder reads our prefix frame and the stored one as one stream.
  assert.deepEqual(zstd(["-d", "-c", "-q"], message), pb);
  for (const n of [1, 7, 4096, 131_075, message.length]) {
    assert.deepEqual(decodeAll(message, n), pb, `pieces of ${n}`);
  }
  // Raw blocks come out as views of the input (no copy).
  const out = decodeZstd([message], message.length, 1 << 20);
  assert.ok(out.length > 1 && out.every((p) => p.buffer === message.buffer));
  // Frames with compressed blocks, with a checksum, skippable frames.
  const packed = zstd(
    ["-c", "-q", "--check", "-3", `--stream-size=${text.length}`],
    text,
  );
  assert.ok(packed.length < text.length / 10);
  assert.deepEqual(decodeAll(packed, 1000), text);
  const noSize = zstd(["-c", "-q", "--no-content-size"], text);
  assert.equal(frameContentSize(noSize), undefined);
  assert.deepEqual(decodeAll(noSize, 333), text);
  const skip = new Uint8Array([0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
  assert.deepEqual(
    decodeAll(concatBytes([skip, stored, packed]), 50_000),
    concatBytes([data, text]),
  );
  assert.deepEqual(decodeAll(new Uint8Array(0), 1), new Uint8Array(0));
});

Deno.test("zstd messages: damaged streams and too much content are refused with a clear message", () => {
  const data = pseudoRandom(200_000, 6);
  const stored = zstd(["-c", "-q", "--no-check"], data);
  const fails = (b: Uint8Array, re: RegExp, max = 1 << 20) =>
    assert.throws(() => decodeZstd(cut(b, 1000), b.length, max), re);
  fails(stored.subarray(0, stored.length - 10), /cut short/);
  fails(concatBytes([new Uint8Array([1, 2, 3, 4]), stored]), /not a zstd/);
  fails(stored, /more than 100000 bytes/, 100_000);
  // A recorded content size that does not match the blocks.
  const wrongSize = rawFrame(new Uint8Array([1, 2, 3]));
  wrongSize[5] = 4;
  fails(wrongSize, /holds 3 bytes, its header says 4/);
  // Reserved block type.
  const reserved = rawFrame(new Uint8Array([1]));
  reserved[6] |= 3 << 1;
  fails(reserved, /reserved block type/);
  // Garbage inside compressed blocks: the decoder says so.
  const packed = zstd(["-c", "-q", "--no-check", "-3"], text).slice();
  packed.fill(0xff, 20, 60);
  assert.throws(() => decodeZstd([packed], packed.length, 64 << 20));
});

/** A local store that counts the verified reads it serves. */
function counting(local: LocalBlobService) {
  let reads = 0;
  const blobs: BlobService & ChunkLocator = {
    has: (d) => local.has(d),
    chunks: (d) => local.chunks(d),
    read: (d, r) => {
      reads++;
      return local.read(d, r);
    },
    put: () => local.put(),
    locateChunk: (d): StoredRange | undefined => local.locateChunk(d),
  };
  return { blobs, reads: () => reads };
}

async function expectCode(p: Promise<unknown>, code: Code, re: RegExp) {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ConnectError, `ConnectError expected, got ${e}`);
    assert.equal(e.code, code, `code ${Code[e.code]} (${e.message})`);
    assert.match(e.message, re);
    return true;
  });
}

Deno.test("bulk Read of a local store: chunks go out as stored (no daemon-side read), arrive verified; a damaged chunk file is DataLoss", async () => {
  const dir = fs.mkdtempSync(join(os.tmpdir(), "snix-stored-"));
  const local = await LocalBlobService.open(join(dir, "data"));
  const { blobs, reads } = counting(local);
  const server = await startStoreServer({
    blobs,
    directories: new MemoryDirectoryService(),
    pathInfos: new MemoryPathInfoService(),
  }, { listen: ["127.0.0.1:0", `unix:${dir}/s.sock`] });
  const put = async (data: Uint8Array) => {
    const w = local.put();
    await w.write(data);
    return await w.close();
  };
  const clients: GrpcBlobService[] = [];
  try {
    const random = pseudoRandom(3_000_000, 21);
    const compressible = concatBytes([text, pseudoRandom(100_000, 3), text]);
    const small = pseudoRandom(1000, 22);
    const digests = [
      await put(random),
      await put(compressible),
      await put(small),
    ];
    const datas = [random, compressible, small];
    assert.ok((await local.chunks(digests[0]))!.length > 3);
    for (
      const url of [
        `grpc+http://${server.addresses[0]}`,
        `grpc+unix://${dir}/s.sock`,
      ]
    ) {
      const c = GrpcBlobService.connect(url);
      clients.push(c);
      for (const [i, d] of digests.entries()) {
        assert.deepEqual(await readAll(await c.read(d)), datas[i], url);
      }
      assert.equal(reads(), 0, "no chunk was read through the backend");
      // Reads at once share the daemon's reused frame buffers: all intact.
      const many = await Promise.all(
        [0, 1, 0, 1, 0].map(async (i) => readAll(await c.read(digests[i]))),
      );
      many.forEach((b, k) => assert.deepEqual(b, datas[[0, 1, 0, 1, 0][k]]));
      // A range far from the start (chunk Reads by digest, in parallel).
      assert.deepEqual(
        await readAll(await c.read(digests[0], { offset: 2_000_000 })),
        random.subarray(2_000_000),
      );
      // Cancelled half-way: the next Read on the connection is whole.
      const r = (await c.read(digests[0]))!.getReader();
      await r.read();
      await r.cancel();
      assert.deepEqual(await readAll(await c.read(digests[0])), random);
      assert.equal(await c.read(blake3Sync(pseudoRandom(5, 1))), undefined);
    }
    // The daemon decoding itself (the client does not accept zstd).
    process.env.SNIX_GRPC_BULK_ZSTD = "0";
    const plain = GrpcBlobService.connect(`grpc+unix://${dir}/s.sock`);
    delete process.env.SNIX_GRPC_BULK_ZSTD;
    clients.push(plain);
    assert.deepEqual(await readAll(await plain.read(digests[0])), random);
    assert.ok(reads() > 0);
    // A flipped byte inside a stored chunk of the random blob: the client's
    // check finds it (the daemon no longer does).
    const chunk = (await local.chunks(digests[0]))![2];
    const at = local.locateChunk(chunk.digest)!;
    assert.equal(at.length, -1, "a loose chunk file");
    const bytes = fs.readFileSync(at.path);
    bytes[bytes.length >> 1] ^= 0x10;
    fs.writeFileSync(at.path, bytes);
    const got: Uint8Array[] = [];
    await expectCode(
      (async () => {
        for await (const p of (await clients[1].read(digests[0]))!) {
          got.push(p);
        }
      })(),
      Code.DataLoss,
      /does not match its digest/,
    );
    assert.ok(concatBytes(got).length <= 2 * 1_000_000);
    // A cut frame: DataLoss naming the damage.
    fs.writeFileSync(at.path, bytes.subarray(0, bytes.length - 100));
    await expectCode(
      (async () => readAll(await clients[1].read(digests[0])))(),
      Code.DataLoss,
      /damaged zstd message: frame cut short|does not match/,
    );
    // A chunk gone: DataLoss from the daemon, naming the chunk.
    fs.rmSync(at.path);
    await expectCode(
      (async () => readAll(await clients[0].read(digests[0])))(),
      Code.DataLoss,
      /is missing/,
    );
  } finally {
    for (const c of clients) await c.close();
    await server.shutdown(1000);
    await local.close?.();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
