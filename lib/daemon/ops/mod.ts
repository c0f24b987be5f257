/**
 * Every operation handler, by op number.
 *
 * @module
 */
import type { OpHandler } from "../connection.ts";
import { addOps } from "./add.ts";
import { buildOps } from "./build.ts";
import { gcOps } from "./gc.ts";
import { narOps } from "./nar.ts";
import { queryOps } from "./query.ts";

/** The handler table. */
export const handlers: ReadonlyMap<number, OpHandler> = new Map([
  ...queryOps,
  ...narOps,
  ...addOps,
  ...buildOps,
  ...gcOps,
]);
