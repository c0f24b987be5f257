import assert from "node:assert/strict";
import * as net from "node:net";
import * as os from "node:os";
import * as fs from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ReadBlobRequestSchema } from "../../proto/gen/snix/castore/protos/rpc_blobstore_pb.ts";
import type { ChunkMeta } from "../castore/blob_service.ts";
import { MemoryBlobService } from "../castore/memory_blob_service.ts";
import { MemoryDirectoryService } from "../castore/memory_directory_service.ts";
import { blake3Sync } from "../castore/digest.ts";
import { MemoryPathInfoService } from "../store/memory_path_info_service.ts";
import { pseudoRandom, readAll } from "../castore/_test_blob_service.ts";
import { concatBytes } from "../nix/bytes.ts";
import { startStoreServer, type StoreServer } from "./server.ts";
import { GrpcBlobService } from "./blob_client.ts";
import { openGrpcChannel } from "./transport.ts";
import { BLOB_READ_PATH } from "./blob_read_server.ts";
import { bulkVerdict } from "./bulk_read_server.ts";
import { BulkReader } from "./bulk_read_client.ts";
import * as h2 from "./h2_wire.ts";

const key = (d: Uint8Array) => Array.from(d).join(",");

/**
 * Blobs kept as fixed-size chunks (readable by their own digests), whole
 * blobs assembled from them; chunks in `corrupt` come out with one byte
 * flipped; blobs in `stall` never end.
 */
class ChunkedBlobs extends MemoryBlobService {
  #index = new Map<string, ChunkMeta[]>();
  corrupt = new Set<string>();
  stall = new Set<string>();
  async putChunked(data: Uint8Array, size: number): Promise<Uint8Array> {
    const metas: ChunkMeta[] = [];
    for (let o = 0; o < data.length; o += size) {
      const c = data.subarray(o, o + size);
      const w = this.put();
      await w.write(c);
      metas.push({ digest: await w.close(), size: c.length });
    }
    const digest = blake3Sync(data);
    this.#index.set(key(digest), metas);
    return digest;
  }
  override async chunks(digest: Uint8Array): Promise<ChunkMeta[] | undefined> {
    return this.#index.get(key(digest)) ?? await super.chunks(digest);
  }
  override async read(digest: Uint8Array) {
    if (this.stall.has(key(digest))) {
      return new ReadableStream<Uint8Array>({
        start: (c) => c.enqueue(new Uint8Array(10)),
      });
    }
    const metas = this.#index.get(key(digest));
    if (!metas) return await super.read(digest);
    const parts: Uint8Array[] = [];
    for (const m of metas) {
      const b = (await readAll(await super.read(m.digest))).slice();
      if (this.corrupt.has(key(m.digest))) b[b.length >> 1] ^= 1;
      parts.push(b);
    }
    return new ReadableStream<Uint8Array>({
      start(c) {
        for (const p of parts) c.enqueue(p);
        c.close();
      },
    });
  }
}

async function withServer(
  fn: (
    urls: string[],
    blobs: ChunkedBlobs,
    server: StoreServer,
  ) => Promise<void>,
  opts: { bulkReads?: boolean } = {},
) {
  const dir = fs.mkdtempSync(join(os.tmpdir(), "snix-bulk-"));
  const blobs = new ChunkedBlobs();
  const server = await startStoreServer({
    blobs,
    directories: new MemoryDirectoryService(),
    pathInfos: new MemoryPathInfoService(),
  }, {
    listen: ["127.0.0.1:0", `unix:${dir}/s.sock`],
    bulkReads: opts.bulkReads,
  });
  try {
    await fn(
      [`grpc+http://${server.addresses[0]}`, `grpc+unix://${dir}/s.sock`],
      blobs,
      server,
    );
  } finally {
    await server.shutdown(1000);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A blob client whose bulk reader the test can look at. */
function client(url: string) {
  const channel = openGrpcChannel(url);
  const blobs = new GrpcBlobService(channel.transport, {
    raw: channel.raw,
    bulk: channel.bulk,
    peer: channel.peer,
    onClose: channel.close,
  });
  return { blobs, bulk: channel.bulk! };
}

async function expectCode(p: Promise<unknown>, code: Code, re?: RegExp) {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ConnectError, `ConnectError expected, got ${e}`);
    assert.equal(e.code, code, `code ${Code[e.code]} (${e.message})`);
    if (re) assert.match(e.message, re);
    return true;
  });
}

Deno.test("h2 subset: HPACK round trip and refusals, frames cut anywhere, bulk sniffing", () => {
  const headers: [string, string][] = [
    [":status", "200"],
    [":method", "POST"],
    ["content-type", "application/grpc+proto"],
    ["grpc-message", "x".repeat(300)],
  ];
  assert.deepEqual(h2.decodeHeaders(h2.encodeHeaders(headers)), headers);
  // Static-name literal with incremental indexing; table size update to 0.
  assert.deepEqual(
    h2.decodeHeaders(Uint8Array.from([0x20, 0x5f, 3, 0x61, 0x2f, 0x62])),
    [["content-type", "a/b"]],
  );
  const refuse = (b: number[], re: RegExp) =>
    assert.throws(() => h2.decodeHeaders(Uint8Array.from(b)), (e) => {
      assert.ok(e instanceof h2.H2Error);
      assert.equal(e.code, h2.COMPRESSION_ERROR);
      assert.match(e.message, re);
      return true;
    });
  refuse([0x00, 0x81, 0xff, 0x00], /Huffman/); // Huffman-coded name
  refuse([0xbe], /index 62/); // a dynamic table entry
  refuse([0x3f, 0xe1, 0x1f], /dynamic table/); // table size update to 4096
  refuse([0x00, 0x05, 0x61], /truncated/);

  // Frames split at every byte boundary give the same frames and data.
  const data = pseudoRandom(40_000, 3);
  const wire = concatBytes([
    h2.settingsFrame([[h2.SETTINGS_INITIAL_WINDOW_SIZE, 7]]),
    h2.frameHeader(data.length, h2.DATA, h2.END_STREAM, 5),
    data,
    h2.windowUpdate(0, 99),
  ]);
  for (const cut of [1, 9, 10, 17, 4000, wire.length - 1]) {
    const seen: string[] = [];
    const got: Uint8Array[] = [];
    const r = new h2.FrameReader({
      data: (_, p) => got.push(p.slice()),
      dataEnd: (id, flags, len) => seen.push(`data ${id} ${flags} ${len}`),
      frame: (type, _f, id, p) => seen.push(`${type} ${id} ${p.length}`),
    }, 1 << 16);
    r.push(wire.subarray(0, cut));
    r.push(wire.subarray(cut));
    assert.deepEqual(seen, ["4 0 6", "data 5 1 40000", "8 0 4"]);
    assert.deepEqual(concatBytes(got), data);
  }
  assert.throws(
    () =>
      new h2.FrameReader({ data() {}, dataEnd() {}, frame() {} }, 100).push(
        h2.frameHeader(101, h2.PING, 0, 0),
      ),
    /101 bytes/,
  );
  const block = [new Uint8Array(60_000)];
  h2.appendHeaderBlock(block, new Uint8Array(5000));
  assert.throws(
    () => h2.appendHeaderBlock(block, new Uint8Array(1000)),
    /header block over 65536 bytes/,
  );

  // Sniffing: only a preface plus SETTINGS carrying the bulk setting.
  const bulkHead = concatBytes([
    h2.PREFACE,
    h2.settingsFrame([[1, 0], [h2.BULK_SETTING, h2.BULK_VERSION]]),
  ]);
  assert.equal(bulkVerdict(bulkHead), true);
  assert.equal(bulkVerdict(bulkHead.subarray(0, 30)), undefined);
  assert.equal(
    bulkVerdict(bulkHead.subarray(0, bulkHead.length - 1)),
    undefined,
  );
  assert.equal(
    bulkVerdict(concatBytes([h2.PREFACE, h2.settingsFrame([[1, 0]])])),
    false,
  );
  assert.equal(
    bulkVerdict(new TextEncoder().encode("GET / HTTP/1.1\r\n")),
    false,
  );
  assert.equal(
    bulkVerdict(concatBytes([h2.PREFACE, h2.windowUpdate(0, 5)])),
    false,
  );
});

Deno.test("bulk Read: blobs over the bulk connection (TCP, unix), NotFound, DataLoss, cancel, close", async () => {
  await withServer(async (urls, blobs) => {
    const data = pseudoRandom(3_000_000, 11);
    const digest = await blobs.putChunked(data, 300_000);
    const small = pseudoRandom(1000, 12);
    const smallDigest = blake3Sync(small);
    {
      const w = blobs.put();
      await w.write(small);
      await w.close();
    }
    for (const url of urls) {
      const { blobs: c, bulk } = client(url);
      try {
        assert.deepEqual(await readAll(await c.read(digest)), data);
        assert.ok(bulk.active, `${url}: the bulk connection was used`);
        assert.deepEqual(await readAll(await c.read(smallDigest)), small);
        // A range far from the start: chunk Reads in parallel, same connection.
        assert.deepEqual(
          await readAll(await c.read(digest, { offset: 2_500_000 })),
          data.subarray(2_500_000),
        );
        assert.equal(await c.read(blake3Sync(pseudoRandom(5, 1))), undefined);
        // Cancel a Read half-way; the connection goes on serving.
        const s = (await c.read(digest))!;
        const r = s.getReader();
        await r.read();
        await r.cancel();
        assert.deepEqual(await readAll(await c.read(digest)), data);
        // A corrupt chunk: DataLoss, none of its bytes handed out.
        const metas = (await blobs.chunks(digest))!;
        blobs.corrupt.add(key(metas[4].digest));
        const got: Uint8Array[] = [];
        await expectCode(
          (async () => {
            for await (const p of (await c.read(digest))!) got.push(p);
          })(),
          Code.DataLoss,
          /does not match its digest/,
        );
        assert.ok(concatBytes(got).length <= 4 * 300_000);
        blobs.corrupt.clear();
        assert.ok(bulk.active);
      } finally {
        await c.close();
      }
      // Closed: no bulk connection left behind (a Read now fails cleanly).
      assert.equal(bulk.active, false);
    }
  });
});

Deno.test("bulk Read: a server that does not offer it is read through the ordinary connection", async () => {
  await withServer(async (urls, blobs) => {
    const data = pseudoRandom(700_000, 5);
    const digest = await blobs.putChunked(data, 200_000);
    for (const url of urls) {
      const { blobs: c, bulk } = client(url);
      try {
        assert.deepEqual(await readAll(await c.read(digest)), data);
        assert.deepEqual(await readAll(await c.read(digest)), data);
        assert.equal(bulk.active, false);
        assert.equal(await c.read(blake3Sync(pseudoRandom(5, 1))), undefined);
      } finally {
        await c.close();
      }
    }
  }, { bulkReads: false });
});

/** A bare client of the bulk subset, for the server's side of the rules. */
class RawBulkClient {
  readonly frames: {
    type: number;
    flags: number;
    id: number;
    p: Uint8Array;
  }[] = [];
  readonly data = new Map<number, number>();
  closed = false;
  #socket: net.Socket;
  #reader: h2.FrameReader;
  #waiters: (() => void)[] = [];
  constructor(port: number, settings: [number, number][]) {
    this.#reader = new h2.FrameReader({
      data: (id, p) => this.data.set(id, (this.data.get(id) ?? 0) + p.length),
      dataEnd: (id, flags, len) =>
        this.frames.push({ type: h2.DATA, flags, id, p: new Uint8Array(len) }),
      frame: (type, flags, id, p) => this.frames.push({ type, flags, id, p }),
    }, 1 << 24);
    this.#socket = net.connect(port, "127.0.0.1");
    this.#socket.on("data", (d: Uint8Array) => {
      this.#reader.push(d);
      this.#wake();
    });
    this.#socket.on("close", () => {
      this.closed = true;
      this.#wake();
    });
    this.#socket.on("error", () => {});
    this.send(concatBytes([
      h2.PREFACE,
      h2.settingsFrame([[h2.BULK_SETTING, h2.BULK_VERSION], ...settings]),
    ]));
  }
  #wake() {
    for (const w of this.#waiters.splice(0)) w();
  }
  send(b: Uint8Array) {
    this.#socket.write(b);
  }
  request(
    id: number,
    path: string,
    body: Uint8Array,
    extra: [string, string][] = [],
  ) {
    const block = h2.encodeHeaders([
      [":method", "POST"],
      [":scheme", "http"],
      [":path", path],
      [":authority", "x"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
      ...extra,
    ]);
    // In frames of at most 16 KiB (HEADERS, then CONTINUATION).
    const frames: Uint8Array[] = [];
    for (let o = 0; o < block.length; o += 16_384) {
      frames.push(h2.frame(
        o === 0 ? h2.HEADERS : h2.CONTINUATION,
        o + 16_384 >= block.length ? h2.END_HEADERS : 0,
        id,
        block.subarray(o, o + 16_384),
      ));
    }
    this.send(concatBytes([
      ...frames,
      h2.frame(h2.DATA, h2.END_STREAM, id, body),
    ]));
  }
  async until(what: string, ok: () => boolean) {
    const deadline = Date.now() + 5000;
    while (!ok()) {
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${what}`);
      }
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }
  /** The trailers of stream `id` (joined from HEADERS and CONTINUATIONs). */
  trailers(id: number): Map<string, string> | undefined {
    const i = this.frames.findIndex((f) =>
      f.type === h2.HEADERS && f.id === id && f.flags & h2.END_STREAM
    );
    if (i < 0) return undefined;
    const parts = [this.frames[i].p];
    for (let j = i; !(this.frames[j].flags & h2.END_HEADERS);) {
      j = this.frames.findIndex((f, k) =>
        k > j && f.type === h2.CONTINUATION && f.id === id
      );
      if (j < 0) return undefined; // not all here yet
      parts.push(this.frames[j].p);
    }
    return new Map(h2.decodeHeaders(concatBytes(parts)));
  }
  close() {
    this.#socket.destroy();
  }
}

function readBody(digest: Uint8Array): Uint8Array {
  const req = toBinary(
    ReadBlobRequestSchema,
    create(ReadBlobRequestSchema, { digest }),
  );
  const b = new Uint8Array(5 + req.length);
  new DataView(b.buffer).setUint32(1, req.length);
  b.set(req, 5);
  return b;
}

Deno.test("bulk Read server: windows and frame size respected, deadlines, other methods UNIMPLEMENTED, garbage ends only its connection", async () => {
  await withServer(async (urls, blobs, _server) => {
    const port = Number(new URL(urls[0].slice("grpc+".length)).port);
    const data = pseudoRandom(1_500_000, 21);
    const digest = await blobs.putChunked(data, 500_000);
    // A small stream window and the smallest frames: the server may send
    // only what was granted, in frames of at most 16 KiB.
    const c = new RawBulkClient(port, [[
      h2.SETTINGS_INITIAL_WINDOW_SIZE,
      100_000,
    ]]);
    try {
      await c.until(
        "the server's SETTINGS",
        () =>
          c.frames.some((f) => f.type === h2.SETTINGS && !(f.flags & h2.ACK)),
      );
      const theirs = h2.parseSettings(
        c.frames.find((f) => f.type === h2.SETTINGS)!.p,
      );
      assert.equal(theirs.get(h2.BULK_SETTING), h2.BULK_VERSION);
      c.request(1, BLOB_READ_PATH, readBody(digest));
      await c.until("the first window's worth", () => (c.data.get(1) ?? 0) > 0);
      await new Promise((r) => setTimeout(r, 200));
      // 65535 on the connection (the default: this client never widened it).
      assert.equal(
        c.frames.filter((f) => f.type === h2.DATA)
          .reduce((n, f) => n + f.p.length, 0),
        65_535,
      );
      assert.ok(
        c.frames.every((f) => f.type !== h2.DATA || f.p.length <= 16_384),
      );
      let granted = 65_535;
      let streamGranted = 100_000;
      const total = () =>
        c.frames.filter((f) => f.type === h2.DATA).reduce(
          (n, f) => n + f.p.length,
          0,
        );
      while (!c.trailers(1)) {
        c.send(h2.windowUpdate(0, 200_000));
        c.send(h2.windowUpdate(1, 150_000));
        granted += 200_000;
        streamGranted += 150_000;
        await c.until(
          "more data or the end",
          () =>
            total() >= Math.min(granted, streamGranted) - 16_384 ||
            !!c.trailers(1),
        );
        assert.ok(total() <= Math.min(granted, streamGranted));
      }
      assert.equal(c.trailers(1)!.get("grpc-status"), "0");
      // 1.5 MB of data in messages of at most 1 MiB: a few bytes of framing each.
      assert.ok(total() > data.length && total() < data.length + 100);

      // Another method, a bad digest, a missing blob, a deadline.
      c.send(h2.windowUpdate(0, 1 << 30));
      c.request(3, "/snix.castore.v1.BlobService/Stat", readBody(digest));
      c.request(5, BLOB_READ_PATH, readBody(new Uint8Array(3)));
      c.request(7, BLOB_READ_PATH, readBody(blake3Sync(new Uint8Array(9))));
      blobs.stall.add(key(blake3Sync(new Uint8Array(1))));
      c.request(
        9,
        BLOB_READ_PATH,
        readBody(blake3Sync(new Uint8Array(1))),
        [["grpc-timeout", "100m"]],
      );
      // A path of 20 kB: the request comes in CONTINUATIONs, the answer's
      // message is cut to 4096 characters and still comes out in several
      // frames (each character percent-encodes to 12).
      c.request(11, "/" + "\u00e9".repeat(10_000), readBody(digest));
      await c.until(
        "five answers",
        () => [3, 5, 7, 9, 11].every((id) => c.trailers(id) !== undefined),
      );
      assert.ok(
        c.frames.some((f) => f.type === h2.CONTINUATION && f.id === 11),
      );
      const long = decodeURIComponent(c.trailers(11)!.get("grpc-message")!);
      assert.equal(long.length, 4096 + 3);
      assert.match(long, /^\/\u00c3\u00a9\u00c3\u00a9.*\.\.\.$/);
      const status = (id: number) => Number(c.trailers(id)!.get("grpc-status"));
      assert.equal(status(3), Code.Unimplemented);
      assert.equal(status(5), Code.InvalidArgument);
      assert.equal(status(7), Code.NotFound);
      assert.equal(status(9), Code.DeadlineExceeded);
      assert.equal(status(11), Code.Unimplemented);
      assert.match(
        decodeURIComponent(c.trailers(7)!.get("grpc-message")!),
        /^blob blake3-.* not found$/,
      );
    } finally {
      c.close();
    }

    // Garbage after the handshake: GOAWAY and the connection closes; the
    // daemon serves others as before.
    const bad = new RawBulkClient(port, []);
    try {
      bad.send(h2.frameHeader(4, h2.DATA, h2.PADDED, 1));
      bad.send(new Uint8Array(4));
      await bad.until("the connection to close", () => bad.closed);
      const ga = bad.frames.find((f) => f.type === h2.GOAWAY);
      assert.ok(ga, "GOAWAY sent");
      assert.equal(h2.uint32(ga.p, 4), h2.PROTOCOL_ERROR);
    } finally {
      bad.close();
    }
    const { blobs: ok } = client(urls[1]);
    try {
      assert.deepEqual(await readAll(await ok.read(digest)), data);
    } finally {
      await ok.close();
    }
  });
});

Deno.test("bulk Read client: the server closing mid-frame fails the Read with UNAVAILABLE (both socket implementations); an unreachable server falls back", async () => {
  // A server that agrees to the subset, starts an answer and dies inside a DATA frame.
  const srv = net.createServer((s) => {
    s.on("error", () => {});
    let seen = 0;
    let answered = false;
    s.on("data", (d: Uint8Array) => {
      seen += d.length;
      if (seen === d.length) {
        s.write(h2.settingsFrame([[h2.BULK_SETTING, h2.BULK_VERSION]]));
      }
      // Past preface, SETTINGS and WINDOW_UPDATE: the request came.
      if (!answered && seen > 24 + 39 + 13) {
        answered = true;
        s.write(concatBytes([
          h2.frame(
            h2.HEADERS,
            h2.END_HEADERS,
            1,
            h2.encodeHeaders([[":status", "200"], [
              "content-type",
              "application/grpc+proto",
            ]]),
          ),
          h2.frameHeader(1000, h2.DATA, 0, 1),
          new Uint8Array([0, 0, 0]),
        ]));
        setTimeout(() => s.destroy(), 20);
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as net.AddressInfo).port;
  const before = process.env.SNIX_RAW_SOCKET;
  try {
    for (const impl of ["runtime", "node"]) {
      if (impl === "node") process.env.SNIX_RAW_SOCKET = "node";
      else delete process.env.SNIX_RAW_SOCKET;
      let fellBack = 0;
      const reader = new BulkReader(
        { baseUrl: `http://127.0.0.1:${port}` },
        () => {
          fellBack++;
          return [][Symbol.iterator]() as unknown as AsyncIterator<Uint8Array>;
        },
      );
      const it = reader.read(blake3Sync(new Uint8Array(1)));
      await assert.rejects(it.next(), (e: unknown) => {
        assert.ok(e instanceof ConnectError, String(e));
        assert.equal(e.code, Code.Unavailable, e.message);
        assert.match(e.message, /connection (closed|error)/);
        return true;
      });
      assert.equal(fellBack, 0);
      reader.close();
    }
    // Nothing listens: the Read goes to the ordinary path (which reports why).
    const free = (srv.address() as net.AddressInfo).port;
    await new Promise((r) => srv.close(r));
    let fellBack = 0;
    const reader = new BulkReader(
      { baseUrl: `http://127.0.0.1:${free}` },
      () => {
        fellBack++;
        return (async function* () {})();
      },
    );
    assert.deepEqual(await reader.read(new Uint8Array(32)).next(), {
      value: undefined,
      done: true,
    });
    assert.equal(fellBack, 1);
    reader.close();
  } finally {
    if (before === undefined) delete process.env.SNIX_RAW_SOCKET;
    else process.env.SNIX_RAW_SOCKET = before;
    if (srv.listening) await new Promise((r) => srv.close(r));
  }
});
