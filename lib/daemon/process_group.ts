/**
 * More processes accepting on the nix-daemon's socket, so that its clients
 * are served on every core: a process runs its JavaScript on one thread,
 * and a busy daemon (QueryPathInfo from 16 connections) used one core of
 * two while Nix's own daemon, which forks a process per connection, used
 * both. We start a fixed number of copies of this program once, each
 * accepting on the same listening socket (inherited as fd 3); the kernel
 * hands each new connection to one of them.
 *
 * They share the store the way separate processes do (the local store is
 * made for that, a remote one is shared anyway). What a process keeps to
 * itself is its PathInfo cache, so every PathInfo a process writes is
 * announced (`put HASH` on its stdout to the first process, which tells
 * the others `forget HASH` on their stdin): a signature added through one
 * connection shows in the next one, whichever process serves it (the
 * announcement goes out before the client hears back, and is a pipe write
 * away from the other processes). A started process says `ready` once it
 * accepts, and stops when its stdin ends (the first process is gone).
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { selfCommand } from "../runtime/self_command.ts";
import { stopChild } from "../runtime/stop_child.ts";
import { ffiAvailable, libc } from "../runtime/libc.ts";
import type { DaemonStore } from "./store.ts";

/** Names the inherited listening socket's fd in a started process. */
export const LISTEN_FD_ENV = "SNIX_NIX_DAEMON_LISTEN_FD";
/** A started process's number (2, 3, ...), for its log lines. */
export const PROCESS_ENV = "SNIX_NIX_DAEMON_PROCESS";

/** How long the first process waits for the others to accept (ms). */
const READY_MS = 30_000;

/** Calls `line` for each newline-ended line of text arriving through `on`. */
function eachLine(
  on: (listener: (chunk: Uint8Array | string) => void) => void,
  line: (text: string) => void,
): void {
  let rest = "";
  on((chunk) => {
    rest += typeof chunk === "string" ? chunk : new TextDecoder().decode(chunk);
    let nl;
    while ((nl = rest.indexOf("\n")) >= 0) {
      line(rest.slice(0, nl));
      rest = rest.slice(nl + 1);
    }
  });
}

/** The processes the first one started (see the module doc). */
export class DaemonProcesses {
  readonly #children: ChildProcess[] = [];
  #stopping = false;

  private constructor(
    readonly store: DaemonStore,
    readonly log: (line: string) => void,
  ) {}

  /**
   * Starts `count` more processes of this program, with its arguments,
   * accepting on `listenFd`, and relays PathInfo writes between them and
   * `store` (this process's).
   */
  static async start(
    count: number,
    listenFd: number,
    store: DaemonStore,
    log: (line: string) => void,
  ): Promise<DaemonProcesses> {
    const group = new DaemonProcesses(store, log);
    const ready: Promise<void>[] = [];
    const [exe, ...pre] = selfCommand();
    // Deno's spawn makes a passed fd blocking (child stdio), and the
    // blocking mode belongs to the socket, shared by every process: until
    // the child listened (and made it non-blocking again), this process's
    // accept loop would block in its extra accept after each connection,
    // stalling that connection (seen: the first `nix-store --add` hung).
    const c = ffiAvailable() ? await libc().catch(() => undefined) : undefined;
    for (let i = 0; i < count; i++) {
      const n = i + 2;
      const child = spawn(exe, [...pre, ...process.argv.slice(2)], {
        stdio: ["pipe", "pipe", "inherit", listenFd],
        env: { ...process.env, [LISTEN_FD_ENV]: "3", [PROCESS_ENV]: `${n}` },
      });
      c?.setNonBlocking?.(listenFd);
      group.#children.push(child);
      child.stdin?.on("error", () => {}); // gone: its exit says so
      ready.push(
        new Promise<void>((resolve) => {
          child.once("exit", () => resolve());
          eachLine((l) => child.stdout?.on("data", l), (text) => {
            const m = /^put ([0-9a-z]{32})$/.exec(text);
            if (m) group.#relay(m[1], child);
            else if (text === "ready") resolve();
          });
        }),
      );
      child.on("exit", (code, signal) => {
        if (!group.#stopping) {
          log(
            `nix-daemon process ${n} (pid ${child.pid}) ended (${
              signal ?? `status ${code}`
            }); the others go on`,
          );
        }
      });
    }
    store.onPut = (hash) => group.#relay(hash, undefined);
    // Until they accept (this process serves meanwhile), at most READY_MS.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(ready),
      new Promise((r) => (timer = setTimeout(r, READY_MS))),
    ]);
    clearTimeout(timer);
    return group;
  }

  /** Tells every process but `from` (and this one, unless it wrote it) to forget `hash`. */
  #relay(hash: string, from: ChildProcess | undefined): void {
    if (from) this.store.forget(hash);
    for (const c of this.#children) {
      if (c !== from && c.exitCode === null) c.stdin?.write(`forget ${hash}\n`);
    }
  }

  /** Stops the started processes (SIGTERM, SIGKILL after `graceMs`) and waits for them. */
  async stop(graceMs = 5000): Promise<void> {
    this.#stopping = true;
    await Promise.all(this.#children.map((c) => stopChild(c, graceMs)));
  }
}

/**
 * In a started process: the inherited listening fd and this process's
 * number, or `undefined` in the first process.
 */
export function startedProcess(): { fd: number; n: number } | undefined {
  const fd = Number(process.env[LISTEN_FD_ENV]);
  if (!Number.isInteger(fd) || fd < 0 || !process.env[LISTEN_FD_ENV]) {
    return undefined;
  }
  return { fd, n: Number(process.env[PROCESS_ENV] ?? 0) };
}

/**
 * In a started process: announces `store`'s writes to the first process,
 * forgets what it relays, and calls `parentGone` when it is gone. Returns
 * the function that stops listening (stdin would keep the process alive).
 */
export function joinProcessGroup(
  store: DaemonStore,
  parentGone: () => void,
): () => void {
  store.onPut = (hash) => void process.stdout.write(`put ${hash}\n`);
  eachLine((l) => process.stdin.on("data", l), (text) => {
    const m = /^forget ([0-9a-z]{32})$/.exec(text);
    if (m) store.forget(m[1]);
  });
  process.stdin.on("end", parentGone);
  process.stdin.on("error", parentGone);
  process.stdout.write("ready\n");
  return () => {
    store.onPut = undefined;
    process.stdin.off("end", parentGone);
    process.stdin.off("error", parentGone);
    process.stdin.destroy();
  };
}
