/**
 * A small, deterministic file tree that exercises every corner of the NAR
 * format and of file-system ingestion, for tests that compare snix with the
 * real Nix tools (`nix-store --dump`, `nix hash path`, `nix-store --add`).
 *
 * `makeCorpus(dir)` creates (the same bytes every time):
 * - regular files of 0, 1, 8, 9, 4096, 65537 bytes and one of several MiB
 *   (not a multiple of 8), executable and non-executable, an empty executable;
 * - symlinks: absolute (dangling into /nix/store), relative (to a file, to a
 *   directory, to `.`), dangling relative, and a chain;
 * - empty directories (top-level and nested), a 40-level deep chain (below
 *   the 64 levels newer Nix accepts), a directory of 200 small files;
 * - names with spaces, quotes, backslashes, `%`, `*`, `?`, a leading dash,
 *   unicode (accents, CJK, emoji), upper/lower case that byte order sorts
 *   differently from locale order, and a 255-byte name. No newlines, and all
 *   names are valid UTF-8 (Deno's node:fs cannot handle other bytes).
 *
 * Uses only node:fs, so it runs under Deno and Bun.
 *
 * @module
 */
import * as fs from "node:fs";
import { join } from "node:path";
import process from "node:process";

/** Size of the large file in the corpus. */
export const CORPUS_BIG_FILE_SIZE = 5 * 1024 * 1024 + 3;

/** Deterministic bytes: xorshift32 noise, with a text run and a zero run mixed in. */
export function corpusBytes(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  const text = new TextEncoder().encode(
    "nix store path archive narinfo closure\n",
  );
  for (let i = 0; i < size; i++) {
    const block = (i >>> 16) % 4; // 64 KiB blocks: noise, text, noise, zeros
    if (block === 1) out[i] = text[i % text.length];
    else if (block === 3) out[i] = 0;
    else {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      out[i] = x & 0xff;
    }
  }
  return out;
}

function file(
  path: string,
  data: Uint8Array | string,
  executable = false,
): void {
  fs.writeFileSync(path, data);
  fs.chmodSync(path, executable ? 0o755 : 0o644);
}

function mkdir(path: string): void {
  fs.mkdirSync(path, { recursive: true });
  fs.chmodSync(path, 0o755);
}

/**
 * Creates the corpus in `dir` (created if missing; must be empty). Returns
 * nothing; the tree's NAR is identical on every call.
 */
export function makeCorpus(dir: string): void {
  mkdir(dir);
  if (fs.readdirSync(dir).length > 0) {
    throw new Error(`makeCorpus: ${dir} is not empty`);
  }

  // Sizes around the 8-byte padding boundary.
  file(join(dir, "empty"), "");
  file(join(dir, "one"), "1");
  file(join(dir, "eight"), "12345678");
  file(join(dir, "nine"), "123456789");
  file(join(dir, "page"), corpusBytes(4096, 1));
  file(join(dir, "over-64k"), corpusBytes(65537, 2));
  file(join(dir, "big.bin"), corpusBytes(CORPUS_BIG_FILE_SIZE, 3));

  // Executables.
  mkdir(join(dir, "bin"));
  file(join(dir, "bin", "run.sh"), "#!/bin/sh\necho hello\n", true);
  file(join(dir, "bin", "empty-exec"), "", true);
  file(join(dir, "bin", "nine-exec"), "#!/bin/sh", true);

  // Symlinks.
  mkdir(join(dir, "links"));
  fs.symlinkSync(
    "/nix/store/00000000000000000000000000000000-missing",
    join(dir, "links", "absolute-dangling"),
  );
  fs.symlinkSync("/etc", join(dir, "links", "absolute"));
  fs.symlinkSync("../one", join(dir, "links", "relative-file"));
  fs.symlinkSync("../bin", join(dir, "links", "relative-dir"));
  fs.symlinkSync(".", join(dir, "links", "dot"));
  fs.symlinkSync("nowhere/at/all", join(dir, "links", "dangling"));
  fs.symlinkSync("relative-file", join(dir, "links", "chain"));
  fs.symlinkSync(
    "x".repeat(200) + "/" + "y".repeat(200),
    join(dir, "links", "long-target"),
  );

  // Empty directories.
  mkdir(join(dir, "emptydir"));
  mkdir(join(dir, "nested", "empty-inside"));
  file(join(dir, "nested", "file"), "nested\n");

  // Deep nesting: deep/d01/d02/.../d40/leaf
  let deep = join(dir, "deep");
  for (let i = 1; i <= 40; i++) {
    deep = join(deep, `d${String(i).padStart(2, "0")}`);
  }
  mkdir(deep);
  file(join(deep, "leaf"), "bottom\n");

  // Many small files.
  mkdir(join(dir, "many"));
  for (let i = 0; i < 200; i++) {
    file(
      join(dir, "many", `f${String(i).padStart(3, "0")}`),
      corpusBytes(i, 100 + i),
      i % 7 === 0,
    );
  }

  // Odd names (byte order differs from locale order: "B" < "_" < "a" < "É").
  mkdir(join(dir, "names"));
  for (
    const name of [
      "with space",
      " leading-space",
      "trailing-space ",
      "-leading-dash",
      "quote'single",
      'quote"double',
      "back\\slash",
      "percent%20",
      "star*and?question",
      "Zeta",
      "_underscore",
      "alpha",
      "Éclair",
      "ünïcødé",
      "日本語",
      "emoji-😀",
      "..dotdot-prefix",
      ".hidden",
      "n".repeat(255),
    ]
  ) {
    file(join(dir, "names", name), `name: ${name}\n`);
  }
}

/** The corpus's top-level entry names, sorted by bytes (for quick assertions). */
export const CORPUS_TOP_LEVEL = [
  "big.bin",
  "bin",
  "deep",
  "eight",
  "empty",
  "emptydir",
  "links",
  "many",
  "names",
  "nested",
  "nine",
  "one",
  "over-64k",
  "page",
];

if (import.meta.main) {
  const target = process.argv[2];
  if (!target) throw new Error("usage: corpus.ts DIR");
  makeCorpus(target);
}
