/**
 * Test cases every DirectoryService must pass (used by the memory and local
 * services' tests; the grpc client can reuse them).
 *
 * @module
 */
import assert from "node:assert/strict";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Directory,
  DirectorySchema,
} from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { DirectoryService } from "./directory_service.ts";
import { blake3Sync, digestToString } from "./digest.ts";
import { directoryDigestSync, directorySize } from "./directory.ts";

const te = new TextEncoder();
const b = (s: string) => te.encode(s);
const EMPTY_BLOB = blake3Sync(new Uint8Array());

function dir(init: MessageInitShape<typeof DirectorySchema>): Directory {
  return create(DirectorySchema, init);
}

/** A directory entry pointing at `child`, with the right digest and size. */
export function link(name: string, child: Directory) {
  return {
    name: b(name),
    digest: directoryDigestSync(child),
    size: directorySize(child),
  };
}

/** snix/castore/src/fixtures.rs DIRECTORY_A (empty), B (a -> A), C (a, a' -> A), WITH_KEEP. */
export function fixtures() {
  const A = dir({});
  const B = dir({ directories: [link("a", A)] });
  const C = dir({ directories: [link("a", A), link("a'", A)] });
  const KEEP = dir({
    files: [{ name: b(".keep"), digest: EMPTY_BLOB, size: 0n }],
  });
  const COMPLICATED = dir({
    directories: [link("keep", KEEP)],
    files: [{ name: b(".keep"), digest: EMPTY_BLOB, size: 0n }],
    symlinks: [{ name: b("aa"), target: b("/nix/store/somewhereelse") }],
  });
  return { A, B, C, KEEP, COMPLICATED };
}

/** Asserts that `p` rejects with a ConnectError of `code` whose message matches `re`. */
export async function rejectsWith(
  p: Promise<unknown>,
  code: Code,
  re: RegExp,
): Promise<void> {
  await assert.rejects(p, (e) => {
    assert.ok(e instanceof ConnectError, `expected ConnectError, got ${e}`);
    assert.equal(Code[e.code], Code[code], e.message);
    assert.match(e.rawMessage, re);
    return true;
  });
}

async function putAll(
  svc: DirectoryService,
  dirs: Directory[],
): Promise<Uint8Array> {
  const p = svc.put();
  for (const d of dirs) await p.put(d);
  return await p.close();
}

async function collect(it: AsyncIterable<Directory>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const d of it) out.push(directoryDigestSync(d));
  return out;
}

/** Registers the shared DirectoryService tests under `prefix`. */
export function directoryServiceCases(
  prefix: string,
  open: () => Promise<{ svc: DirectoryService; cleanup?: () => Promise<void> }>,
): void {
  const t = (name: string, fn: (svc: DirectoryService) => Promise<void>) =>
    Deno.test(`${prefix}: ${name}`, async () => {
      const { svc, cleanup } = await open();
      try {
        await fn(svc);
      } finally {
        await svc.close?.();
        await cleanup?.();
      }
    });
  const { A, B, C, KEEP, COMPLICATED } = fixtures();

  t(
    "put and get a tree; getRecursive root first, breadth first, once each",
    async (svc) => {
      const root = dir({
        directories: [link("b", B), link("c", C), link("x", COMPLICATED)],
      });
      const digest = await putAll(svc, [A, B, C, KEEP, COMPLICATED, root]);
      assert.deepEqual(digest, directoryDigestSync(root));
      const got = await svc.get(directoryDigestSync(COMPLICATED));
      assert.ok(got);
      assert.deepEqual(
        directoryDigestSync(got),
        directoryDigestSync(COMPLICATED),
      );
      const order = await collect(svc.getRecursive(digest));
      assert.deepEqual(
        order.map(digestToString),
        [root, B, C, COMPLICATED, A, KEEP].map(directoryDigestSync).map(
          digestToString,
        ),
      );
      assert.equal(await svc.get(new Uint8Array(32).fill(9)), undefined);
    },
  );

  t(
    "a wide and deep tree comes back in breadth-first order, each directory once",
    async (svc) => {
      // 3 levels of fan-out 6 with shared subtrees (identical leaves dedup)
      const leaves = [0, 1, 2, 3, 4, 5].map((i) =>
        dir({ files: [{ name: b(`f${i % 3}`), digest: EMPTY_BLOB, size: 0n }] })
      );
      const mids = [0, 1, 2, 3, 4, 5].map((i) =>
        dir({
          directories: [0, 1, 2].map((j) => link(`m${j}`, leaves[(i + j) % 6])),
        })
      );
      const tops = [0, 1, 2, 3].map((i) =>
        dir({
          directories: [0, 1, 2].map((j) =>
            link(`t${j}`, mids[(i * 2 + j) % 6])
          ),
        })
      );
      const root = dir({ directories: tops.map((d, i) => link(`r${i}`, d)) });
      const all = [...leaves, ...mids, ...tops, root];
      const digest = await putAll(svc, all);
      // reference BFS
      const byKey = new Map(
        all.map((d) => [digestToString(directoryDigestSync(d)), d]),
      );
      const want: string[] = [];
      const queue = [digestToString(digest)];
      const seen = new Set(queue);
      while (queue.length) {
        const k = queue.shift()!;
        want.push(k);
        for (const e of byKey.get(k)!.directories) {
          const c = digestToString(e.digest);
          if (!seen.has(c)) {
            seen.add(c);
            queue.push(c);
          }
        }
      }
      const got = (await collect(svc.getRecursive(digest))).map(digestToString);
      assert.deepEqual(got, want);
      assert.equal(new Set(got).size, got.length);
    },
  );

  t("a single empty directory; repeats are deduplicated", async (svc) => {
    assert.deepEqual(await putAll(svc, [A]), directoryDigestSync(A));
    assert.deepEqual(await putAll(svc, [A, A, C]), directoryDigestSync(C));
    assert.equal(
      (await collect(svc.getRecursive(directoryDigestSync(C)))).length,
      2,
    );
  });

  t("children may already exist in the service", async (svc) => {
    await putAll(svc, [A]);
    assert.deepEqual(await putAll(svc, [B]), directoryDigestSync(B));
    assert.deepEqual(
      await putAll(svc, [KEEP, COMPLICATED]),
      directoryDigestSync(COMPLICATED),
    );
  });

  t(
    "missing child is InvalidArgument naming it, nothing stored",
    async (svc) => {
      const p = svc.put();
      await rejectsWith(
        p.put(B),
        Code.InvalidArgument,
        new RegExp(
          `missing directory ${escape(digestToString(directoryDigestSync(A)))}`,
        ),
      );
      assert.equal(await svc.get(directoryDigestSync(B)), undefined);
    },
  );

  t("wrong child size is InvalidArgument", async (svc) => {
    const bad = dir({ directories: [{ ...link("a", KEEP), size: 1n }] });
    const p = svc.put();
    await p.put(KEEP);
    await rejectsWith(
      p.put(bad),
      Code.InvalidArgument,
      /has wrong size 1, expected 2/,
    );
    // also when the child already exists in the service
    await putAll(svc, [KEEP]);
    await rejectsWith(svc.put().put(bad), Code.InvalidArgument, /wrong size/);
  });

  t("invalid directory is rejected at put", async (svc) => {
    const p = svc.put();
    await rejectsWith(
      p.put(dir({ files: [{ name: b(".."), digest: EMPTY_BLOB }] })),
      Code.InvalidArgument,
      /name is '\.\.'/,
    );
  });

  t(
    "unconnected directories are rejected at close, nothing stored",
    async (svc) => {
      const p = svc.put();
      await p.put(A);
      await p.put(C);
      await p.put(KEEP);
      await rejectsWith(
        p.close(),
        Code.InvalidArgument,
        /not reachable from the root/,
      );
      assert.equal(await svc.get(directoryDigestSync(C)), undefined);
      assert.equal(await svc.get(directoryDigestSync(A)), undefined);
    },
  );

  t("empty putter and double close", async (svc) => {
    await rejectsWith(
      svc.put().close(),
      Code.InvalidArgument,
      /no directories/,
    );
    const p = svc.put();
    await p.put(A);
    await p.close();
    await rejectsWith(p.close(), Code.FailedPrecondition, /already closed/);
    await rejectsWith(p.put(A), Code.FailedPrecondition, /already closed/);
  });

  t(
    "getRecursive of a missing root is NotFound; bad digest InvalidArgument",
    async (svc) => {
      await rejectsWith(
        collect(svc.getRecursive(new Uint8Array(32).fill(1))),
        Code.NotFound,
        /not found/,
      );
      await rejectsWith(
        collect(svc.getRecursive(new Uint8Array(3))),
        Code.InvalidArgument,
        /32 bytes/,
      );
      await rejectsWith(
        svc.get(new Uint8Array(33)),
        Code.InvalidArgument,
        /got 33/,
      );
    },
  );
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}
