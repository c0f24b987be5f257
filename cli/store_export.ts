/**
 * `snix store export STORE_PATH`: writes the store path's NAR to stdout (as
 * `nix-store --dump`), with backpressure; a reader that goes away (EPIPE,
 * e.g. `| head`) ends the output quietly.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import { pipeToStdout } from "./stdout.ts";
import type { CliContext } from "./context.ts";
import { renderNar } from "../lib/castore/render_nar.ts";
import {
  entryAt,
  parseStorePathArg,
  requirePathInfo,
} from "../lib/store/lookup.ts";

/** The `store export` command. */
// deno-lint-ignore no-explicit-any
export function storeExportCommand(ctx: CliContext): Command<any, any, any> {
  return new Command("export")
    .description(
      "write a store path (or a path below it) as a NAR to stdout, like nix-store --dump",
    )
    .argument("<store-path>", "/nix/store/<hash>-<name>[/sub/path]")
    .action(async (arg) => {
      const parsed = parseStorePathArg(arg);
      const { blobs, directories, pathInfos } = await ctx.services();
      const info = await requirePathInfo(pathInfos, parsed.storePath);
      const entry = await entryAt(info.entry!, parsed, directories);
      await pipeToStdout(renderNar(entry, blobs, directories));
    });
}
