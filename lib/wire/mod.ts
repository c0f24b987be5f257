/**
 * The Nix worker-protocol codec on web streams.
 *
 * @module
 */
export * from "./constants.ts";
export * from "./errors.ts";
export * from "./version.ts";
export * from "./reader.ts";
export * from "./writer.ts";
export * from "./framed.ts";
export * from "./stderr.ts";
export * from "./path_info.ts";
export * from "./build_result.ts";
export * from "./realisation.ts";
export * from "./content_address.ts";
export * from "./derived_path.ts";
export * from "./handshake.ts";
export * from "./nar_copy.ts";
