/**
 * Crash safety of the local castore: a child process writing blobs and
 * directories is killed with SIGKILL at random moments; afterwards every
 * visible blob and directory must read back verified, every blob the child
 * reported as closed must be there, and rewriting must work. Also: two
 * processes writing overlapping blobs into one data directory at once.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import { join } from "node:path";
import { LocalBlobService } from "../lib/castore/local_blob_service.ts";
import { LocalDirectoryService } from "../lib/castore/local_directory_service.ts";
import {
  blake3Sync,
  digestFromHex,
  digestToHex,
} from "../lib/castore/digest.ts";
import { blobForSeed } from "./castore_crash_data.ts";

const CHILD = new URL("./castore_crash_child.ts", import.meta.url).pathname;

function spawnChild(
  dataDir: string,
  first: number,
  count: number,
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      CHILD,
      dataDir,
      String(first),
      String(count),
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Reads the child's stdout lines as they come. */
async function* lines(s: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  for await (const chunk of s.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
    }
  }
  if (buf) yield buf;
}

async function drain(
  s: ReadableStream<Uint8Array> | undefined,
): Promise<number> {
  assert.ok(s);
  let n = 0;
  for await (const p of s) n += p.length;
  return n;
}

/**
 * Reads back everything visible (skipping digests in `seen`, which were
 * verified before: objects are immutable); returns [blobs, directories].
 */
async function verifyAll(
  dataDir: string,
  seen = new Set<string>(),
): Promise<[number, number]> {
  const blobs = await LocalBlobService.open(dataDir);
  const dirs = await LocalDirectoryService.open(dataDir);
  let nb = 0;
  for await (const d of blobs.listBlobs()) {
    nb++;
    const k = "b" + digestToHex(d);
    if (seen.has(k)) continue;
    await drain(await blobs.read(d));
    seen.add(k);
  }
  let nd = 0;
  for await (const d of dirs.listDirectories()) {
    nd++;
    const k = "d" + digestToHex(d);
    if (seen.has(k)) continue;
    for await (const _ of dirs.getRecursive(d)) { /* verified while read */ }
    seen.add(k);
  }
  return [nb, nd];
}

Deno.test("castore crash: kill -9 at random moments never leaves a half object", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "castore-crash-" });
  const started = Date.now();
  const done = new Map<number, [string, string]>();
  let seed = 0;
  let loops = 0;
  const seen = new Set<string>();
  try {
    for (; loops < 20 && Date.now() - started < 16_000; loops++) {
      const child = spawnChild(dataDir, seed, 0);
      const reader = lines(child.stdout);
      const first = await reader.next();
      assert.equal(first.value, "ready", "child did not start");
      const killAt = Date.now() + 50 + Math.random() * 400;
      const collect = (async () => {
        for await (const l of reader) {
          const [tag, s, hex, root] = l.split(" ");
          if (tag === "done") done.set(Number(s), [hex, root]);
        }
      })();
      await new Promise((r) => setTimeout(r, Math.max(0, killAt - Date.now())));
      child.kill("SIGKILL");
      await child.status;
      await collect;
      await child.stderr.cancel();
      seed += 40; // next child writes new blobs, while older ones keep being re-verified
      await verifyAll(dataDir, seen);
      const blobs = await LocalBlobService.open(dataDir);
      const dirs = await LocalDirectoryService.open(dataDir);
      for (const [s, [hex, root]] of done) {
        assert.ok(
          await blobs.has(digestFromHex(hex)),
          `blob of seed ${s} missing`,
        );
        assert.ok(
          await dirs.get(digestFromHex(root)),
          `tree of seed ${s} missing`,
        );
      }
    }
    assert.ok(done.size > 0, "the children never finished a blob");
    // rewriting every seed a child touched (finished or interrupted) succeeds
    const blobs = await LocalBlobService.open(dataDir);
    for (let base = 0; base < seed; base += 40) {
      for (let s = base; s < base + 3; s++) {
        const data = blobForSeed(s);
        const w = blobs.put();
        await w.write(data);
        const d = await w.close();
        assert.equal(digestToHex(d), digestToHex(blake3Sync(data)));
        assert.equal(await drain(await blobs.read(d)), data.length);
      }
    }
    const [nb, nd] = await verifyAll(dataDir);
    const temps = (await fs.readdir(join(dataDir, "tmp"))).length;
    console.log(
      `${loops} kills, ${done.size} blobs finished, ${nb} blobs/chunks and ${nd} directories verified, ${temps} stray temp files`,
    );
  } finally {
    await fs.rm(dataDir, { recursive: true, force: true });
  }
});

Deno.test("castore: two processes writing overlapping blobs into one data dir both succeed", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "castore-two-" });
  try {
    // seeds 100..111 and 104..115 overlap in 104..111; even seeds share a prefix too
    const a = spawnChild(dataDir, 100, 12);
    const b = spawnChild(dataDir, 104, 12);
    const [oa, ob] = await Promise.all([a.output(), b.output()]);
    const dec = new TextDecoder();
    assert.equal(oa.code, 0, dec.decode(oa.stderr));
    assert.equal(ob.code, 0, dec.decode(ob.stderr));
    const blobs = await LocalBlobService.open(dataDir);
    for (let s = 100; s < 116; s++) {
      const want = blobForSeed(s);
      const s2 = await blobs.read(blake3Sync(want));
      assert.equal(await drain(s2), want.length, `seed ${s}`);
    }
    await verifyAll(dataDir);
    assert.deepEqual(await fs.readdir(join(dataDir, "tmp")), []);
  } finally {
    await fs.rm(dataDir, { recursive: true, force: true });
  }
});
