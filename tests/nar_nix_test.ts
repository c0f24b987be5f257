/**
 * lib/nix against real Nix 2.8: NAR bytes equal `nix-store --dump`, hashes
 * equal `nix hash path` / `nix-hash`, store paths equal what `nix-store --add`,
 * `--add-fixed` and `nix store add-file` create in a scratch chroot store,
 * narinfo files written by `nix copy` print back byte for byte, and
 * signatures verify in both directions.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeCorpus } from "./corpus.ts";
import { narChunks, narStream } from "../lib/nix/nar_writer.ts";
import { narNodeFromPath } from "../lib/nix/nar_fs.ts";
import { nodeSyncFs } from "../lib/runtime/sync_fs.ts";
import { readNar } from "../lib/nix/nar_reader.ts";
import { narNodeFromTree, readNarTree } from "../lib/nix/nar_memory.ts";
import {
  createHasher,
  makeHash,
  printHash,
  printSri,
  sha256,
} from "../lib/nix/hash.ts";
import {
  makeFixedOutputPath,
  makeSourcePath,
  StorePath,
} from "../lib/nix/store_path.ts";
import {
  narInfoFingerprint,
  parseNarInfo,
  printNarInfo,
} from "../lib/nix/narinfo.ts";
import { PublicKey, SecretKey, verifyAny } from "../lib/nix/signature.ts";

const NIX_ENV = {
  ...process.env,
  NIX_CONFIG: "experimental-features = nix-command\nsubstituters =",
};

function nix(cmd: string, args: string[], input?: Uint8Array): Buffer {
  return execFileSync(cmd, args, {
    input,
    env: NIX_ENV,
    maxBuffer: 1 << 30,
    stdio: ["pipe", "pipe", "pipe"],
  });
}

function nixText(cmd: string, args: string[]): string {
  return nix(cmd, args).toString().trim();
}

async function narBytes(path: string): Promise<Uint8Array> {
  return new Uint8Array(
    await new Response(narStream(await narNodeFromPath(path))).arrayBuffer(),
  );
}

async function narSha256(
  path: string,
): Promise<{ digest: Uint8Array; size: number }> {
  const h = createHasher("sha256");
  let size = 0;
  for await (
    const c of narChunks(await narNodeFromPath(path), { reuseBuffers: true })
  ) {
    h.update(c);
    size += c.length;
  }
  return { digest: h.digest(), size };
}

function streamOf(b: Uint8Array, piece = 65536): ReadableStream<Uint8Array> {
  let o = 0;
  return new ReadableStream({
    pull(c) {
      if (o >= b.length) return c.close();
      c.enqueue(b.subarray(o, o + piece));
      o += piece;
    },
  });
}

const work = fs.mkdtempSync(join(tmpdir(), "snix-nar-nix-"));
const corpus = join(work, "corpus");
makeCorpus(corpus);
globalThis.addEventListener?.(
  "unload",
  () => fs.rmSync(work, { recursive: true, force: true }),
);

Deno.test("nar vs nix-store --dump: the corpus, byte for byte", async () => {
  const ours = await narBytes(corpus);
  const theirs = nix("nix-store", ["--dump", corpus]);
  assert.equal(ours.length, theirs.length);
  assert.ok(Buffer.from(ours).equals(theirs), "NAR bytes differ");
  // Also every top-level entry on its own (file, symlink and directory roots).
  for (
    const name of ["empty", "nine", "big.bin", "bin", "links", "names", "deep"]
  ) {
    const p = join(corpus, name);
    assert.ok(
      Buffer.from(await narBytes(p)).equals(nix("nix-store", ["--dump", p])),
      name,
    );
  }
  // The node:fs binding too (the Bun binary's), not only the runtime's fastest.
  const viaNodeFs = new Uint8Array(
    await new Response(narStream(await narNodeFromPath(corpus, nodeSyncFs)))
      .arrayBuffer(),
  );
  assert.ok(
    Buffer.from(viaNodeFs).equals(theirs),
    "NAR bytes differ (node:fs binding)",
  );
  for (const name of ["absolute-dangling", "relative-dir", "dot"]) {
    const p = join(corpus, "links", name);
    assert.ok(
      Buffer.from(await narBytes(p)).equals(nix("nix-store", ["--dump", p])),
      name,
    );
  }
});

Deno.test("nar vs nix-store --dump: /usr/share/doc (sha256 and size)", async () => {
  const tree = fs.existsSync("/usr/share/doc/nix-bin")
    ? "/usr/share/doc"
    : "/usr/share";
  const theirs = nix("nix-store", ["--dump", tree]);
  const ours = await narSha256(tree);
  assert.equal(ours.size, theirs.length);
  assert.deepEqual(ours.digest, sha256(new Uint8Array(theirs)));
});

Deno.test("nar reader: reads Nix's NARs and writes them back identically", async () => {
  for (
    const p of [corpus, join(corpus, "nine"), join(corpus, "links", "absolute")]
  ) {
    const theirs = new Uint8Array(nix("nix-store", ["--dump", p]));
    const tree = await readNarTree(streamOf(theirs, 1000));
    const again = new Uint8Array(
      await new Response(narStream(narNodeFromTree(tree))).arrayBuffer(),
    );
    assert.ok(Buffer.from(again).equals(Buffer.from(theirs)), p);
    // Streaming with contents left unread also walks to the end.
    let n = 0;
    for await (const _ of readNar(streamOf(theirs, 4096))) n++;
    assert.ok(n > 0);
  }
});

Deno.test("nar hash vs nix hash path and nix-hash", async () => {
  for (
    const p of [
      corpus,
      join(corpus, "big.bin"),
      join(corpus, "links", "dangling"),
    ]
  ) {
    const { digest } = await narSha256(p);
    const h = makeHash("sha256", digest);
    assert.equal(printSri(h), nixText("nix", ["hash", "path", p]));
    assert.equal(
      printHash(h),
      "sha256:" + nixText("nix-hash", ["--type", "sha256", "--base32", p]),
    );
    assert.equal(
      printHash(h, "base16"),
      "sha256:" + nixText("nix-hash", ["--type", "sha256", p]),
    );
  }
});

Deno.test("store paths vs nix-store --add, --add-fixed and nix store add-file", async () => {
  const store = join(work, "store-add");
  const add = (...args: string[]) =>
    nixText("nix-store", ["--store", store, ...args]);
  // Source paths (recursive sha256 over the NAR), for a directory, a file and a symlink.
  for (
    const p of [
      corpus,
      join(corpus, "nine"),
      join(corpus, "links", "relative-file"),
    ]
  ) {
    const { digest } = await narSha256(p);
    const name = p.split("/").pop()!;
    assert.equal(makeSourcePath(digest, name).toString(), add("--add", p), p);
    assert.equal(
      makeFixedOutputPath(name, makeHash("sha256", digest), true).toString(),
      add("--add-fixed", "--recursive", "sha256", p),
    );
  }
  // Flat fixed-output (sha256, sha1, sha512) and recursive non-sha256.
  const file = join(corpus, "page");
  const data = fs.readFileSync(file);
  for (const algo of ["sha256", "sha1", "sha512"] as const) {
    const flat = makeHash(algo, createHasher(algo).update(data).digest());
    assert.equal(
      makeFixedOutputPath("page", flat, false).toString(),
      add("--add-fixed", algo, file),
      algo,
    );
  }
  const nar = nix("nix-store", ["--dump", file]);
  const rsha1 = makeHash("sha1", createHasher("sha1").update(nar).digest());
  assert.equal(
    makeFixedOutputPath("page", rsha1, true).toString(),
    add("--add-fixed", "--recursive", "sha1", file),
  );
  // `nix store add-file` is flat sha256.
  const addFile = nixText("nix", [
    "store",
    "add-file",
    "--store",
    store,
    join(corpus, "eight"),
  ]);
  assert.equal(
    makeFixedOutputPath(
      "eight",
      makeHash("sha256", sha256(fs.readFileSync(join(corpus, "eight")))),
      false,
    )
      .toString(),
    addFile,
  );
  // Whatever we compute parses back.
  assert.equal(StorePath.parse(addFile).toString(), addFile);
});

Deno.test("narinfo from nix copy prints back identically; signatures verify both ways", () => {
  const store = join(work, "store-sign");
  const cache = join(work, "cache");
  const keys = join(work, "keys");
  fs.mkdirSync(keys, { recursive: true });
  // Their key, their signatures.
  nix("nix-store", [
    "--generate-binary-cache-key",
    "nix-test-1",
    join(keys, "nix.sk"),
    join(keys, "nix.pk"),
  ]);
  const theirSk = SecretKey.parse(
    fs.readFileSync(join(keys, "nix.sk"), "utf8"),
  );
  const theirPk = PublicKey.parse(
    fs.readFileSync(join(keys, "nix.pk"), "utf8"),
  );
  assert.equal(theirSk.publicKey().toString(), theirPk.toString());
  // A path with a reference: builtins.toFile texts.
  const foo = nixText("nix", [
    "eval",
    "--store",
    store,
    "--raw",
    "--expr",
    'builtins.toFile "foo" "snix narinfo"',
  ]);
  const baz = nixText("nix", [
    "eval",
    "--store",
    store,
    "--raw",
    "--expr",
    'builtins.toFile "baz" "${builtins.toFile "foo" "snix narinfo"}"',
  ]);
  const src = nixText("nix-store", [
    "--store",
    store,
    "--add",
    join(corpus, "bin"),
  ]);
  nix("nix", [
    "store",
    "sign",
    "--store",
    store,
    "--key-file",
    join(keys, "nix.sk"),
    foo,
    baz,
  ]);
  nix("nix", [
    "copy",
    "--to",
    `file://${cache}`,
    "--store",
    store,
    foo,
    baz,
    src,
  ]);
  for (const p of [foo, baz, src]) {
    const sp = StorePath.parse(p);
    const text = fs.readFileSync(join(cache, `${sp.hashPart}.narinfo`), "utf8");
    const info = parseNarInfo(text);
    assert.equal(printNarInfo(info), text, p);
    if (p !== src) {
      // Ours verify theirs, and ours are the same bytes (deterministic ed25519).
      assert.ok(verifyAny(narInfoFingerprint(info), info.sigs, [theirPk]), p);
      assert.deepEqual(info.sigs, [theirSk.sign(narInfoFingerprint(info))]);
    }
  }
  // Our key: Nix signs with it and the signature is ours; Nix verifies our signatures.
  const ours = SecretKey.generate("snix-test-1");
  fs.writeFileSync(join(keys, "snix.sk"), ours.toString());
  nix("nix", [
    "store",
    "sign",
    "--store",
    store,
    "--key-file",
    join(keys, "snix.sk"),
    src,
  ]);
  const sigs = nixText("nix", ["path-info", "--store", store, "--sigs", src]);
  const info = parseNarInfo(
    fs.readFileSync(
      join(cache, `${StorePath.parse(src).hashPart}.narinfo`),
      "utf8",
    ),
  );
  const ourSig = ours.sign(narInfoFingerprint(info));
  assert.ok(sigs.includes(ourSig), `${sigs} lacks ${ourSig}`);
  // Put only our signature into the cache's narinfo; `nix store verify` must accept it with our key
  // and reject it with theirs.
  // Drop the CA field too: content-addressed paths are trusted without signatures.
  info.sigs = [ourSig];
  delete info.ca;
  fs.writeFileSync(
    join(cache, `${StorePath.parse(src).hashPart}.narinfo`),
    printNarInfo(info),
  );
  const verify = (pk: string) =>
    spawnSync("nix", [
      "store",
      "verify",
      "--store",
      `file://${cache}`,
      "--trusted-public-keys",
      pk,
      "--sigs-needed",
      "1",
      src,
    ], { env: NIX_ENV, encoding: "utf8" });
  const ok = verify(ours.publicKey().toString());
  assert.equal(ok.status, 0, ok.stderr);
  const bad = verify(theirPk.toString());
  assert.notEqual(
    bad.status,
    0,
    "nix accepted a signature from an untrusted key",
  );
});

Deno.test("nar vs nix-store --dump: random trees (fast-check)", async () => {
  type T =
    | { t: "f"; data: Uint8Array; x: boolean }
    | { t: "l"; target: string }
    | { t: "d"; entries: [string, T][] };
  // Names: printable ASCII and some unicode, no "/" and not "." or "..".
  const name = fc.string({
    unit: fc.constantFrom(..."abcXYZ09 -_.~'\"%é日😀".split("")),
    minLength: 1,
    maxLength: 8,
  }).filter((n) => n !== "." && n !== "..");
  const tree: fc.Arbitrary<T> = fc.letrec<{ t: T }>((tie) => ({
    t: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      fc.record({
        t: fc.constant("f" as const),
        data: fc.uint8Array({ maxLength: 100 }),
        x: fc.boolean(),
      }),
      fc.record({ t: fc.constant("l" as const), target: name }),
      fc.record({
        t: fc.constant("d" as const),
        entries: fc.uniqueArray(fc.tuple(name, tie("t")), {
          maxLength: 5,
          selector: ([n]) => n,
        }),
      }),
    ),
  })).t;
  const write = (p: string, t: T) => {
    if (t.t === "f") {
      fs.writeFileSync(p, t.data);
      fs.chmodSync(p, t.x ? 0o755 : 0o644);
    } else if (t.t === "l") fs.symlinkSync(t.target, p);
    else {
      fs.mkdirSync(p);
      for (const [n, c] of t.entries) write(join(p, n), c);
    }
  };
  let i = 0;
  await fc.assert(
    fc.asyncProperty(tree, async (t) => {
      const p = join(work, `random-${i++}`);
      write(p, t);
      try {
        const theirs = nix("nix-store", ["--dump", p]);
        assert.ok(Buffer.from(await narBytes(p)).equals(theirs));
      } finally {
        fs.rmSync(p, { recursive: true, force: true });
      }
    }),
    { numRuns: 40 },
  );
});
