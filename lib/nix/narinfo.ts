/**
 * `.narinfo` files of binary caches: `Key: value` lines, parsed strictly
 * and printed in the order and encodings Nix itself writes, so a narinfo
 * produced by Nix prints back byte for byte.
 *
 * Our own code: no maintained npm package implements this Nix format.
 *
 * @module
 */
import { type Hash, parseHash, printHash } from "./hash.ts";
import { StorePath } from "./store_path.ts";
import { fingerprint } from "./signature.ts";

/** The fields of a narinfo. */
export interface NarInfo {
  /** The store path described. */
  storePath: StorePath;
  /** Where the (compressed) NAR lives, relative to the cache. */
  url: string;
  /** `none`, `xz`, `bzip2`, `zstd`, ... (missing or empty means `bzip2`, as Nix). */
  compression: string;
  /** Hash of the compressed file, if known. */
  fileHash?: Hash;
  /** Size of the compressed file, if known (0 = unknown). */
  fileSize?: number;
  /** SHA-256 of the NAR. */
  narHash: Hash;
  /** NAR size in bytes (> 0). */
  narSize: number;
  /** References (other store paths, possibly itself). */
  references: StorePath[];
  /** The deriver, if known. */
  deriver?: StorePath;
  /** Signatures `name:base64`. */
  sigs: string[];
  /** Content address (`fixed:r:sha256:...`, `text:sha256:...`), if any. */
  ca?: string;
  /** Lines with keys we do not know, kept in order (printed last). */
  unknown: [key: string, value: string][];
}

/** Thrown for malformed narinfo text. */
export class NarInfoError extends Error {
  /** The message names the line. */
  constructor(message: string, line?: number) {
    super(`narinfo is corrupt: ${message}${line ? ` (line ${line})` : ""}`);
    this.name = "NarInfoError";
  }
}

const MAX_NARINFO = 1 << 20;

function parseUint(s: string, what: string, line: number): number {
  if (!/^(0|[1-9][0-9]*)$/.test(s)) {
    throw new NarInfoError(`invalid ${what} ${JSON.stringify(s)}`, line);
  }
  const n = Number(s);
  if (!Number.isSafeInteger(n)) {
    throw new NarInfoError(`${what} ${s} is too large`, line);
  }
  return n;
}

/** Parses narinfo text; throws {@link NarInfoError} with the line number. */
export function parseNarInfo(text: string): NarInfo {
  if (text.length > MAX_NARINFO) throw new NarInfoError("longer than 1 MiB");
  if (text.length > 0 && !text.endsWith("\n")) {
    throw new NarInfoError("last line does not end with a newline");
  }
  const lines = text.split("\n");
  lines.pop();
  let storePath: StorePath | undefined;
  let url: string | undefined;
  let compression: string | undefined;
  let fileHash: Hash | undefined;
  let fileSize: number | undefined;
  let narHash: Hash | undefined;
  let narSize: number | undefined;
  let references: StorePath[] | undefined;
  let deriver: StorePath | undefined;
  let ca: string | undefined;
  const sigs: string[] = [];
  const unknown: [string, string][] = [];
  const seen = new Set<string>();
  lines.forEach((l, i) => {
    const line = i + 1;
    const colon = l.indexOf(": ");
    if (colon <= 0) {
      // Nix also accepts an empty value without the space ("References:").
      if (l.endsWith(":") && l.indexOf(":") === l.length - 1) {
        return handle(l.slice(0, -1), "", line);
      }
      throw new NarInfoError(
        `expected "Key: value", got ${JSON.stringify(l.slice(0, 80))}`,
        line,
      );
    }
    handle(l.slice(0, colon), l.slice(colon + 2), line);
  });

  function handle(key: string, value: string, line: number): void {
    const wrap = <T>(f: () => T): T => {
      try {
        return f();
      } catch (e) {
        throw new NarInfoError(`bad ${key}: ${(e as Error).message}`, line);
      }
    };
    if (key !== "Sig" && seen.has(key) && key !== "") {
      const known = [
        "StorePath",
        "URL",
        "Compression",
        "FileHash",
        "FileSize",
        "NarHash",
        "NarSize",
        "References",
        "Deriver",
        "CA",
      ];
      if (known.includes(key)) throw new NarInfoError(`duplicate ${key}`, line);
    }
    seen.add(key);
    switch (key) {
      case "StorePath":
        storePath = wrap(() => StorePath.parse(value));
        break;
      case "URL":
        url = value;
        break;
      case "Compression":
        compression = value;
        break;
      case "FileHash":
        fileHash = wrap(() => parseHash(value));
        break;
      case "FileSize":
        fileSize = parseUint(value, "FileSize", line);
        break;
      case "NarHash":
        narHash = wrap(() => parseHash(value));
        if (narHash.algo !== "sha256") {
          throw new NarInfoError("NarHash must be sha256", line);
        }
        break;
      case "NarSize":
        narSize = parseUint(value, "NarSize", line);
        break;
      case "References":
        references = value === ""
          ? []
          : value.split(" ").map((r) => wrap(() => StorePath.fromBaseName(r)));
        break;
      case "Deriver":
        if (value !== "unknown-deriver") {
          deriver = wrap(() => StorePath.fromBaseName(value));
        }
        break;
      case "Sig":
        if (!/^[^:]+:[A-Za-z0-9+/]+={0,2}$/.test(value)) {
          throw new NarInfoError(`bad Sig ${JSON.stringify(value)}`, line);
        }
        sigs.push(value);
        break;
      case "CA":
        ca = value;
        break;
      default:
        unknown.push([key, value]);
    }
  }

  if (!storePath) throw new NarInfoError("StorePath missing");
  if (!narHash) throw new NarInfoError("NarHash missing");
  if (!url) throw new NarInfoError("URL missing");
  if (!narSize) throw new NarInfoError("NarSize missing or zero");
  return {
    storePath,
    url,
    compression: compression || "bzip2",
    ...(fileHash ? { fileHash } : {}),
    ...(fileSize ? { fileSize } : {}),
    narHash,
    narSize,
    references: references ?? [],
    ...(deriver ? { deriver } : {}),
    sigs,
    ...(ca ? { ca } : {}),
    unknown,
  };
}

/** Prints a narinfo as Nix does (field order, nix32 hashes, sorted references and signatures). */
export function printNarInfo(info: NarInfo): string {
  let s = `StorePath: ${info.storePath}\n`;
  s += `URL: ${info.url}\n`;
  s += `Compression: ${info.compression || "bzip2"}\n`;
  if (info.fileHash) s += `FileHash: ${printHash(info.fileHash, "nix32")}\n`;
  if (info.fileSize) s += `FileSize: ${info.fileSize}\n`;
  s += `NarHash: ${printHash(info.narHash, "nix32")}\n`;
  s += `NarSize: ${info.narSize}\n`;
  const refs = [...new Set(info.references.map((r) => r.baseName))].sort();
  s += `References: ${refs.join(" ")}\n`;
  if (info.deriver) s += `Deriver: ${info.deriver.baseName}\n`;
  for (const sig of [...new Set(info.sigs)].sort()) s += `Sig: ${sig}\n`;
  if (info.ca) s += `CA: ${info.ca}\n`;
  for (const [k, v] of info.unknown) s += `${k}: ${v}\n`;
  return s;
}

/** The signature fingerprint of a narinfo (see {@link fingerprint}). */
export function narInfoFingerprint(info: NarInfo): string {
  return fingerprint(
    info.storePath,
    info.narHash,
    info.narSize,
    info.references,
  );
}
