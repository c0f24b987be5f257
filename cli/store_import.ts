/**
 * `snix store import PATH... [--name NAME]`: adds files or directories to the
 * store as `nix-store --add` does and prints each store path.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import { basename, resolve } from "node:path";
import process from "node:process";
import type { CliContext } from "./context.ts";
import { importPath } from "../lib/store/import_path.ts";
import { pathInfoStorePath } from "../lib/store/path_info.ts";
import { startProgress } from "./progress.ts";

/** The `store import` command. */
// deno-lint-ignore no-explicit-any
export function storeImportCommand(ctx: CliContext): Command<any, any, any> {
  return new Command("import")
    .description(
      "add files or directories to the store (as nix-store --add) and print their store paths",
    )
    .argument("<paths...>", "files, directories or symlinks to import")
    .option(
      "--name <name>",
      "store path name (default: the last component of each path)",
    )
    .action(async (paths, opts) => {
      const services = await ctx.services();
      for (const p of paths) {
        const abs = resolve(p);
        const name = opts.name ?? basename(abs);
        const progress = startProgress(`importing ${name}`);
        let info;
        try {
          info = await importPath(
            abs,
            name,
            services,
            (s) => progress.update(s),
          );
        } finally {
          progress.stop();
        }
        process.stdout.write(`${pathInfoStorePath(info)}\n`);
      }
    });
}
