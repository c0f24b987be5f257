import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  DirectorySchema,
  EntrySchema,
} from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import { BlobService as BlobServiceDesc } from "../../proto/gen/snix/castore/protos/rpc_blobstore_pb.ts";
import {
  Health,
  HealthCheckResponse_ServingStatus,
} from "../../proto/gen/grpc/health/v1/health_pb.ts";
import type {
  BlobService,
  ByteRange,
  ChunkMeta,
} from "../castore/blob_service.ts";
import { MemoryBlobService } from "../castore/memory_blob_service.ts";
import { MemoryDirectoryService } from "../castore/memory_directory_service.ts";
import { blake3Sync } from "../castore/digest.ts";
import { directoryDigestSync, directorySize } from "../castore/directory.ts";
import { MemoryPathInfoService } from "../store/memory_path_info_service.ts";
import { makePathInfo } from "../store/path_info.ts";
import { StorePath } from "../nix/store_path.ts";
import { startStoreServer, type StoreBackends } from "./server.ts";
import { GrpcBlobService } from "./blob_client.ts";
import { GrpcDirectoryService } from "./directory_client.ts";
import { GrpcPathInfoService } from "./path_info_client.ts";
import { openGrpcChannel } from "./transport.ts";
import { rechunk } from "./rechunk.ts";
import { parseListenAddress } from "./listen_address.ts";
import { readAll } from "../castore/_test_blob_service.ts";

const enc = new TextEncoder();

function backends(): StoreBackends {
  return {
    blobs: new MemoryBlobService(),
    directories: new MemoryDirectoryService(),
    pathInfos: new MemoryPathInfoService(),
  };
}

async function withServer(
  fn: (url: string, b: StoreBackends) => Promise<void>,
  opts: { readOnly?: boolean; b?: StoreBackends } = {},
) {
  const b = opts.b ?? backends();
  const server = await startStoreServer(b, {
    listen: ["127.0.0.1:0"],
    readOnly: opts.readOnly,
  });
  try {
    await fn(`grpc+http://${server.addresses[0]}`, b);
  } finally {
    await server.shutdown(1000);
  }
}

function randomBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

async function putBlob(
  blobs: BlobService,
  data: Uint8Array,
): Promise<Uint8Array> {
  const w = blobs.put();
  await w.write(data);
  return await w.close();
}

async function expectCode(p: Promise<unknown>, code: Code, re?: RegExp) {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ConnectError, `ConnectError expected, got ${e}`);
    assert.equal(e.code, code, `code ${Code[e.code]} (${e.message})`);
    if (re) assert.match(e.message, re);
    return true;
  });
}

Deno.test("rechunk coalesces small pieces and splits big ones", async () => {
  async function* src() {
    for (let i = 0; i < 10; i++) yield new Uint8Array(100).fill(i);
    yield new Uint8Array(2500).fill(42);
  }
  const out: Uint8Array[] = [];
  for await (const p of rechunk(src(), 300, 1000)) out.push(p);
  assert.deepEqual(out.map((p) => p.length), [300, 300, 300, 1000, 1000, 600]);
  assert.equal(out[0][0], 0);
  assert.equal(out[0][299], 2);
});

Deno.test("parseListenAddress accepts host:port, [v6]:port, unix:/path and rejects junk", () => {
  assert.deepEqual(parseListenAddress("127.0.0.1:8000"), {
    kind: "tcp",
    host: "127.0.0.1",
    port: 8000,
  });
  assert.deepEqual(parseListenAddress("[::1]:8000"), {
    kind: "tcp",
    host: "::1",
    port: 8000,
  });
  assert.deepEqual(parseListenAddress("unix:/run/x.sock"), {
    kind: "unix",
    path: "/run/x.sock",
  });
  // The clients' spelling of the same addresses.
  assert.deepEqual(parseListenAddress("grpc+http://[::1]:8000"), {
    kind: "tcp",
    host: "::1",
    port: 8000,
  });
  assert.deepEqual(parseListenAddress("grpc+unix:///run/x.sock"), {
    kind: "unix",
    path: "/run/x.sock",
  });
  assert.throws(
    () => parseListenAddress("grpc+http://[::1]:99999"),
    /port "99999" is not a number in 0\.\.65535/,
  );
  for (
    const bad of [
      "8000",
      "::1:8000",
      "host:",
      "host:99999",
      "unix:rel.sock",
      "[::1]8000",
      "grpc+http://host:1/path",
      "grpc+unix://rel.sock",
    ]
  ) {
    assert.throws(() => parseListenAddress(bad), /listen address/);
  }
});

Deno.test("grpc blob: put, stat, read, ranges, missing and bad digests", async () => {
  await withServer(async (url) => {
    const client = GrpcBlobService.connect(url);
    try {
      const data = randomBytes(3 << 20);
      const digest = await putBlob(client, data);
      assert.deepEqual(digest, blake3Sync(data));
      assert.equal(await client.has(digest), true);
      assert.deepEqual(await client.chunks(digest), []);
      assert.deepEqual(await readAll(await client.read(digest)), data);
      assert.deepEqual(
        await readAll(
          await client.read(digest, { offset: 1000, length: 2 << 20 }),
        ),
        data.subarray(1000, 1000 + (2 << 20)),
      );
      assert.deepEqual(
        await readAll(await client.read(digest, { offset: 5 << 20 })),
        new Uint8Array(),
      );
      const missing = blake3Sync(enc.encode("nope"));
      assert.equal(await client.has(missing), false);
      assert.equal(await client.chunks(missing), undefined);
      assert.equal(await client.read(missing), undefined);
      // The empty blob.
      const empty = await putBlob(client, new Uint8Array());
      assert.deepEqual(empty, blake3Sync(new Uint8Array()));
      assert.deepEqual(
        await readAll(await client.read(empty)),
        new Uint8Array(),
      );
      // A wrong-size digest, straight at the server.
      const channel = openGrpcChannel(url);
      const raw = createClient(BlobServiceDesc, channel.transport);
      await expectCode(
        raw.stat({ digest: new Uint8Array(5) }),
        Code.InvalidArgument,
        /32-byte/,
      );
      await expectCode(
        (async () => {
          for await (const _ of raw.read({ digest: new Uint8Array(31) }));
        })(),
        Code.InvalidArgument,
      );
      await expectCode(
        (async () => {
          for await (const _ of raw.read({ digest: missing }));
        })(),
        Code.NotFound,
        /not found/,
      );
      // Read messages are 128 KiB..1 MiB.
      const sizes: number[] = [];
      for await (const m of raw.read({ digest })) sizes.push(m.data.length);
      assert.ok(sizes.every((n) => n <= 1 << 20), `sizes ${sizes}`);
      assert.ok(
        sizes.slice(0, -1).every((n) => n >= 128 << 10),
        `sizes ${sizes}`,
      );
      channel.close();
    } finally {
      await client.close();
    }
  });
});

/**
 * A blob service that stores blobs in fixed-size chunks, each readable by its
 * own digest, and assembles whole blobs from them (as snix's object store and
 * our local store do), counting both kinds of reads. Chunks named in
 * `corrupt` are served as zeros.
 */
class ChunkingBlobService extends MemoryBlobService {
  #index = new Map<string, ChunkMeta[]>();
  chunkReads = 0;
  wholeReads = 0;
  corrupt = new Set<string>();
  constructor(readonly chunkSize: number) {
    super();
  }
  async putChunked(data: Uint8Array): Promise<Uint8Array> {
    const metas: ChunkMeta[] = [];
    for (let o = 0; o < data.length; o += this.chunkSize) {
      const c = data.subarray(o, o + this.chunkSize);
      metas.push({ digest: await putBlob(this, c), size: c.length });
    }
    const digest = blake3Sync(data);
    this.#index.set(key(digest), metas);
    return digest;
  }
  /** Calls of {@linkcode chunks} (a client's Stat lands here). */
  chunkLists = 0;
  override async chunks(digest: Uint8Array): Promise<ChunkMeta[] | undefined> {
    this.chunkLists++;
    return this.#index.get(key(digest)) ?? await super.chunks(digest);
  }
  async #chunk(
    digest: Uint8Array,
    size: number,
  ): Promise<ReadableStream<Uint8Array> | undefined> {
    if (this.corrupt.has(key(digest))) {
      return new ReadableStream({
        start(c) {
          c.enqueue(new Uint8Array(size));
          c.close();
        },
      });
    }
    return await super.read(digest);
  }
  override async read(
    digest: Uint8Array,
    range?: { offset: number; length?: number },
  ) {
    const metas = this.#index.get(key(digest));
    if (!metas) {
      this.chunkReads++;
      const size = (await readAll(await super.read(digest))).length;
      return range
        ? await super.read(digest, range)
        : await this.#chunk(digest, size);
    }
    assert.equal(range, undefined, "whole blobs are read whole here");
    this.wholeReads++;
    const parts: Uint8Array[] = [];
    for (const m of metas) {
      parts.push(await readAll(await this.#chunk(m.digest, m.size)));
    }
    return new ReadableStream<Uint8Array>({
      start(c) {
        for (const p of parts) c.enqueue(p);
        c.close();
      },
    });
  }
}
const key = (d: Uint8Array) => Array.from(d).join(",");

/**
 * Both kinds of blob client: one that opened its own connection (Reads go
 * straight over HTTP/2) and one built on a Connect transport (Reads go
 * through Connect).
 */
function blobClients(url: string): [string, GrpcBlobService][] {
  const channel = openGrpcChannel(url);
  return [
    ["own connection", GrpcBlobService.connect(url)],
    [
      "Connect transport",
      new GrpcBlobService(channel.transport, { onClose: channel.close }),
    ],
  ];
}

Deno.test("grpc blob client: whole reads stream once, ranged reads fetch only the chunks they touch", async () => {
  const chunked = new ChunkingBlobService(100_000);
  const b = { ...backends(), blobs: chunked };
  await withServer(async (url) => {
    for (const [kind, client] of blobClients(url)) {
      try {
        const data = randomBytes(1_050_000, 7);
        const digest = await chunked.putChunked(data);
        const chunks = await client.chunks(digest);
        assert.equal(chunks?.length, 11);
        chunked.chunkReads = chunked.wholeReads = 0;
        assert.deepEqual(await readAll(await client.read(digest)), data);
        assert.deepEqual([chunked.wholeReads, chunked.chunkReads], [1, 0]);
        chunked.chunkReads = chunked.wholeReads = 0;
        assert.deepEqual(
          await readAll(
            await client.read(digest, { offset: 250_000, length: 100_000 }),
          ),
          data.subarray(250_000, 350_000),
        );
        assert.deepEqual(
          [chunked.wholeReads, chunked.chunkReads],
          [0, 2],
          "a range touching 2 chunks fetches 2",
        );
        const ranged = async (offset: number, length: number) => {
          chunked.chunkReads = chunked.wholeReads = 0;
          assert.deepEqual(
            await readAll(await client.read(digest, { offset, length })),
            data.subarray(offset, offset + length),
          );
          return [chunked.wholeReads, chunked.chunkReads];
        };
        assert.deepEqual(
          await ranged(1, 1_049_998),
          [1, 0],
          `a range starting in the first chunk: one Read (${kind})`,
        );
        assert.deepEqual(
          await ranged(100_001, 500_000),
          [1, 0],
          `little to skip before the range: one Read (${kind})`,
        );
        assert.deepEqual(
          await ranged(300_000, 700_000),
          [0, 7],
          `much to skip: its 7 chunks, fetched in parallel (${kind})`,
        );
      } finally {
        await client.close();
      }
    }
  }, { b });
});

Deno.test("grpc blob client: a chunk with wrong bytes is DataLoss, and none of its bytes are delivered", async () => {
  const chunked = new ChunkingBlobService(1000);
  const b = { ...backends(), blobs: chunked };
  const data = randomBytes(3000, 3);
  const digest = await chunked.putChunked(data);
  const metas = (await chunked.chunks(digest))!;
  chunked.corrupt.add(key(metas[1].digest));
  await withServer(async (url) => {
    for (const [, client] of blobClients(url)) {
      try {
        // Whole read (one stream, verified chunk by chunk): the first chunk arrives, then the error.
        const reader = (await client.read(digest))!.getReader();
        const first = await reader.read();
        assert.deepEqual(first.value, data.subarray(0, 1000));
        await expectCode(reader.read(), Code.DataLoss, /does not match/);
        // Ranged reads: through one Read from the start, and (far from the
        // start) with the chunks fetched by digest.
        for (const offset of [900, 1500]) {
          await expectCode(
            readAll(await client.read(digest, { offset, length: 200 })),
            Code.DataLoss,
            /does not match/,
          );
        }
      } finally {
        await client.close();
      }
    }
  }, { b });
});

Deno.test("grpc blob client: a small blob whose size is given is read in one call, verified whole; a wrong size falls back, wrong bytes are DataLoss", async () => {
  const chunked = new ChunkingBlobService(1000);
  const b = { ...backends(), blobs: chunked };
  const data = randomBytes(3000, 5);
  const digest = await chunked.putChunked(data);
  const bad = randomBytes(2500, 6);
  const badDigest = await chunked.putChunked(bad);
  chunked.corrupt.add(key((await chunked.chunks(badDigest))![2].digest));
  await withServer(async (url) => {
    for (const [kind, client] of blobClients(url)) {
      try {
        const lists = async (range: ByteRange) => {
          chunked.chunkLists = 0;
          assert.deepEqual(
            await readAll(await client.read(digest, range)),
            data.subarray(range.offset, range.offset + range.length!),
          );
          return chunked.chunkLists;
        };
        const plain = await lists({ offset: 500, length: 1000 });
        assert.ok(plain > 0, "without a size the client asks for the chunks");
        assert.equal(
          await lists({ offset: 500, length: 1000, blobSize: 3000 }),
          plain - 1,
          `with its size: no Stat (${kind})`,
        );
        // A size too small: the one-call read sees more and takes the usual way.
        assert.equal(
          await lists({ offset: 0, length: 3000, blobSize: 2000 }),
          plain,
          `a wrong size costs only the shortcut (${kind})`,
        );
        await expectCode(
          (async () => {
            const s = await client.read(badDigest, {
              offset: 0,
              length: 10,
              blobSize: 2500,
            });
            const reader = s!.getReader();
            const first = await reader.read();
            assert.equal(first.value, undefined, "no byte before the check");
          })(),
          Code.DataLoss,
          /do not match/,
        );
      } finally {
        await client.close();
      }
    }
  }, { b });
});

function dirWithFile(name: string, fileDigest: Uint8Array, size: number) {
  return create(DirectorySchema, {
    files: [{
      name: enc.encode(name),
      digest: fileDigest,
      size: BigInt(size),
      executable: false,
    }],
  });
}

Deno.test("grpc directory: put leaves first, get, recursive get, cache, bad input", async () => {
  await withServer(async (url, b) => {
    const client = GrpcDirectoryService.connect(url);
    try {
      const leaf = dirWithFile("a", blake3Sync(enc.encode("x")), 1);
      const leafDigest = directoryDigestSync(leaf);
      const mid = create(DirectorySchema, {
        directories: [{
          name: enc.encode("leaf"),
          digest: leafDigest,
          size: directorySize(leaf),
        }],
      });
      const midDigest = directoryDigestSync(mid);
      const root = create(DirectorySchema, {
        directories: [
          {
            name: enc.encode("m1"),
            digest: midDigest,
            size: directorySize(mid),
          },
          {
            name: enc.encode("m2"),
            digest: leafDigest,
            size: directorySize(leaf),
          },
        ],
      });
      const rootDigest = directoryDigestSync(root);
      const putter = client.put();
      await putter.put(leaf);
      await putter.put(mid);
      await putter.put(root);
      assert.deepEqual(await putter.close(), rootDigest);
      const all = [];
      for await (const d of client.getRecursive(rootDigest)) {
        all.push(directoryDigestSync(d));
      }
      assert.deepEqual(all, [rootDigest, midDigest, leafDigest]);
      assert.deepEqual(
        directoryDigestSync((await client.get(midDigest))!),
        midDigest,
      );
      // A second client sees it too; the first answers from its cache.
      const fresh = GrpcDirectoryService.connect(url);
      assert.deepEqual(
        directoryDigestSync((await fresh.get(leafDigest))!),
        leafDigest,
      );
      await fresh.close();
      assert.equal(await client.get(blake3Sync(enc.encode("none"))), undefined);
      await expectCode(
        (async () => {
          for await (
            const _ of client.getRecursive(blake3Sync(enc.encode("none")))
          );
        })(),
        Code.NotFound,
      );
      // Parent before child: the server refuses.
      const other = dirWithFile("b", blake3Sync(enc.encode("y")), 1);
      const parent = create(DirectorySchema, {
        directories: [{
          name: enc.encode("c"),
          digest: directoryDigestSync(other),
          size: directorySize(other),
        }],
      });
      const p2 = client.put();
      await p2.put(parent);
      await p2.put(other);
      await expectCode(
        p2.close(),
        Code.InvalidArgument,
        /missing directory|children/,
      );
      // Unsorted entries: refused by the client before sending.
      const bad = create(DirectorySchema, {
        files: [
          { name: enc.encode("z"), digest: new Uint8Array(32), size: 1n },
          { name: enc.encode("a"), digest: new Uint8Array(32), size: 1n },
        ],
      });
      await expectCode(client.put().put(bad), Code.InvalidArgument, /sorted/);
      // Nothing of the failed put was stored.
      assert.equal(
        await b.directories.get(directoryDigestSync(other)),
        undefined,
      );
    } finally {
      await client.close();
    }
  });
});

Deno.test("grpc path info: put needs castore root, get, list, calculateNar, read-only", async () => {
  const b = backends();
  await withServer(async (url) => {
    const blobs = GrpcBlobService.connect(url);
    const pis = GrpcPathInfoService.connect(url);
    try {
      const contents = enc.encode("hello\n");
      const fileDigest = await putBlob(blobs, contents);
      const sp = StorePath.fromBaseName(
        "00bgd045z0d4icpbc2yyz4gx48ak44la-hello",
      );
      const entry = create(EntrySchema, {
        entry: {
          case: "file",
          value: {
            name: enc.encode("x"),
            digest: fileDigest,
            size: BigInt(contents.length),
          },
        },
      });
      const nar = await pis.calculateNar(entry);
      assert.equal(nar.narSize, 120);
      const info = makePathInfo({
        entry,
        storePath: sp,
        narSize: nar.narSize,
        narSha256: nar.narSha256,
      });
      await pis.put(info);
      const got = await pis.get(sp.digest);
      assert.ok(got);
      assert.equal(
        new TextDecoder().decode(got.entry!.entry.value!.name),
        sp.baseName,
      );
      assert.equal(await pis.get(new Uint8Array(20)), undefined);
      const listed = [];
      for await (const i of pis.list()) listed.push(i);
      assert.equal(listed.length, 1);
      // Root missing in castore.
      const missingEntry = create(EntrySchema, {
        entry: {
          case: "file",
          value: {
            name: enc.encode("x"),
            digest: new Uint8Array(32),
            size: 1n,
          },
        },
      });
      const sp2 = StorePath.fromBaseName(
        "11bgd045z0d4icpbc2yyz4gx48ak44la-other",
      );
      await expectCode(
        pis.put(
          makePathInfo({
            entry: missingEntry,
            storePath: sp2,
            narSize: 1,
            narSha256: new Uint8Array(32),
          }),
        ),
        Code.FailedPrecondition,
        /not in the blob service/,
      );
      await expectCode(pis.get(new Uint8Array(19)), Code.InvalidArgument);
    } finally {
      await blobs.close();
      await pis.close();
    }
  }, { b });
  // The same store, read-only.
  await withServer(async (url) => {
    const blobs = GrpcBlobService.connect(url);
    const dirs = GrpcDirectoryService.connect(url);
    try {
      const w = blobs.put();
      await w.write(enc.encode("data")).catch(() => {});
      await expectCode(w.close(), Code.PermissionDenied, /read-only/);
      const p = dirs.put();
      await p.put(create(DirectorySchema, {})).catch(() => {});
      await expectCode(p.close(), Code.PermissionDenied);
      const channel = openGrpcChannel(url);
      const health = createClient(Health, channel.transport);
      assert.equal(
        (await health.check({})).status,
        HealthCheckResponse_ServingStatus.SERVING,
      );
      assert.equal(
        (await health.check({ service: "snix.castore.v1.BlobService" })).status,
        HealthCheckResponse_ServingStatus.SERVING,
      );
      await expectCode(health.check({ service: "nope" }), Code.NotFound);
      channel.close();
    } finally {
      await blobs.close();
      await dirs.close();
    }
  }, { b, readOnly: true });
});

Deno.test("grpc client: a peer that accepts but never answers fails with UNAVAILABLE, not a hang", async () => {
  const { createServer } = await import("node:net");
  const held: import("node:net").Socket[] = [];
  const silent = createServer((s) => void held.push(s));
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
  const port = (silent.address() as import("node:net").AddressInfo).port;
  const channel = openGrpcChannel(`grpc+http://127.0.0.1:${port}`, {
    keepaliveIntervalMs: 200,
    keepaliveTimeoutMs: 300,
  });
  try {
    const pis = new GrpcPathInfoService(channel.transport, {
      peer: "silent peer",
    });
    const t0 = Date.now();
    await expectCode(
      pis.get(new Uint8Array(20)),
      Code.Unavailable,
      /silent peer/,
    );
    assert.ok(Date.now() - t0 < 5000);
  } finally {
    channel.close();
    for (const s of held) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  }
});
