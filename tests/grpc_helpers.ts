/**
 * Test helpers for the gRPC tests: run `snix store daemon` as a subprocess
 * and wait for its "listening on" line.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** The repository root. */
export const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** A running `snix store daemon`. */
export interface Daemon {
  proc: Deno.ChildProcess;
  pid: number;
  /** The bound addresses as logged (`127.0.0.1:PORT`, `unix:/path`). */
  addresses: string[];
  /** Everything the daemon wrote to stderr so far. */
  stderr(): string;
  /** Sends `signal` and waits for the exit code (kills after `timeoutMs`). */
  stop(signal?: Deno.Signal, timeoutMs?: number): Promise<number>;
}

/** Runs `snix [global...] store daemon [args...]`; resolves once it listens, rejects with its stderr if it exits. */
export async function startDaemon(
  global: string[],
  args: string[],
): Promise<Daemon> {
  const proc = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      `${ROOT}cli/main.ts`,
      ...global,
      "store",
      "daemon",
      ...args,
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  const status = proc.status;
  let readerDone: Promise<void> = Promise.resolve();
  const listening = new Promise<string[]>((resolve, reject) => {
    readerDone = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of proc.stderr) {
        text += decoder.decode(chunk, { stream: true });
        const m = text.match(/listening on (.*?)( \(read-only\))?\n/);
        if (m) resolve(m[1].trim().split(" "));
      }
      reject(new Error(`daemon exited before listening:\n${text}`));
    })().catch(reject);
  });
  let addresses: string[];
  let startTimer: ReturnType<typeof setTimeout> | undefined;
  try {
    addresses = await Promise.race([
      listening,
      new Promise<never>((_, rej) => {
        startTimer = setTimeout(
          () => rej(new Error(`daemon did not start:\n${text}`)),
          30_000,
        );
      }),
    ]);
    clearTimeout(startTimer);
  } catch (e) {
    clearTimeout(startTimer);
    try {
      proc.kill("SIGKILL");
    } catch { /* gone */ }
    await status;
    await readerDone;
    throw e;
  }
  return {
    proc,
    pid: proc.pid,
    addresses,
    stderr: () => text,
    async stop(signal: Deno.Signal = "SIGTERM", timeoutMs = 15_000) {
      try {
        proc.kill(signal);
      } catch { /* already gone */ }
      let t: ReturnType<typeof setTimeout> | undefined;
      const killed = new Promise<void>((r) => {
        t = setTimeout(() => {
          try {
            proc.kill("SIGKILL");
          } catch { /* gone */ }
          r();
        }, timeoutMs);
      });
      const s = await Promise.race([status, killed.then(() => status)]);
      clearTimeout(t);
      await readerDone;
      return s.code;
    },
  };
}

/** Runs a command to completion; returns code and output. */
export async function run(
  cmd: string,
  args: string[],
  opts: {
    stdin?: Uint8Array;
    env?: Record<string, string>;
    timeoutMs?: number;
  } = {},
): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  const child = new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    stdin: opts.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
  }).spawn();
  if (opts.stdin) {
    const w = child.stdin.getWriter();
    await w.write(opts.stdin);
    await w.close();
  }
  // A stuck child fails the test (killed after timeoutMs) instead of hanging it.
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, opts.timeoutMs ?? 120_000);
  const out = await child.output();
  clearTimeout(timer);
  return {
    code: out.code,
    stdout: out.stdout,
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** Runs `snix ARGS` (the CLI under the current Deno). */
export function snix(args: string[], opts: { stdin?: Uint8Array } = {}) {
  return run(Deno.execPath(), [
    "run",
    "-A",
    "--no-check",
    `${ROOT}cli/main.ts`,
    ...args,
  ], opts);
}

/** Generates the python stubs from proto/ into `dir`. */
export async function generatePythonStubs(dir: string): Promise<void> {
  const r = await run("/usr/bin/python3", [
    "-m",
    "grpc_tools.protoc",
    "-I",
    "proto",
    `--python_out=${dir}`,
    `--grpc_python_out=${dir}`,
    ...["castore", "rpc_blobstore", "rpc_directory"].map((f) =>
      `proto/snix/castore/protos/${f}.proto`
    ),
    ...["pathinfo", "rpc_pathinfo"].map((f) =>
      `proto/snix/store/protos/${f}.proto`
    ),
    "proto/grpc/health/v1/health.proto",
  ]);
  if (r.code !== 0) throw new Error(`protoc failed: ${r.stderr}`);
}
