/**
 * A one-line progress display on stderr (cli-progress): bytes, bytes/s and
 * files. Silent when stderr is not a terminal, so scripts and tests see only
 * the command's real output.
 *
 * @module
 */
import cliProgress from "cli-progress";
import process from "node:process";

/** What a progress display is fed. */
export interface ProgressState {
  /** Bytes processed so far. */
  bytes: number;
  /** Files processed so far. */
  files: number;
}

/** A running progress display. */
export interface Progress {
  /** Shows the new state (redraws are rate limited). */
  update(p: ProgressState): void;
  /** Removes the line. */
  stop(): void;
}

/** Formats a byte count with binary units. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

const SILENT: Progress = { update() {}, stop() {} };

/** Starts a progress line labelled `label`; a no-op unless stderr is a TTY. */
export function startProgress(label: string): Progress {
  if (!process.stderr.isTTY) return SILENT;
  const start = Date.now();
  const bar = new cliProgress.SingleBar({
    format: "{label} | {size} | {speed}/s | {files} files",
    stream: process.stderr,
    fps: 8,
    clearOnComplete: true,
    hideCursor: null,
    barsize: 0,
  });
  bar.start(0, 0, {
    label,
    size: formatBytes(0),
    speed: formatBytes(0),
    files: 0,
  });
  return {
    update(p) {
      const secs = Math.max((Date.now() - start) / 1000, 0.001);
      bar.update(p.bytes, {
        label,
        size: formatBytes(p.bytes),
        speed: formatBytes(p.bytes / secs),
        files: p.files,
      });
    },
    stop() {
      bar.stop();
    },
  };
}
