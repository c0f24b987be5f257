/** The snix-ts version, printed by `snix --version` and the nix-daemon handshake. */
export const VERSION = "0.1.0";
