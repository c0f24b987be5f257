/**
 * What every subcommand gets: the resolved configuration and the services it
 * names, opened on first use.
 *
 * @module
 */
import type { Config } from "./config.ts";
import type { Services } from "./services.ts";

/** Handed to each subcommand's action. */
export interface CliContext {
  /** The resolved configuration (flags > env > config file > defaults). */
  config(): Config;
  /** The three services the configuration names, opened once. */
  services(): Promise<Services>;
}
