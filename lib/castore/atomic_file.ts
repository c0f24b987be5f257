/**
 * Crash-safe files for the local data directory: every object is written to
 * a temporary file in `<dataDir>/tmp/`, fsynced, then renamed into place
 * (rename is atomic, so readers see the whole object or nothing; several
 * processes writing the same content-addressed object race harmlessly), and
 * the directory that received it is fsynced before anything that refers to
 * it is written.
 *
 * @module
 */
import * as fs from "node:fs/promises";
import * as fsSync from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { Code, ConnectError } from "@connectrpc/connect";
import { digestFromHex } from "./digest.ts";
import { writeAll } from "./file_io.ts";

/** Temporary files older than this are leftovers of a crash and removed on open. */
export const STALE_TEMP_MS = 15 * 60 * 1000;

const HEX_SHARDS = Array.from(
  { length: 256 },
  (_, i) => i.toString(16).padStart(2, "0"),
);

function errCode(e: unknown): string | undefined {
  return (e as { code?: string })?.code;
}

function describe(e: unknown): string {
  switch (errCode(e)) {
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EROFS":
      return "read-only file system";
    case "ENOSPC":
      return "no space left on device";
    case "ENOTDIR":
      return "not a directory";
    case "ENOENT":
      return "no such file or directory";
    default:
      return (e as Error)?.message ?? String(e);
  }
}

/**
 * Prepares `<dataDir>/tmp` and `<dataDir>/<sub>/<00..ff>` for each `sub`,
 * checks the data directory is writable, and removes stale temporary files.
 * Throws an `Error` with one clear line naming the path on failure, e.g.
 * `cannot write to /var/lib/snix: permission denied (use --data-dir DIR or run as root)`.
 */
export async function prepareDataDir(
  dataDir: string,
  subdirs: string[],
): Promise<void> {
  const hint = "(use --data-dir DIR or run as root)";
  try {
    const st = await fs.stat(dataDir).catch((e) => {
      if (errCode(e) === "ENOENT") return undefined;
      throw e;
    });
    if (st && !st.isDirectory()) {
      throw new Error(`data directory ${dataDir} is not a directory ${hint}`);
    }
    await fs.mkdir(join(dataDir, "tmp"), { recursive: true });
    for (const sub of subdirs) {
      const base = join(dataDir, sub);
      // The last shard is created last: if it exists, all do.
      if (await exists(join(base, "ff"))) continue;
      for (const s of HEX_SHARDS) {
        await fs.mkdir(join(base, s), { recursive: true });
      }
    }
    const probe = join(dataDir, "tmp", `probe-${process.pid}-${randomHex()}`);
    await fs.writeFile(probe, "");
    await fs.rm(probe, { force: true });
  } catch (e) {
    if (e instanceof Error && e.message.startsWith("data directory ")) throw e;
    throw new Error(`cannot write to ${dataDir}: ${describe(e)} ${hint}`);
  }
  await removeStaleTemps(join(dataDir, "tmp"));
}

/** Deletes files in `tmpDir` not modified for {@linkcode STALE_TEMP_MS}. */
export async function removeStaleTemps(
  tmpDir: string,
  maxAgeMs = STALE_TEMP_MS,
): Promise<number> {
  let removed = 0;
  const now = Date.now();
  let names: string[];
  try {
    names = await fs.readdir(tmpDir);
  } catch {
    return 0;
  }
  for (const n of names) {
    const p = join(tmpDir, n);
    // A pack being written (./pack.ts) by a live process may sit unchanged
    // for long (a slow client of `nix copy`): only a dead writer's is stale.
    const writer = /^pack-(\d+)-/.exec(n);
    if (writer && processAlive(Number(writer[1]))) continue;
    try {
      const st = await fs.stat(p);
      if (st.isFile() && now - st.mtimeMs > maxAgeMs) {
        await fs.rm(p, { force: true });
        removed++;
      }
    } catch { /* raced with its writer or another cleaner */ }
  }
  return removed;
}

/** Whether process `pid` exists (as far as this pid namespace tells). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errCode(e) !== "ESRCH";
  }
}

/** Whether a path exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await fs.stat(path);
    return true;
  } catch (e) {
    if (errCode(e) === "ENOENT" || errCode(e) === "ENOTDIR") return false;
    throw storageError(`cannot stat ${path}`, e);
  }
}

/** 16 random hex characters. */
export function randomHex(): string {
  const b = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** A `ConnectError` for a failed storage operation (`ResourceExhausted` when the disk is full). */
export function storageError(what: string, e: unknown): ConnectError {
  const code = errCode(e) === "ENOSPC" ? Code.ResourceExhausted : Code.Internal;
  return new ConnectError(`${what}: ${describe(e)}`, code);
}

/**
 * Writes `parts` to a new temporary file in `tmpDir`, fsyncs it and renames
 * it to `finalPath` (replacing any file there, which for content-addressed
 * objects has the same content). The caller fsyncs the target directory
 * (see {@linkcode fsyncDir}) before relying on the rename being durable.
 */
export async function writeFileAtomic(
  tmpDir: string,
  finalPath: string,
  parts: Uint8Array[],
): Promise<void> {
  const tmp = join(tmpDir, `${process.pid}-${randomHex()}.tmp`);
  let fh: fs.FileHandle | undefined;
  try {
    fh = await fs.open(tmp, "wx", 0o644);
    for (const p of parts) {
      let off = 0;
      while (off < p.length) {
        const { bytesWritten } = await fh.write(p, off, p.length - off);
        off += bytesWritten;
      }
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fs.rename(tmp, finalPath);
  } catch (e) {
    await fh?.close().catch(() => {});
    await fs.rm(tmp, { force: true }).catch(() => {});
    throw storageError(`cannot write ${finalPath}`, e);
  }
}

/** fsyncs a directory, making renames into it durable. */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: fs.FileHandle | undefined;
  try {
    fh = await fs.open(dir, "r");
    await fh.sync();
  } catch (e) {
    throw storageError(`cannot sync directory ${dir}`, e);
  } finally {
    await fh?.close().catch(() => {});
  }
}

/**
 * Reads a whole file, or `undefined` if it does not exist. Other errors are
 * `Internal` storage errors naming the path.
 */
export async function readFileIfExists(
  path: string,
): Promise<Uint8Array | undefined> {
  try {
    const b = await fs.readFile(path);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  } catch (e) {
    if (errCode(e) === "ENOENT") return undefined;
    throw storageError(`cannot read ${path}`, e);
  }
}

/** fsync of an open descriptor on the runtime's thread pool (many may run at once). */
function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) =>
    fsSync.fsync(fd, (e) => (e ? reject(e) : resolve()))
  );
}

/** Whether a path exists (synchronous: a stat of a warm directory takes microseconds and makes no error object). */
export function existsNow(path: string): boolean {
  return fsSync.existsSync(path);
}

/**
 * Whether a sharded object directory (`dir/<00..ff>/...`) holds no object
 * (a missing directory holds none). 256 small readdirs.
 */
export function shardsEmpty(dir: string): boolean {
  for (const s of HEX_SHARDS) {
    try {
      if (fsSync.readdirSync(join(dir, s)).length > 0) return false;
    } catch (e) {
      if (errCode(e) !== "ENOENT") return false;
    }
  }
  return true;
}

/** Writes all of `parts` to the open file `fd`, in order. */
function writeParts(fd: number, parts: Uint8Array[]): void {
  for (const p of parts) writeAll(fd, p);
}

/** After a failed write: closes `fd` (if open) and removes the temporary file. */
function discardTemp(fd: number | undefined, tmp: string): void {
  if (fd !== undefined) {
    try {
      fsSync.closeSync(fd);
    } catch { /* already failing */ }
  }
  try {
    fsSync.rmSync(tmp, { force: true });
  } catch { /* best effort */ }
}

/**
 * Like {@linkcode writeFileAtomic} (temp file, fsync, rename; the caller
 * fsyncs the target directory), but opens, writes, closes and renames with
 * synchronous calls and only waits for the fsync on the thread pool. Measured
 * on the 1 GiB mixed corpus, the four extra thread-pool round trips per
 * object of the asynchronous version cost more main-thread time than the
 * (page cache) writes themselves; the fsync, the one slow step, still
 * overlaps with other writes, so many objects can be in flight and the file
 * system commits their fsyncs together.
 */
export async function writeFileAtomicFast(
  tmpDir: string,
  finalPath: string,
  parts: Uint8Array[],
): Promise<void> {
  const tmp = join(tmpDir, tempName());
  let fd: number | undefined;
  try {
    fd = fsSync.openSync(tmp, "wx", 0o644);
    writeParts(fd, parts);
    await fsyncFd(fd);
    fsSync.closeSync(fd);
    fd = undefined;
    fsSync.renameSync(tmp, finalPath);
  } catch (e) {
    discardTemp(fd, tmp);
    throw storageError(`cannot write ${finalPath}`, e);
  }
}

/**
 * Writes `parts` to a new temporary file `tempPath` and renames it to
 * `finalPath`, all with synchronous calls and WITHOUT fsync: a killed process
 * never leaves a partial file under the final name, but after a power loss
 * the file may come back empty or truncated. Only for writes covered by a
 * durable "unsynced" marker until a later syncfs (see ./data_dir_sync.ts).
 * `tempPath` must not exist; ./data_dir_sync.ts puts it beside `finalPath`:
 * on ext4 an inode is then allocated near that shard directory instead of
 * all in one temporary directory (measured: creating 20,000 files ~68 vs
 * ~110 µs per open on this machine), and the rename stays in one directory.
 */
export function writeFileUnsynced(
  tempPath: string,
  finalPath: string,
  parts: Uint8Array[],
): void {
  const tmp = tempPath;
  let fd: number | undefined;
  try {
    fd = fsSync.openSync(tmp, "wx", 0o644);
    writeParts(fd, parts);
    fsSync.closeSync(fd);
    fd = undefined;
    fsSync.renameSync(tmp, finalPath);
  } catch (e) {
    discardTemp(fd, tmp);
    throw storageError(`cannot write ${finalPath}`, e);
  }
}

// Temporary names: pid, a random tag drawn once per process, a counter.
// Unique within the process, and across processes (a reused pid draws a
// new tag); "wx" refuses a clash anyway. Cheaper than 8 random bytes per file
// (measured ~0.3 s of main-thread time per 1 GiB import).
const TEMP_TAG = randomHex();
let tempCounter = 0;
function tempName(): string {
  return `${process.pid}-${TEMP_TAG}-${(tempCounter++).toString(36)}.tmp`;
}

/** One directory's fsyncs: the one running and the one queued after it. */
interface DirSync {
  running?: Promise<void>;
  next?: Promise<void>;
}
const dirSyncs = new Map<string, DirSync>();

function startDirSync(dir: string, s: DirSync): Promise<void> {
  const p: Promise<void> = (async () => {
    let fd: number | undefined;
    try {
      fd = fsSync.openSync(dir, "r");
      await fsyncFd(fd);
    } catch (e) {
      throw storageError(`cannot sync directory ${dir}`, e);
    } finally {
      if (fd !== undefined) {
        try {
          fsSync.closeSync(fd);
        } catch { /* nothing to do */ }
      }
    }
  })().finally(() => {
    if (s.running === p) {
      s.running = undefined;
      if (!s.next && dirSyncs.get(dir) === s) dirSyncs.delete(dir);
    }
  });
  s.running = p;
  return p;
}

/**
 * fsyncs a directory like {@linkcode fsyncDir}, shared between concurrent
 * callers: the promise settles after an fsync of `dir` that STARTED after
 * this call (so it covers every rename the caller made before calling).
 * While one fsync runs, all callers arriving meanwhile share the single
 * fsync queued after it, so N writers into one shard cost about two fsyncs,
 * not N.
 */
export function fsyncDirShared(dir: string): Promise<void> {
  let s = dirSyncs.get(dir);
  if (!s) {
    s = {};
    dirSyncs.set(dir, s);
  }
  if (s.next) return s.next;
  if (!s.running) return startDirSync(dir, s);
  const st = s;
  const next = st.running!.then(() => {}, () => {}).then(() => {
    st.next = undefined;
    return startDirSync(dir, st);
  });
  st.next = next;
  return next;
}

/**
 * Reads a whole file synchronously, or `undefined` if it does not exist
 * (checked first without an exception, the common case for optional
 * objects, unless `usuallyPresent`: then a miss costs an exception instead). Other errors are `Internal` storage errors naming the path.
 */
export function readFileNow(
  path: string,
  usuallyPresent = false,
): Uint8Array | undefined {
  if (!usuallyPresent && !fsSync.existsSync(path)) return undefined;
  try {
    const b = fsSync.readFileSync(path);
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  } catch (e) {
    if (errCode(e) === "ENOENT") return undefined;
    throw storageError(`cannot read ${path}`, e);
  }
}

/**
 * The digests stored in a sharded directory `base/<2 hex>/<64 hex>`, in
 * order; files that are not digest-named (temporary files) are skipped.
 */
export async function* listShardedDigests(
  base: string,
): AsyncIterable<Uint8Array> {
  for (const shard of (await fs.readdir(base)).sort()) {
    if (!/^[0-9a-f]{2}$/.test(shard)) continue;
    let names: string[];
    try {
      names = await fs.readdir(join(base, shard));
    } catch {
      continue;
    }
    for (const n of names.sort()) {
      if (/^[0-9a-f]{64}$/.test(n) && n.startsWith(shard)) {
        yield digestFromHex(n);
      }
    }
  }
}
