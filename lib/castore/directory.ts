/**
 * The castore Directory model: validation, canonical encoding, digest and the
 * `size` rule.
 *
 * A Directory's digest is the BLAKE3 of its canonical protobuf encoding:
 * fields in number order (protobuf-es writes them in declaration order, which
 * is number order in castore.proto), default values omitted (proto3), and no
 * unknown fields (snix decodes with prost, which drops them, so they can never
 * be part of what snix hashes).
 *
 * @module
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Directory,
  type DirectoryEntry,
  DirectoryEntrySchema,
  DirectorySchema,
  type Entry,
  EntrySchema,
} from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import { blake3Sync, DIGEST_LENGTH, digestToString } from "./digest.ts";

/** Longest allowed entry name in bytes (Linux NAME_MAX). */
export const MAX_NAME_LEN = 255;
/** Longest allowed symlink target in bytes (Linux PATH_MAX - 1). */
export const MAX_TARGET_LEN = 4095;

const U64_MAX = (1n << 64n) - 1n;

/** Compares two byte strings lexicographically (memcmp, then length). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

const decoder = new TextDecoder("utf-8", { fatal: false });

/** A name or target quoted for error messages (lossy UTF-8, JSON escapes). */
export function quoteBytes(b: Uint8Array): string {
  const s = JSON.stringify(decoder.decode(b.subarray(0, 300)));
  return b.length > 300 ? `${s.slice(0, -1)}..."` : s;
}

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

/**
 * Why `name` is not a valid entry name, or `undefined` if it is.
 * Rules (snix/castore/src/path/component.rs): 1..255 bytes, not `.` or `..`,
 * no NUL, no `/`.
 */
export function nameProblem(name: Uint8Array): string | undefined {
  if (!(name instanceof Uint8Array) || name.length === 0) return "empty name";
  if (name.length > MAX_NAME_LEN) {
    return `name too long (${name.length} bytes, at most ${MAX_NAME_LEN})`;
  }
  if (name.length === 1 && name[0] === 0x2e) return "name is '.'";
  if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) {
    return "name is '..'";
  }
  if (name.includes(0)) return "name contains a NUL byte";
  if (name.includes(0x2f)) return "name contains '/'";
  return undefined;
}

/** Throws `InvalidArgument` unless `name` is a valid entry name. */
export function validateName(name: Uint8Array): void {
  const p = nameProblem(name);
  if (p) {
    throw invalid(
      `invalid entry name ${quoteBytes(name ?? new Uint8Array())}: ${p}`,
    );
  }
}

/**
 * Why `target` is not a valid symlink target, or `undefined` if it is.
 * Rules (snix/castore/src/nodes/symlink_target.rs): 1..4095 bytes, no NUL.
 */
export function symlinkTargetProblem(target: Uint8Array): string | undefined {
  if (!(target instanceof Uint8Array) || target.length === 0) {
    return "empty symlink target";
  }
  if (target.length > MAX_TARGET_LEN) {
    return `symlink target too long (${target.length} bytes, at most ${MAX_TARGET_LEN})`;
  }
  if (target.includes(0)) return "symlink target contains a NUL byte";
  return undefined;
}

function checkDigest(kind: string, name: Uint8Array, digest: Uint8Array): void {
  if (!(digest instanceof Uint8Array) || digest.length !== DIGEST_LENGTH) {
    const len = digest instanceof Uint8Array ? digest.length : 0;
    throw invalid(
      `${kind} ${
        quoteBytes(name)
      }: invalid digest length ${len}, expected ${DIGEST_LENGTH}`,
    );
  }
}

/**
 * Checks a Directory message; throws `ConnectError` `InvalidArgument` naming
 * the offending entry. Rules, as snix's `TryFrom<proto::Directory>`
 * (snix/castore/src/proto/mod.rs, path/component.rs, nodes/symlink_target.rs,
 * nodes/directory.rs):
 * - every name valid (see {@linkcode nameProblem});
 * - each of the three lists strictly sorted by name bytes (a repeat is a
 *   duplicate);
 * - names unique across the three lists;
 * - directory and file digests 32 bytes;
 * - symlink targets valid (see {@linkcode symlinkTargetProblem});
 * - the directory's size ({@linkcode directorySize}) fits in a u64.
 */
export function validateDirectory(d: Directory): void {
  const lists: [string, { name: Uint8Array }[]][] = [
    ["directory", d.directories],
    ["file", d.files],
    ["symlink", d.symlinks],
  ];
  for (const [kind, list] of lists) {
    let prev: Uint8Array | undefined;
    for (const e of list) {
      const p = nameProblem(e.name);
      if (p) {
        throw invalid(
          `invalid ${kind} entry name ${
            quoteBytes(e.name ?? new Uint8Array())
          }: ${p}`,
        );
      }
      if (prev !== undefined) {
        const c = compareBytes(prev, e.name);
        if (c === 0) {
          throw invalid(
            `duplicate name ${quoteBytes(e.name)} in ${kind} entries`,
          );
        }
        if (c > 0) {
          throw invalid(
            `${kind} entries not sorted: ${quoteBytes(e.name)} comes after ${
              quoteBytes(prev)
            }`,
          );
        }
      }
      prev = e.name;
    }
  }
  for (const e of d.directories) checkDigest("directory", e.name, e.digest);
  for (const e of d.files) checkDigest("file", e.name, e.digest);
  for (const e of d.symlinks) {
    const p = symlinkTargetProblem(e.target);
    if (p) throw invalid(`symlink ${quoteBytes(e.name)}: ${p}`);
  }
  // Uniqueness across the lists: merge the three sorted lists.
  if (
    (d.directories.length > 0 ? 1 : 0) + (d.files.length > 0 ? 1 : 0) +
        (d.symlinks.length > 0 ? 1 : 0) > 1
  ) {
    const all = [...d.directories, ...d.files, ...d.symlinks].map((e) =>
      e.name
    );
    all.sort(compareBytes);
    for (let i = 1; i < all.length; i++) {
      if (compareBytes(all[i - 1], all[i]) === 0) {
        throw invalid(
          `duplicate name ${quoteBytes(all[i])} across entry lists`,
        );
      }
    }
  }
  directorySize(d);
}

/**
 * The value of `DirectoryEntry.size` for an entry pointing at `d`: THE one
 * place the size rule lives.
 *
 * Finding (snix snapshot of Dec 2025): the proto comment and the proto
 * helper `proto::Directory::size()` (snix/castore/src/proto/mod.rs, also
 * snix/castore-go) compute n + Σ(child directory sizes), but nothing in snix
 * writes or checks that value. What snix writes on ingestion is
 * `crate::Directory::size()` (snix/castore/src/import/mod.rs calls it for each
 * finished directory), which snix/castore/src/nodes/directory.rs defines as
 * n + Σ over entries of (directory: 1 + size; file/symlink: 1), i.e.
 * 2·n + Σ(child directory sizes). The same function is what the directory
 * putters check children against (`check_edge` in
 * snix/castore/src/directoryservice/directory_graph.rs: a parent's entry size
 * must equal the child's `size()`), so a tree with the proto-comment values
 * is rejected by snix. We match that: empty directory 0, one file 2, one
 * empty subdirectory 2.
 *
 * Throws `InvalidArgument` if the sum does not fit in a u64.
 */
export function directorySize(d: Directory): bigint {
  let size = 0n;
  for (const e of d.directories) size += 2n + BigInt(e.size);
  size += 2n * BigInt(d.files.length + d.symlinks.length);
  if (size > U64_MAX) throw invalid("directory size overflows u64");
  return size;
}

/**
 * Throws `InvalidArgument` unless `entry.size` equals the size of `child`
 * (the directory `entry.digest` names), as snix's directory putters check.
 */
export function validateChildSize(
  entry: DirectoryEntry,
  child: Directory,
): void {
  const expected = directorySize(child);
  if (BigInt(entry.size) !== expected) {
    throw invalid(
      `directory entry ${quoteBytes(entry.name)} (${
        digestToString(entry.digest)
      }) has wrong size ${entry.size}, expected ${expected}`,
    );
  }
}

/** The canonical protobuf encoding of `d` (unknown fields left out). */
export function encodeDirectory(d: Directory): Uint8Array {
  return toBinary(DirectorySchema, d, { writeUnknownFields: false });
}

/**
 * Decodes a Directory from protobuf bytes; throws `InvalidArgument` if the
 * bytes are not a Directory message. Does not validate it.
 */
export function decodeDirectory(bytes: Uint8Array): Directory {
  try {
    return fromBinary(DirectorySchema, bytes, { readUnknownFields: false });
  } catch (e) {
    throw invalid(`not a Directory message: ${(e as Error).message}`);
  }
}

/** BLAKE3 of the canonical encoding of `d` (synchronous). */
export function directoryDigestSync(d: Directory): Uint8Array {
  return blake3Sync(encodeDirectory(d));
}

/** BLAKE3 of the canonical encoding of `d`. */
export function directoryDigest(d: Directory): Promise<Uint8Array> {
  return Promise.resolve(directoryDigestSync(d));
}

/** A new, empty Directory message. */
export function emptyDirectory(): Directory {
  return create(DirectorySchema, {});
}

/** The Directory listing `entries` (castore Entry messages) in their order. */
export function directoryOfEntries(entries: Iterable<Entry>): Directory {
  const dir = emptyDirectory();
  for (const { entry: e } of entries) {
    if (e.case === "directory") dir.directories.push(e.value);
    else if (e.case === "file") dir.files.push(e.value);
    else if (e.case === "symlink") dir.symlinks.push(e.value);
  }
  return dir;
}

/** The Entry naming `dir` `name` in its parent (digest and size rule). */
export async function directoryEntry(
  name: Uint8Array,
  dir: Directory,
): Promise<Entry> {
  return create(EntrySchema, {
    entry: {
      case: "directory",
      value: create(DirectoryEntrySchema, {
        name,
        digest: await directoryDigest(dir),
        size: directorySize(dir),
      }),
    },
  });
}
