/**
 * `snix nar ...`: dump, hash, list and read NAR archives.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import type { CliContext } from "./context.ts";

/** The `nar` command group. */
export function narCommand(_ctx: CliContext): Command {
  return new Command("nar").description("create, hash and read NAR archives (no store needed)");
}
