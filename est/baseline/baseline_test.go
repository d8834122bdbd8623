package baseline

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/policy/pkitest"
)

func TestPKI(t *testing.T) {
	t.Parallel()
	mfg := pkitest.NewCA(t, "manufacturer")
	like := mfg.Issue(t, pkitest.ClientAuth("device 7"))
	p, err := NewPKI(like.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Client.Leaf.RawSubject) != string(like.Cert.RawSubject) || string(p.Answer.RawSubject) != string(like.Cert.RawSubject) {
		t.Error("client or answer certificate does not carry the template's subject")
	}
	roots := pkitest.Pool(p.CA)
	for name, c := range map[string]*x509.Certificate{"server": p.Server.Leaf, "client": p.Client.Leaf, "answer": p.Answer} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := p.Server.Leaf.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	if err := p.Server.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}

	data, err := p.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParsePEM(data)
	if err != nil {
		t.Fatal(err)
	}
	if !q.CA.Equal(p.CA) || !q.Answer.Equal(p.Answer) || !q.Server.Leaf.Equal(p.Server.Leaf) || !q.Client.Leaf.Equal(p.Client.Leaf) ||
		!q.Server.PrivateKey.(*ecdsa.PrivateKey).Equal(p.Server.PrivateKey) || !q.Client.PrivateKey.(*ecdsa.PrivateKey).Equal(p.Client.PrivateKey) {
		t.Error("ParsePEM(MarshalPEM) differs")
	}
	for name, bad := range map[string][]byte{
		"empty":     nil,
		"truncated": data[:len(data)/2],
		"foreign":   append(pkitest.PEM(p.CA), data...),
	} {
		if _, err := ParsePEM(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestAuthority(t *testing.T) {
	t.Parallel()
	p, err := NewPKI(nil)
	if err != nil {
		t.Fatal(err)
	}
	a := New(p)
	who, err := a.Authenticate([]*x509.Certificate{p.Client.Leaf})
	if err != nil {
		t.Fatal(err)
	}
	if who.Leaf != p.Client.Leaf || who.Identity.Fingerprint == "" || len(who.Chain) != 2 {
		t.Errorf("requester %+v", who)
	}
	foreign := pkitest.NewCA(t, "other").Issue(t, pkitest.ClientAuth("intruder"))
	for name, chain := range map[string][]*x509.Certificate{"none": nil, "foreign": {foreign.Cert}} {
		if _, err := a.Authenticate(chain); ca.KindOf(err) != ca.KindUnauthenticated {
			t.Errorf("%s: %v, want unauthenticated", name, err)
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Enroll(context.Background(), ca.Request{CSR: csr, Requester: who})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Certificate.Equal(p.Answer) {
		t.Error("not the fixed answer")
	}
	forged := append([]byte(nil), csr...)
	forged[len(forged)-5] ^= 0x40 // inside the signature
	for name, der := range map[string][]byte{"garbage": []byte("not a CSR"), "bad signature": forged} {
		if _, err := a.Enroll(context.Background(), ca.Request{CSR: der, Requester: who}); ca.KindOf(err) != ca.KindBadRequest {
			t.Errorf("%s: %v, want bad request", name, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Enroll(ctx, ca.Request{CSR: csr, Requester: who}); ca.KindOf(err) != ca.KindUnavailable {
		t.Errorf("cancelled: %v", err)
	}
	if _, err := a.CRL(); !errors.Is(err, ErrNoCRL) {
		t.Errorf("CRL: %v", err)
	}
	if certs, err := a.CACertificates(""); err != nil || len(certs) != 1 || !certs[0].Equal(p.CA) {
		t.Errorf("CACertificates: %v %v", certs, err)
	}
	if a.HasProfile("default") || a.Check(who) != nil || a.RecordRejection(ca.Rejection{}) != nil {
		t.Error("the baseline has no profiles, checks and records nothing")
	}
}
