// Package est is estca's EST-coaps front end (RFC 9148): the DTLS 1.2 listener,
// CoAP routing, the EST resources and discovery, the error-to-CoAP-code table,
// and the EST-coaps client used by `estca enroll` and `estca bench`.
package est
