/**
 * `snix store import/export/ls/cat/path-info/verify` as separate processes on
 * a local data directory, checked against Nix 2.8 (`nix-store --add`,
 * `nix-store --dump`, `nix path-info --json`, `nix store ls -lR`), plus
 * corruption, kill -9, concurrency and bad data directory cases.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeCorpus } from "./corpus.ts";
import { PackFile, PackKind } from "../lib/castore/pack.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DENO = Deno.execPath();
const DOC = [
  "/usr/share/doc/adduser",
  "/usr/share/doc/nix-bin",
  "/usr/share/doc/zstd",
].filter((p) => fs.existsSync(p));

interface Run {
  code: number;
  stdout: Uint8Array;
  out: string;
  err: string;
}

function command(dataDir: string, args: string[]): Deno.Command {
  return new Deno.Command(DENO, {
    args: [
      "run",
      "-A",
      "--quiet",
      "cli/main.ts",
      "--data-dir",
      dataDir,
      ...args,
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  });
}

async function snix(dataDir: string, ...args: string[]): Promise<Run> {
  const r = await command(dataDir, args).output();
  return {
    code: r.code,
    stdout: r.stdout,
    out: new TextDecoder().decode(r.stdout),
    err: new TextDecoder().decode(r.stderr),
  };
}

async function ok(dataDir: string, ...args: string[]): Promise<Run> {
  const r = await snix(dataDir, ...args);
  assert.equal(r.code, 0, `snix ${args.join(" ")} failed: ${r.err}`);
  return r;
}

function nixAdd(store: string, src: string): string {
  return execFileSync("nix-store", ["--store", store, "--add", src], {
    encoding: "utf8",
  }).trim();
}

function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fsp.mkdtemp(join(tmpdir(), "snix-store-cli-"));
  try {
    await fn(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** Every file under `dir` (recursively). */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

Deno.test("store cli: import/export/ls/cat/path-info agree with nix-store --add/--dump, nix path-info, nix store ls", async () => {
  await withTmp(async (tmp) => {
    const data = join(tmp, "data");
    const nixStore = join(tmp, "nix");
    const corpus = join(tmp, "corpus");
    makeCorpus(corpus);
    await fsp.writeFile(join(tmp, "single"), "one file\n");
    await fsp.symlink("/nix/store/somewhere", join(tmp, "alink"));
    const sources = [corpus, ...DOC, join(tmp, "single"), join(tmp, "alink")];
    const imp = await ok(data, "store", "import", ...sources);
    const paths = imp.out.trim().split("\n");
    assert.equal(paths.length, sources.length);
    for (let i = 0; i < sources.length; i++) {
      const want = nixAdd(nixStore, sources[i]);
      assert.equal(paths[i], want, `store path of ${sources[i]}`);
      const exp = await ok(data, "store", "export", paths[i]);
      const dump = execFileSync("nix-store", ["--dump", sources[i]], {
        maxBuffer: 256 << 20,
      });
      assert.equal(
        sha256(exp.stdout),
        sha256(dump),
        `export of ${sources[i]} differs from nix-store --dump`,
      );
    }
    // path-info --json: the fields Nix 2.8 prints (registrationTime aside)
    const ours = JSON.parse(
      (await ok(data, "store", "path-info", "--json", ...paths)).out,
    );
    const theirs = JSON.parse(
      execFileSync("nix", [
        "--store",
        nixStore,
        "path-info",
        "--json",
        ...paths,
      ], { encoding: "utf8" }),
    );
    const byPath = new Map(theirs.map((o: { path: string }) => [o.path, o]));
    for (const o of ours) {
      const t = byPath.get(o.path) as Record<string, unknown>;
      assert.ok(t, o.path);
      for (const k of ["path", "narHash", "narSize", "references", "ca"]) {
        assert.deepEqual(o[k], t[k], `${o.path} ${k}`);
      }
      assert.deepEqual(Object.keys(o), [
        "path",
        "narHash",
        "narSize",
        "references",
        "ca",
      ]);
    }
    assert.equal(
      (await ok(data, "store", "path-info", paths[0])).out,
      paths[0] + "\n",
    );
    // ls -lR and ls of a sub path, byte for byte as nix store ls prints them
    // (Nix 2.8's `store ls -R` fails on the corpus' names with '%', so -R is
    // compared on /usr/share/doc trees)
    const lsCases = [
      ["-l", paths[0]],
      ["-lR", paths[1]],
      ["-R", paths[2]],
      ["-l", paths[0] + "/" + fs.readdirSync(corpus).sort()[0]],
      ["-l", paths[sources.length - 1]],
    ];
    for (const args of lsCases) {
      const mine = (await ok(data, "store", "ls", ...args)).out;
      const nix = execFileSync("nix", [
        "--store",
        nixStore,
        "store",
        "ls",
        ...args,
      ], { encoding: "utf8" });
      assert.equal(mine.trimEnd(), nix.trimEnd(), `ls ${args.join(" ")}`);
    }
    // cat a file below a store path, and a single-file store path
    const docFile = filesUnder(DOC[0])[0];
    const rel = docFile.slice(DOC[0].length);
    const cat = await ok(data, "store", "cat", paths[1] + rel);
    assert.equal(sha256(cat.stdout), sha256(fs.readFileSync(docFile)));
    assert.equal(
      (await ok(data, "store", "cat", paths[sources.length - 2])).out,
      "one file\n",
    );
    // clear one-line errors
    const cases: [string[], RegExp][] = [
      [
        ["ls", "/nix/store/00000000000000000000000000000000-x"],
        /^snix: \/nix\/store\/0{32}-x is not in the store\n$/,
      ],
      [["cat", "/tmp/x"], /^snix: "\/tmp\/x" is not a store path.*\n$/],
      [
        ["export", "/nix/store/eeee"],
        /^snix: "\/nix\/store\/eeee" is not a valid store path.*\n$/,
      ],
      [["cat", paths[0]], /^snix: path '.*' is not a regular file\n$/],
      [
        ["ls", paths[0] + "/does-not-exist"],
        /^snix: path '.*\/does-not-exist' does not exist\n$/,
      ],
      [
        ["import", join(tmp, "missing")],
        /^snix: cannot import .*missing: no such file or directory\n$/,
      ],
      [
        ["import", "--name", "bad name", join(tmp, "single")],
        /^snix: .*illegal character.*\n$/,
      ],
    ];
    for (const [args, re] of cases) {
      const r = await snix(data, "store", ...args);
      assert.equal(r.code, 1, args.join(" "));
      assert.match(r.err, re, args.join(" "));
    }
    // a reader that goes away: quiet
    const child = command(data, ["store", "export", paths[1]]).spawn();
    const reader = child.stdout.getReader();
    await reader.read();
    await reader.cancel();
    const [errText, status] = await Promise.all([
      new Response(child.stderr).text(),
      child.status,
    ]);
    assert.equal(status.code, 0, errText);
    assert.equal(errText, "");
    const v = await ok(data, "store", "verify");
    assert.match(v.out, /no problems/);
  });
});

Deno.test("store cli: a flipped byte in a stored chunk fails cat naming the digest, and verify reports it", async () => {
  await withTmp(async (tmp) => {
    const data = join(tmp, "data");
    const src = join(tmp, "src");
    await fsp.mkdir(src);
    const bytes = new Uint8Array(60_000).map((_, i) =>
      (i * 31 + (i >> 7)) & 0xff
    );
    await fsp.writeFile(join(src, "file"), bytes);
    const p = (await ok(data, "store", "import", src)).out.trim();
    assert.equal((await ok(data, "store", "verify")).code, 0);
    // The import wrote its chunks into a pack (lib/castore/pack.ts): flip
    // a byte in the middle of each chunk record.
    const packs = filesUnder(join(data, "castore", "packs", "blobs"));
    assert.equal(packs.length, 1);
    const pack = PackFile.load(packs[0]);
    let flipped = 0;
    const b = fs.readFileSync(packs[0]);
    for (let i = 0; i < pack.count; i++) {
      const r = pack.record(i);
      if (r.kind !== PackKind.chunk) continue;
      b[r.offset + (r.length >> 1)] ^= 0x40;
      flipped++;
    }
    fs.writeFileSync(packs[0], b);
    assert.ok(flipped > 0);
    const cat = await snix(data, "store", "cat", p + "/file");
    assert.equal(cat.code, 1);
    assert.match(cat.err, /^snix: .*blake3-[A-Za-z0-9+/=]+.*\n$/);
    const v = await snix(data, "store", "verify");
    assert.equal(v.code, 1);
    assert.match(v.out, /blob blake3-/);
    assert.match(v.out, new RegExp(`path ${p}`));
    assert.match(v.err, /^snix: store verification found \d+ problems?\n$/);
  });
});

Deno.test("store cli: kill -9 during import at random moments, then verify is clean and the import succeeds", async () => {
  await withTmp(async (tmp) => {
    const data = join(tmp, "data");
    const corpus = join(tmp, "corpus");
    makeCorpus(corpus);
    const want = nixAdd(join(tmp, "nix"), corpus);
    // how long a full import takes here (including process start)
    const t0 = performance.now();
    await ok(join(tmp, "probe"), "store", "import", corpus);
    const full = performance.now() - t0;
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const deadline = performance.now() + 25_000;
    let loops = 0;
    let killed = 0;
    for (; loops < 20 && performance.now() < deadline; loops++) {
      const child = command(data, ["store", "import", corpus]).spawn();
      await new Promise((r) => setTimeout(r, rand() * full));
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
      if ((await child.output()).signal === "SIGKILL") killed++;
    }
    assert.ok(killed >= 3, `only ${killed} of ${loops} imports were killed`);
    assert.ok(loops >= 5, `only ${loops} kill loops ran`);
    const v = await snix(data, "store", "verify");
    assert.equal(v.code, 0, `verify after kill -9: ${v.out}${v.err}`);
    assert.equal((await ok(data, "store", "import", corpus)).out.trim(), want);
    const exp = await ok(data, "store", "export", want);
    assert.equal(
      sha256(exp.stdout),
      sha256(
        execFileSync("nix-store", ["--dump", corpus], { maxBuffer: 64 << 20 }),
      ),
    );
    assert.match(
      (await ok(data, "store", "verify")).out,
      /1 store paths: no problems/,
    );
  });
});

Deno.test("store cli: two processes importing overlapping trees into one data dir both succeed", async () => {
  await withTmp(async (tmp) => {
    const data = join(tmp, "data");
    const a = join(tmp, "a");
    const b = join(tmp, "b");
    makeCorpus(join(a, "shared"));
    makeCorpus(join(b, "shared"));
    await fsp.writeFile(join(a, "only-a"), "a\n");
    await fsp.writeFile(join(b, "only-b"), "b\n");
    const [ra, rb] = await Promise.all([
      snix(data, "store", "import", a, ...DOC),
      snix(data, "store", "import", b, ...DOC),
    ]);
    assert.equal(ra.code, 0, ra.err);
    assert.equal(rb.code, 0, rb.err);
    const nixStore = join(tmp, "nix");
    assert.deepEqual(
      ra.out.trim().split("\n"),
      [a, ...DOC].map((p) => nixAdd(nixStore, p)),
    );
    assert.deepEqual(
      rb.out.trim().split("\n"),
      [b, ...DOC].map((p) => nixAdd(nixStore, p)),
    );
    const v = await ok(data, "store", "verify");
    assert.match(v.out, /no problems/);
    for (
      const [src, p] of [[a, ra.out.split("\n")[0]], [b, rb.out.split("\n")[0]]]
    ) {
      const exp = await ok(data, "store", "export", p);
      assert.equal(
        sha256(exp.stdout),
        sha256(
          execFileSync("nix-store", ["--dump", src], { maxBuffer: 64 << 20 }),
        ),
      );
    }
  });
});

Deno.test("store cli: many small imports from two processes merge their packs as they go; compact merges the rest; exports stay identical", async () => {
  await withTmp(async (tmp) => {
    const data = join(tmp, "data");
    const trees: string[][] = [[], []];
    for (let i = 0; i < 80; i++) {
      const t = join(tmp, `t${i}`);
      await fsp.mkdir(join(t, "sub"), { recursive: true });
      await fsp.writeFile(join(t, "a"), `tree ${i}\n`.repeat(i + 1));
      await fsp.writeFile(join(t, "sub", "b"), i % 2 ? "shared\n" : `b${i}\n`);
      trees[i % 2].push(t);
    }
    // One ingestion (one pack per kind) per tree, 40 per process, at once.
    const runs = await Promise.all(
      trees.map((ts) => snix(data, "store", "import", ...ts)),
    );
    for (const r of runs) assert.equal(r.code, 0, r.err);
    const packs = (kind: string) =>
      fs.readdirSync(join(data, "castore", "packs", kind))
        .filter((n) => n.endsWith(".pack")).length;
    // Without merging: 80 each. A merge starts at 32 small packs.
    assert.ok(packs("blobs") < 40, `${packs("blobs")} blob packs`);
    assert.ok(packs("directories") < 40, `${packs("directories")} dir packs`);
    assert.match((await ok(data, "store", "verify")).out, /no problems/);
    const compact = await ok(data, "store", "compact");
    assert.match(compact.out, /blob packs: \d+ -> 1 /);
    assert.match(compact.out, /directory packs: \d+ -> 1 /);
    assert.equal(packs("blobs"), 1);
    assert.equal(packs("directories"), 1);
    assert.match((await ok(data, "store", "verify")).out, /no problems/);
    const paths = runs.map((r) => r.out.trim().split("\n"));
    for (const [k, i] of [[0, 0], [1, 7], [0, 39]]) {
      const exp = await ok(data, "store", "export", paths[k][i]);
      assert.equal(
        sha256(exp.stdout),
        sha256(execFileSync("nix-store", ["--dump", trees[k][i]])),
      );
    }
  });
});

Deno.test("store cli: unusable data directory gives one clear line naming it", async () => {
  await withTmp(async (tmp) => {
    await fsp.writeFile(join(tmp, "file"), "x");
    for (
      const dir of [join(tmp, "file", "data"), "/proc/snix-no-such-dir/data"]
    ) {
      const r = await snix(dir, "store", "import", join(tmp, "file"));
      assert.equal(r.code, 1, dir);
      assert.equal(r.err.split("\n").length, 2, `one line: ${r.err}`);
      assert.ok(r.err.startsWith("snix: ") && r.err.includes(dir), r.err);
    }
  });
});
