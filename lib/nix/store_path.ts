/**
 * Store paths (`/nix/store/<32 nix32 chars>-<name>`) and how Nix computes
 * them: a SHA-256 over a textual fingerprint
 * `<type>:sha256:<base16 inner digest>:/nix/store:<name>`, XOR-folded to 20
 * bytes and printed in nix32.
 *
 * @module
 */
import { decodeNixBase32, encodeNixBase32 } from "./nixbase32.ts";
import { encodeBase16, type Hash, HASH_SIZES, sha256 } from "./hash.ts";

/** The store directory; we support only the default one. */
export const STORE_DIR = "/nix/store";

/** Length of a store path's hash part in nix32 characters. */
export const HASH_PART_LENGTH = 32;

/** Length of a store path digest in bytes. */
export const STORE_PATH_DIGEST_SIZE = 20;

/** Longest name Nix accepts. */
export const MAX_NAME_LENGTH = 211;

const NAME_CHAR = /^[0-9a-zA-Z+\-._?=]+$/;
const HASH_PART_CHAR = /^[0-9a-df-np-sv-z]{32}$/;

/** Throws a clear `Error` unless `name` is a valid store path name (as Nix's checkName). */
export function validateStorePathName(name: string): void {
  if (name.length === 0) throw new Error("store path name must not be empty");
  if (name.length > MAX_NAME_LENGTH) {
    throw new Error(
      `store path name ${
        JSON.stringify(name)
      } is longer than ${MAX_NAME_LENGTH} characters`,
    );
  }
  if (
    name === "." || name === ".." || name.startsWith(".-") ||
    name.startsWith("..-")
  ) {
    throw new Error(`store path name ${JSON.stringify(name)} is not valid`);
  }
  if (!NAME_CHAR.test(name)) {
    const bad = [...name].find((c) => !NAME_CHAR.test(c));
    throw new Error(
      `store path name ${JSON.stringify(name)} contains illegal character ${
        JSON.stringify(bad)
      }`,
    );
  }
}

/** A parsed store path: 20-byte digest plus name. Immutable. */
export class StorePath {
  /** The 20-byte digest (the hash part, decoded). */
  readonly digest: Uint8Array;
  /** The name after the dash. */
  readonly name: string;
  #hashPart?: string;

  /** Builds a store path from its digest and name, validating both. */
  constructor(digest: Uint8Array, name: string) {
    if (digest.length !== STORE_PATH_DIGEST_SIZE) {
      throw new Error(
        `store path digest must be ${STORE_PATH_DIGEST_SIZE} bytes, got ${digest.length}`,
      );
    }
    validateStorePathName(name);
    this.digest = digest;
    this.name = name;
  }

  /** Parses an absolute path `/nix/store/<hash>-<name>`; throws a clear `Error`. */
  static parse(absolutePath: string): StorePath {
    const prefix = STORE_DIR + "/";
    if (!absolutePath.startsWith(prefix)) {
      throw new Error(
        `path ${
          JSON.stringify(absolutePath)
        } is not in the Nix store ${STORE_DIR}`,
      );
    }
    const base = absolutePath.slice(prefix.length);
    if (base.includes("/")) {
      throw new Error(
        `path ${JSON.stringify(absolutePath)} is not a top-level store path`,
      );
    }
    return StorePath.fromBaseName(base);
  }

  /** Parses a base name `<hash>-<name>`; throws a clear `Error`. */
  static fromBaseName(baseName: string): StorePath {
    if (baseName.length < HASH_PART_LENGTH + 2) {
      throw new Error(
        `${JSON.stringify(baseName)} is too short to be a valid store path`,
      );
    }
    if (baseName[HASH_PART_LENGTH] !== "-") {
      throw new Error(
        `${
          JSON.stringify(baseName)
        } is not a store path: the hash part is not followed by '-'`,
      );
    }
    const hashPart = baseName.slice(0, HASH_PART_LENGTH);
    if (!HASH_PART_CHAR.test(hashPart)) {
      throw new Error(
        `store path ${JSON.stringify(baseName)} has an invalid nix32 hash part`,
      );
    }
    const name = baseName.slice(HASH_PART_LENGTH + 1);
    try {
      validateStorePathName(name);
    } catch (e) {
      throw new Error(
        `${JSON.stringify(baseName)} is not a valid store path: ${
          (e as Error).message
        }`,
      );
    }
    const sp = new StorePath(decodeNixBase32(hashPart), name);
    sp.#hashPart = hashPart;
    return sp;
  }

  /** The 32-character nix32 hash part. */
  get hashPart(): string {
    return this.#hashPart ??= encodeNixBase32(this.digest);
  }

  /** `<hash>-<name>`. */
  get baseName(): string {
    return `${this.hashPart}-${this.name}`;
  }

  /** The absolute path `/nix/store/<hash>-<name>`. */
  toString(): string {
    return `${STORE_DIR}/${this.baseName}`;
  }

  /** Whether two store paths are the same. */
  equals(other: StorePath): boolean {
    return this.baseName === other.baseName;
  }
}

/** XOR-folds a digest to `size` bytes, as Nix's compressHash. */
export function compressHash(digest: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < digest.length; i++) out[i % size] ^= digest[i];
  return out;
}

/**
 * The generic rule: SHA-256 of `<type>:sha256:<base16 inner>:/nix/store:<name>`,
 * compressed to 20 bytes.
 */
export function makeStorePath(
  type: string,
  innerDigestSha256: Uint8Array,
  name: string,
): StorePath {
  if (innerDigestSha256.length !== HASH_SIZES.sha256) {
    throw new Error(
      `inner digest must be a 32-byte sha256, got ${innerDigestSha256.length} bytes`,
    );
  }
  validateStorePathName(name);
  const fingerprint = `${type}:sha256:${
    encodeBase16(innerDigestSha256)
  }:${STORE_DIR}:${name}`;
  return new StorePath(
    compressHash(sha256(fingerprint), STORE_PATH_DIGEST_SIZE),
    name,
  );
}

/** Appends `:<abs path>` per reference, sorted, and `:self` if asked (Nix's makeType). */
function makeType(
  type: string,
  references: readonly StorePath[],
  selfRef: boolean,
): string {
  const refs = [...new Set(references.map((r) => r.toString()))].sort();
  let t = type;
  for (const r of refs) t += ":" + r;
  if (selfRef) t += ":self";
  return t;
}

/**
 * A source path: what `nix-store --add` (recursive, sha256) produces, from the
 * SHA-256 of the NAR serialisation.
 */
export function makeSourcePath(
  narSha256: Uint8Array,
  name: string,
  references: readonly StorePath[] = [],
  selfRef = false,
): StorePath {
  return makeStorePath(
    makeType("source", references, selfRef),
    narSha256,
    name,
  );
}

/** A text path (`builtins.toFile`, `addTextToStore`): SHA-256 of the contents. */
export function makeTextPath(
  contentSha256: Uint8Array,
  name: string,
  references: readonly StorePath[] = [],
): StorePath {
  return makeStorePath(
    makeType("text", references, false),
    contentSha256,
    name,
  );
}

/**
 * A fixed-output path. `recursive` means the hash is over the NAR (method
 * `r:`), else over the flat file contents. Recursive SHA-256 is a source path;
 * everything else goes through `fixed:out:[r:]<algo>:<base16>:`.
 */
export function makeFixedOutputPath(
  name: string,
  hash: Hash,
  recursive: boolean,
  references: readonly StorePath[] = [],
  selfRef = false,
): StorePath {
  if (recursive && hash.algo === "sha256") {
    return makeSourcePath(hash.digest, name, references, selfRef);
  }
  if (references.length > 0 || selfRef) {
    throw new Error(
      `fixed-output path ${JSON.stringify(name)} must not have references`,
    );
  }
  const inner = `fixed:out:${recursive ? "r:" : ""}${hash.algo}:${
    encodeBase16(hash.digest)
  }:`;
  return makeStorePath("output:out", sha256(inner), name);
}
