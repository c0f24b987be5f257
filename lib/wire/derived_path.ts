/**
 * Derived paths (build requests) as strings: `/nix/store/…` (a path),
 * `/nix/store/…drv!out,dev` or `…drv!*` (outputs of a derivation). Before 1.30
 * a bare `.drv` path means all its outputs.
 *
 * @module
 */
import { InvalidValueError } from "./errors.ts";
import { atLeast, type ProtocolVersion } from "./version.ts";

/** A build request. */
export type DerivedPath =
  | { type: "opaque"; path: string }
  | { type: "built"; drvPath: string; outputs: "*" | string[] };

/** Parses a derived path as a client of version `v` writes it. */
export function parseDerivedPath(s: string, v: ProtocolVersion): DerivedPath {
  const i = s.indexOf("!");
  if (i < 0) {
    if (!atLeast(v, 30) && s.endsWith(".drv")) {
      return { type: "built", drvPath: s, outputs: "*" };
    }
    return { type: "opaque", path: s };
  }
  const drvPath = s.slice(0, i);
  const outs = s.slice(i + 1);
  if (outs === "*") return { type: "built", drvPath, outputs: "*" };
  const names = outs.split(",");
  if (names.some((n) => n === "")) {
    throw new InvalidValueError(`invalid output list in "${s}"`);
  }
  return { type: "built", drvPath, outputs: names };
}

/** Renders a derived path for a client of version `v`. */
export function renderDerivedPath(p: DerivedPath, v: ProtocolVersion): string {
  if (p.type === "opaque") return p.path;
  if (p.outputs === "*") return atLeast(v, 30) ? `${p.drvPath}!*` : p.drvPath;
  return `${p.drvPath}!${[...p.outputs].sort().join(",")}`;
}
