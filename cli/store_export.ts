/**
 * `snix store export STORE_PATH`: writes the store path's NAR to stdout (as
 * `nix-store --dump`), with backpressure; a reader that goes away (EPIPE,
 * e.g. `| head`) ends the output quietly.
 *
 * From the local store, a NAR of some size is written by the NAR workers
 * (lib/castore/nar_to_fd.ts: two threads decode, verify and write to fd 1
 * themselves); otherwise it is streamed through this thread.
 *
 * @module
 */
import process from "node:process";
import { Command } from "@commander-js/extra-typings";
import { pipeToStdout } from "./stdout.ts";
import type { CliContext } from "./context.ts";
import { renderNar } from "../lib/castore/render_nar.ts";
import {
  closeNarWorkers,
  NarWriteError,
  writeNarToFd,
} from "../lib/castore/nar_to_fd.ts";
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
      let written: number | undefined;
      try {
        // The store path's NAR size: an upper bound for a path below it.
        written = await writeNarToFd(
          entry,
          blobs,
          directories,
          1,
          Number(info.narinfo?.narSize ?? 0n),
        );
      } catch (e) {
        // The reader went away (`| head`): a quiet end, as nix-store --dump.
        if (e instanceof NarWriteError && e.code === "EPIPE") process.exit(0);
        throw e;
      } finally {
        await closeNarWorkers();
      }
      if (written === undefined) {
        await pipeToStdout(renderNar(entry, blobs, directories));
      }
    });
}
