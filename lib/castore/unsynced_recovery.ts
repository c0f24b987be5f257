/**
 * Repair after a power loss (see ./data_dir_sync.ts): objects written
 * without fsync after a marker's time may have come back empty, truncated or
 * with garbage. Every castore object modified since then is checked, and
 * deleted if bad, so that writers (which skip objects that exist) store it
 * again:
 *
 * 1. chunks: must decompress and hash to their name;
 * 2. chunk lists: must verify under their blob digest and name only chunks
 *    that exist;
 * 3. directories: must hash to their name and name only blobs and
 *    directories that exist (repeated until nothing more is deleted, so a
 *    parent of a deleted directory goes too).
 *
 * Objects older than the marker were durable before it was written and only
 * name older objects, so they are not read. Shard directories whose mtime is
 * older are skipped without listing them.
 *
 * @module
 */
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import { join } from "node:path";
import * as zlib from "node:zlib";
import { blake3Sync, digestEquals, digestFromHex } from "./digest.ts";
import { decodeChunkList } from "./local_blob_service.ts";
import { checkStoredDirectory } from "./memory_directory_service.ts";

const HEX64 = /^[0-9a-f]{64}$/;

interface Recent {
  digest: Uint8Array;
  path: string;
  shard: string;
}

/**
 * Shard directories `base/<2 hex>` changed at or after `since` (ms), with
 * their entries. A rename into a shard updates its mtime (in the same
 * journal transaction as the new entry), so older shards are skipped unread.
 */
async function recentShards(
  base: string,
  since: number,
): Promise<{ shard: string; dir: string; names: string[] }[]> {
  const out: { shard: string; dir: string; names: string[] }[] = [];
  let shards: string[];
  try {
    shards = await fsp.readdir(base);
  } catch {
    return out;
  }
  for (const shard of shards.sort()) {
    if (!/^[0-9a-f]{2}$/.test(shard)) continue;
    const dir = join(base, shard);
    try {
      const st = await fsp.stat(dir);
      if (Math.max(st.mtimeMs, st.ctimeMs) < since) continue;
      out.push({ shard, dir, names: (await fsp.readdir(dir)).sort() });
    } catch {
      continue;
    }
  }
  return out;
}

const OBJECT_KINDS = ["chunks", "blobs", "directories"];

/**
 * Deletes the temporary files named `<prefix>...` (one dead process's, see
 * ./data_dir_sync.ts) from shard directories changed since `since` (ms).
 * Returns how many were deleted.
 */
export async function removeTempFiles(
  dataDir: string,
  since: number,
  prefix: string,
): Promise<number> {
  let n = 0;
  for (const kind of OBJECT_KINDS) {
    for (
      const { dir, names } of await recentShards(
        join(dataDir, "castore", kind),
        since,
      )
    ) {
      for (const name of names) {
        if (!name.startsWith(prefix)) continue;
        fs.rmSync(join(dir, name), { force: true });
        n++;
      }
    }
  }
  return n;
}

/** Objects in `base/<shard>/<hex>` modified at or after `since` (ms). */
async function recentObjects(base: string, since: number): Promise<Recent[]> {
  const out: Recent[] = [];
  for (const { shard, dir, names } of await recentShards(base, since)) {
    for (const name of names) {
      if (!HEX64.test(name) || !name.startsWith(shard)) continue;
      const path = join(dir, name);
      try {
        const f = await fsp.lstat(path);
        if (Math.max(f.mtimeMs, f.ctimeMs) < since) continue;
      } catch {
        continue;
      }
      out.push({ digest: digestFromHex(name), path, shard: dir });
    }
  }
  return out;
}

function readOrUndefined(path: string): Uint8Array | undefined {
  try {
    const b = fs.readFileSync(path);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  } catch {
    return undefined;
  }
}

/** Whether a chunk file holds the chunk its name says. */
function chunkIsGood(path: string, digest: Uint8Array): boolean {
  const compressed = readOrUndefined(path);
  if (!compressed) return false;
  try {
    const out = zlib.zstdDecompressSync(compressed, {
      maxOutputLength: 64 << 20,
    });
    const data = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    return digestEquals(blake3Sync(data), digest);
  } catch {
    return false;
  }
}

/** What {@linkcode repairSince} did. */
export interface RepairReport {
  /** Objects checked. */
  checked: number;
  /** Paths of the objects deleted as bad. */
  removed: string[];
  /**
   * Shard directories to fsync: those objects were deleted from (and, with
   * `fsyncGood`, those holding the objects that passed).
   */
  touched: string[];
}

/**
 * Checks every castore object under `dataDir` modified at or after `since`
 * (ms since the epoch) and deletes the bad ones (see the module notes).
 * With `fsyncGood`, also fsyncs every object that passed (for data
 * directories without syncfs).
 */
export async function repairSince(
  dataDir: string,
  since: number,
  options: { fsyncGood?: boolean } = {},
): Promise<RepairReport> {
  const castore = join(dataDir, "castore");
  const chunksDir = join(castore, "chunks");
  const blobsDir = join(castore, "blobs");
  const dirsDir = join(castore, "directories");
  const report: RepairReport = { checked: 0, removed: [], touched: [] };
  const touched = new Set<string>();
  const good: Recent[] = [];
  const remove = (o: Recent) => {
    fs.rmSync(o.path, { force: true });
    report.removed.push(o.path);
    touched.add(o.shard);
  };
  const at = (base: string, d: Uint8Array) => {
    let h = "";
    for (const b of d) h += b.toString(16).padStart(2, "0");
    return join(base, h.slice(0, 2), h);
  };

  for (const o of await recentObjects(chunksDir, since)) {
    report.checked++;
    if (chunkIsGood(o.path, o.digest)) good.push(o);
    else remove(o);
  }

  for (const o of await recentObjects(blobsDir, since)) {
    report.checked++;
    const b = readOrUndefined(o.path);
    let ok = false;
    if (b) {
      try {
        const list = decodeChunkList(b, o.digest);
        ok = list.chunks.every((c) => fs.existsSync(at(chunksDir, c.digest)));
      } catch {
        ok = false;
      }
    }
    if (ok) good.push(o);
    else remove(o);
  }

  let dirs = await recentObjects(dirsDir, since);
  const blobExists = (d: Uint8Array) =>
    fs.existsSync(at(blobsDir, d)) || fs.existsSync(at(chunksDir, d));
  let first = true;
  for (;;) {
    const kept: Recent[] = [];
    let removedAny = false;
    for (const o of dirs) {
      if (first) report.checked++;
      const b = readOrUndefined(o.path);
      let ok = false;
      if (b) {
        try {
          const d = checkStoredDirectory(o.digest, b);
          ok = d.directories.every((c) =>
            fs.existsSync(at(dirsDir, c.digest))
          ) && d.files.every((f) => blobExists(f.digest));
        } catch {
          ok = false;
        }
      }
      if (ok) kept.push(o);
      else {
        remove(o);
        removedAny = true;
      }
    }
    dirs = kept;
    first = false;
    if (!removedAny) break;
  }
  good.push(...dirs);

  if (options.fsyncGood) {
    for (const { path, shard } of good) {
      touched.add(shard);
      const fd = fs.openSync(path, "r");
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
  }
  report.touched = [...touched];
  return report;
}
