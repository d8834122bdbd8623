// Package wire is the on-disk layout of store format 3: bucket and key
// names, key encodings, and the canonical binary encodings of audit
// records, signed heads, certificates, requests and revocations.
//
// It is shared by package store, which owns the file, and store/storetest,
// which damages copies of it in tests; it does no I/O and imports neither.
// Every Decode function is strict: it fails unless the input is exactly
// what the matching Encode function produces for the decoded value, so
// that one value has one encoding and a hash over the encoding commits to
// the value.
//
// Primitive encodings, used everywhere below:
//   - uvarint: encoding/binary unsigned varint (canonical: shortest form);
//   - bytes: uvarint length, then the bytes;
//   - str: bytes holding UTF-8 text;
//   - kstr: a compact string: empty, or uvarint length then a tag byte and
//     the payload; tag 1 means the string is lowercase hexadecimal of even
//     length and the payload is the decoded bytes (a SHA-256 fingerprint
//     takes 34 bytes instead of 65), tag 0 means the payload is the text;
//   - int64: 8 bytes big-endian two's complement (times are Unix
//     nanoseconds, 0 for the zero time);
//   - serial: bytes holding the certificate serial as a big-endian
//     unsigned integer without leading zero bytes.
//
// What it does not do: no I/O, no bbolt, no signatures (it only builds the
// message a head signature covers). Concurrency: functions only; no state.
// Caveats: changing any encoding here changes hashes and signatures of
// stored data; that needs a new format version and a migration.
package wire
