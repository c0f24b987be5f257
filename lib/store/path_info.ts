/**
 * PathInfo helpers: the store path a PathInfo describes, validation, building
 * one, content-address strings, and conversion to and from the fields of
 * Nix's `ValidPathInfo` (what the worker protocol and `nix path-info` carry).
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type Entry,
  EntrySchema,
} from "../../proto/gen/snix/castore/protos/castore_pb.ts";
import {
  type NARInfo_CA,
  NARInfo_CA_Hash,
  NARInfo_CASchema,
  NARInfo_SignatureSchema,
  NARInfoSchema,
  type PathInfo,
  PathInfoSchema,
  StorePathSchema,
} from "../../proto/gen/snix/store/protos/pathinfo_pb.ts";
import { STORE_PATH_DIGEST_SIZE, StorePath } from "../nix/store_path.ts";
import {
  decodeBase64,
  encodeBase64,
  type Hash,
  HASH_SIZES,
  type HashAlgo,
  isHashAlgo,
  makeHash,
  parseDigest,
} from "../nix/hash.ts";
import { encodeNixBase32 } from "../nix/nixbase32.ts";
import { type NarInfo, parseNarInfo, printNarInfo } from "../nix/narinfo.ts";

const utf8 = new TextEncoder();
const utf8d = new TextDecoder("utf-8", { fatal: true });

/** The name bytes of an entry (whatever its kind); empty for an unset entry. */
export function entryName(entry: Entry): Uint8Array {
  return entry.entry.case === undefined
    ? new Uint8Array()
    : entry.entry.value.name;
}

/** A copy of `entry` with another name. */
export function renameEntry(entry: Entry, name: Uint8Array | string): Entry {
  const n = typeof name === "string" ? utf8.encode(name) : name;
  switch (entry.entry.case) {
    case "directory":
      return create(EntrySchema, {
        entry: { case: "directory", value: { ...entry.entry.value, name: n } },
      });
    case "file":
      return create(EntrySchema, {
        entry: { case: "file", value: { ...entry.entry.value, name: n } },
      });
    case "symlink":
      return create(EntrySchema, {
        entry: { case: "symlink", value: { ...entry.entry.value, name: n } },
      });
    default:
      throw new Error("entry has no node");
  }
}

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

/**
 * Checks a PathInfo (as snix does): an entry is present and well formed, its
 * name is a store path base name (and, if `expectedDigest` is given, its hash
 * part matches it), references are 20 bytes and agree with
 * `narinfo.reference_names`, `narinfo.nar_sha256` is 32 bytes, the deriver
 * and CA are well formed. Returns the store path. Throws `ConnectError`
 * `InvalidArgument` with a one-line message.
 */
export function validatePathInfo(
  info: PathInfo,
  expectedDigest?: Uint8Array,
): StorePath {
  const entry = info.entry;
  if (!entry || entry.entry.case === undefined) {
    throw invalid("PathInfo has no entry");
  }
  let baseName: string;
  try {
    baseName = utf8d.decode(entryName(entry));
  } catch {
    throw invalid("PathInfo entry name is not UTF-8");
  }
  let sp: StorePath;
  try {
    sp = StorePath.fromBaseName(baseName);
  } catch (e) {
    throw invalid(`PathInfo entry name: ${(e as Error).message}`);
  }
  if (expectedDigest && !bytesEqual(sp.digest, expectedDigest)) {
    throw invalid(
      `PathInfo entry name ${sp.baseName} does not match the key ${
        encodeNixBase32(expectedDigest)
      }`,
    );
  }
  const node = entry.entry;
  if (node.case === "symlink") {
    const t = node.value.target;
    if (t.length === 0 || t.length > 4095 || t.includes(0)) {
      throw invalid(`PathInfo ${sp.baseName}: invalid symlink target`);
    }
  } else if (node.value.digest.length !== 32) {
    throw invalid(
      `PathInfo ${sp.baseName}: entry digest must be 32 bytes, got ${node.value.digest.length}`,
    );
  }
  info.references.forEach((r, i) => {
    if (r.length !== STORE_PATH_DIGEST_SIZE) {
      throw invalid(
        `PathInfo ${sp.baseName}: reference ${i} must be ${STORE_PATH_DIGEST_SIZE} bytes, got ${r.length}`,
      );
    }
  });
  const ni = info.narinfo;
  if (!ni) throw invalid(`PathInfo ${sp.baseName} has no narinfo`);
  if (ni.narSha256.length !== 32) {
    throw invalid(
      `PathInfo ${sp.baseName}: nar_sha256 must be 32 bytes, got ${ni.narSha256.length}`,
    );
  }
  if (ni.referenceNames.length !== info.references.length) {
    throw invalid(
      `PathInfo ${sp.baseName}: ${info.references.length} references but ${ni.referenceNames.length} reference names`,
    );
  }
  ni.referenceNames.forEach((n, i) => {
    let ref: StorePath;
    try {
      ref = StorePath.fromBaseName(n);
    } catch (e) {
      throw invalid(
        `PathInfo ${sp.baseName}: reference name ${i}: ${(e as Error).message}`,
      );
    }
    if (!bytesEqual(ref.digest, info.references[i])) {
      throw invalid(
        `PathInfo ${sp.baseName}: reference name ${n} does not match reference ${i}`,
      );
    }
  });
  if (ni.deriver) {
    try {
      new StorePath(ni.deriver.digest, ni.deriver.name);
    } catch (e) {
      throw invalid(
        `PathInfo ${sp.baseName}: deriver: ${(e as Error).message}`,
      );
    }
  }
  if (ni.ca) {
    try {
      caToString(ni.ca);
    } catch (e) {
      throw invalid(`PathInfo ${sp.baseName}: ca: ${(e as Error).message}`);
    }
  }
  return sp;
}

/** The store path a PathInfo describes (from its entry name); throws like {@linkcode validatePathInfo}. */
export function pathInfoStorePath(info: PathInfo): StorePath {
  const entry = info.entry;
  if (!entry || entry.entry.case === undefined) {
    throw invalid("PathInfo has no entry");
  }
  try {
    return StorePath.fromBaseName(utf8d.decode(entryName(entry)));
  } catch (e) {
    throw invalid(`PathInfo entry name: ${(e as Error).message}`);
  }
}

/** What {@linkcode makePathInfo} needs. */
export interface PathInfoFields {
  /** The root node (renamed to the store path's base name). */
  entry: Entry;
  /** The store path. */
  storePath: StorePath;
  /** NAR size in bytes. */
  narSize: number | bigint;
  /** SHA-256 of the NAR. */
  narSha256: Uint8Array;
  /** Store paths referenced. */
  references?: readonly StorePath[];
  /** The deriver, if known. */
  deriver?: StorePath;
  /** Signatures as `name:base64`. */
  signatures?: readonly string[];
  /** Content address as Nix prints it (`fixed:r:sha256:...`, `text:sha256:...`). */
  ca?: string;
}

/** Builds a PathInfo; references are sorted by their absolute path as Nix keeps them. */
export function makePathInfo(f: PathInfoFields): PathInfo {
  const refs = [...(f.references ?? [])].sort((a, b) =>
    cmpStr(a.toString(), b.toString())
  );
  return create(PathInfoSchema, {
    entry: renameEntry(f.entry, f.storePath.baseName),
    references: refs.map((r) => r.digest),
    narinfo: create(NARInfoSchema, {
      narSize: BigInt(f.narSize),
      narSha256: f.narSha256,
      signatures: (f.signatures ?? []).map(parseSignature),
      referenceNames: refs.map((r) => r.baseName),
      deriver: f.deriver
        ? create(StorePathSchema, {
          name: f.deriver.name,
          digest: f.deriver.digest,
        })
        : undefined,
      ca: f.ca ? parseCa(f.ca) : undefined,
    }),
  });
}

/** Splits `name:base64` into a NARInfo.Signature; throws on a malformed one. */
export function parseSignature(sig: string) {
  const i = sig.indexOf(":");
  if (i <= 0) {
    throw new Error(`signature ${JSON.stringify(sig)} is not name:base64`);
  }
  let data: Uint8Array;
  try {
    data = decodeBase64(sig.slice(i + 1));
  } catch {
    throw new Error(`signature ${JSON.stringify(sig)} has invalid base64`);
  }
  return create(NARInfo_SignatureSchema, { name: sig.slice(0, i), data });
}

const CA_KINDS: [NARInfo_CA_Hash, string, HashAlgo][] = [
  [NARInfo_CA_Hash.NAR_SHA256, "fixed:r:", "sha256"],
  [NARInfo_CA_Hash.NAR_SHA1, "fixed:r:", "sha1"],
  [NARInfo_CA_Hash.NAR_SHA512, "fixed:r:", "sha512"],
  [NARInfo_CA_Hash.NAR_MD5, "fixed:r:", "md5"],
  [NARInfo_CA_Hash.TEXT_SHA256, "text:", "sha256"],
  [NARInfo_CA_Hash.FLAT_SHA1, "fixed:", "sha1"],
  [NARInfo_CA_Hash.FLAT_MD5, "fixed:", "md5"],
  [NARInfo_CA_Hash.FLAT_SHA256, "fixed:", "sha256"],
  [NARInfo_CA_Hash.FLAT_SHA512, "fixed:", "sha512"],
];

/** Renders a CA as Nix does (`fixed:r:sha256:<nix32>`, `fixed:sha1:...`, `text:sha256:...`). */
export function caToString(ca: NARInfo_CA): string {
  const kind = CA_KINDS.find(([t]) => t === ca.type);
  if (!kind) throw new Error(`unknown content address type ${ca.type}`);
  const [, prefix, algo] = kind;
  if (ca.digest.length !== HASH_SIZES[algo]) {
    throw new Error(
      `content address digest for ${prefix}${algo} must be ${
        HASH_SIZES[algo]
      } bytes, got ${ca.digest.length}`,
    );
  }
  return `${prefix}${algo}:${encodeNixBase32(ca.digest)}`;
}

/** Parses a content address string as Nix prints it; throws a clear `Error`. */
export function parseCa(s: string): NARInfo_CA {
  let prefix: string;
  if (s.startsWith("fixed:r:")) prefix = "fixed:r:";
  else if (s.startsWith("fixed:")) prefix = "fixed:";
  else if (s.startsWith("text:")) prefix = "text:";
  else {throw new Error(
      `content address ${JSON.stringify(s)} must start with fixed: or text:`,
    );}
  const rest = s.slice(prefix.length);
  const colon = rest.indexOf(":");
  const algo = colon > 0 ? rest.slice(0, colon) : "";
  if (!isHashAlgo(algo)) {
    throw new Error(
      `content address ${JSON.stringify(s)} has no known hash algorithm`,
    );
  }
  const kind = CA_KINDS.find(([, p, a]) => p === prefix && a === algo);
  if (!kind) {
    throw new Error(`content address ${JSON.stringify(s)} is not supported`);
  }
  const h = parseDigest(algo, rest.slice(colon + 1));
  return create(NARInfo_CASchema, { type: kind[0], digest: h.digest });
}

/** The fields of Nix's `ValidPathInfo`, as the worker protocol and `nix path-info` use them. */
export interface NixPathInfo {
  /** The store path. */
  path: StorePath;
  /** The deriver, if known. */
  deriver?: StorePath;
  /** SHA-256 of the NAR. */
  narHash: Hash;
  /** Referenced store paths, sorted. */
  references: StorePath[];
  /** Seconds since the epoch; 0 if unknown (PathInfo does not keep it). */
  registrationTime: number;
  /** NAR size in bytes. */
  narSize: number;
  /** Whether this store built it (PathInfo does not keep it: false). */
  ultimate: boolean;
  /** Signatures as `name:base64`. */
  sigs: string[];
  /** Content address as Nix prints it. */
  ca?: string;
}

/** Converts a (valid) PathInfo to Nix's ValidPathInfo fields. */
export function toNixPathInfo(
  info: PathInfo,
  registrationTime = 0,
): NixPathInfo {
  const path = validatePathInfo(info);
  const ni = info.narinfo!;
  return {
    path,
    deriver: ni.deriver
      ? new StorePath(ni.deriver.digest, ni.deriver.name)
      : undefined,
    narHash: makeHash("sha256", ni.narSha256),
    references: ni.referenceNames.map((n) => StorePath.fromBaseName(n)),
    registrationTime,
    narSize: Number(ni.narSize),
    ultimate: false,
    sigs: ni.signatures.map((s) => `${s.name}:${encodeBase64(s.data)}`),
    ca: ni.ca ? caToString(ni.ca) : undefined,
  };
}

/**
 * Builds a PathInfo from Nix's ValidPathInfo fields and the castore root node
 * holding the contents. Throws if the hash is not SHA-256.
 */
export function fromNixPathInfo(nix: NixPathInfo, entry: Entry): PathInfo {
  if (nix.narHash.algo !== "sha256") {
    throw new Error(
      `NAR hash of ${nix.path} must be sha256, got ${nix.narHash.algo}`,
    );
  }
  return makePathInfo({
    entry,
    storePath: nix.path,
    narSize: nix.narSize,
    narSha256: nix.narHash.digest,
    references: nix.references,
    deriver: nix.deriver,
    signatures: nix.sigs,
    ca: nix.ca,
  });
}

/** Where the NAR of a narinfo lives (for {@linkcode toNarInfo}). */
export interface NarInfoLocation {
  /** URL of the NAR, relative to the cache (default `nar/<nix32 nar hash>.nar`). */
  url?: string;
  /** Compression of that file (default `none`). */
  compression?: string;
}

/** The narinfo fields of a (valid) PathInfo. */
export function toNarInfo(
  info: PathInfo,
  where: NarInfoLocation = {},
): NarInfo {
  const nix = toNixPathInfo(info);
  return {
    storePath: nix.path,
    url: where.url ?? `nar/${encodeNixBase32(nix.narHash.digest)}.nar`,
    compression: where.compression ?? "none",
    narHash: nix.narHash,
    narSize: nix.narSize,
    references: nix.references,
    deriver: nix.deriver,
    sigs: nix.sigs,
    ca: nix.ca,
    unknown: [],
  };
}

/** A PathInfo as narinfo text, as Nix prints it. */
export function pathInfoToNarInfoText(
  info: PathInfo,
  where: NarInfoLocation = {},
): string {
  return printNarInfo(toNarInfo(info, where));
}

/**
 * A PathInfo from narinfo text and the castore root node holding the
 * contents (URL, compression and file hash/size are not kept). Throws a clear
 * `Error` for malformed text.
 */
export function pathInfoFromNarInfoText(text: string, entry: Entry): PathInfo {
  const n = parseNarInfo(text);
  return fromNixPathInfo({
    path: n.storePath,
    deriver: n.deriver,
    narHash: n.narHash,
    references: n.references,
    registrationTime: 0,
    narSize: n.narSize,
    ultimate: false,
    sigs: n.sigs,
    ca: n.ca,
  }, entry);
}

/** Byte equality. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function cmpStr(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
