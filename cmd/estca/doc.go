// Command estca is the estca appliance: a private CA for device fleets that
// enroll over EST-coaps (RFC 9148), with its keys in a PKCS#11 token and its
// records in a bbolt store with a verifiable audit trail.
//
// It reads the configuration (YAML, decoded strictly, every problem reported
// at once), opens the token, the store and the authority, and wires them into
// the EST-coaps server; it holds no business logic of its own. Commands:
//
//	init          create an appliance (embedded SoftHSM token, CA hierarchy, store)
//	serve         run the EST-coaps server, the metrics listener and the admin socket
//	doctor        check everything; each finding with its fix; exit 0 only when healthy
//	enroll        EST-coaps device client, est/client (discover, crts, sen, sren, att, skg, skc)
//	bench         EST-coaps load generator, est/bench
//	issue         issue from a CSR file as the local operator
//	ca show       show the hierarchy; ca import completes an external-root setup;
//	              ca reissue-server renews the DTLS server certificate
//	certs list    issued certificates with their status; certs show one of them
//	audit list    the audit trail; audit verify checks all of it against the checkpoint(s)
//	audit checkpoint  print the current checkpoint; --reset acknowledges a lost one
//	revoke        revoke a certificate for a leaf's CRLReason (closes its sessions, new CRL)
//	crl           the current CRL (the running server's, or a new one offline)
//	requests list, approve, deny  pending requests of profiles with approval: manual
//	policy check  decide a CSR offline with the configured policy, explained
//	reload        make the running server re-read its configuration (as SIGHUP)
//	backup        consistent, verified copy of the store (never onto the live store)
//	restore       put a verified backup back into a stopped appliance
//	store check   read every page of the store
//	store migrate convert a format 1 or 2 store
//	version       the build's version
//	keys ...      server-side key generation: escrowed keys (list, destroy), key-encryption
//	              keys (import-kek, delete-kek), recipient certificates (add-recipient,
//	              remove-recipient), the key-package signer (init-signer)
//
// The conventions every command follows, with their helpers (see the
// command type in main.go): exit 0 done, 1 failed (one plain line last), 2
// usage error (usageErrorf: usage line, then the error last); serials
// through parseSerial (serial.go), revocation reasons through
// ca.ParseRevocationReason (names with ca.RevocationReasonName);
// --json prints the snake_case views of json.go through printJSON; errors
// from the admin socket match the store's sentinels (admin.go: adminFail,
// adminReply, adminErrors); help and flag listings come from the FlagSet
// (cli.go), and the README's command reference is generated from them.
//
// Configuration errors name the key by its path ("est.bogus_key: unknown
// key"), every problem at once (configcheck.go); removed keys are warnings.
//
// Server-side key generation (serve_keygen.go, keys.go, enroll_keygen.go):
// serve destroys generated keys an interrupted run left pending in the token
// (audited), issues the key-package signer certificate when it is missing,
// and hands a ca.Keygen to the EST server. The keys commands work on a
// stopped appliance (token and store opened here) or through the running
// server's admin socket (/v1/keys/...), which then does the work and the
// audit record; a KEK to import then travels over that 0600 socket.
// Recipient certificates live in keys.recipients_dir, one PEM file per
// device identity, read at each request.
//
// While `estca serve` runs it holds the store; the query commands then reach
// it through the server's admin socket (a unix socket, mode 0600, HTTP with
// JSON), and open the store file read-only otherwise. Only init creates a
// store. serve opens it with the audit check (the checkpoint file must be
// extended, the revocation set proven), and watches it every second: one
// log line when writes start failing (disk full: devices get 5.03 with
// Max-Age store.retry_after), one when they recover, one when the store file
// is replaced under it, and one per new checkpoint for a journal kept off
// the box. Commands that sign audit heads themselves while the server is
// stopped (restore, revoke, requests approve|deny, audit checkpoint --reset,
// store migrate) open the token for the audit key (revoke and crl also for
// the issuing key: the CRL).
//
// The policy: the configuration's policy, profiles, manufacturers and crl
// sections are decoded here (policyconfig.go: every problem named by its
// path, e.g. profiles[0].key_usage.rsa[0]) and handed to package ca as
// policy.Options; their certificate and CRL files are read when the policy
// is built: at start, at every reload (SIGHUP or `estca reload` through the
// admin socket: a valid configuration replaces the policy atomically, an
// invalid one changes nothing; both are audit records, running.go), and by
// `estca policy check`. serve publishes a CRL at start, every crl.refresh
// and on every revocation (kept in crl.path, served at /crl on the metrics
// listener and on crl.listen), and closes the DTLS sessions of a revoked
// certificate before `estca revoke` returns.
//
// Metrics: one Prometheus endpoint serves the EST front end's metrics
// (est.Metrics) and those serve measures for the components that do not
// import Prometheus (metrics.go): HSM signing latency, pending approvals,
// store commit latency and failures (store.Options.OnCommit), certificate
// expiry, the age of the newest signed audit head, the store's size.
//
// The HSM: serve logs an outage of the token once when it starts ("hsm token
// unavailable") and once when it ends ("hsm token available again"), from
// the events package hsm reports (it never logs itself), probes the token
// every 5 s, and exports estca_hsm_up, estca_hsm_failures_total{reason} and
// estca_hsm_recoveries_total{kind} (hsmwatch.go). Every HSM key it uses (the
// issuing key, the DTLS server key, the audit key) signs through
// ca.VerifySigner, under the public key of its certificate or the published
// audit key.
//
// Secrets: the HSM PIN comes from hsm.pin_file or $ESTCA_HSM_PIN, never from
// the command line or the configuration body, and is never logged.
package main
