package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/est/client"
	"github.com/estca/estca/est/wire"
)

// keygenFlags are the flags of `estca enroll skg|skc`: how the
// server-generated key is to be encrypted (RFC 7030 §4.4.1).
type keygenFlags struct {
	kekID, kekFile             string
	recipientKey, recipientCrt string
	gcm                        bool
}

func (f *keygenFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.kekID, "kek-id", "", "skg/skc: ask for the key encrypted under the pre-shared key-encryption key `HEX` (DecryptKeyIdentifier)")
	fs.StringVar(&f.kekFile, "kek-file", "", "skg/skc: `FILE` holding that key-encryption key in hex")
	fs.StringVar(&f.recipientKey, "recipient-key", "", "skg/skc: ask for the key encrypted to the public key of this private key `PEM` (AsymmetricDecryptKeyIdentifier)")
	fs.StringVar(&f.recipientCrt, "recipient-cert", "", "skg/skc: the `PEM` certificate of --recipient-key, registered on the server (default: the client certificate, when it is that key's)")
	fs.BoolVar(&f.gcm, "gcm", false, "skg/skc: ask for AES-GCM content encryption (AuthEnvelopedData) instead of AES-CBC")
}

// request turns the flags into the CSR attributes to send and the key to
// decrypt the answer with (nil: a plain key is expected).
func (f *keygenFlags) request(clientCert *x509.Certificate) (*cms.KeyRequest, *cms.DecryptKey, error) {
	kr := &cms.KeyRequest{}
	var dk *cms.DecryptKey
	switch {
	case f.kekID != "" || f.kekFile != "":
		if f.kekID == "" || f.kekFile == "" || f.recipientKey != "" {
			return nil, nil, usageErrorf("--kek-id and --kek-file go together, without --recipient-key")
		}
		id, key, err := readKEKFile(f.kekID, f.kekFile)
		if err != nil {
			return nil, nil, asUsage(err)
		}
		kek, err := cms.NewAESKEK(key)
		clear(key)
		if err != nil {
			return nil, nil, err
		}
		kr.Delivery, kr.KeyID = cms.DeliverKEK, id
		dk = &cms.DecryptKey{KEKID: id, KEK: kek}
	case f.recipientKey != "":
		key, err := readPrivateKey(f.recipientKey)
		if err != nil {
			return nil, nil, err
		}
		cert := clientCert
		if f.recipientCrt != "" {
			if cert, err = readCert(f.recipientCrt); err != nil {
				return nil, nil, err
			}
		}
		if !samePublic(key.Public(), cert.PublicKey) {
			return nil, nil, usageErrorf("--recipient-key is not the key of --recipient-cert (or of the client certificate): give its certificate with --recipient-cert")
		}
		id, err := client.KeyIdentifier(cert)
		if err != nil {
			return nil, nil, err
		}
		kr.Delivery, kr.KeyID = cms.DeliverAsymmetric, id
		dk = &cms.DecryptKey{PrivateKey: key, Certificate: cert, SubjectKeyID: id}
	case f.recipientCrt != "" || f.gcm:
		return nil, nil, usageErrorf("--recipient-cert and --gcm need --recipient-key or --kek-id")
	}
	if f.gcm {
		kr.Capabilities = cms.ContentCapabilities(cms.AES128GCM, cms.AES256GCM)
	}
	return kr, dk, nil
}

func samePublic(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// readPrivateKey reads a PEM private key (PKCS#8, SEC 1 or PKCS#1).
func readPrivateKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	defer clear(blk.Bytes)
	var k any
	switch blk.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: unsupported key type %T", path, k)
	}
	return s, nil
}

// runServerKeygen is `estca enroll skg|skc`: it asks the server to generate
// the key pair (RFC 9148 §4.8) with a CSR carrying the subject (the
// client certificate's, or --subject; with an operational certificate of
// the server's CA, its subject and subjectAltName, as a renewal must keep
// them, RFC 7030 §4.2.2) and the attributes of f, decrypts and
// verifies the answer (the SignedData's signer chain to the trust anchors,
// the key against the certificate, the certificate's chain), and writes
// PREFIX.pem and PREFIX.key (mode 0600).
func runServerKeygen(ctx context.Context, a *app, c *client.Conn, opts client.Options, skc bool, f *keygenFlags, csrFile, out, subject string) error {
	leaf := opts.Certificate.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(opts.Certificate.Certificate[0]); err != nil {
			return err
		}
	}
	kr, dk, err := f.request(leaf)
	if err != nil {
		return err
	}
	if dk != nil {
		if k, ok := dk.KEK.(*cms.AESKEK); ok {
			defer k.Destroy()
		}
	}
	caCerts, _, err := c.CACerts(ctx, wire.FormatCertsOnly)
	if err != nil {
		return fmt.Errorf("CA certificates: %w", err)
	}
	var csr []byte
	if csrFile != "" {
		if csr, err = readCSRFile(csrFile); err != nil {
			return err
		}
	} else {
		// The server ignores this key (RFC 9148 §4.8); it only signs the CSR.
		throwaway, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		renew := slices.ContainsFunc(caCerts, func(ca *x509.Certificate) bool { return leaf.CheckSignatureFrom(ca) == nil })
		if csr, err = cms.CreateCertificateRequest(rand.Reader, csrTemplate(leaf, subject, renew), throwaway, kr); err != nil {
			return err
		}
	}
	res, err := c.ServerKeygen(ctx, csr, skc)
	if err != nil {
		return err
	}
	defer res.Zero()
	k, err := c.OpenServerKey(res, dk, caCerts...)
	if err != nil {
		return err
	}
	defer k.Zero()
	if err := writeCerts(out+".pem", k.Certificate); err != nil {
		return err
	}
	if err := writeSecretPEM(out+".key", "PRIVATE KEY", k.PKCS8); err != nil {
		return err
	}
	how := "unencrypted (PKCS#8)"
	if p := k.Package; p != nil {
		how = fmt.Sprintf("%s, %s, signed by %s", p.Recipient, p.ContentEncryption, p.Signer.Subject)
	}
	fmt.Fprintf(a.stdout, "server-generated key delivered %s\ncertificate serial %s, subject %s, valid until %s\nwrote %s.pem and %s.key (mode 0600)\n",
		how, hex.EncodeToString(k.Certificate.SerialNumber.Bytes()), k.Certificate.Subject,
		k.Certificate.NotAfter.UTC().Format(time.RFC3339), out, out)
	return nil
}

// writeSecretPEM writes one PEM block to a file of mode 0600 (also when the
// file existed with another mode); the PEM buffer is zeroed.
func writeSecretPEM(path, typ string, der []byte) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	defer clear(b)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readCSRFile reads a CSR in DER or PEM.
func readCSRFile(path string) ([]byte, error) {
	csr, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(csr); blk != nil {
		csr = blk.Bytes
	}
	return csr, nil
}

// benchRequest is request for `estca bench`: nil, nil for a plain key.
func (f *keygenFlags) benchRequest(opts client.Options) (*cms.KeyRequest, *cms.DecryptKey, error) {
	leaf, err := x509.ParseCertificate(opts.Certificate.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	kr, dk, err := f.request(leaf)
	if err != nil || dk == nil {
		return nil, nil, err
	}
	return kr, dk, nil
}
