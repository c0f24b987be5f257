/**
 * Durability of the local castore by commits instead of one fsync per
 * object.
 *
 * Objects (chunks, chunk lists, directories) are written to a temporary file
 * and renamed into place without fsync (./atomic_file.ts
 * `writeFileUnsynced`): a killed process never leaves a partial object under
 * its final name, since the kernel keeps what was written. Only a power loss
 * (or kernel crash) can bring back a renamed object empty or truncated, and as
 * writers skip objects that exist (dedup) it would stay broken. So:
 *
 * 1. Before its first unsynced write a process creates a marker
 *    `<dataDir>/castore/unsynced/m-<pid>-<boot id>-<tag>-<n>` and fsyncs it
 *    and its directory. Every unsynced object is newer than a durable marker.
 * 2. A commit is one syncfs(2) of the data directory's file system (via FFI,
 *    lib/runtime): every object written before it is durable afterwards, also
 *    those another process wrote and this one skipped as existing. The
 *    commit creates a fresh marker just before the syncfs (made durable by
 *    it) and then removes the old one; the fresh one is removed too if no
 *    object was written meanwhile. Concurrent commits share syncfs calls.
 * 3. Markers of dead processes are recovered, each claimed by an atomic
 *    rename so one process recovers it. A marker from an earlier boot means
 *    a power loss or crash may have cut objects written after its mtime:
 *    whoever opens the data directory verifies those and deletes the bad
 *    ones (./unsynced_recovery.ts) before it is removed, and other openers
 *    wait for that. Re-importing then writes them again. A marker from this
 *    boot (the kernel survived, so the objects are whole) only needs a
 *    syncfs and its dead writer's temporary files removed: the next commit
 *    of any process does that, so opening never waits for it (a syncfs can
 *    take seconds behind other processes' dirty data, and a read-only
 *    command needs no durability of what others wrote).
 *
 * What is durable when: a writer's `close()` from the services' plain
 * `put()` (gRPC Put, nix-daemon, anything) resolves only after a commit, so
 * an acknowledged blob or directory put is on disk. Ingestion
 * (./ingest_tree.ts, ./ingest_nar.ts) uses `putDeferred()` writers and
 * commits once at its end, before it returns the root entry; PathInfos
 * (lib/store) are written after that with their own fsync. Without syncfs
 * (no FFI: Deno without --allow-ffi) everything falls back to the fsync of
 * each object and its shard directory, as before.
 *
 * @module
 */
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import {
  fsyncDirShared,
  randomHex,
  storageError,
  writeFileAtomicFast,
  writeFileUnsynced,
} from "./atomic_file.ts";
import type { BlobService, BlobWriter } from "./blob_service.ts";
import type { DirectoryPutter, DirectoryService } from "./directory_service.ts";

/** Recovery checks objects modified this long before a marker too (clock steps). */
export const RECOVERY_SLACK_MS = 10 * 60 * 1000;
/** How long an opener waits for another process's recovery of the data directory. */
const RECOVERY_WAIT_MS = 10 * 60 * 1000;

/** A service whose writes can be made durable together, by one commit. */
export interface DeferredDurability {
  /** The commit point shared by everything written into one data directory. */
  readonly syncPoint: SyncPoint;
}

/** Commits writes made without per-object durability. */
export interface SyncPoint {
  /** Resolves once everything written before the call is durable. */
  commit(): Promise<void>;
}

/**
 * Writes of one ingestion that become visible together (a pack file, see
 * ./pack.ts): nothing of it is readable before `finish()`, and `abort()`
 * drops all of it.
 */
export interface WriteSession {
  /** Publishes everything written in the session, durably. */
  finish(): Promise<void>;
  /** Drops everything written in the session. */
  abort(): Promise<void>;
}

/** A blob service with writers whose close() does not wait for durability. */
export interface DeferredBlobService extends DeferredDurability {
  /** A writer like `put()`'s, durable only after `syncPoint.commit()` (or its session's finish). */
  putDeferred(session?: WriteSession): BlobWriter;
  /** A session gathering deferred writes (optional; none: plain deferred writes). */
  openSession?(): WriteSession | undefined;
}

/** A directory service with putters whose close() does not wait for durability. */
export interface DeferredDirectoryService extends DeferredDurability {
  /** A putter like `put()`'s, durable only after `syncPoint.commit()` (or its session's finish). */
  putDeferred(session?: WriteSession): DirectoryPutter;
  /** A session gathering deferred writes (optional; none: plain deferred writes). */
  openSession?(): WriteSession | undefined;
}

/**
 * Writers for one ingestion: deferred ones where the service supports them,
 * plain ones elsewhere; `commit()` makes everything written through them
 * durable (call it before anything refers to the result durably).
 */
export class WriteBatch {
  #points = new Set<SyncPoint>();
  #blobSession: WriteSession | undefined;
  #directorySession: WriteSession | undefined;
  constructor(
    readonly blobs: BlobService,
    readonly directories: DirectoryService,
  ) {}

  /** A blob writer. */
  putBlob(): BlobWriter {
    const d = this.blobs as Partial<DeferredBlobService>;
    if (typeof d.putDeferred === "function" && d.syncPoint) {
      this.#points.add(d.syncPoint);
      this.#blobSession ??= d.openSession?.();
      return d.putDeferred(this.#blobSession);
    }
    return this.blobs.put();
  }

  /** A directory putter. */
  putDirectories(): DirectoryPutter {
    const d = this.directories as Partial<DeferredDirectoryService>;
    if (typeof d.putDeferred === "function" && d.syncPoint) {
      this.#points.add(d.syncPoint);
      this.#directorySession ??= d.openSession?.();
      return d.putDeferred(this.#directorySession);
    }
    return this.directories.put();
  }

  /**
   * Makes every write of this batch durable and visible: blobs first, then
   * the directories naming them.
   */
  async commit(): Promise<void> {
    await this.#blobSession?.finish();
    await this.#directorySession?.finish();
    await Promise.all([...this.#points].map((p) => p.commit()));
  }

  /** Drops what the batch's sessions gathered (after a failed ingestion). */
  async abort(): Promise<void> {
    await Promise.allSettled([
      this.#blobSession?.abort(),
      this.#directorySession?.abort(),
    ]);
  }
}

function errCode(e: unknown): string | undefined {
  return (e as { code?: string })?.code;
}

let bootIdCache: string | undefined;
/** This boot's id (32 hex digits), or "unknown" where /proc does not tell. */
export function bootId(): string {
  if (bootIdCache === undefined) {
    try {
      bootIdCache = fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8")
        .trim().replaceAll("-", "");
      if (!/^[0-9a-f]{32}$/.test(bootIdCache)) bootIdCache = "unknown";
    } catch {
      bootIdCache = "unknown";
    }
  }
  return bootIdCache;
}

/** Whether process `pid` exists (on this machine, in this pid namespace). */
export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errCode(e) !== "ESRCH";
  }
}

type Syncfs = (fd: number) => Promise<void>;

let syncfsLoader: Promise<Syncfs | undefined> | undefined;
let syncfsDisabled = false;

/** syncfs(2) from lib/runtime, or `undefined` where FFI is not available. */
function loadSyncfs(): Promise<Syncfs | undefined> {
  if (syncfsDisabled) return Promise.resolve(undefined);
  syncfsLoader ??= (async () => {
    try {
      const { ffiAvailable, libc } = await import("../runtime/libc.ts");
      if (!ffiAvailable()) return undefined;
      const lc = await libc();
      return (fd: number) => lc.syncfs(fd);
    } catch {
      return undefined; // e.g. Deno without --allow-ffi
    }
  })();
  return syncfsLoader;
}

/**
 * @internal For tests: with `false`, data directories opened for the first
 * time afterwards fsync every object, as without FFI.
 */
export function setSyncfsForTests(enabled: boolean): void {
  syncfsDisabled = !enabled;
}

const TAG = randomHex().slice(0, 8);
let markerCounter = 0;
/**
 * Unsynced objects are written to `<shard>/.tmp-<pid>-<tag>-<n>` first; the
 * pid and tag are those of the process's markers, so recovering a dead
 * process's marker also finds its leftover temporary files.
 */
const TEMP_PREFIX = `.tmp-${process.pid}-${TAG}-`;
const opened = new Map<string, Promise<DataDirSync>>();

/** Parsed marker name `m-<pid>-<boot>-<tag>-<n>`. */
function parseMarker(
  name: string,
): { pid: number; boot: string; tempPrefix?: string } | undefined {
  const m = /^m-(\d+)-([0-9a-z]+)-(?:([0-9a-f]+)-)?/.exec(name);
  if (!m) return undefined;
  return {
    pid: Number(m[1]),
    boot: m[2],
    tempPrefix: m[3] ? `.tmp-${m[1]}-${m[3]}-` : undefined,
  };
}

/** Parsed claim name `r-<pid>-<boot>--<marker name>` (a marker being recovered). */
function parseClaim(
  name: string,
): { pid: number; boot: string; marker: string } | undefined {
  const m = /^r-(\d+)-([0-9a-z]+)--(m-.*)$/.exec(name);
  return m ? { pid: Number(m[1]), boot: m[2], marker: m[3] } : undefined;
}

/** The commit point of one data directory in this process (see the module notes). */
export class DataDirSync implements SyncPoint {
  /** Whether writes are unsynced until a commit (syncfs available). */
  readonly deferred: boolean;
  readonly #dataDir: string;
  readonly #markerDir: string;
  readonly #syncfs: Syncfs | undefined;
  #marker: string | undefined;
  #creating: Promise<void> | undefined;
  #writes = 0;
  #running: Promise<void> | undefined;
  #next: Promise<void> | undefined;
  #recovery: Promise<void> | undefined;

  private constructor(dataDir: string, syncfs: Syncfs | undefined) {
    this.#dataDir = dataDir;
    this.#markerDir = join(dataDir, "castore", "unsynced");
    this.#syncfs = syncfs;
    this.deferred = syncfs !== undefined;
  }

  /**
   * The commit point of `dataDir` (one per directory and process). Each
   * open first recovers what dead processes left unsynced (see the module
   * notes; without such markers that costs one directory listing).
   */
  static async open(dataDir: string): Promise<DataDirSync> {
    const key = resolve(dataDir);
    let p = opened.get(key);
    if (!p) {
      p = (async () => {
        const s = new DataDirSync(key, await loadSyncfs());
        try {
          await fsp.mkdir(s.#markerDir, { recursive: true });
        } catch (e) {
          throw new Error(
            `cannot write to ${dataDir}: ${
              (e as Error).message
            } (use --data-dir DIR or run as root)`,
          );
        }
        return s;
      })();
      p.catch(() => opened.delete(key));
      opened.set(key, p);
    }
    const s = await p;
    await s.recover();
    return s;
  }

  /** The marker directory (for tests). */
  get markerDir(): string {
    return this.#markerDir;
  }

  /**
   * Writes an object atomically (temp file, rename): unsynced under a
   * durable marker when deferred, else with fsync (the caller then fsyncs
   * the shard directory, see {@linkcode dirsDurable}).
   */
  async write(
    tmpDir: string,
    finalPath: string,
    parts: Uint8Array[],
  ): Promise<void> {
    if (!this.deferred) {
      await writeFileAtomicFast(tmpDir, finalPath, parts);
      return;
    }
    if (this.#marker === undefined) await this.#ensureMarker();
    writeFileUnsynced(
      `${dirname(finalPath)}/${TEMP_PREFIX}${(this.#writes++).toString(36)}`,
      finalPath,
      parts,
    );
  }

  /**
   * Makes renames into `dirs` durable where objects are fsynced one by one
   * (no syncfs); a no-op when deferred (the commit covers them).
   */
  async dirsDurable(dirs: Iterable<string>): Promise<void> {
    if (this.deferred) return;
    await Promise.all([...dirs].map(fsyncDirShared));
  }

  /**
   * Resolves after a syncfs that STARTED after this call, so everything
   * written before it is durable. Callers arriving while one runs share the
   * single syncfs queued after it. A no-op without syncfs (each object was
   * fsynced).
   */
  commit(): Promise<void> {
    if (!this.deferred) return Promise.resolve();
    if (this.#next) return this.#next;
    if (!this.#running) return this.#startSync();
    const next = this.#running.then(() => {}, () => {}).then(() => {
      this.#next = undefined;
      return this.#startSync();
    });
    this.#next = next;
    return next;
  }

  #startSync(): Promise<void> {
    const p = this.#sync().finally(() => {
      if (this.#running === p) this.#running = undefined;
    });
    this.#running = p;
    return p;
  }

  async #sync(): Promise<void> {
    const old = this.#marker;
    const start = this.#writes;
    let fresh: string | undefined;
    if (old !== undefined) {
      // Created before the syncfs, which makes it durable: it covers every
      // write from now on, so the old marker can go once the syncfs is done.
      fresh = this.#newMarkerName();
      try {
        fs.writeFileSync(fresh, "", { flag: "wx" });
      } catch (e) {
        throw storageError(`cannot create ${fresh}`, e);
      }
      this.#marker = fresh;
    }
    const adopted = this.#claimDead(true) ?? [];
    await this.#syncNow();
    if (old !== undefined) removeQuietly(old);
    // Everything the dead writers renamed into place was written before
    // that syncfs started: durable now.
    for (const { claim, tempPrefix } of adopted) {
      await this.#recoverOne(claim, true, tempPrefix, false);
    }
    if (
      fresh !== undefined && this.#marker === fresh && this.#writes === start
    ) {
      // Nothing written since the syncfs began: nothing is unsynced.
      this.#marker = undefined;
      removeQuietly(fresh);
    }
  }

  /** One syncfs of the data directory's file system. */
  async #syncNow(): Promise<void> {
    let fd: number | undefined;
    try {
      fd = fs.openSync(this.#dataDir, "r");
      await this.#syncfs!(fd);
    } catch (e) {
      throw storageError(`cannot sync ${this.#dataDir}`, e);
    } finally {
      if (fd !== undefined) {
        try {
          fs.closeSync(fd);
        } catch { /* nothing to do */ }
      }
    }
  }

  #newMarkerName(): string {
    return join(
      this.#markerDir,
      `m-${process.pid}-${bootId()}-${TAG}-${(markerCounter++).toString(36)}`,
    );
  }

  /** Creates a durable marker before the first unsynced write. */
  #ensureMarker(): Promise<void> {
    this.#creating ??= (async () => {
      const name = this.#newMarkerName();
      let fh: fsp.FileHandle | undefined;
      try {
        fh = await fsp.open(name, "wx");
        await fh.sync();
        await fh.close();
        fh = undefined;
        fh = await fsp.open(this.#markerDir, "r");
        await fh.sync();
      } catch (e) {
        throw storageError(`cannot create ${name}`, e);
      } finally {
        await fh?.close().catch(() => {});
      }
      this.#marker = name;
    })().finally(() => {
      this.#creating = undefined;
    });
    return this.#creating;
  }

  /**
   * Recovers the markers of dead processes (see the module notes); waits
   * while another live process recovers one. Run by {@linkcode open};
   * concurrent calls in one process share one run.
   */
  recover(): Promise<void> {
    this.#recovery ??= this.#recoverAll().finally(() => {
      this.#recovery = undefined;
    });
    return this.#recovery;
  }

  async #recoverAll(): Promise<void> {
    const deadline = Date.now() + RECOVERY_WAIT_MS;
    for (;;) {
      // Without syncfs there are no commits to leave this boot's markers
      // to: they are recovered here too.
      const claimed = this.#claimDead(!this.deferred);
      if (claimed === undefined) return;
      for (const { claim, sameBoot, tempPrefix } of claimed) {
        await this.#recoverOne(claim, sameBoot, tempPrefix, true);
      }
      if (!claimed.othersRecovering) return;
      if (Date.now() > deadline) {
        throw new Error(
          `data directory ${this.#dataDir}: another process has been recovering unsynced objects for too long (see ${this.#markerDir})`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Claims the markers of dead processes (and the claims of dead
   * recoverers): those of earlier boots, and with `sameBoot` also this
   * boot's. `undefined` if the marker directory is gone;
   * `othersRecovering` when a live process holds a claim this one would
   * have taken.
   */
  #claimDead(
    sameBoot: boolean,
  ): Claimed[] & { othersRecovering?: boolean } | undefined {
    const me = bootId();
    const out: Claimed[] & { othersRecovering?: boolean } = [];
    let names: string[];
    try {
      names = fs.readdirSync(this.#markerDir);
    } catch (e) {
      if (errCode(e) === "ENOENT") return undefined;
      throw e;
    }
    for (const name of names) {
      const m = parseMarker(name);
      const c = m ? undefined : parseClaim(name);
      let original: { boot: string; tempPrefix?: string };
      if (m) {
        if (m.boot === me && pidAlive(m.pid)) continue;
        original = m;
      } else if (c) {
        original = parseMarker(c.marker) ?? { boot: "unknown" };
        if (!sameBoot && original.boot === me) continue;
        if (c.boot === me && c.pid !== process.pid && pidAlive(c.pid)) {
          out.othersRecovering = true;
          continue;
        }
        // A dead recoverer's claim, or our own from a failed earlier run.
      } else continue;
      if (!sameBoot && original.boot === me) continue;
      const marker = m ? name : c!.marker;
      const claim = join(this.#markerDir, `r-${process.pid}-${me}--${marker}`);
      try {
        fs.renameSync(join(this.#markerDir, name), claim);
      } catch (e) {
        if (errCode(e) === "ENOENT") continue; // someone else claimed it
        throw e;
      }
      out.push({
        claim,
        sameBoot: original.boot === me,
        tempPrefix: original.tempPrefix,
      });
    }
    return out;
  }

  /**
   * Recovers one claimed marker; `sync`: whether to syncfs here (a commit
   * calls this after its own syncfs).
   */
  async #recoverOne(
    claim: string,
    sameBoot: boolean,
    tempPrefix: string | undefined,
    sync: boolean,
  ): Promise<void> {
    const since = (await fsp.stat(claim)).mtimeMs - RECOVERY_SLACK_MS;
    const { removeTempFiles, repairSince } = await import(
      "./unsynced_recovery.ts"
    );
    // The dead process's half-written temporary files, beside the objects.
    if (tempPrefix) await removeTempFiles(this.#dataDir, since, tempPrefix);
    if (!sameBoot || !this.deferred) {
      // Objects newer than the marker may have been cut by a power loss (or,
      // without syncfs, cannot be made durable here): check them.
      const { touched } = await repairSince(this.#dataDir, since, {
        fsyncGood: !this.deferred,
      });
      if (!this.deferred) await Promise.all(touched.map(fsyncDirShared));
    }
    if (this.deferred && sync) await this.#syncNow();
    removeQuietly(claim);
  }
}

/** A marker claimed for recovery. */
interface Claimed {
  claim: string;
  /** Whether the marker is from this boot. */
  sameBoot: boolean;
  /** The prefix of its writer's temporary files. */
  tempPrefix?: string;
}

function removeQuietly(path: string): void {
  try {
    fs.rmSync(path, { force: true });
  } catch { /* a leftover marker only costs a check at the next open */ }
}
