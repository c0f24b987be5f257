/**
 * Logging for the CLI: @logtape/logtape, text lines on stderr (stdout may
 * carry a NAR), at the configured level.
 *
 * @module
 */
import {
  configureSync,
  defaultTextFormatter,
  type LogLevel as TapeLevel,
} from "@logtape/logtape";
import process from "node:process";
import type { LogLevel } from "./config.ts";

let configured = false;

/** Sends records of category `snix` at `level` and above to stderr (once per process). */
export function configureLogging(level: LogLevel): void {
  if (configured) return;
  configured = true;
  configureSync({
    sinks: {
      stderr: (record) =>
        void process.stderr.write(defaultTextFormatter(record)),
    },
    loggers: [
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "warning" },
      {
        category: ["snix"],
        sinks: ["stderr"],
        lowestLevel: level as TapeLevel,
      },
    ],
  });
}
