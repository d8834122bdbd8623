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
//	enroll        EST-coaps device client, est/client (discover, crts, sen, sren, att, skg, skc)
//	bench         EST-coaps load generator, est/bench
//	issue         issue from a CSR file as the local operator
//	ca show       show the hierarchy; ca import completes an external-root setup
//	certs list    issued certificates; certs show one of them
//	audit list    the audit trail; audit verify checks all of it against the checkpoint(s)
//	audit checkpoint  print the current checkpoint; --reset acknowledges a lost one
//	revoke        revoke a certificate (a signed head covers it at once)
//	backup        consistent, verified copy of the store (never onto the live store)
//	restore       put a verified backup back into a stopped appliance
//	store check   read every page of the store
//	store migrate convert a format 1 store
//	keys ...      server-side key generation: escrowed keys (list, destroy), key-encryption
//	              keys (import-kek, delete-kek), recipient certificates (add-recipient,
//	              remove-recipient), the key-package signer (init-signer)
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
// stopped (restore, revoke, audit checkpoint --reset, store migrate) open the
// token for the audit key.
//
// Metrics: one Prometheus endpoint serves the EST front end's metrics
// (est.Metrics) and those serve measures for the components that do not
// import Prometheus (HSM signing latency, pending approvals; metrics.go).
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
