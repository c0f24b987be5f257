/**
 * Store verification (`snix store verify`): reads every blob back (the blob
 * service checks digests as it streams), loads and validates every
 * directory, and checks every PathInfo: its root entry is present, its
 * directory closure is complete (every directory and blob it names exists),
 * and the NAR recomputed from castore has the recorded size and SHA-256.
 *
 * Listing every blob and directory needs the optional `listBlobs()` /
 * `listDirectories()` methods of the local services; on other backends only
 * what the PathInfos reach is checked.
 *
 * @module
 */
import type { Entry } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { BlobService } from "../castore/blob_service.ts";
import type { DirectoryService } from "../castore/directory_service.ts";
import { digestToString } from "../castore/digest.ts";
import { directoryDigest, validateDirectory } from "../castore/directory.ts";
import { renderNar } from "../castore/render_nar.ts";
import { decodeNixBase32, encodeNixBase32 } from "../nix/nixbase32.ts";
import type { PathInfo } from "../../proto/gen/snix/store/protos/pathinfo_pb.ts";
import type { PathInfoService } from "./path_info_service.ts";
import { bytesEqual, validatePathInfo } from "./path_info.ts";
import { hashNar } from "./nar_calculation.ts";

/** One problem found. */
export interface VerifyProblem {
  /** What kind of object. */
  kind: "blob" | "directory" | "path";
  /** The object (a digest or a store path). */
  id: string;
  /** What is wrong, one line. */
  message: string;
}

/** Counts of what was checked, and the problems. */
export interface VerifyReport {
  blobs: number;
  directories: number;
  paths: number;
  /** Bytes of blob data read back. */
  bytes: number;
  /** Whether every stored blob and directory was listed (else only what PathInfos reach was checked). */
  listed: boolean;
  problems: VerifyProblem[];
}

/** Callbacks while verifying. */
export interface VerifyOptions {
  /** Called for each problem as it is found. */
  onProblem?: (p: VerifyProblem) => void;
  /** Called as work advances (bytes read, objects checked). */
  onProgress?: (p: { bytes: number; files: number }) => void;
}

interface Listable {
  listBlobs?(): AsyncIterable<Uint8Array>;
  listDirectories?(): AsyncIterable<Uint8Array>;
  hashParts?(): Promise<string[]>;
  /** Stored files that could not be read at all (damaged pack files), one line each. */
  storageProblems?(): string[];
}

function msg(e: unknown): string {
  const m = e instanceof Error
    ? ((e as { rawMessage?: string }).rawMessage ?? e.message)
    : String(e);
  return m.split("\n")[0];
}

/** Verifies the store; never throws for a bad object (it becomes a problem). */
export async function verifyStore(
  services: {
    blobs: BlobService;
    directories: DirectoryService;
    pathInfos: PathInfoService;
  },
  opts: VerifyOptions = {},
): Promise<VerifyReport> {
  const report: VerifyReport = {
    blobs: 0,
    directories: 0,
    paths: 0,
    bytes: 0,
    listed: false,
    problems: [],
  };
  const problem = (
    kind: VerifyProblem["kind"],
    id: string,
    message: string,
  ) => {
    const p = { kind, id, message };
    report.problems.push(p);
    opts.onProblem?.(p);
  };
  const tick = () =>
    opts.onProgress?.({
      bytes: report.bytes,
      files: report.blobs + report.directories + report.paths,
    });
  const { blobs, directories, pathInfos } = services;
  const badBlobs = new Set<string>();

  // 1. every blob, read back in full
  const lb = blobs as BlobService & Listable;
  if (lb.listBlobs) {
    for await (const digest of lb.listBlobs()) {
      report.blobs++;
      const id = digestToString(digest);
      try {
        const s = await blobs.read(digest);
        if (!s) {
          problem("blob", id, "listed but cannot be read (missing chunks)");
          badBlobs.add(id);
          continue;
        }
        for await (const chunk of s) {
          report.bytes += chunk.length;
          tick();
        }
      } catch (e) {
        problem("blob", id, msg(e));
        badBlobs.add(id);
      }
      tick();
    }
    for (const m of lb.storageProblems?.() ?? []) problem("blob", "pack", m);
  }

  // 2. every directory, loaded (digest checked) and validated
  const ld = directories as DirectoryService & Listable;
  if (ld.listDirectories) {
    for await (const digest of ld.listDirectories()) {
      report.directories++;
      const id = digestToString(digest);
      try {
        const d = await directories.get(digest);
        if (!d) problem("directory", id, "listed but cannot be read");
        else {
          validateDirectory(d);
          if (!bytesEqual(await directoryDigest(d), digest)) {
            problem("directory", id, "contents do not match the digest");
          }
        }
      } catch (e) {
        problem("directory", id, msg(e));
      }
      tick();
    }
    for (const m of ld.storageProblems?.() ?? []) {
      problem("directory", "pack", m);
    }
  }

  report.listed = !!lb.listBlobs && !!ld.listDirectories;

  // 3. every PathInfo: closure complete, NAR hash as recorded
  const lp = pathInfos as PathInfoService & Listable;
  const infos: AsyncIterable<[string, PathInfo | undefined, unknown]> =
    lp.hashParts
      ? (async function* () {
        for (const h of await lp.hashParts!()) {
          try {
            yield [h, await pathInfos.get(decodeNixBase32(h)), undefined];
          } catch (e) {
            yield [h, undefined, e];
          }
        }
      })()
      : (async function* () {
        for await (const i of pathInfos.list()) yield ["", i, undefined];
      })();
  for await (const [hashPart, info, err] of infos) {
    report.paths++;
    if (err || !info) {
      if (err) problem("path", hashPart, msg(err));
      continue;
    }
    let name: string;
    try {
      name = validatePathInfo(info).toString();
    } catch (e) {
      problem("path", hashPart || "?", msg(e));
      continue;
    }
    const missing = await closureProblems(
      info.entry!,
      blobs,
      directories,
      badBlobs,
    );
    if (missing) {
      problem("path", name, missing);
      continue;
    }
    try {
      const r = await hashNar(renderNar(info.entry!, blobs, directories));
      const ni = info.narinfo!;
      if (BigInt(r.narSize) !== ni.narSize) {
        problem(
          "path",
          name,
          `NAR size is ${r.narSize}, recorded ${ni.narSize}`,
        );
      } else if (!bytesEqual(r.narSha256, ni.narSha256)) {
        problem(
          "path",
          name,
          `NAR hash is sha256:${
            encodeNixBase32(r.narSha256)
          }, recorded sha256:${encodeNixBase32(ni.narSha256)}`,
        );
      }
    } catch (e) {
      problem("path", name, `cannot render its NAR: ${msg(e)}`);
    }
    tick();
  }
  return report;
}

/** The first missing or bad object the tree under `root` names, or undefined. */
async function closureProblems(
  root: Entry,
  blobs: BlobService,
  directories: DirectoryService,
  badBlobs: Set<string>,
): Promise<string | undefined> {
  const checkBlob = async (digest: Uint8Array): Promise<string | undefined> => {
    const id = digestToString(digest);
    if (badBlobs.has(id)) return `blob ${id} is corrupt`;
    try {
      if (!(await blobs.has(digest))) return `blob ${id} is missing`;
    } catch (e) {
      return `blob ${id}: ${msg(e)}`;
    }
    return undefined;
  };
  const e = root.entry;
  if (e.case === undefined) return "PathInfo has no root node";
  if (e.case === "symlink") return undefined;
  if (e.case === "file") return await checkBlob(e.value.digest);
  const seen = new Set<string>();
  const queue: Uint8Array[] = [e.value.digest];
  while (queue.length) {
    const digest = queue.shift()!;
    const id = digestToString(digest);
    if (seen.has(id)) continue;
    seen.add(id);
    let d;
    try {
      d = await directories.get(digest);
    } catch (err) {
      return `directory ${id}: ${msg(err)}`;
    }
    if (!d) return `directory ${id} is missing`;
    for (const f of d.files) {
      const p = await checkBlob(f.digest);
      if (p) return p;
    }
    for (const c of d.directories) queue.push(c.digest);
  }
  return undefined;
}
