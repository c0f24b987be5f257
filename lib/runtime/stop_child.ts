/**
 * Stopping a child process politely, then firmly.
 *
 * @module
 */
import type { ChildProcess } from "node:child_process";
import process from "node:process";

/**
 * Sends SIGTERM to `child` and resolves once it exited; SIGKILL follows
 * after `graceMs` if it has not. Resolves at once for a child that already
 * ended. (`process.kill` for the second signal: a second `child.kill()`
 * after the first does nothing under Deno.)
 */
export function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const t = setTimeout(() => {
      try {
        process.kill(child.pid!, "SIGKILL");
      } catch {
        // gone meanwhile
      }
    }, graceMs);
    child.once("exit", () => {
      clearTimeout(t);
      resolve();
    });
    child.kill("SIGTERM");
  });
}
