/**
 * `snix store export STORE_PATH`: writes the store path's NAR to stdout (as
 * `nix-store --dump`), with backpressure; a reader that goes away (EPIPE,
 * e.g. `| head`) ends the output quietly.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import process from "node:process";
import { once } from "node:events";
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
function isEpipe(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === "EPIPE" || (e as Error)?.name === "BrokenPipe" ||
    /broken pipe/i.test((e as Error)?.message ?? "");
}

/**
 * Copies `stream` to stdout, waiting for 'drain' when stdout's buffer is
 * full. Resolves when all bytes are handed over; if stdout's reader went away,
 * cancels `stream` and exits the process quietly with status 0.
 */
export async function pipeToStdout(
  stream: ReadableStream<Uint8Array>,
): Promise<void> {
  const out = process.stdout;
  let failure: unknown;
  const onError = (e: unknown) => (failure ??= e);
  out.on("error", onError);
  const reader = stream.getReader();
  try {
    while (true) {
      if (failure) throw failure;
      const { done, value } = await reader.read();
      if (done) break;
      const ok = out.write(value);
      if (!ok && !failure) {
        await Promise.race([
          once(out, "drain"),
          once(out, "error").catch(() => {}),
        ]);
      }
    }
    if (failure) throw failure;
  } catch (e) {
    if (isEpipe(e) || isEpipe(failure)) {
      await reader.cancel().catch(() => {});
      process.exit(0);
    }
    await reader.cancel().catch(() => {});
    throw e;
  } finally {
    out.off("error", onError);
  }
}
