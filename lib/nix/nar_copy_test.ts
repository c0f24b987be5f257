/**
 * The writer's `copyContents` hook (how `snix nar dump` hands big files to
 * sendfile): whatever prefix the hook copies, the output equals
 * `nix-store --dump`; a file that is shorter than lstat said is an error.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { narChunks, NarError, type NarRegularNode } from "./nar_writer.ts";
import { narNodeFromPath } from "./nar_fs.ts";

const bytes = (n: number, seed: number) =>
  new Uint8Array(n).map((_, i) => (i * seed + (i >> 9)) & 0xff);

/** Runs `fn` with a scratch directory holding a small tree, removed after. */
async function withWork(
  fn: (work: string, tree: string) => Promise<void>,
): Promise<void> {
  const work = fs.mkdtempSync(join(tmpdir(), "snix-nar-copy-"));
  try {
    const tree = join(work, "tree");
    fs.mkdirSync(join(tree, "d"), { recursive: true });
    fs.writeFileSync(join(tree, "big"), bytes(700_001, 31));
    fs.writeFileSync(join(tree, "d", "mid"), bytes(65_536, 7));
    fs.writeFileSync(join(tree, "d", "small"), "small\n");
    fs.writeFileSync(join(tree, "exe"), bytes(100_003, 3), { mode: 0o755 });
    await fn(work, tree);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Dumps `path`, the hook copying `part(size)` bytes of each big file itself. */
async function dumpWith(
  path: string,
  part: (size: number) => number,
): Promise<{ nar: Uint8Array; copied: string[] }> {
  const out: Uint8Array[] = [];
  const copied: string[] = [];
  const copy = (node: NarRegularNode) => {
    const n = part(node.size);
    const p = new TextDecoder().decode(node.localPath!);
    copied.push(p);
    out.push(new Uint8Array(fs.readFileSync(p).subarray(0, n)));
    return n;
  };
  for await (
    const c of narChunks(await narNodeFromPath(path), {
      reuseBuffers: true,
      copyContents: { minSize: 65_536, copy },
    })
  ) out.push(c.slice());
  const nar = new Uint8Array(out.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of out) {
    nar.set(c, o);
    o += c.length;
  }
  return { nar, copied };
}

Deno.test("nar writer: copyContents, any copied prefix gives nix-store --dump's bytes", async () => {
  await withWork(async (_work, tree) => {
    const expected = new Uint8Array(
      execFileSync("nix-store", ["--dump", tree]),
    );
    for (
      const part of [
        (s: number) => s,
        () => 0,
        (s: number) => s >> 1,
        (s: number) => s - 1,
      ]
    ) {
      const { nar, copied } = await dumpWith(tree, part);
      assert.deepEqual(nar, expected);
      assert.deepEqual(copied.map((p) => p.slice(tree.length)), [
        "/big",
        "/d/mid",
        "/exe",
      ]);
    }
  });
});

Deno.test("nar writer: copyContents, a file shorter than lstat said is a NarError", async () => {
  await withWork(async (work) => {
    const f = join(work, "shrinks");
    fs.writeFileSync(f, bytes(200_000, 5));
    await assert.rejects(
      dumpWith(f, (s) => {
        fs.truncateSync(f, 100_000);
        return Math.min(s, 100_000);
      }),
      (e: Error) =>
        e instanceof NarError && /declared 200000 bytes.*have 100000/.test(
          e.message,
        ),
    );
  });
});
