// Package der writes DER tag-and-length headers (ITU-T X.690 §8.1.2,
// §8.1.3, §10.1: one-octet tags, definite lengths in the fewest octets)
// for the hand-rolled encoders of the policy engine (Names and
// GeneralNames on every request) and of the CMS package (which sizes every
// buffer in advance so that the buffers holding key material can be
// zeroed). It was two copies before.
//
// # What it does not do
//
// No parsing (cryptobyte does that), no multi-octet tags, no indefinite
// lengths, no lengths of 2^32 octets or more. It imports nothing but the
// standard library, so the device side (ca/cms under est/client) can
// import it; it lives under policy, at the bottom of the dependency chain
// cmd → est → ca → policy, so that no import points upwards.
//
// # Concurrency
//
// Pure functions; safe for concurrent use.
//
// # Caveats
//
// Callers keep lengths below 2^32; AppendHeader writes four length octets
// at most.
package der
