package baseline

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// PKI is what a baseline server and its clients need, minted in memory.
type PKI struct {
	// CA signs the server, client and answer certificates; it is the
	// client's trust anchor and the server's client CA.
	CA *x509.Certificate
	// Server is the DTLS server certificate (localhost, 127.0.0.1, ::1)
	// with its in-memory P-256 key.
	Server tls.Certificate
	// Client is a client certificate with the subject and subjectAltName of
	// the template NewPKI was given, with its P-256 key.
	Client tls.Certificate
	// Answer is the certificate every enrollment is answered with: the
	// template's subject and subjectAltName on a key of its own.
	Answer *x509.Certificate
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// NewPKI mints a PKI whose client and answer certificates carry the subject
// and subjectAltName extension of like (the load generator's own client
// certificate, so that requests and answers have the appliance's sizes);
// like may be nil.
func NewPKI(like *x509.Certificate) (*PKI, error) {
	now := time.Now()
	key := func() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }
	caKey, err := key()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "estca baseline CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caCert, err := sign(caTmpl, caTmpl, caKey, caKey)
	if err != nil {
		return nil, err
	}
	leaf := func(tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey, error) {
		k, err := key()
		if err != nil {
			return nil, nil, err
		}
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(30*24*time.Hour)
		c, err := sign(tmpl, caCert, k, caKey)
		return c, k, err
	}
	device := func(eku x509.ExtKeyUsage) *x509.Certificate {
		t := &x509.Certificate{Subject: pkix.Name{CommonName: "estca baseline device"},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{eku}}
		if like != nil {
			t.RawSubject = like.RawSubject
			for _, e := range like.Extensions {
				if e.Id.Equal(oidSubjectAltName) {
					t.ExtraExtensions = append(t.ExtraExtensions, e)
				}
			}
		}
		return t
	}
	srv, srvKey, err := leaf(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	cli, cliKey, err := leaf(device(x509.ExtKeyUsageClientAuth))
	if err != nil {
		return nil, err
	}
	answer, _, err := leaf(device(x509.ExtKeyUsageClientAuth))
	if err != nil {
		return nil, err
	}
	return &PKI{
		CA:     caCert,
		Server: tls.Certificate{Certificate: [][]byte{srv.Raw, caCert.Raw}, PrivateKey: srvKey, Leaf: srv},
		Client: tls.Certificate{Certificate: [][]byte{cli.Raw}, PrivateKey: cliKey, Leaf: cli},
		Answer: answer,
	}, nil
}

func sign(tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, by crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1))
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, by)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	return x509.ParseCertificate(der)
}

// PEM block types of MarshalPEM.
const (
	pemCA     = "BASELINE CA"
	pemServer = "BASELINE SERVER CERTIFICATE"
	pemSKey   = "BASELINE SERVER KEY"
	pemClient = "BASELINE CLIENT CERTIFICATE"
	pemCKey   = "BASELINE CLIENT KEY"
	pemAnswer = "BASELINE ANSWER"
)

// MarshalPEM encodes p, private keys included, to hand it to a baseline
// server in another process (over a pipe; never write it to a file others
// may read: the keys are test keys, but they are keys).
func (p *PKI) MarshalPEM() ([]byte, error) {
	var b bytes.Buffer
	put := func(typ string, der []byte) { _ = pem.Encode(&b, &pem.Block{Type: typ, Bytes: der}) }
	put(pemCA, p.CA.Raw)
	for _, c := range p.Server.Certificate {
		put(pemServer, c)
	}
	for typ, k := range map[string]crypto.PrivateKey{pemSKey: p.Server.PrivateKey, pemCKey: p.Client.PrivateKey} {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
		put(typ, der)
	}
	for _, c := range p.Client.Certificate {
		put(pemClient, c)
	}
	put(pemAnswer, p.Answer.Raw)
	return b.Bytes(), nil
}

// ParsePEM decodes what MarshalPEM encoded.
func ParsePEM(data []byte) (*PKI, error) {
	p := &PKI{}
	for {
		var blk *pem.Block
		if blk, data = pem.Decode(data); blk == nil {
			break
		}
		var err error
		switch blk.Type {
		case pemCA:
			p.CA, err = x509.ParseCertificate(blk.Bytes)
		case pemServer:
			p.Server.Certificate = append(p.Server.Certificate, blk.Bytes)
		case pemClient:
			p.Client.Certificate = append(p.Client.Certificate, blk.Bytes)
		case pemSKey:
			p.Server.PrivateKey, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case pemCKey:
			p.Client.PrivateKey, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case pemAnswer:
			p.Answer, err = x509.ParseCertificate(blk.Bytes)
		default:
			err = fmt.Errorf("unexpected PEM block %q", blk.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
	}
	if p.CA == nil || p.Answer == nil || len(p.Server.Certificate) == 0 || p.Server.PrivateKey == nil ||
		len(p.Client.Certificate) == 0 || p.Client.PrivateKey == nil {
		return nil, errors.New("baseline: incomplete PKI")
	}
	var err error
	if p.Server.Leaf, err = x509.ParseCertificate(p.Server.Certificate[0]); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	if p.Client.Leaf, err = x509.ParseCertificate(p.Client.Certificate[0]); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	return p, nil
}
