/**
 * Whether a derived path is already there: an opaque path is valid, or every
 * wanted output of a derivation (read from its .drv in the store) is valid.
 *
 * @module
 */
import type { StorePath } from "../../nix/store_path.ts";
import type { DerivedPath } from "../../wire/mod.ts";
import type { OpContext } from "../connection.ts";
import { derivationOutputs } from "../derivation.ts";
import { DaemonError, parsePath } from "../store.ts";

/** Why nothing is built here. */
export const NO_BUILD =
  "this daemon does not build; use it as the lower store of a local-overlay store";

/** The outputs of a derivation in the store (name to path or ""). */
export async function outputsOf(
  c: OpContext,
  drv: StorePath,
): Promise<Map<string, string>> {
  const bytes = await c.store.readFlatFile(drv, 64 << 20);
  if (!bytes) throw new DaemonError(`derivation '${drv}' is not valid`);
  try {
    return derivationOutputs(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new DaemonError(`${drv}: ${(e as Error).message}`);
  }
}

/**
 * Checks one derived path: `undefined` if everything wanted is valid, else
 * why not. Fills `outputs` with the wanted outputs' paths.
 */
export async function checkDerivedPath(
  c: OpContext,
  dp: DerivedPath,
  outputs: Map<string, string> = new Map(),
): Promise<string | undefined> {
  if (dp.type === "opaque") {
    return (await c.store.isValid(parsePath(dp.path)))
      ? undefined
      : `path '${dp.path}' is not valid and ${NO_BUILD}`;
  }
  const all = await outputsOf(c, parsePath(dp.drvPath));
  const names = dp.outputs === "*" ? [...all.keys()] : dp.outputs;
  for (const n of names) {
    const p = all.get(n);
    if (p === undefined) {
      return `derivation '${dp.drvPath}' has no output '${n}'`;
    }
    if (!p || !(await c.store.isValid(parsePath(p)))) {
      return `output '${n}' of '${dp.drvPath}' is not valid and ${NO_BUILD}`;
    }
    outputs.set(n, p);
  }
  return undefined;
}
