/**
 * `snix nar dump|hash|ls|cat` run as a process (`deno run cli/main.ts`),
 * compared with `nix-store --dump`, `nix hash path`, `nix-hash` and
 * `nix nar ls|cat`; bad input gives one line on stderr and a non-zero exit;
 * a reader that goes away (`| head`) ends the dump quietly.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { makeCorpus } from "./corpus.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MAIN = join(ROOT, "cli/main.ts");
const NIX_ENV = {
  ...process.env,
  NIX_CONFIG: "experimental-features = nix-command",
};

/** Runs snix with Deno (the current executable). */
function snix(args: string[], input?: Uint8Array) {
  const r = spawnSync(Deno.execPath(), [
    "run",
    "-A",
    "--no-check",
    MAIN,
    ...args,
  ], {
    input,
    maxBuffer: 1 << 30,
    env: { ...process.env, SNIX_DATA_DIR: join(work, "data") },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

function nix(cmd: string, args: string[]): Buffer {
  return execFileSync(cmd, args, { env: NIX_ENV, maxBuffer: 1 << 30 });
}

function assertOneLineError(
  r: { status: number | null; stderr: string },
  re: RegExp,
) {
  assert.notEqual(r.status, 0);
  const lines = r.stderr.trimEnd().split("\n").filter((l) =>
    !/nodedir/.test(l)
  );
  assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
  assert.match(lines[0], /^snix: /);
  assert.match(lines[0], re);
}

const work = fs.mkdtempSync(join(tmpdir(), "snix-nar-cli-"));
const corpus = join(work, "corpus");
makeCorpus(corpus);
const corpusNar = join(work, "corpus.nar");
fs.writeFileSync(corpusNar, nix("nix-store", ["--dump", corpus]));
// Nix 2.8's `nix nar ls` dies on names containing '%' (it uses them as a
// boost::format string), so listings are compared on a copy without that one.
const lsTree = join(work, "ls-tree");
fs.cpSync(corpus, lsTree, { recursive: true, verbatimSymlinks: true });
fs.rmSync(join(lsTree, "names", "percent%20"));
const lsNar = join(work, "ls-tree.nar");
fs.writeFileSync(lsNar, nix("nix-store", ["--dump", lsTree]));
globalThis.addEventListener?.(
  "unload",
  () => fs.rmSync(work, { recursive: true, force: true }),
);

Deno.test("snix nar dump and hash equal nix-store --dump, nix-hash, nix hash path", () => {
  const dump = snix(["nar", "dump", corpus]);
  assert.equal(dump.status, 0, dump.stderr);
  assert.ok(
    dump.stdout.equals(fs.readFileSync(corpusNar)),
    "dump differs from nix-store --dump",
  );
  const hash = snix(["nar", "hash", corpus]);
  assert.equal(
    hash.stdout.toString(),
    `sha256:${
      nix("nix-hash", ["--type", "sha256", "--base32", corpus]).toString()
    }`,
  );
  const sri = snix(["nar", "hash", "--sri", corpus]);
  assert.equal(
    sri.stdout.toString(),
    nix("nix", ["hash", "path", corpus]).toString(),
  );
});

Deno.test("snix nar ls and cat equal nix nar ls -R and nix nar cat", () => {
  for (
    const [args, nixArgs] of [
      [[lsNar], [lsNar, "/"]],
      [["--long", lsNar], ["-l", lsNar, "/"]],
      [[lsNar, "/links"], [lsNar, "/links"]],
      [["-l", lsNar, "/bin/run.sh"], ["-l", lsNar, "/bin/run.sh"]],
    ]
  ) {
    const r = snix(["nar", "ls", ...args]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      r.stdout.toString(),
      nix("nix", ["nar", "ls", "-R", ...nixArgs]).toString(),
      args.join(" "),
    );
  }
  // From stdin.
  const fromStdin = snix(["nar", "ls", "-"], fs.readFileSync(lsNar));
  assert.equal(
    fromStdin.stdout.toString(),
    nix("nix", ["nar", "ls", "-R", lsNar, "/"]).toString(),
  );
  for (
    const p of [
      "/nine",
      "/big.bin",
      "/names/日本語",
      "/deep/d01/d02/d03/d04/d05/d06/d07/d08/d09/d10/d11/d12/d13/d14/d15/d16/d17/d18/d19/d20/d21/d22/d23/d24/d25/d26/d27/d28/d29/d30/d31/d32/d33/d34/d35/d36/d37/d38/d39/d40/leaf",
    ]
  ) {
    const r = snix(["nar", "cat", corpusNar, p]);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.equals(nix("nix", ["nar", "cat", corpusNar, p])), p);
  }
  assertOneLineError(
    snix(["nar", "cat", corpusNar, "/bin"]),
    /"\/bin" in the NAR is a directory, not a regular file/,
  );
  assertOneLineError(
    snix(["nar", "cat", corpusNar, "/nope"]),
    /"\/nope" does not exist/,
  );
  assertOneLineError(
    snix(["nar", "ls", corpusNar, "relative"]),
    /must be absolute/,
  );
});

Deno.test("snix nar: bad input gives one line on stderr and a non-zero exit", () => {
  const nar = fs.readFileSync(corpusNar);
  const cases: [Uint8Array, RegExp][] = [
    [
      nar.subarray(0, Math.floor(nar.length / 2)),
      /^snix: bad NAR at byte \d+: unexpected end of input/,
    ],
    [nar.subarray(0, 100), /unexpected end of input/],
    [new Uint8Array(0), /does not look like a NAR/],
    [
      new TextEncoder().encode("this is not a NAR at all, just some text\n"),
      /does not look like a NAR/,
    ],
    [Buffer.concat([nar, Buffer.from("trailing")]), /trailing bytes/],
  ];
  for (const [input, re] of cases) {
    assertOneLineError(snix(["nar", "ls", "-"], input), re);
  }
  const path = join(work, "bad.nar");
  fs.writeFileSync(path, nar.subarray(0, 1000));
  assertOneLineError(snix(["nar", "cat", path, "/nine"]), /bad NAR at byte/);
  assertOneLineError(
    snix(["nar", "ls", join(work, "missing.nar")]),
    /missing\.nar: no such file or directory/,
  );
  assertOneLineError(
    snix(["nar", "dump", join(work, "missing")]),
    /missing: no such file or directory/,
  );
  assertOneLineError(
    snix(["nar", "hash", join(work, "missing")]),
    /no such file or directory/,
  );
  const withFifo = join(work, "with-fifo");
  fs.mkdirSync(withFifo);
  spawnSync("mkfifo", [join(withFifo, "pipe")]);
  assertOneLineError(
    snix(["nar", "dump", withFifo]),
    /"[^"]*pipe" has an unsupported file type/,
  );
});

Deno.test("snix nar dump | head: exits quietly when the reader goes away", () => {
  const script =
    `set -o pipefail; "${Deno.execPath()}" run -A --no-check "${MAIN}" nar dump "${corpus}" | head -c 100 >/dev/null`;
  const r = spawnSync("bash", ["-c", script], { encoding: "utf8" });
  const stderr = r.stderr.split("\n").filter((l) => l && !/nodedir/.test(l));
  assert.deepEqual(stderr, []);
  assert.equal(r.status, 0);
});

Deno.test("snix nar dump: same bytes into a file (sendfile) and without FFI (read/write)", () => {
  const expected = fs.readFileSync(corpusNar);
  const out = join(work, "dump-to-file.nar");
  const fd = fs.openSync(out, "w");
  try {
    const r = spawnSync(
      Deno.execPath(),
      ["run", "-A", "--no-check", MAIN, "nar", "dump", corpus],
      { stdio: ["ignore", fd, "pipe"], encoding: "utf8" },
    );
    assert.equal(r.status, 0, r.stderr);
  } finally {
    fs.closeSync(fd);
  }
  assert.ok(fs.readFileSync(out).equals(expected), "dump into a file differs");
  const r = spawnSync(Deno.execPath(), [
    "run",
    "-A",
    "--deny-ffi",
    "--no-check",
    MAIN,
    "nar",
    "dump",
    corpus,
  ], { maxBuffer: 1 << 30 });
  assert.equal(r.status, 0, r.stderr.toString());
  assert.ok(r.stdout.equals(expected), "dump without FFI differs");
});
