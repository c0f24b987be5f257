/**
 * Termination signals, the same way under Deno and Bun.
 *
 * @module
 */
import process from "node:process";

/** The signals that ask a server to stop. */
export const TERMINATION_SIGNALS = ["SIGINT", "SIGTERM"] as const;

/**
 * Calls `handler` on SIGINT or SIGTERM (instead of the default exit);
 * returns a function that removes the handlers again.
 */
export function onTermination(handler: (signal: string) => void): () => void {
  const listeners = TERMINATION_SIGNALS.map((sig) => {
    const l = () => handler(sig);
    process.on(sig, l);
    return [sig, l] as const;
  });
  return () => {
    for (const [sig, l] of listeners) process.off(sig, l);
  };
}
