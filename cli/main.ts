/**
 * The `snix` command line: global options, the subcommand tree, and the one
 * place that turns errors into a one-line message and an exit code.
 *
 * @module
 */
import { Command, CommanderError, Option } from "@commander-js/extra-typings";
import process from "node:process";
import { ConnectError } from "@connectrpc/connect";
import {
  type Config,
  ConfigError,
  LOG_LEVELS,
  resolveConfig,
} from "./config.ts";
import type { CliContext } from "./context.ts";
import { openServices, type Services } from "./services.ts";
import { configureLogging } from "./log.ts";
import { VERSION } from "./version.ts";
import { addCommands } from "./lazy_commands.ts";

/**
 * Builds the program. With `argv` (the arguments, without runtime and script
 * names) only the subcommand they select is loaded; without, every one is.
 */
export async function buildProgram(argv?: string[]): Promise<Command> {
  const program = new Command()
    .name("snix")
    .description(
      "Keep Nix store paths in a content-addressed store and serve them to Nix\n" +
        "(gRPC store daemon, FUSE mount, Nix worker-protocol daemon).",
    )
    .version(VERSION, "-V, --version")
    .showHelpAfterError("(run with --help for usage)")
    .option(
      "--config <file>",
      "read settings from a JSON or TOML file (env SNIX_CONFIG)",
    )
    .option(
      "--data-dir <dir>",
      "embedded store data directory (env SNIX_DATA_DIR; default /var/lib/snix as root, else $XDG_DATA_HOME/snix)",
    )
    .addOption(
      new Option(
        "--log-level <level>",
        "log verbosity (env SNIX_LOG_LEVEL; default info)",
      ).choices(
        LOG_LEVELS,
      ),
    )
    .option(
      "--remote <addr>",
      "use this store for all three services (grpc+http://HOST:PORT, grpc+unix:///PATH, memory://, local:///DIR)",
    )
    .option(
      "--blob-service-addr <addr>",
      "blob service address (env BLOB_SERVICE_ADDR)",
    )
    .option(
      "--directory-service-addr <addr>",
      "directory service address (env DIRECTORY_SERVICE_ADDR)",
    )
    .option(
      "--path-info-service-addr <addr>",
      "path info service address (env PATH_INFO_SERVICE_ADDR)",
    );

  let config: Config | undefined;
  let services: Promise<Services> | undefined;
  const ctx: CliContext = {
    config() {
      if (!config) {
        config = resolveConfig(program.opts());
        configureLogging(config.logLevel);
      }
      return config;
    },
    services() {
      services ??= openServices(ctx.config());
      return services;
    },
  };
  program.hook("preAction", () => {
    ctx.config();
  });
  program.hook("postAction", async () => {
    if (services) await (await services).close();
  });

  await addCommands(program, [
    {
      name: "store",
      summary:
        "import, export, inspect, serve and mount the content-addressed store",
      load: async (rest) =>
        (await import("./store.ts")).storeCommand(ctx, rest),
    },
    {
      name: "nar",
      summary: "create, hash and read NAR archives (no store needed)",
      load: async () => (await import("./nar.ts")).narCommand(ctx),
    },
    {
      name: "nix-daemon",
      summary:
        "serve the store to Nix over the worker protocol (nix --store unix://SOCK)",
      load: async () => (await import("./nix_daemon.ts")).nixDaemonCommand(ctx),
    },
  ], argv);
  return program;
}

/** Prints one line for an error and picks the exit code (2 for bad usage). */
export function reportError(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
  if (e instanceof ConfigError) {
    process.stderr.write(`snix: ${e.message}\n`);
    return 2;
  }
  if (e instanceof ConnectError) {
    process.stderr.write(`snix: ${e.rawMessage} (${codeName(e.code)})\n`);
    return 1;
  }
  const message = e instanceof Error ? e.message : String(e);
  process.stderr.write(`snix: ${message}\n`);
  if (process.env.SNIX_DEBUG && e instanceof Error && e.stack) {
    process.stderr.write(e.stack + "\n");
  }
  return 1;
}

function codeName(code: number): string {
  const names = [
    "ok",
    "canceled",
    "unknown",
    "invalid argument",
    "deadline exceeded",
    "not found",
    "already exists",
    "permission denied",
    "resource exhausted",
    "failed precondition",
    "aborted",
    "out of range",
    "unimplemented",
    "internal",
    "unavailable",
    "data loss",
    "unauthenticated",
  ];
  return names[code] ?? `code ${code}`;
}

/** Runs the CLI with the process's arguments and exits. */
export async function main(
  argv: string[] = process.argv.slice(2),
): Promise<void> {
  const program = await buildProgram(argv);
  const throwOnUsageErrors = (command: Command) => {
    command.exitOverride().showHelpAfterError("(run with --help for usage)");
    for (const sub of command.commands) throwOnUsageErrors(sub as Command);
  };
  throwOnUsageErrors(program);
  let code = 0;
  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (e) {
    code = reportError(e);
  }
  process.exitCode = code;
  if (code !== 0) process.exit(code);
}

if (import.meta.main) {
  await main();
}
