/**
 * `snix nar ...`: dump, hash, list and read NAR archives, with no store
 * involved.
 *
 * - `snix nar dump PATH`: the NAR of a file tree on stdout (as `nix-store --dump`).
 * - `snix nar hash PATH`: `sha256:<nix32>` of that NAR (`--sri`: `sha256-<base64>`,
 *   as `nix hash path`).
 * - `snix nar ls NAR|- [PATH]`: every entry below PATH, one per line (as
 *   `nix nar ls -R`; `--long` as `nix nar ls -R -l`).
 * - `snix nar cat NAR|- PATH`: a regular file's contents.
 *
 * Output goes to fd 1 with blocking writes (waiting when stdout is a
 * non-blocking pipe), so a slow reader applies backpressure; a reader that
 * goes away (EPIPE, e.g. `| head`) ends the command quietly.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import * as fs from "node:fs";
import type { CliContext } from "./context.ts";
import { StdoutWriter } from "./stdout.ts";
import { narChunks } from "../lib/nix/nar_writer.ts";
import { narNodeFromPath } from "../lib/nix/nar_fs.ts";
import { errorCode } from "../lib/runtime/sync_fs.ts";
import { readNar } from "../lib/nix/nar_reader.ts";
import { createThreadedHasher } from "../lib/nix/threaded_hasher.ts";
import { makeHash, printHash, printSri } from "../lib/nix/hash.ts";
import { concatBytes } from "../lib/nix/bytes.ts";

const enc = new TextEncoder();
const READ_CHUNK = 256 * 1024;
/** Files at least this big are copied with sendfile(2) by `nar dump`. */
const SENDFILE_MIN = 64 * 1024;

/** The `nar` command group. */
// deno-lint-ignore no-explicit-any
export function narCommand(_ctx: CliContext): Command<any, any, any> {
  return new Command("nar")
    .description("create, hash and read NAR archives (no store needed)")
    .addCommand(
      new Command("dump")
        .description(
          "write the NAR serialisation of PATH to stdout (like nix-store --dump)",
        )
        .argument("<path>", "file, directory or symlink to serialise")
        .action(async (path) => {
          const out = new StdoutWriter();
          for await (
            const chunk of narChunks(await nodeFor(path), {
              reuseBuffers: true,
              // Big files go kernel to kernel (sendfile), as fast as Nix's
              // read+write loop or faster; small ones stay coalesced.
              copyContents: {
                minSize: SENDFILE_MIN,
                copy: (node) => out.sendFile(node.localPath!, node.size),
              },
            })
          ) {
            await out.write(chunk);
          }
        }),
    )
    .addCommand(
      new Command("hash")
        .description(
          "print the SHA-256 of PATH's NAR serialisation as sha256:<nix32> (like nix-hash --type sha256 --base32, with the prefix)",
        )
        .argument("<path>", "file, directory or symlink to hash")
        .option("--sri", "print sha256-<base64> (like nix hash path)")
        .action(async (path, opts) => {
          // Hashing runs on a second thread, overlapping the tree walk
          // and the reads (about half the work each).
          const h = createThreadedHasher("sha256");
          let digest: Uint8Array;
          try {
            for await (
              const chunk of narChunks(await nodeFor(path), {
                reuseBuffers: true,
              })
            ) {
              await h.update(chunk);
            }
            digest = await h.digest();
          } finally {
            h.close();
          }
          const hash = makeHash("sha256", digest);
          await new StdoutWriter().write(
            enc.encode(
              (opts.sri ? printSri(hash) : printHash(hash, "nix32")) + "\n",
            ),
          );
        }),
    )
    .addCommand(
      new Command("ls")
        .description(
          "list the entries of a NAR below PATH (default /), one per line (like nix nar ls -R)",
        )
        .argument("<nar>", "NAR file, or - for stdin")
        .argument("[path]", "absolute path inside the NAR", "/")
        .option(
          "-l, --long",
          "show type, permissions and size (like nix nar ls -R -l)",
        )
        .action(async (narFile, path, opts) => {
          await listNar(narFile, parseNarPath(path), !!opts.long);
        }),
    )
    .addCommand(
      new Command("cat")
        .description(
          "write the contents of the regular file at PATH inside a NAR to stdout",
        )
        .argument("<nar>", "NAR file, or - for stdin")
        .argument("<path>", "absolute path inside the NAR")
        .action(async (narFile, path) => {
          await catNar(narFile, path);
        }),
    );
}

/** lstat-based node for a path, with a one-line error naming it. */
async function nodeFor(path: string) {
  try {
    return await narNodeFromPath(path);
  } catch (e) {
    throw fsError(e, path);
  }
}

function fsError(e: unknown, path: string): Error {
  const code = errorCode(e);
  if (code === "ENOENT") return new Error(`${path}: no such file or directory`);
  if (code === "EACCES" || code === "EPERM") {
    return new Error(`${path}: permission denied`);
  }
  if (code === "EILSEQ") return e as Error;
  if (code) return new Error(`${path}: ${code} (${(e as Error).message})`);
  return e as Error;
}

/** Splits `/a/b` into byte components; "" and "/" are the root. */
function parseNarPath(path: string): Uint8Array[] {
  if (path !== "" && !path.startsWith("/")) {
    throw new Error(
      `path inside the NAR must be absolute: ${JSON.stringify(path)}`,
    );
  }
  return path.split("/").filter((p) => p !== "").map((p) => enc.encode(p));
}

function samePath(a: Uint8Array[], b: Uint8Array[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i], y = b[i];
    if (x.length !== y.length) return false;
    for (let j = 0; j < x.length; j++) if (x[j] !== y[j]) return false;
  }
  return true;
}

function isPrefix(prefix: Uint8Array[], path: Uint8Array[]): boolean {
  return path.length >= prefix.length &&
    samePath(prefix, path.slice(0, prefix.length));
}

/**
 * Streams a NAR file (or stdin for "-") without loading it whole. Two read
 * buffers take turns: safe because readNar asks for the next chunk only after
 * it has used up the previous one, and our consumers (ls, cat) are done with a
 * chunk before they pull the next (cat writes synchronously).
 */
function narSource(file: string): ReadableStream<Uint8Array> {
  let fd: number | undefined;
  const bufs = [new Uint8Array(READ_CHUNK), new Uint8Array(READ_CHUNK)];
  let turn = 0;
  const owned = file !== "-";
  return new ReadableStream<Uint8Array>({
    start() {
      try {
        fd = owned ? fs.openSync(file, "r") : 0;
      } catch (e) {
        throw fsError(e, file);
      }
    },
    async pull(c) {
      const buf = bufs[turn];
      turn ^= 1;
      while (true) {
        try {
          const n = fs.readSync(fd!, buf, 0, buf.length, null);
          if (n === 0) {
            if (owned) fs.closeSync(fd!);
            c.close();
          } else c.enqueue(buf.subarray(0, n));
          return;
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === "EAGAIN") {
            await new Promise((r) => setTimeout(r, 2));
            continue;
          }
          if (code === "EOF") { // Deno reports EOF on a closed stdin this way
            c.close();
            return;
          }
          throw fsError(e, file === "-" ? "stdin" : file);
        }
      }
    },
    cancel() {
      if (owned && fd !== undefined) fs.closeSync(fd);
    },
  }, { highWaterMark: 0 });
}

const SLASH = enc.encode("/");
const DOT_SLASH = enc.encode("./");
const NL = enc.encode("\n");
const ARROW = enc.encode(" -> ");

function longPrefix(mode: string, size: number): Uint8Array {
  return enc.encode(`${mode} ${String(size).padStart(20)} `);
}

async function listNar(
  file: string,
  prefix: Uint8Array[],
  long: boolean,
): Promise<void> {
  const out = new StdoutWriter();
  let found = false;
  for await (const ev of readNar(narSource(file))) {
    if (ev.type === "directory-end") continue;
    if (!isPrefix(prefix, ev.path)) continue;
    // The display name: "./rel/path" below a listed directory; the base name for PATH itself.
    let display: Uint8Array;
    if (ev.path.length === prefix.length) {
      found = true;
      if (ev.type === "directory") continue; // only its entries are listed
      display = prefix.length ? prefix[prefix.length - 1] : new Uint8Array(0);
    } else {
      const rel = ev.path.slice(prefix.length);
      const parts: Uint8Array[] = [DOT_SLASH];
      rel.forEach((p, i) => {
        if (i > 0) parts.push(SLASH);
        parts.push(p);
      });
      display = concatBytes(parts);
    }
    let line: Uint8Array;
    if (!long) line = concatBytes([display, NL]);
    else if (ev.type === "regular") {
      line = concatBytes([
        longPrefix(ev.executable ? "-r-xr-xr-x" : "-r--r--r--", ev.size),
        display,
        NL,
      ]);
    } else if (ev.type === "symlink") {
      line = concatBytes([
        longPrefix("lrwxrwxrwx", 0),
        display,
        ARROW,
        ev.target,
        NL,
      ]);
    } else line = concatBytes([longPrefix("dr-xr-xr-x", 0), display, NL]);
    out.buffer(line);
    if (out.pending > 64 * 1024) await out.flush();
  }
  await out.flush();
  if (!found) {
    throw new Error(`path ${showNarPath(prefix)} does not exist in the NAR`);
  }
}

function showNarPath(path: Uint8Array[]): string {
  const dec = new TextDecoder();
  return JSON.stringify("/" + path.map((p) => dec.decode(p)).join("/"));
}

async function catNar(file: string, pathArg: string): Promise<void> {
  const path = parseNarPath(pathArg);
  const out = new StdoutWriter();
  let found = false;
  for await (const ev of readNar(narSource(file))) {
    // Unread contents are skipped by the reader.
    if (!samePath(ev.path, path) || ev.type === "directory-end") continue;
    if (ev.type !== "regular") {
      throw new Error(
        `path ${
          showNarPath(path)
        } in the NAR is a ${ev.type}, not a regular file`,
      );
    }
    found = true;
    for await (const chunk of ev.contents) await out.write(chunk);
  }
  if (!found) {
    throw new Error(`path ${showNarPath(path)} does not exist in the NAR`);
  }
}
