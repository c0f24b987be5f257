/**
 * `snix store verify`: re-reads every blob, directory and PathInfo (see
 * lib/store/verify.ts), prints one line per problem and a summary, and exits
 * with status 1 if anything is corrupt or missing.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import process from "node:process";
import type { CliContext } from "./context.ts";
import { verifyStore } from "../lib/store/verify.ts";
import { startProgress } from "./progress.ts";

/** The `store verify` command. */
// deno-lint-ignore no-explicit-any
export function storeVerifyCommand(ctx: CliContext): Command<any, any, any> {
  return new Command("verify")
    .description(
      "check every blob, directory and store path; exit 1 if anything is corrupt or missing",
    )
    .action(async () => {
      const services = await ctx.services();
      const progress = startProgress("verifying");
      let report;
      try {
        report = await verifyStore(services, {
          onProblem: (p) => {
            progress.stop();
            process.stdout.write(`${p.kind} ${p.id}: ${p.message}\n`);
          },
          onProgress: (p) => progress.update(p),
        });
      } finally {
        progress.stop();
      }
      const n = report.problems.length;
      process.stdout.write(
        `checked ${report.blobs} blobs, ${report.directories} directories, ${report.paths} store paths: ` +
          `${n === 0 ? "no problems" : `${n} problem${n === 1 ? "" : "s"}`}\n`,
      );
      if (!report.listed) {
        process.stdout.write(
          "(this backend cannot list its blobs and directories: only what the store paths reach was checked)\n",
        );
      }
      if (n > 0) {
        throw new Error(
          `store verification found ${n} problem${n === 1 ? "" : "s"}`,
        );
      }
    });
}
