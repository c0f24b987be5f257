/**
 * The embedded PathInfoService on a local data directory:
 * `<dataDir>/store/pathinfo/<nix32 hash part>` holds the PathInfo's protobuf
 * bytes, written atomically (temporary file, fsync, rename, fsync of the
 * directory), so several processes may share the directory and a crash at any
 * instant leaves either the old or the new record, never half of one.
 *
 * A referrers index lives in `<dataDir>/store/referrers/<ref hash part>/<referrer hash part>`
 * (empty files). Entries are written before the PathInfo and checked against
 * the referrer's actual references when read, so a stale entry is harmless.
 *
 * @module
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import * as fsp from "node:fs/promises";
import { join } from "node:path";
import {
  type PathInfo,
  PathInfoSchema,
} from "../../proto/gen/snix/store/protos/pathinfo_pb.ts";
import type { PathInfoService } from "./path_info_service.ts";
import { bytesEqual, validatePathInfo } from "./path_info.ts";
import { encodeNixBase32 } from "../nix/nixbase32.ts";
import {
  fsyncDir,
  prepareDataDir,
  writeFileAtomic,
} from "../castore/atomic_file.ts";

const HASH_PART = /^[0-9a-df-np-sv-z]{32}$/;

function checkDigest(digest: Uint8Array): string {
  if (digest.length !== 20) {
    throw new ConnectError(
      `store path digest must be 20 bytes, got ${digest.length}`,
      Code.InvalidArgument,
    );
  }
  return encodeNixBase32(digest);
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

/** PathInfos in `<dataDir>/store/`. Open with {@linkcode LocalPathInfoService.open}. */
export class LocalPathInfoService implements PathInfoService {
  readonly #infoDir: string;
  readonly #refDir: string;

  private constructor(readonly dataDir: string) {
    this.#infoDir = join(dataDir, "store", "pathinfo");
    this.#refDir = join(dataDir, "store", "referrers");
  }

  /** Opens (creating if needed) the store under `dataDir`; a clear error if it is not usable. */
  static async open(dataDir: string): Promise<LocalPathInfoService> {
    const s = new LocalPathInfoService(dataDir);
    await prepareDataDir(dataDir, []);
    await fsp.mkdir(s.#infoDir, { recursive: true });
    await fsp.mkdir(s.#refDir, { recursive: true });
    return s;
  }

  /** The file holding the PathInfo for a hash part. */
  pathOf(hashPart: string): string {
    return join(this.#infoDir, hashPart);
  }

  /** The PathInfo for this 20-byte digest, or `undefined`; `DataLoss` if the record is corrupt. */
  async get(outputHash: Uint8Array): Promise<PathInfo | undefined> {
    return await this.#read(checkDigest(outputHash));
  }

  async #read(hashPart: string): Promise<PathInfo | undefined> {
    const file = this.pathOf(hashPart);
    let bytes: Uint8Array;
    try {
      bytes = await fsp.readFile(file);
    } catch (e) {
      if (errno(e) === "ENOENT") return undefined;
      throw new ConnectError(
        `reading ${file}: ${(e as Error).message}`,
        Code.Unavailable,
      );
    }
    let info: PathInfo;
    try {
      info = fromBinary(PathInfoSchema, bytes);
      const sp = validatePathInfo(info);
      if (sp.hashPart !== hashPart) {
        throw new Error(`it describes ${sp.baseName}`);
      }
    } catch (e) {
      throw new ConnectError(
        `path info record ${file} is corrupt: ${
          e instanceof ConnectError ? e.rawMessage : (e as Error).message
        }`,
        Code.DataLoss,
      );
    }
    return info;
  }

  /** Validates and stores a PathInfo atomically; returns it. */
  async put(info: PathInfo): Promise<PathInfo> {
    const sp = validatePathInfo(info);
    const dirs = new Set<string>();
    for (const ref of info.references) {
      const dir = join(this.#refDir, encodeNixBase32(ref));
      await fsp.mkdir(dir, { recursive: true });
      const h = await fsp.open(join(dir, sp.hashPart), "w");
      await h.close();
      dirs.add(dir);
    }
    for (const dir of dirs) await fsyncDir(dir);
    try {
      await writeFileAtomic(
        join(this.dataDir, "tmp"),
        this.pathOf(sp.hashPart),
        [
          toBinary(PathInfoSchema, info),
        ],
      );
      await fsyncDir(this.#infoDir);
    } catch (e) {
      throw new ConnectError(
        `writing path info for ${sp}: ${
          e instanceof ConnectError ? e.rawMessage : (e as Error).message
        }`,
        Code.Unavailable,
      );
    }
    return info;
  }

  /** The hash parts of every stored PathInfo (cheap: a directory listing). */
  async hashParts(): Promise<string[]> {
    return (await fsp.readdir(this.#infoDir)).filter((n) => HASH_PART.test(n));
  }

  /** Every PathInfo; records removed while listing are skipped. */
  async *list(): AsyncIterable<PathInfo> {
    for (const h of await this.hashParts()) {
      const info = await this.#read(h);
      if (info) yield info;
    }
  }

  /** Every PathInfo whose references include this digest (from the index, checked). */
  async *referrers(digest: Uint8Array): AsyncIterable<PathInfo> {
    const dir = join(this.#refDir, checkDigest(digest));
    let names: string[];
    try {
      names = await fsp.readdir(dir);
    } catch (e) {
      if (errno(e) === "ENOENT") return;
      throw e;
    }
    for (const n of names) {
      if (!HASH_PART.test(n)) continue;
      const info = await this.#read(n);
      if (info && info.references.some((r) => bytesEqual(r, digest))) {
        yield info;
      }
    }
  }
}
