/**
 * `snix store daemon`: serve castore and store over gRPC.
 *
 * @module
 */
import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { getLogger } from "@logtape/logtape";
import type { CliContext } from "./context.ts";
import { onTermination } from "../lib/runtime/signals.ts";
import { startStoreServer } from "../lib/grpc/server.ts";
import {
  type ListenAddress,
  parseListenAddress,
} from "../lib/grpc/listen_address.ts";

const log = getLogger(["snix", "grpc"]);

/** Default listen address, as snix's `store daemon`. */
export const DEFAULT_LISTEN_ADDRESS = "[::1]:8000";

function collectAddress(
  value: string,
  previous: ListenAddress[] | undefined,
): ListenAddress[] {
  try {
    return [...(previous ?? []), parseListenAddress(value)];
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

function graceOption(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > 3600) {
    throw new InvalidArgumentError("must be seconds from 0 to 3600");
  }
  return n;
}

/** The `store daemon` command. */
// deno-lint-ignore no-explicit-any
export function storeDaemonCommand(ctx: CliContext): Command<any, any, any> {
  return new Command("daemon")
    .description(
      "serve BlobService, DirectoryService and PathInfoService (and grpc.health.v1) over gRPC\n" +
        "(stops on SIGINT/SIGTERM after in-flight calls finish)",
    )
    .option(
      "-l, --listen-address <addr>",
      `where to listen: host:port, [v6]:port or unix:/path.sock; repeatable (default ${DEFAULT_LISTEN_ADDRESS})`,
      collectAddress,
    )
    .option(
      "--unix-listen-unlink",
      "replace a stale unix socket file instead of failing",
    )
    .option("--read-only", "refuse every Put with PERMISSION_DENIED")
    .option(
      "--shutdown-grace <seconds>",
      "how long in-flight calls may finish on shutdown",
      graceOption,
      5,
    )
    // Usage errors go to main's handler (exit 2), not commander's exit(1).
    .exitOverride()
    .action(async (opts) => {
      const listen = opts.listenAddress ??
        [parseListenAddress(DEFAULT_LISTEN_ADDRESS)];
      const services = await ctx.services();
      const server = await startStoreServer(services, {
        listen,
        readOnly: opts.readOnly ?? false,
        unlinkStaleSocket: opts.unixListenUnlink ?? false,
      });
      // One plain line (no quoted placeholders): what scripts and people look for.
      log.info(
        "store daemon listening on " + server.addresses.join(" ") +
          (opts.readOnly ? " (read-only)" : ""),
      );
      await new Promise<void>((resolve) => {
        let stopping = false;
        const removeHandlers = onTermination((sig) => {
          if (stopping) return;
          stopping = true;
          log.info(sig + ": finishing in-flight calls, then exiting");
          server.shutdown(opts.shutdownGrace * 1000).finally(() => {
            removeHandlers();
            resolve();
          });
        });
      });
    });
}
