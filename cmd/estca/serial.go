package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxSerialOctets is the longest serial number RFC 5280 §4.1.2.2 allows.
const maxSerialOctets = 20

// parseSerial reads a certificate serial number in any form an operator
// copies it in and returns the store's form: lowercase hex, no leading
// zeros (what `estca certs list` prints). Every command that takes a
// serial reads it with this function. Accepted:
//
//	0a1b2c, 0A1B2C         hex, any case (what estca prints)
//	0x0a1b2c               with a 0x prefix
//	0a:1b:2c, 0A-1B-2C     octets separated by colons or dashes, spaces too
//	                       (openssl x509 -text, spread over several lines)
//	serial=0A1B2C          openssl x509 -serial
//	4660 (0x1234)          openssl x509 -text for serials of up to 8 octets
//
// A bare string of decimal digits is read as hex, like every other form
// without a prefix: estca prints and stores serials in hex. Zero, negative
// numbers and serials longer than 20 octets are refused.
func parseSerial(s string) (string, error) {
	in := s
	s = strings.TrimSpace(s)
	for _, p := range []string{"serial=", "serial number:", "serial:"} {
		if len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) {
			s = strings.TrimSpace(s[len(p):])
		}
	}
	// "4660 (0x1234)": the hex inside the parentheses.
	if i := strings.Index(s, "(0x"); i > 0 && strings.HasSuffix(s, ")") {
		dec := strings.TrimSpace(s[:i])
		hex := s[i+1 : len(s)-1]
		d, derr := strconv.ParseUint(dec, 10, 64)
		h, herr := strconv.ParseUint(hex[2:], 16, 64)
		if derr != nil || herr != nil || d != h {
			return "", serialError(in, errors.New("the decimal and hex forms differ"))
		}
		s = hex
	}
	if strings.HasPrefix(s, "-") {
		return "", serialError(in, errors.New("serial numbers are positive"))
	}
	if len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		s = s[2:]
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9', r >= 'a' && r <= 'f':
			b.WriteRune(r)
		case r >= 'A' && r <= 'F':
			b.WriteRune(r + 'a' - 'A')
		case r == ':', r == '-', r == ' ', r == '\t', r == '\n', r == '\r':
		default:
			return "", serialError(in, fmt.Errorf("%q is not a hex digit", r))
		}
	}
	hex := strings.TrimLeft(b.String(), "0")
	switch {
	case b.Len() == 0:
		return "", serialError(in, errors.New("no hex digits"))
	case hex == "":
		return "", serialError(in, errors.New("serial numbers are positive, not zero"))
	case len(hex) > 2*maxSerialOctets:
		return "", serialError(in, fmt.Errorf("longer than %d octets", maxSerialOctets))
	}
	return hex, nil
}

func serialError(in string, why error) error {
	return fmt.Errorf("serial %q: %w (want hex as estca or `openssl x509 -serial` prints it: 0A1B2C, 0a:1b:2c, 0x0a1b2c, serial=0A1B2C)", in, why)
}
