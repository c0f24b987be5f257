/**
 * `snix nix-daemon`: serve the store over the Nix worker protocol, on a unix
 * socket (many clients at once) or on stdin/stdout (`--stdio`, one client).
 *
 * @module
 */
import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { getLogger } from "@logtape/logtape";
import process from "node:process";
import { Readable } from "node:stream";
import { StdoutWriter } from "./stdout.ts";
import type { CliContext } from "./context.ts";
import { VERSION } from "./version.ts";
import { onTermination } from "../lib/runtime/signals.ts";
import { listenUnix, serveStreams } from "../lib/daemon/server.ts";
import {
  DaemonProcesses,
  joinProcessGroup,
  startedProcess,
} from "../lib/daemon/process_group.ts";
import { availableParallelism } from "node:os";
import { enlargePipeBuffer } from "../lib/runtime/raw_socket.ts";
import { closeNarWorkers, warmNarWorkers } from "../lib/castore/nar_to_fd.ts";

const log = getLogger(["snix", "nix-daemon"]);

/** Pipe buffer asked for on stdin/stdout with `--stdio` (bytes). */
const PIPE_BYTES = 1 << 20;

function modeOption(v: string): number {
  if (!/^0?[0-7]{3,4}$/.test(v)) {
    throw new InvalidArgumentError("must be an octal mode such as 0666");
  }
  return parseInt(v, 8);
}

function processesOption(v: string): number {
  if (!/^[1-9][0-9]?$/.test(v)) {
    throw new InvalidArgumentError("must be a number from 1 to 99");
  }
  return Number(v);
}

/** One process per CPU (Nix's daemon forks one per connection), at most 4. */
function defaultProcesses(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}

/** The `nix-daemon` command. */
// deno-lint-ignore no-explicit-any
export function nixDaemonCommand(ctx: CliContext): Command<any, any, any> {
  return new Command("nix-daemon")
    .description(
      "serve the store to Nix over the worker protocol (nix --store unix://SOCK, local-overlay lower-store);\n" +
        "stops on SIGINT/SIGTERM and removes its socket",
    )
    .option("-l, --listen <socket>", "unix socket path to listen on")
    .option("--unix-listen-unlink", "replace an existing socket file")
    .option("--stdio", "serve one client on stdin/stdout instead of a socket")
    .option(
      "--socket-mode <mode>",
      "permissions of the socket (octal, e.g. 0666)",
      modeOption,
    )
    .option(
      "--processes <n>",
      "processes accepting connections on the socket (default: the number of CPUs, at most 4)",
      processesOption,
    )
    .option("--read-only", "refuse every operation that writes")
    .option(
      "--log-wire",
      "log each request and reply (op, arguments, sizes, timing) to stderr",
    )
    .action(async (opts) => {
      if (!opts.stdio && !opts.listen) {
        throw new InvalidArgumentError("give -l SOCKET or --stdio");
      }
      const services = await ctx.services();
      const logWire = opts.logWire
        ? (line: string) => void process.stderr.write(`nix-daemon: ${line}\n`)
        : undefined;
      const base = {
        services,
        readOnly: opts.readOnly ?? false,
        daemonVersion: `${VERSION} (snix-ts)`,
        logWire,
        log: (line: string) => log.warn(line),
      };
      if (opts.stdio) {
        const readable = Readable.toWeb(
          process.stdin,
        ) as unknown as ReadableStream<Uint8Array>;
        // Blocking writes on fd 1 (./stdout.ts): process.stdout through
        // Writable.toWeb made NarFromPath over ssh-ng about 3x slower than
        // `snix store export` of the same path under the compiled binary.
        const out = new StdoutWriter();
        // NARs go out in writes of ~1 MiB; a 64 KiB pipe makes each one a
        // dozen wake-ups of the client (ssh-ng).
        await Promise.all(
          [0, 1].map((fd) => enlargePipeBuffer(fd, PIPE_BYTES)),
        );
        await serveStreams(readable, {
          write: (chunk) => out.write(chunk),
          // Everything written is out (blocking writes): NARs may go to
          // fd 1 straight from the NAR workers.
          directFd: async () => (await out.flush(), { fd: 1, close() {} }),
          close: () => out.flush(),
          abort: () => {},
        }, base);
        await closeNarWorkers();
        return;
      }
      // A server gets its NAR workers ready before the first NarFromPath
      // (on the local store), alongside its first clients; not with
      // --stdio, where a session without a NAR would wait ~70 ms for them
      // at its end.
      void warmNarWorkers(services.blobs, services.directories).catch(() => {});
      const started = startedProcess();
      if (started) {
        // One of the processes the first one started (../lib/daemon/process_group.ts).
        const daemon = await listenUnix(opts.listen!, {
          ...base,
          inheritedFd: started.fd,
          idPrefix: `${started.n}:`,
        });
        await new Promise<void>((resolve) => {
          const stop = () => {
            remove();
            leave();
            daemon.close().then(closeNarWorkers).finally(resolve);
          };
          const remove = onTermination(stop);
          const leave = joinProcessGroup(daemon.store, stop);
        });
        return;
      }
      const daemon = await listenUnix(opts.listen!, {
        ...base,
        unlink: opts.unixListenUnlink ?? false,
        mode: opts.socketMode,
      });
      const count = opts.processes ?? defaultProcesses();
      const group = count > 1 && daemon.fd !== undefined
        ? await DaemonProcesses.start(
          count - 1,
          daemon.fd,
          daemon.store,
          base.log,
        )
        : undefined;
      log.info(
        "nix-daemon listening on " + daemon.path +
          (opts.readOnly ? " (read-only)" : "") +
          (group ? ` (${count} processes)` : ""),
      );
      await new Promise<void>((resolve) => {
        const remove = onTermination((sig) => {
          remove();
          log.info(sig + ": closing connections and removing " + daemon.path);
          Promise.all([group?.stop(), daemon.close()]).then(closeNarWorkers)
            .finally(resolve);
        });
      });
    });
}
