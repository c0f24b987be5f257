/**
 * The daemon's view of the store: Nix-shaped queries and additions over the
 * three services (blobs, directories, path infos).
 *
 * Writes are careful in one way above all: a path is recorded only after its
 * contents are stored and checked (NAR hash and size as declared) and every
 * reference is valid; a failed addition leaves nothing reachable.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { Entry } from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import {
  EntrySchema,
  FileEntrySchema,
} from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import type { PathInfo } from "../../proto/gen/snix/store/protos/pathinfo_pb.ts";
import type { BlobService } from "../castore/blob_service.ts";
import type { DirectoryService } from "../castore/directory_service.ts";
import { ingestNar } from "../castore/ingest_nar.ts";
import { renderNar } from "../castore/render_nar.ts";
import {
  createHasher,
  type HashAlgo,
  isHashAlgo,
  makeHash,
  sha256,
} from "../nix/hash.ts";
import { decodeNixBase32, encodeNixBase32 } from "../nix/nixbase32.ts";
import {
  makeFixedOutputPath,
  makeTextPath,
  StorePath,
} from "../nix/store_path.ts";
import { calculateNar, rememberNar } from "../store/nar_calculation.ts";
import type { PathInfoService } from "../store/path_info_service.ts";
import {
  bytesEqual,
  fromNixPathInfo,
  makePathInfo,
  type NixPathInfo,
  pathInfoStorePath,
  toNixPathInfo,
} from "../store/path_info.ts";

/** The services the daemon serves. */
export interface DaemonServices {
  blobs: BlobService;
  directories: DirectoryService;
  pathInfos: PathInfoService;
}

/** An error the client caused or should see; the connection stays usable. */
export class DaemonError extends Error {
  /** Creates an error with a one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "DaemonError";
  }
}

/** How long a cached PathInfo is trusted (signatures added by other processes show up after this). */
export const CACHE_TTL_MS = 2000;
/** How many PathInfos the daemon keeps cached. */
const CACHE_ENTRIES = 50_000;

/** A cached PathInfo with the store path it describes. */
interface CacheEntry {
  info: PathInfo;
  /** The store path of the record (parsed once). */
  sp: StorePath;
  /** When it was read (ms). */
  at: number;
  /** Nix's fields, computed on first use. */
  nix?: NixPathInfo;
}

/** A path whose NAR is stored and checked, waiting for its references. */
export interface PendingPath {
  info: NixPathInfo;
  pathInfo: PathInfo;
}

/** Content-address method of an addition. */
export type AddMethod = "nar" | "flat" | "text";

/** Nix-shaped access to the store. */
export class DaemonStore {
  /** Wraps the services; with `readOnly`, every write is refused. */
  constructor(readonly services: DaemonServices, readonly readOnly = false) {}

  /**
   * Recently seen PathInfos by hash part. A path's record changes only when
   * signatures are added, so a hit may miss signatures another process added
   * in the last {@linkcode CACHE_TTL_MS}; misses are never cached (a path
   * added elsewhere is seen at once).
   */
  #cache = new Map<string, CacheEntry>();

  #remember(info: PathInfo): PathInfo {
    let sp: StorePath;
    try {
      sp = pathInfoStorePath(info);
    } catch {
      return info; // not cacheable
    }
    const key = sp.hashPart;
    this.#cache.delete(key);
    this.#cache.set(key, { info, sp, at: Date.now() });
    if (this.#cache.size > CACHE_ENTRIES) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
    return info;
  }

  async #put(info: PathInfo): Promise<PathInfo> {
    const stored = this.#remember(await this.services.pathInfos.put(info));
    if (this.onPut) {
      try {
        this.onPut(pathInfoStorePath(stored).hashPart);
      } catch {
        // not a store path: nothing anybody could have cached
      }
    }
    return stored;
  }

  /**
   * Called with the hash part of every PathInfo this store writes (so that
   * other processes serving the same store can {@linkcode forget} it).
   */
  onPut: ((hashPart: string) => void) | undefined;

  /** Drops a cached PathInfo (another process wrote it). */
  forget(hashPart: string): void {
    this.#cache.delete(hashPart);
  }

  /** Throws unless writes are allowed. */
  checkWritable(what: string): void {
    if (this.readOnly) {
      throw new DaemonError(`${what}: this daemon is read-only (--read-only)`);
    }
  }

  /** The PathInfo of a store path (its name must match too), or undefined. */
  async pathInfo(sp: StorePath): Promise<PathInfo | undefined> {
    return (await this.#lookup(sp))?.info;
  }

  /** The fresh cache entry of a valid path (reading the service on a miss). */
  async #lookup(sp: StorePath): Promise<CacheEntry | undefined> {
    const hit = this.#cache.get(sp.hashPart);
    if (hit && Date.now() - hit.at < CACHE_TTL_MS) {
      return hit.sp.name === sp.name ? hit : undefined;
    }
    const info = await this.services.pathInfos.get(sp.digest);
    if (!info) {
      this.#cache.delete(sp.hashPart);
      return undefined;
    }
    this.#remember(info);
    const entry = this.#cache.get(sp.hashPart);
    if (entry?.info === info) {
      return entry.sp.name === sp.name ? entry : undefined;
    }
    // Not cacheable (a record whose entry name does not parse): not valid.
    return undefined;
  }

  /** Nix's ValidPathInfo fields for a path, or undefined if it is not valid. */
  async queryPathInfo(sp: StorePath): Promise<NixPathInfo | undefined> {
    const entry = await this.#lookup(sp);
    // Memoized per cache entry: the same object until the record is re-read,
    // so callers may key their own memos (an encoded reply) on it.
    return entry ? (entry.nix ??= toNixPathInfo(entry.info)) : undefined;
  }

  /** Whether a path is valid. */
  async isValid(sp: StorePath): Promise<boolean> {
    return (await this.pathInfo(sp)) !== undefined;
  }

  /** The full path whose hash part is `hashPart`, or undefined. */
  async pathFromHashPart(hashPart: string): Promise<StorePath | undefined> {
    if (hashPart.length !== 32) return undefined;
    let digest: Uint8Array;
    try {
      digest = decodeNixBase32(hashPart);
    } catch {
      return undefined;
    }
    const info = await this.services.pathInfos.get(digest);
    return info ? pathInfoStorePath(info) : undefined;
  }

  /** Paths whose references include `sp` (an index if the service has one, else a scan). */
  async referrers(sp: StorePath): Promise<StorePath[]> {
    const out: StorePath[] = [];
    const pis = this.services.pathInfos;
    const source = pis.referrers ? pis.referrers(sp.digest) : pis.list();
    for await (const info of source) {
      if (!info.references.some((r) => bytesEqual(r, sp.digest))) continue;
      try {
        out.push(pathInfoStorePath(info));
      } catch {
        // skip malformed records
      }
    }
    return out;
  }

  /** Every valid path. */
  async allValidPaths(): Promise<StorePath[]> {
    const out: StorePath[] = [];
    for await (const info of this.services.pathInfos.list()) {
      try {
        out.push(pathInfoStorePath(info));
      } catch {
        // skip malformed records
      }
    }
    return out;
  }

  /** The NAR of a valid path, streamed from castore; undefined if not valid. */
  async nar(sp: StorePath): Promise<ReadableStream<Uint8Array> | undefined> {
    const info = await this.pathInfo(sp);
    if (!info?.entry) return undefined;
    return renderNar(
      info.entry,
      this.services.blobs,
      this.services.directories,
    );
  }

  /** The bytes of a regular file at the root of a valid path (a .drv), or undefined. */
  async readFlatFile(
    sp: StorePath,
    max: number,
  ): Promise<Uint8Array | undefined> {
    const info = await this.pathInfo(sp);
    const e = info?.entry?.entry;
    if (!e || e.case !== "file") return undefined;
    if (Number(e.value.size) > max) {
      throw new DaemonError(
        `${sp} is too large to read (${e.value.size} bytes)`,
      );
    }
    const s = await this.services.blobs.read(e.value.digest);
    if (!s) {
      throw new DaemonError(
        `contents of ${sp} are missing from the blob service`,
      );
    }
    const parts: Uint8Array[] = [];
    for await (const c of s) parts.push(c);
    const out = new Uint8Array(parts.reduce((a, c) => a + c.length, 0));
    let o = 0;
    for (const c of parts) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }

  /**
   * Checks that every reference of `path` is valid, is `path` itself, or is
   * in `pending` (arriving in the same batch). Throws naming the first missing one.
   */
  async checkReferences(
    path: StorePath,
    refs: StorePath[],
    pending?: Set<string>,
  ): Promise<void> {
    for (const r of refs) {
      if (r.equals(path) || pending?.has(r.toString())) continue;
      if (!(await this.isValid(r))) {
        throw new DaemonError(
          `cannot add ${path}: its reference ${r} is not valid`,
        );
      }
    }
  }

  /**
   * Stores and checks a NAR for `info` like {@linkcode addNar}, but does not
   * record the path: returns the PathInfo to record later.
   */
  async ingest(
    info: NixPathInfo,
    nar: ReadableStream<Uint8Array>,
  ): Promise<PathInfo> {
    this.checkWritable(`adding ${info.path}`);
    if (info.narHash.algo !== "sha256") {
      throw new DaemonError(
        `NAR hash of ${info.path} must be sha256, got ${info.narHash.algo}`,
      );
    }
    let res;
    try {
      res = await ingestNar(
        nar,
        this.services.blobs,
        this.services.directories,
        {
          narSha256: info.narHash.digest,
          narSize: info.narSize > 0 ? info.narSize : undefined,
        },
      );
    } catch (e) {
      throw new DaemonError(`refusing ${info.path}: ${(e as Error).message}`);
    }
    rememberNar(res.entry, res);
    await this.#checkCa(info, res.entry);
    return fromNixPathInfo({ ...info, narSize: res.narSize }, res.entry);
  }

  /**
   * Checks a claimed content address against the contents just stored, for
   * the common kinds (`fixed:r:sha256`, as `nix-store --add` makes; and
   * `text:sha256`, derivations and `toFile`): the hash must be the contents'
   * and the store path the one it yields. Other kinds are kept as claimed.
   */
  async #checkCa(info: NixPathInfo, entry: Entry): Promise<void> {
    if (!info.ca) return;
    const refs = info.references.filter((r) => !r.equals(info.path));
    const self = refs.length !== info.references.length;
    const bad = (why: string) =>
      new DaemonError(
        `refusing ${info.path}: content address ${info.ca} ${why}`,
      );
    let expected: StorePath;
    if (info.ca.startsWith("fixed:r:sha256:")) {
      const h = info.ca.slice("fixed:r:sha256:".length);
      if (h !== encodeNixBase32(info.narHash.digest)) {
        throw bad("does not match the NAR hash");
      }
      expected = makeFixedOutputPath(
        info.path.name,
        info.narHash,
        true,
        refs,
        self,
      );
    } else if (info.ca.startsWith("text:sha256:")) {
      const e = entry.entry;
      if (e.case !== "file" || e.value.executable || self) {
        throw bad("needs a single regular file without self-reference");
      }
      const s = await this.services.blobs.read(e.value.digest);
      if (!s) throw bad("cannot be checked: contents missing");
      const h = encodeNixBase32(await sha256(s));
      if (h !== info.ca.slice("text:sha256:".length)) {
        throw bad("does not match the contents");
      }
      expected = makeTextPath(decodeNixBase32(h), info.path.name, refs);
    } else return;
    if (!expected.equals(info.path)) {
      throw bad(`yields ${expected}, not this path`);
    }
  }

  /**
   * Records every pending path whose references are all valid (or itself),
   * repeatedly, and removes it from `pending`; what is left waits for
   * references still missing.
   */
  async recordReady(pending: PendingPath[]): Promise<void> {
    for (let progress = true; progress;) {
      progress = false;
      for (let i = 0; i < pending.length; i++) {
        const p = pending[i];
        let ok = true;
        for (const r of p.info.references) {
          if (!r.equals(p.info.path) && !(await this.isValid(r))) {
            ok = false;
            break;
          }
        }
        if (!ok) continue;
        await this.#put(p.pathInfo);
        pending.splice(i--, 1);
        progress = true;
      }
    }
  }

  /**
   * Stores a NAR for `info` (checked against its declared hash and, if not 0,
   * size while it streams) and records the path. Reference validity is the
   * caller's check (see {@linkcode checkReferences}). The stream is read to
   * the end of the NAR.
   */
  async addNar(
    info: NixPathInfo,
    nar: ReadableStream<Uint8Array>,
  ): Promise<PathInfo> {
    return await this.#put(await this.ingest(info, nar));
  }

  /** Adds signatures to a valid path. */
  async addSignatures(sp: StorePath, sigs: string[]): Promise<void> {
    this.checkWritable(`adding signatures to ${sp}`);
    const info = await this.pathInfo(sp);
    if (!info) throw new DaemonError(`path '${sp}' is not valid`);
    const nix = toNixPathInfo(info);
    const merged = [...new Set([...nix.sigs, ...sigs])];
    await this.#put(
      fromNixPathInfo({ ...nix, sigs: merged }, info.entry!),
    );
  }

  /**
   * Adds content by content address (AddToStore, AddTextToStore): `source`
   * is a NAR (method "nar", or any method with `sourceIsNar`, as old clients
   * send it) or the flat file contents ("flat", "text"). Computes the store
   * path as Nix does, records it, returns its info.
   */
  async addCa(
    name: string,
    method: AddMethod,
    algo: string,
    refs: StorePath[],
    source: ReadableStream<Uint8Array>,
    sourceIsNar = method === "nar",
  ): Promise<NixPathInfo> {
    this.checkWritable(`adding ${name}`);
    if (!isHashAlgo(algo)) {
      throw new DaemonError(`unsupported hash algorithm "${algo}"`);
    }
    if (method === "text" && algo !== "sha256") {
      throw new DaemonError("text paths must use sha256");
    }
    const hasher = createHasher(algo as HashAlgo);
    const hashing = (s: ReadableStream<Uint8Array>) =>
      s.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(c, ctl) {
            hasher.update(c);
            ctl.enqueue(c);
          },
        }),
      );
    const { blobs, directories } = this.services;
    let entry: Entry, narSize: number, narSha256: Uint8Array;
    if (sourceIsNar) {
      let res;
      try {
        res = await ingestNar(
          method === "nar" ? hashing(source) : source,
          blobs,
          directories,
        );
      } catch (e) {
        throw new DaemonError(`cannot add ${name}: ${(e as Error).message}`);
      }
      ({ entry, narSize, narSha256 } = res);
      rememberNar(entry, res);
      if (method !== "nar") {
        const e = entry.entry;
        if (e.case !== "file" || e.value.executable) {
          throw new DaemonError(
            `cannot add ${name}: flat hashing needs a single non-executable regular file`,
          );
        }
        const s = await blobs.read(e.value.digest);
        if (!s) throw new DaemonError(`cannot add ${name}: blob vanished`);
        for await (const c of s) hasher.update(c);
      }
    } else {
      const w = blobs.put();
      let size = 0;
      try {
        for await (const c of hashing(source)) {
          size += c.length;
          await w.write(c);
        }
      } catch (e) {
        await w.abort();
        throw e;
      }
      const digest = await w.close();
      entry = create(EntrySchema, {
        entry: {
          case: "file",
          value: create(FileEntrySchema, {
            name: new Uint8Array(),
            digest,
            size: BigInt(size),
          }),
        },
      });
      ({ narSize, narSha256 } = await calculateNar(entry, blobs, directories));
    }
    const hash = makeHash(algo as HashAlgo, hasher.digest());
    let path: StorePath, ca: string;
    try {
      if (method === "text") {
        path = makeTextPath(hash.digest, name, refs);
        ca = `text:sha256:${encodeNixBase32(hash.digest)}`;
      } else {
        path = makeFixedOutputPath(name, hash, method === "nar", refs);
        ca = `fixed:${method === "nar" ? "r:" : ""}${algo}:${
          encodeNixBase32(hash.digest)
        }`;
      }
    } catch (e) {
      throw new DaemonError(`cannot add ${name}: ${(e as Error).message}`);
    }
    await this.checkReferences(path, refs);
    const existing = await this.pathInfo(path);
    if (existing) return toNixPathInfo(existing);
    const pi = makePathInfo({
      entry,
      storePath: path,
      narSize,
      narSha256,
      references: refs,
      ca,
    });
    return toNixPathInfo(await this.#put(pi));
  }
}

/** Recently parsed store paths by their string (clients ask for the same paths again and again). */
const parsed = new Map<string, StorePath>();
/** How many parsed paths {@linkcode parsePath} keeps. */
const PARSED_ENTRIES = 4096;

/**
 * Parses an absolute store path from the wire; a clear DaemonError otherwise.
 * The result is shared between calls with the same string: do not modify it.
 */
export function parsePath(s: string): StorePath {
  const hit = parsed.get(s);
  if (hit) return hit;
  let sp: StorePath;
  try {
    sp = StorePath.parse(s);
  } catch (e) {
    throw new DaemonError((e as Error).message);
  }
  if (parsed.size >= PARSED_ENTRIES) parsed.clear();
  parsed.set(s, sp);
  return sp;
}
