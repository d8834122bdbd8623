// Package softhsm provisions SoftHSM2 tokens: one token per directory, with
// its own softhsm2.conf, token store and randomly generated PINs. Tests use it
// (through softhsmtest), and `estca init` uses it for the embedded default
// mode where no network HSM is configured.
//
// # What it does
//
// Module finds libsofthsm2.so. Provision writes dir/softhsm2.conf
// (directories.tokendir = tokens, relative to dir; objectstore.backend =
// file, log.level = ERROR), dir/user.pin (random, mode 0600) and dir/label,
// then initialises the token in this process through PKCS#11
// (hsm.InitToken: C_InitToken, C_InitPIN), so no PIN is ever passed on a
// command line or written to a log. The random security officer PIN is
// forgotten once the token is initialised, unless ProvisionOptions.KeepSOPIN
// asks for dir/so.pin (mode 0600); directories provisioned with an so.pin
// keep working, nothing reads it. Load re-opens such a directory, Activate
// points SoftHSM at it, and Options gives the hsm.Options to open it.
//
// # Relative token paths
//
// SoftHSM resolves a relative directories.tokendir against the process's
// working directory, and an absolute one would tie a copied or restored
// directory to the original's token. So the configuration Provision writes
// names the token directory relative to its own directory, and Activate (or
// Effective) writes dir/softhsm2.effective.conf, the same configuration with
// that path made absolute for where dir is now, at every use, and points
// SOFTHSM2_CONF at it. A copy of dir (cp -a of a whole appliance) thus opens
// its own token, never the original's (tested by copying, moving the
// original away and changing the copy). A configuration whose token
// directory is already absolute (provisioned before) is used as it is; to
// make such an appliance relocatable, change its directories.tokendir to
// "tokens". SoftHSM's own tools (softhsm2-util) take the effective file too.
//
// # Several tokens in one process
//
// SoftHSM reads the SOFTHSM2_CONF environment variable once, at
// C_Initialize, and a module is initialised at most once per process. So:
//
//   - The configuration used is the one SOFTHSM2_CONF names when the first
//     hsm.Token of the process opens the module. Activating another
//     directory while a Token is open has no effect until every Token on the
//     module is closed; an Open for the other directory's label meanwhile
//     fails with hsm.ErrTokenNotFound.
//   - hsm.Token.Close finalises the module (when that Token initialised it), so
//     the next Open re-reads SOFTHSM2_CONF. Tokens in different directories are
//     therefore used one after the other: Activate A, Open, ..., Close,
//     Activate B, Open, ... Tests that use SoftHSM run sequentially (no
//     t.Parallel), each closing its Token; softhsmtest does this with t.Setenv
//     and t.Cleanup.
//   - Provision needs the module uninitialised too (it initialises the new
//     token in-process): it fails with hsm.ErrInUse while a Token is open.
//     It sets SOFTHSM2_CONF only for its own duration and restores it.
//   - Several tokens that must be open together belong in one configuration
//     (one directory); this package provisions one token per directory.
//
// # Concurrency
//
// Provision, Load, Effective and Activate change files and the process
// environment; call them from one goroutine, not concurrently with hsm.Open.
// Effective replaces the effective file atomically (write and rename), so
// two processes activating the same directory at once both read a whole
// file.
package softhsm
