/**
 * `snix store compact`: merges the small pack files of the local data
 * directory (one per ingestion: a store filled by `nix copy` has one or two
 * per store path) into bigger ones, so every process loads fewer indexes
 * and keeps fewer files open. Ingestions already merge a bounded amount on
 * their own (lib/castore/pack.ts); this merges everything, for a store that
 * grew before that, or in one go. Then it writes each packs directory's
 * catalog (lib/castore/pack_catalog.ts), so that processes opening the
 * store find records without loading every pack's index. Safe while other
 * processes read and write the store.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import process from "node:process";
import type { CliContext } from "./context.ts";
import { type CompactionResult, PackSet } from "../lib/castore/pack.ts";
import { startProgress } from "./progress.ts";

/** The packs of a service that keeps pack files. */
function packsOf(s: unknown): PackSet | undefined {
  const p = (s as { packs?: unknown })?.packs;
  return p instanceof PackSet ? p : undefined;
}

/** The `store compact` command. */
// deno-lint-ignore no-explicit-any
export function storeCompactCommand(ctx: CliContext): Command<any, any, any> {
  return new Command("compact")
    .description(
      "merge the small pack files of the local store into bigger ones and catalog them",
    )
    .action(async () => {
      const services = await ctx.services();
      const parts: [string, PackSet | undefined][] = [
        ["blob", packsOf(services.blobs)],
        ["directory", packsOf(services.directories)],
      ];
      if (parts.every(([, c]) => !c)) {
        throw new Error(
          "this store keeps no pack files (only a local data directory has them)",
        );
      }
      let kept = 0;
      for (const [what, c] of parts) {
        if (!c) continue;
        const before = c.packs.length;
        const progress = startProgress(`merging ${what} packs`);
        let r: CompactionResult;
        try {
          r = c.compactAll((sum) =>
            progress.update({ bytes: sum.bytes, files: sum.merged })
          );
        } finally {
          progress.stop();
        }
        for (const k of r.kept) {
          process.stdout.write(`kept ${k}\n`);
        }
        kept += r.kept.length;
        const cataloged = c.writeCatalog()
          ? `, catalog of ${c.cataloged} records written`
          : ", catalog not written: another process is merging";
        process.stdout.write(
          `${what} packs: ${before} -> ${c.packs.length} (merged ${r.merged}, ${
            (r.bytes / 2 ** 20).toFixed(1)
          } MiB${cataloged})\n`,
        );
      }
      if (kept > 0) {
        throw new Error(
          `${kept} pack${
            kept === 1 ? "" : "s"
          } with damaged records left as they are; run snix store verify`,
        );
      }
    });
}
