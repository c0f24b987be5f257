/**
 * Synchronous file-system calls for hot loops over many small files (NAR
 * dumps of whole trees), picking the fastest binding per runtime: Deno's own
 * `Deno.*` calls (its node:fs compatibility layer costs 5-20x more per call:
 * ~21 us per lstat against ~3 us), node:fs elsewhere (Bun, Node).
 *
 * Paths are bytes. Under Deno they are decoded as UTF-8 (Deno's paths are
 * strings, so names that are not UTF-8 cannot be reached there either way).
 *
 * @module
 */
import * as fs from "node:fs";
import { Buffer } from "node:buffer";
import process from "node:process";

/** What {@link SyncFs.lstat} reports. */
export interface SyncStat {
  kind: "file" | "directory" | "symlink" | "other";
  size: number;
  /** Owner-executable bit. */
  executable: boolean;
}

/** A file opened for sequential or positional reads. */
export interface SyncFile {
  /** Reads up to `length` bytes at `position` into `buf[offset..]`; 0 at the end. */
  read(
    buf: Uint8Array,
    offset: number,
    length: number,
    position: number,
  ): number;
  /** Closes the file. */
  close(): void;
}

/** A directory entry: its name and, when the file system tells (d_type), its kind. */
export interface SyncDirent {
  name: Uint8Array;
  kind: SyncStat["kind"] | undefined;
}

/** The calls a tree walk needs. */
export interface SyncFs {
  /** lstat (symlinks not followed). */
  lstat(path: Uint8Array): SyncStat;
  /** Entries of a directory (unsorted), with their kinds where known. */
  readdir(path: Uint8Array): SyncDirent[];
  /** A symlink's target bytes. */
  readlink(path: Uint8Array): Uint8Array;
  /** Opens a file for reading. */
  open(path: Uint8Array): SyncFile;
  /** Reads a whole (small) file. */
  readFile(path: Uint8Array): Uint8Array;
}

function buf(p: Uint8Array): Buffer {
  return Buffer.isBuffer(p)
    ? p
    : Buffer.from(p.buffer, p.byteOffset, p.byteLength);
}

function u8(b: Buffer): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

const IS_BUN = typeof process.versions.bun === "string";
const utf8 = new TextEncoder();

/** node:fs binding (Bun, Node; byte paths work). */
export const nodeSyncFs: SyncFs = {
  lstat(path) {
    const st = fs.lstatSync(buf(path));
    return {
      kind: st.isFile()
        ? "file"
        : st.isDirectory()
        ? "directory"
        : st.isSymbolicLink()
        ? "symlink"
        : "other",
      size: st.size,
      executable: (st.mode & 0o100) !== 0,
    };
  },
  readdir(path) {
    if (IS_BUN) {
      // Bun ignores withFileTypes with the buffer encoding; with string
      // names it reports d_type, which saves an lstat per directory and
      // symlink. Names that are not valid UTF-8 (a U+FFFD after decoding)
      // take the byte path below.
      const named = fs.readdirSync(buf(path), { withFileTypes: true });
      if (!named.some((d) => d.name.includes("\uFFFD"))) {
        return named.map((d) => ({
          name: utf8.encode(d.name),
          kind: d.isFile()
            ? "file"
            : d.isDirectory()
            ? "directory"
            : d.isSymbolicLink()
            ? "symlink"
            : undefined,
        }));
      }
    }
    // Byte names with d_type where the runtime supports both (Node); Bun
    // ignores withFileTypes with the buffer encoding and returns plain names.
    const list = fs.readdirSync(buf(path), {
      encoding: "buffer",
      withFileTypes: true,
    }) as unknown as (Buffer | fs.Dirent<Buffer>)[];
    return list.map((d) =>
      Buffer.isBuffer(d) ? { name: u8(d), kind: undefined } : {
        name: u8(d.name),
        kind: d.isFile()
          ? "file"
          : d.isDirectory()
          ? "directory"
          : d.isSymbolicLink()
          ? "symlink"
          : undefined,
      }
    );
  },
  readlink(path) {
    return u8(fs.readlinkSync(buf(path), { encoding: "buffer" }));
  },
  open(path) {
    const fd = fs.openSync(buf(path), "r");
    return {
      read: (b, offset, length, position) =>
        fs.readSync(fd, b, offset, length, position),
      close: () => fs.closeSync(fd),
    };
  },
  readFile(path) {
    return u8(fs.readFileSync(buf(path)));
  },
};

// deno-lint-ignore no-explicit-any
const DenoNs: any = (globalThis as any).Deno;

function denoSyncFs(): SyncFs {
  const dec = new TextDecoder();
  const enc = new TextEncoder();
  const str = (p: Uint8Array) => dec.decode(p);
  return {
    lstat(path) {
      const p = str(path);
      let st;
      try {
        st = DenoNs.lstatSync(p);
      } catch (e) {
        if (p.includes("\uFFFD") && errorCode(e) === "ENOENT") {
          const err = new Error(
            `${
              JSON.stringify(p)
            }: the name is not valid UTF-8, which Deno cannot address ` +
              "(the Bun-built snix binary can)",
          );
          throw Object.assign(err, { code: "EILSEQ" });
        }
        throw e;
      }
      return {
        kind: st.isFile
          ? "file"
          : st.isDirectory
          ? "directory"
          : st.isSymlink
          ? "symlink"
          : "other",
        size: st.size,
        executable: ((st.mode ?? 0) & 0o100) !== 0,
      };
    },
    readdir(path) {
      const out: SyncDirent[] = [];
      for (const e of DenoNs.readDirSync(str(path))) {
        out.push({
          name: enc.encode(e.name),
          kind: e.isFile
            ? "file"
            : e.isDirectory
            ? "directory"
            : e.isSymlink
            ? "symlink"
            : undefined,
        });
      }
      return out;
    },
    readlink(path) {
      return enc.encode(DenoNs.readLinkSync(str(path)));
    },
    open(path) {
      const f = DenoNs.openSync(str(path), { read: true });
      let at = 0;
      return {
        read(b, offset, length, position) {
          if (position !== at) {
            f.seekSync(position, DenoNs.SeekMode.Start);
            at = position;
          }
          const n = f.readSync(b.subarray(offset, offset + length)) ?? 0;
          at += n;
          return n;
        },
        close: () => f.close(),
      };
    },
    readFile(path) {
      return DenoNs.readFileSync(str(path));
    },
  };
}

/** The binding for the current runtime. */
export const syncFs: SyncFs =
  DenoNs?.lstatSync && DenoNs?.readDirSync && DenoNs?.openSync
    ? denoSyncFs()
    : nodeSyncFs;

/** Errors from either binding carry `code` like node's (`ENOENT`, ...) where known. */
export function errorCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown })?.code;
  if (typeof code === "string") return code;
  const name = (e as Error)?.name;
  const byName: Record<string, string> = {
    NotFound: "ENOENT",
    PermissionDenied: "EACCES",
    NotADirectory: "ENOTDIR",
    IsADirectory: "EISDIR",
  };
  return name ? byName[name] : undefined;
}
