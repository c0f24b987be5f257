/**
 * `snix store cat STORE_PATH/FILE`: writes a file's contents to stdout (like
 * `nix store cat`; symlinks are not followed).
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import { Code, ConnectError } from "@connectrpc/connect";
import type { CliContext } from "./context.ts";
import { digestToString } from "../lib/castore/digest.ts";
import {
  entryAt,
  parseStorePathArg,
  requirePathInfo,
} from "../lib/store/lookup.ts";
import { pipeToStdout } from "./stdout.ts";

/** The `store cat` command. */
// deno-lint-ignore no-explicit-any
export function storeCatCommand(ctx: CliContext): Command<any, any, any> {
  return new Command("cat")
    .description(
      "print the contents of a file in the store (like nix store cat)",
    )
    .argument(
      "<path>",
      "/nix/store/<hash>-<name>[/sub/path] naming a regular file",
    )
    .action(async (arg) => {
      const parsed = parseStorePathArg(arg);
      const { blobs, directories, pathInfos } = await ctx.services();
      const info = await requirePathInfo(pathInfos, parsed.storePath);
      const entry = await entryAt(info.entry!, parsed, directories);
      if (entry.entry.case !== "file") {
        throw new Error(`path '${arg}' is not a regular file`);
      }
      const digest = entry.entry.value.digest;
      const stream = await blobs.read(digest);
      if (!stream) {
        throw new ConnectError(
          `blob ${
            digestToString(digest)
          } of '${arg}' is missing from the store`,
          Code.DataLoss,
        );
      }
      await pipeToStdout(stream);
    });
}
