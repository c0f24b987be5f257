/**
 * Test cases every BlobService must pass (used by the memory and local
 * services' tests; the grpc client can reuse them).
 *
 * @module
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import type { BlobService } from "./blob_service.ts";
import { blake3Sync, digestToHex } from "./digest.ts";
import { rejectsWith } from "./_test_directory_service.ts";

/** A new temporary directory (works under Deno and Bun). */
export function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** Runs a tool with `input` on stdin; returns its stdout (works under Deno and Bun). */
export function runTool(
  cmd: string,
  args: string[],
  input?: Uint8Array,
): Uint8Array {
  return new Uint8Array(execFileSync(cmd, args, { input, maxBuffer: 1 << 30 }));
}

/** BLAKE3 hex digest from the independent `b3sum` tool. */
export function b3sum(data: Uint8Array): string {
  return new TextDecoder().decode(runTool("b3sum", ["--no-names"], data))
    .trim();
}

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
export function pseudoRandom(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 255;
  }
  return out;
}

/**
 * Damages a stored object in place: flips every bit of the byte in the
 * middle of `range` (a record of a pack, as `locateChunk` gives it).
 */
export function flipStoredByte(
  range: { path: string; offset: number; length: number },
): void {
  const f = fs.openSync(range.path, "r+");
  try {
    const b = new Uint8Array(1);
    const pos = range.offset + (range.length >> 1);
    fs.readSync(f, b, 0, 1, pos);
    b[0] ^= 0xff;
    fs.writeSync(f, b, 0, 1, pos);
  } finally {
    fs.closeSync(f);
  }
}

/** Reads a whole stream into one array (fails if there is no stream). */
export async function readAll(
  s: ReadableStream<Uint8Array> | undefined,
): Promise<Uint8Array> {
  if (!s) throw new Error("stream expected, got undefined");
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const p of s) {
    parts.push(p);
    n += p.length;
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Writes `data` in pieces of `piece` bytes and returns the digest. */
export async function putBlob(
  svc: BlobService,
  data: Uint8Array,
  piece = 65536,
): Promise<Uint8Array> {
  const w = svc.put();
  for (let o = 0; o < data.length; o += piece) {
    await w.write(data.subarray(o, o + piece));
  }
  return await w.close();
}

/** Registers the shared BlobService tests under `prefix`. */
export function blobServiceCases(
  prefix: string,
  open: () => Promise<{ svc: BlobService; cleanup?: () => Promise<void> }>,
): void {
  const t = (name: string, fn: (svc: BlobService) => Promise<void>) =>
    Deno.test(`${prefix}: ${name}`, async () => {
      const { svc, cleanup } = await open();
      try {
        await fn(svc);
      } finally {
        await svc.close?.();
        await cleanup?.();
      }
    });
  const K = 1024;
  const sizes = [
    0,
    1,
    2,
    4095,
    128 * K - 1,
    128 * K,
    128 * K + 1,
    256 * K,
    512 * K - 1,
    512 * K,
    512 * K + 1,
    3 * 1024 * K + 17,
  ];

  t(
    "round trips of sizes 0 .. 3 MiB, including chunk-size edges",
    async (svc) => {
      for (const n of sizes) {
        const data = pseudoRandom(n, n + 7);
        const digest = await putBlob(svc, data, n % 3 === 0 ? 100_000 : 65536);
        assert.equal(
          digestToHex(digest),
          digestToHex(blake3Sync(data)),
          `size ${n}`,
        );
        assert.equal(await svc.has(digest), true);
        const s = await svc.read(digest);
        assert.ok(s);
        const back = await readAll(s);
        assert.equal(back.length, n);
        assert.ok(
          Buffer.from(back).equals(Buffer.from(data)),
          `size ${n} bytes differ`,
        );
        const chunks = await svc.chunks(digest);
        assert.ok(chunks !== undefined);
        if (chunks.length > 0) {
          assert.equal(chunks.reduce((a, c) => a + c.size, 0), n);
          for (const c of chunks) assert.equal(c.digest.length, 32);
        }
      }
    },
  );

  t("compressible data and rewrites of the same blob", async (svc) => {
    const data = new Uint8Array(2 * 1024 * K).fill(0x61);
    const d1 = await putBlob(svc, data);
    const d2 = await putBlob(svc, data, 12345);
    assert.deepEqual(d1, d2);
    assert.ok(
      Buffer.from(await readAll((await svc.read(d1))!)).equals(
        Buffer.from(data),
      ),
    );
  });

  t("ranged reads", async (svc) => {
    const n = 1536 * K + 333;
    const data = pseudoRandom(n, 99);
    const digest = await putBlob(svc, data);
    const ranges: [number, number | undefined][] = [
      [0, 0],
      [0, 1],
      [0, undefined],
      [1, 10],
      [128 * K - 3, 7],
      [300 * K, 600 * K],
      [n - 1, 10],
      [n, 5],
      [n + 100, 5],
      [777, undefined],
      [1000 * K, 1],
    ];
    for (const [offset, length] of ranges) {
      const s = await svc.read(digest, { offset, length });
      assert.ok(s);
      const got = await readAll(s);
      const end = length === undefined ? n : Math.min(n, offset + length);
      const want = data.subarray(Math.min(offset, n), end);
      assert.equal(got.length, want.length, `range ${offset}+${length}`);
      assert.ok(
        Buffer.from(got).equals(Buffer.from(want)),
        `range ${offset}+${length}`,
      );
    }
    await rejectsWith(
      svc.read(digest, { offset: -1 }),
      Code.InvalidArgument,
      /offset/,
    );
    const small = await putBlob(svc, data.subarray(0, 1000));
    await rejectsWith(
      svc.read(small, { offset: -5 }),
      Code.InvalidArgument,
      /offset/,
    );
    await rejectsWith(
      svc.read(digest, { offset: 0, length: 1.5 }),
      Code.InvalidArgument,
      /length/,
    );
  });

  t("missing blobs and bad digests", async (svc) => {
    const missing = new Uint8Array(32).fill(3);
    assert.equal(await svc.has(missing), false);
    assert.equal(await svc.read(missing), undefined);
    assert.equal(await svc.chunks(missing), undefined);
    await rejectsWith(
      svc.has(new Uint8Array(31)),
      Code.InvalidArgument,
      /got 31/,
    );
    await rejectsWith(
      svc.read(new Uint8Array(0)),
      Code.InvalidArgument,
      /got 0/,
    );
    await rejectsWith(
      svc.chunks(new Uint8Array(40)),
      Code.InvalidArgument,
      /got 40/,
    );
  });

  t("abort leaves nothing visible; writes after close fail", async (svc) => {
    const data = pseudoRandom(700 * K, 5);
    const w = svc.put();
    await w.write(data);
    await w.abort();
    assert.equal(await svc.has(blake3Sync(data)), false);
    const w2 = svc.put();
    await w2.write(new Uint8Array([1, 2, 3]));
    await w2.close();
    await assert.rejects(w2.write(new Uint8Array([4])));
  });

  t("concurrent writers in one process", async (svc) => {
    const blobs = [0, 1, 2, 3].map((i) =>
      pseudoRandom(600 * K + i, 40 + (i % 2))
    );
    const digests = await Promise.all(
      blobs.map((b) => putBlob(svc, b, 50_000)),
    );
    for (let i = 0; i < blobs.length; i++) {
      assert.ok(
        Buffer.from(await readAll((await svc.read(digests[i]))!)).equals(
          Buffer.from(blobs[i]),
        ),
      );
    }
  });
}
