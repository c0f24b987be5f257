/**
 * Renders a castore tree as a NAR: a lazy {@linkcode NarNode} over the blob
 * and directory services, serialised by lib/nix's NAR writer. Directories are
 * fetched when the writer reaches them and blobs are streamed, so memory
 * stays flat. The output is byte-identical to `nix-store --dump` of the
 * original tree.
 *
 * @module
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Entry } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { BlobService } from "./blob_service.ts";
import type { DirectoryService } from "./directory_service.ts";
import { compareBytes, directoryDigest } from "./directory.ts";
import { digestToString } from "./digest.ts";
import { type NarNode, narStream } from "../nix/nar_writer.ts";

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** A lazy NarNode for a castore entry (its name is ignored). */
export function narNodeOf(
  entry: Entry,
  blobs: BlobService,
  directories: DirectoryService,
): NarNode {
  const e = entry.entry;
  switch (e.case) {
    case "symlink":
      return { type: "symlink", target: e.value.target };
    case "file": {
      const { digest, size, executable } = e.value;
      return {
        type: "regular",
        executable,
        size: Number(size),
        contents: async () => {
          const s = await blobs.read(digest);
          if (!s) {
            throw new ConnectError(
              `blob ${digestToString(digest)} is missing`,
              Code.NotFound,
            );
          }
          return s;
        },
      };
    }
    case "directory": {
      const digest = e.value.digest;
      return {
        type: "directory",
        entries: async function* () {
          const d = await directories.get(digest);
          if (!d) {
            throw new ConnectError(
              `directory ${digestToString(digest)} is missing`,
              Code.NotFound,
            );
          }
          if (!sameBytes(await directoryDigest(d), digest)) {
            throw new ConnectError(
              `directory ${digestToString(digest)} does not match its digest`,
              Code.DataLoss,
            );
          }
          // Merge the three sorted lists into one, sorted by name bytes.
          const all: [Uint8Array, Entry][] = [];
          for (const v of d.directories) {
            all.push([
              v.name,
              { entry: { case: "directory", value: v } } as Entry,
            ]);
          }
          for (const v of d.files) {
            all.push([v.name, { entry: { case: "file", value: v } } as Entry]);
          }
          for (const v of d.symlinks) {
            all.push([
              v.name,
              { entry: { case: "symlink", value: v } } as Entry,
            ]);
          }
          all.sort((a, b) => compareBytes(a[0], b[0]));
          for (const [name, child] of all) {
            yield [name, narNodeOf(child, blobs, directories)];
          }
        },
      };
    }
    default:
      throw new ConnectError("entry has no node", Code.InvalidArgument);
  }
}

/** The NAR serialisation of `entry`, streamed. Errors the stream on missing or corrupt data. */
export function renderNar(
  entry: Entry,
  blobs: BlobService,
  directories: DirectoryService,
): ReadableStream<Uint8Array> {
  return narStream(narNodeOf(entry, blobs, directories));
}
