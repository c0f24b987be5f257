/**
 * Content-address strings as the protocol carries them: `text:sha256:<hash>`,
 * `fixed:<algo>:<hash>` (flat), `fixed:r:<algo>:<hash>` (NAR),
 * `fixed:git:<algo>:<hash>`; and content-address *methods* as `AddToStore`
 * (1.25+) sends them: the same without the hash (`fixed:r:sha256`,
 * `text:sha256`).
 *
 * @module
 */
import { InvalidValueError } from "./errors.ts";

/** How the content was hashed. */
export type CaMethod = "text" | "flat" | "nar" | "git";

/** A parsed content address; `hash` is the encoded digest as written. */
export interface ContentAddress {
  method: CaMethod;
  algo: string;
  hash: string;
}

const ALGOS = new Set(["md5", "sha1", "sha256", "sha512", "blake3"]);

function methodPrefix(method: CaMethod): string {
  switch (method) {
    case "text":
      return "text:";
    case "flat":
      return "fixed:";
    case "nar":
      return "fixed:r:";
    case "git":
      return "fixed:git:";
  }
}

/** Parses `text:sha256`, `fixed:r:sha256`, … into method and algorithm. */
export function parseCaMethodWithAlgo(
  s: string,
): { method: CaMethod; algo: string } {
  let method: CaMethod, rest: string;
  if (s.startsWith("text:")) [method, rest] = ["text", s.slice(5)];
  else if (s.startsWith("fixed:r:")) [method, rest] = ["nar", s.slice(8)];
  else if (s.startsWith("fixed:git:")) [method, rest] = ["git", s.slice(10)];
  else if (s.startsWith("fixed:")) [method, rest] = ["flat", s.slice(6)];
  else throw new InvalidValueError(`invalid content-address method "${s}"`);
  if (!ALGOS.has(rest)) {
    throw new InvalidValueError(
      `invalid hash algorithm in content-address method "${s}"`,
    );
  }
  if (method === "text" && rest !== "sha256") {
    throw new InvalidValueError(`text hashing needs sha256, got "${s}"`);
  }
  return { method, algo: rest };
}

/** Renders a method and algorithm (`fixed:r:sha256`). */
export function renderCaMethodWithAlgo(method: CaMethod, algo: string): string {
  return methodPrefix(method) + algo;
}

/** Parses a content address; "" is `undefined`. */
export function parseContentAddress(s: string): ContentAddress | undefined {
  if (s === "") return undefined;
  const i = s.lastIndexOf(":");
  if (i < 0) throw new InvalidValueError(`invalid content address "${s}"`);
  const { method, algo } = parseCaMethodWithAlgo(s.slice(0, i));
  const hash = s.slice(i + 1);
  if (hash === "") {
    throw new InvalidValueError(`content address "${s}" has no hash`);
  }
  return { method, algo, hash };
}

/** Renders a content address; `undefined` is "". */
export function renderContentAddress(ca: ContentAddress | undefined): string {
  if (!ca) return "";
  return `${methodPrefix(ca.method)}${ca.algo}:${ca.hash}`;
}
