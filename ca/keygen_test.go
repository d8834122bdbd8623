package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/estca/estca/ca/cms"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy"
	"github.com/estca/estca/policy/pkitest"
	"github.com/estca/estca/store"
)

// Key-generation profiles of the keygen fixture (policy profiles: the
// engine decides /skg and /skc). "kg" and the others take the CN from the
// CSR, so that each request names its certificate; "kgbound" binds the
// subject and hardwareModuleName to the requester's identity like any
// device profile; "kgmanual" waits for an operator; "kgrated" allows one
// certificate an hour.
var (
	kgSubject = []policy.SubjectAttr{{Type: "CN", From: policy.SourceCSR}}
	kgOps     = []policy.Operation{policy.OpSkg}
	profKG    = policy.Profile{Name: "kg", Validity: 24 * time.Hour, Subject: kgSubject,
		SAN:        policy.SANPolicy{DNS: policy.NamePolicy{Patterns: []string{`[a-z0-9-]+\.example\.com`}}},
		Operations: []policy.Operation{policy.OpSen, policy.OpSkg, policy.OpSkc}}
	profKG384    = policy.Profile{Name: "kg384", Validity: 24 * time.Hour, Subject: kgSubject, Operations: kgOps, ServerKeyType: "ecdsa-p384"}
	profKGRSA    = policy.Profile{Name: "kgrsa", Validity: 24 * time.Hour, Subject: kgSubject, Operations: kgOps, ServerKeyType: "rsa-2048"}
	profKGEnc    = policy.Profile{Name: "kgenc", Validity: 24 * time.Hour, Subject: kgSubject, Operations: kgOps, RequireEncryptedKeys: true}
	profEscrow   = policy.Profile{Name: "escrow", Validity: 24 * time.Hour, Subject: kgSubject, Operations: kgOps, EscrowKeys: true}
	profSkgOnly  = policy.Profile{Name: "skgonly", Validity: 24 * time.Hour, Subject: kgSubject, Operations: kgOps}
	profKGBound  = policy.Profile{Name: "kgbound", Validity: 24 * time.Hour, Operations: kgOps}
	profKGManual = policy.Profile{Name: "kgmanual", Validity: 24 * time.Hour, Subject: kgSubject,
		Operations: []policy.Operation{policy.OpSen, policy.OpSkg, policy.OpSkc}, Approval: policy.ApprovalManual, PendingMaxAge: time.Minute}
	profKGRated = policy.Profile{Name: "kgrated", Validity: 24 * time.Hour, Subject: kgSubject, Operations: kgOps,
		RateLimit: policy.RateLimit{Count: 1, Window: time.Hour}}
	profKGP521 = policy.Profile{Name: "kgp521", Validity: 24 * time.Hour, Subject: kgSubject, Operations: kgOps, ServerKeyType: "ecdsa-p521"}
)

// recordingToken passes every call to the real token and keeps the
// attributes of the keys it generated.
type recordingToken struct {
	*hsm.Token
	mu         sync.Mutex
	generated  []hsm.GeneratedAttributes
	failEscrow error  // injected: EscrowKey fails with it
	onEscrow   func() // injected: runs in EscrowKey before it fails or escrows
	failGen    error  // injected: GenerateExportable fails with it
}

func (r *recordingToken) EscrowKey(label, serial string) error {
	r.mu.Lock()
	err, hook := r.failEscrow, r.onEscrow
	r.mu.Unlock()
	if hook != nil {
		hook()
	}
	if err != nil {
		return err
	}
	return r.Token.EscrowKey(label, serial)
}

func (r *recordingToken) GenerateExportable(kt hsm.KeyType, keep bool) (*hsm.ExportedKey, error) {
	r.mu.Lock()
	fail := r.failGen
	r.mu.Unlock()
	if fail != nil {
		return nil, fmt.Errorf("hsm: generate exportable %s key: %w", kt, fail)
	}
	k, err := r.Token.GenerateExportable(kt, keep)
	if err == nil {
		r.mu.Lock()
		r.generated = append(r.generated, k.Attributes)
		r.mu.Unlock()
	}
	return k, err
}

// count is how many keys were generated.
func (r *recordingToken) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.generated)
}

// recipientMap is a recipient registry in memory (cmd/estca keeps it in files).
type recipientMap map[string][]*x509.Certificate

func (m recipientMap) RecipientCertificates(id string) ([]*x509.Certificate, error) {
	return m[id], nil
}

type keygenFixture struct {
	*fixture
	g      *Keygen
	tok    *recordingToken
	signer *x509.Certificate
	kek    []byte
	recips recipientMap
	dev    Requester
	devKey crypto.Signer
}

func testdataPair(t testing.TB, name string) (*x509.Certificate, crypto.PrivateKey) {
	t.Helper()
	c, err := os.ReadFile("cms/testdata/" + name + ".pem")
	if err != nil {
		t.Fatal(err)
	}
	k, err := os.ReadFile("cms/testdata/" + name + ".key")
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(pkitest.PEMBlock(t, k))
	if err != nil {
		t.Fatal(err)
	}
	return pkitest.PEMCert(t, c), key
}

func newKeygenFixture(t testing.TB, o KeygenOptions) *keygenFixture {
	t.Helper()
	f := newFixture(t)
	f.opts.Policy.Profiles = append(f.opts.Policy.Profiles, profKG, profKG384, profKGRSA, profKGEnc, profEscrow, profSkgOnly,
		profKGBound, profKGManual, profKGRated, profKGP521)
	a, err := New(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	f.a = a
	issuingKey, err := f.tok.FindKey(LabelIssuing)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := IssueKeyPackageSigner(f.tok, "", issuingKey, f.h.Issuing, InitOptions{Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	sk, err := f.tok.FindKey(LabelKeyPackage)
	if err != nil {
		t.Fatal(err)
	}
	kf := &keygenFixture{fixture: f, tok: &recordingToken{Token: f.tok}, signer: sc,
		kek: []byte("0123456789abcdef0123456789abcdef"), recips: recipientMap{}}
	if err := f.tok.ImportKEK([]byte("device-kek-1"), kf.kek); err != nil {
		t.Fatal(err)
	}
	o.Token, o.Signer, o.SignerCertificate, o.Recipients = kf.tok, sk, sc, kf.recips
	if kf.g, err = a.NewKeygen(o); err != nil {
		t.Fatal(err)
	}
	kf.dev = f.requester(t, f.demo.Valid)
	kp := pkitest.KeyPair(t, f.demo.Valid.Cert, f.demo.Valid.Key)
	kf.devKey = kp.PrivateKey.(crypto.Signer)
	return kf
}

// csr makes a /skg CSR asking for kr, with a throwaway key (the server
// ignores it), subject CN cn.
func (f *keygenFixture) csr(t testing.TB, cn string, kr *cms.KeyRequest, exts ...pkix.Extension) []byte {
	t.Helper()
	der, err := cms.CreateCertificateRequest(nil, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, ExtraExtensions: exts}, pkitest.Key(t), kr)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// rawCSR is csr with a DER subject.
func (f *keygenFixture) rawCSR(t testing.TB, subject []byte, kr *cms.KeyRequest, exts ...pkix.Extension) []byte {
	t.Helper()
	der, err := cms.CreateCertificateRequest(nil, &x509.CertificateRequest{RawSubject: subject, ExtraExtensions: exts}, pkitest.Key(t), kr)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// identitySubject is the demo device's IDevID subject.
func (f *keygenFixture) identitySubject(t testing.TB) []byte {
	return pkitest.PEMCert(t, f.demo.Valid.Cert).RawSubject
}

var oidDecryptKeyID = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 37}

// csrAttr makes a CSR (CN x) carrying an attribute of type id whose value
// is not what the attribute's syntax wants (a SEQUENCE of v).
func (f *keygenFixture) csrAttr(t testing.TB, id asn1.ObjectIdentifier, v string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}
	//lint:ignore SA1019 the deprecated field is the one way to make Go write an attribute of any shape
	tmpl.Attributes = []pkix.AttributeTypeAndValueSET{{Type: id, Value: [][]pkix.AttributeTypeAndValue{{{Type: id, Value: v}}}}}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, pkitest.Key(t))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (f *keygenFixture) keygen(profile string, csr []byte, op policy.Operation) (*KeygenResult, error) {
	return f.g.ServerKeygen(context.Background(), KeygenRequest{CSR: csr, Profile: profile, Requester: f.dev, Operation: op})
}

// open recovers and checks a delivered key: decrypted with dk (nil for
// plain), signed by the key-package signer chaining to the root, and the
// key of the certificate.
func (f *keygenFixture) open(t testing.TB, res *KeygenResult, dk *cms.DecryptKey) crypto.Signer {
	t.Helper()
	der := res.Key
	if dk != nil {
		// The issuing CA certificate, as from /crts (needed with KeygenOptions.SignerCertificateOnly).
		kp, err := cms.OpenKeyPackage(res.Key, dk, cms.VerifyOptions{Roots: pkitest.Pool(f.h.Root),
			Intermediates: []*x509.Certificate{f.h.Issuing}, CurrentTime: f.now})
		if err != nil {
			t.Fatalf("OpenKeyPackage: %v", err)
		}
		if !kp.Signer.Equal(f.signer) {
			t.Fatalf("key package signed by %s", kp.Signer.Subject)
		}
		der = kp.PrivateKey
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatalf("PKCS#8: %v", err)
	}
	s := k.(crypto.Signer)
	if !samePublicKey(s.Public(), res.Certificate.PublicKey) {
		t.Fatal("delivered key is not the certificate's")
	}
	if _, err := res.Certificate.Verify(x509.VerifyOptions{Roots: pkitest.Pool(f.h.Root),
		Intermediates: pkitest.Pool(f.h.Issuing), CurrentTime: f.now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// records returns the audit records about serial.
func (f *keygenFixture) records(t testing.TB, serial string) []store.AuditRecord {
	t.Helper()
	recs, err := f.db.AuditRecords(store.AuditFilter{Serial: serial})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// TestKeyPackageChain: by default the key package's SignedData carries the
// signer's certificate and the issuing CA's, and verifies against the root
// alone; with SignerCertificateOnly it carries the signer's only, is smaller
// by at least the issuing CA certificate, and the device chains it through
// the CA certificates of /crts.
func TestKeyPackageChain(t *testing.T) {
	sizes := map[bool]int{}
	var issuing *x509.Certificate
	for _, withChain := range []bool{false, true} {
		name := "signer-only"
		if withChain {
			name = "with-issuing-ca"
		}
		t.Run(name, func(t *testing.T) { // no '=' in the name: SoftHSM's config file takes the test's temporary directory
			f := newKeygenFixture(t, KeygenOptions{SignerCertificateOnly: !withChain})
			issuing = f.h.Issuing
			devCert := pkitest.PEMCert(t, f.demo.Valid.Cert)
			csr := f.csr(t, "chain", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: keyIDs(devCert)[0]})
			res, err := f.keygen("kg", csr, policy.OpSkg)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Zero()
			dk := &cms.DecryptKey{PrivateKey: f.devKey, Certificate: devCert}
			f.open(t, res, dk) // with the issuing CA from /crts: always
			_, err = cms.OpenKeyPackage(res.Key, dk, cms.VerifyOptions{Roots: pkitest.Pool(f.h.Root), CurrentTime: f.now})
			if withChain && err != nil {
				t.Fatalf("with the chain in the package, against the root alone: %v", err)
			}
			if !withChain && !errors.Is(err, cms.ErrCertificate) {
				t.Fatalf("signer certificate only, against the root alone: %v, want %v", err, cms.ErrCertificate)
			}
			sizes[withChain] = len(res.Key)
		})
	}
	// CBC padding and the signatures' DER lengths move each by a few bytes.
	if d := sizes[true] - sizes[false]; d < len(issuing.Raw)-32 {
		t.Fatalf("key package of %d bytes with the issuing CA, %d without: %d apart", sizes[true], sizes[false], d)
	}
}

func TestServerKeygen(t *testing.T) {
	f := newKeygenFixture(t, KeygenOptions{})
	rsaCert, rsaKey := testdataPair(t, "recip-rsa")
	ecCert, ecKey := testdataPair(t, "recip-p256")
	id := RequesterIdentity(f.dev)
	if !strings.HasPrefix(id, "idevid/demo/sn:") {
		t.Fatalf("identity %q", id)
	}
	f.recips[id] = []*x509.Certificate{rsaCert, ecCert}
	devCert := pkitest.PEMCert(t, f.demo.Valid.Cert)
	devKeyID := keyIDs(devCert)[0]

	cases := []struct {
		name     string
		profile  string
		kr       *cms.KeyRequest
		dk       *cms.DecryptKey
		delivery string
		kt       hsm.KeyType
		content  cms.ContentEncryption
	}{
		{"plain", "kg", &cms.KeyRequest{}, nil, DeliveryPlain, hsm.ECDSAP256, 0},
		{"kekri", "kg", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("device-kek-1")},
			&cms.DecryptKey{KEKID: []byte("device-kek-1"), KEK: mustKEK(t, f.kek)}, DeliveryKEK, hsm.ECDSAP256, cms.AES128CBC},
		{"kari to the requester's IDevID", "kg", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: devKeyID},
			&cms.DecryptKey{PrivateKey: f.devKey, Certificate: devCert}, DeliveryKARI, hsm.ECDSAP256, cms.AES128CBC},
		{"ktri to a registered RSA certificate", "kg", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: rsaCert.SubjectKeyId},
			&cms.DecryptKey{PrivateKey: rsaKey, SubjectKeyID: rsaCert.SubjectKeyId}, DeliveryKTRI, hsm.ECDSAP256, cms.AES128CBC},
		{"kari to a registered P-256 certificate, GCM", "kg", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: ecCert.SubjectKeyId,
			Capabilities: cms.ContentCapabilities(cms.AES128GCM, cms.AES128CBC)},
			&cms.DecryptKey{PrivateKey: ecKey, SubjectKeyID: ecCert.SubjectKeyId}, DeliveryKARI, hsm.ECDSAP256, cms.AES128GCM},
		{"P-384 gets AES-256", "kg384", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("device-kek-1")},
			&cms.DecryptKey{KEKID: []byte("device-kek-1"), KEK: mustKEK(t, f.kek)}, DeliveryKEK, hsm.ECDSAP384, cms.AES256CBC},
		{"RSA-2048", "kgrsa", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: devKeyID},
			&cms.DecryptKey{PrivateKey: f.devKey, Certificate: devCert}, DeliveryKARI, hsm.RSA2048, cms.AES128CBC},
		{"encrypted on a profile that requires it", "kgenc", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("device-kek-1")},
			&cms.DecryptKey{KEKID: []byte("device-kek-1"), KEK: mustKEK(t, f.kek)}, DeliveryKEK, hsm.ECDSAP256, cms.AES128CBC},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			csr := f.csr(t, "kg-"+strings.ReplaceAll(c.name, " ", "-"), c.kr)
			res, err := f.keygen(c.profile, csr, policy.OpSkg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Delivery != c.delivery || res.Encrypted() != (c.dk != nil) || res.Escrowed {
				t.Fatalf("delivery %s escrowed %t", res.Delivery, res.Escrowed)
			}
			k := f.open(t, res, c.dk)
			if got := policy.KeyTypeOf(k.Public()); got != string(c.kt) {
				t.Fatalf("key type %s, want %s", got, c.kt)
			}
			if res.Certificate.Subject.CommonName != "kg-"+strings.ReplaceAll(c.name, " ", "-") {
				t.Fatalf("subject %s", res.Certificate.Subject)
			}
			recs := f.records(t, res.Serial)
			if len(recs) != 1 || recs[0].Event != store.EventIssued || recs[0].Profile != c.profile ||
				recs[0].Requester.Fingerprint != f.dev.Identity.Fingerprint {
				t.Fatalf("records %+v", recs)
			}
			want := []string{FlagServerKeygen, "key-type:" + string(c.kt), "delivery:" + c.delivery, VerdictDestroyed}
			if c.dk != nil {
				want = append(want, "content:"+c.content.String())
			}
			for _, w := range want {
				if !slices.Contains(recs[0].Flags, w) {
					t.Errorf("issued record flags %v lack %q", recs[0].Flags, w)
				}
			}
			if !strings.HasPrefix(recs[0].Reason, "skg; server-generated") || !strings.Contains(recs[0].Reason, "CKA_LOCAL true") ||
				!strings.HasSuffix(recs[0].Reason, "; CSR sha256 "+hexSHA256(csr)) || recs[0].CSRDigest != "" {
				t.Errorf("issued record reason %q, CSR digest %q", recs[0].Reason, recs[0].CSRDigest)
			}
		})
	}
	t.Run("skc and the same CSR twice get two keys", func(t *testing.T) {
		csr := f.csr(t, "twice", &cms.KeyRequest{})
		a, err := f.keygen("kg", csr, policy.OpSkc)
		if err != nil {
			t.Fatal(err)
		}
		b, err := f.keygen("kg", csr, policy.OpSkc)
		if err != nil {
			t.Fatal(err)
		}
		if a.Serial == b.Serial || samePublicKey(a.Certificate.PublicKey, b.Certificate.PublicKey) {
			t.Fatal("the same key or certificate twice")
		}
	})
	// Every key was generated in the token (CKA_LOCAL) as a session object
	// that could not be used there, and none is left: nothing escrowed,
	// nothing pending (the session objects are gone with the operation,
	// see hsm's TestGenerateExportable).
	f.tok.mu.Lock()
	gen := f.tok.generated
	f.tok.mu.Unlock()
	if len(gen) != len(cases)+2 {
		t.Fatalf("%d keys generated", len(gen))
	}
	for _, a := range gen {
		if !a.Local || a.Token || !a.Sensitive || !a.Extractable || a.Sign {
			t.Fatalf("generated key attributes %+v", a)
		}
	}
	assertTokenClean(t, f.tok.Token, 0)
}

func hexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func mustKEK(t testing.TB, k []byte) *cms.AESKEK {
	t.Helper()
	kek, err := cms.NewAESKEK(k)
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

func assertTokenClean(t testing.TB, tok *hsm.Token, escrowed int) {
	t.Helper()
	n, err := tok.CleanupGenerated()
	if err != nil || n != 0 {
		t.Fatalf("pending generated keys: %d, %v", n, err)
	}
	es, err := tok.EscrowedKeys()
	if err != nil || len(es) != escrowed {
		t.Fatalf("escrowed keys %v, %v; want %d", es, err, escrowed)
	}
}

func TestServerKeygenEscrow(t *testing.T) {
	f := newKeygenFixture(t, KeygenOptions{})
	res, err := f.keygen("escrow", f.csr(t, "escrowed", &cms.KeyRequest{}), policy.OpSkg)
	if err != nil {
		t.Fatal(err)
	}
	f.open(t, res, nil)
	if !res.Escrowed {
		t.Fatal("not escrowed")
	}
	es, err := f.tok.EscrowedKeys()
	if err != nil || len(es) != 1 || es[0].Serial != res.Serial || es[0].Type != hsm.ECDSAP256 {
		t.Fatalf("escrowed %+v, %v", es, err)
	}
	recs := f.records(t, res.Serial)
	if len(recs) != 1 || !slices.Contains(recs[0].Flags, FlagEscrow) || !slices.Contains(recs[0].Flags, VerdictEscrowed) ||
		!strings.Contains(recs[0].Reason, "escrowed in the token") {
		t.Fatalf("records %+v", recs)
	}
	f.tok.mu.Lock()
	a := f.tok.generated[0]
	f.tok.mu.Unlock()
	if !a.Local || !a.Token {
		t.Fatalf("escrowed key attributes %+v", a)
	}
	assertTokenClean(t, f.tok.Token, 1)
}

// TestServerKeygenEscrowFails: a key whose escrow fails after its
// certificate was stored is destroyed, not delivered, and a keygen record
// says so.
func TestServerKeygenEscrowFails(t *testing.T) {
	f := newKeygenFixture(t, KeygenOptions{})
	f.tok.failEscrow = errors.New("injected: relabel refused")
	_, err := f.keygen("escrow", f.csr(t, "escrow-fails", &cms.KeyRequest{}), policy.OpSkg)
	wantKind(t, err, KindInternal, "key escrow failed")
	recs, err := f.db.AuditRecords(store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	last := recs[len(recs)-1]
	if last.Event != store.EventKeygen || last.Verdict != VerdictDestroyed || last.Serial == "" ||
		recs[len(recs)-2].Event != store.EventIssued || recs[len(recs)-2].Serial != last.Serial {
		t.Fatalf("records %+v / %+v", recs[len(recs)-2], last)
	}
	assertTokenClean(t, f.tok.Token, 0)
}

// breakStore replaces the store file under the open store: every write
// fails with store.ErrUnavailable from then on (as on a full disk).
func breakStore(t testing.TB, f *keygenFixture) {
	t.Helper()
	other := filepath.Join(t.TempDir(), "other.db")
	if err := f.db.BackupFile(other); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, f.db.Path()); err != nil {
		t.Fatal(err)
	}
}

// wantUnavailable checks a 5.03 of reason with Max-Age maxAge.
func wantUnavailable(t testing.TB, err error, reason string, maxAge time.Duration) {
	t.Helper()
	wantKind(t, err, KindUnavailable, reason)
	if e := err.(*Error); e.MaxAge != maxAge {
		t.Fatalf("%v: Max-Age %v, want %v", err, e.MaxAge, maxAge)
	}
}

// TestServerKeygenEscrowStoreUnavailable: on an escrow profile, a store
// that cannot write is 5.03 with StoreRetry, whether it fails at the
// certificate or, after a failed escrow, at the record that the key was
// destroyed (that case answered 5.00 before); the key is never left in the
// token.
func TestServerKeygenEscrowStoreUnavailable(t *testing.T) {
	t.Run("at the certificate", func(t *testing.T) {
		f := newKeygenFixture(t, KeygenOptions{})
		breakStore(t, f)
		_, err := f.keygen("escrow", f.csr(t, "escrow-store-down", &cms.KeyRequest{}), policy.OpSkg)
		wantUnavailable(t, err, "store unavailable", DefaultStoreRetry)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("%v does not wrap store.ErrUnavailable", err)
		}
		assertTokenClean(t, f.tok.Token, 0)
	})
	t.Run("at the record of a failed escrow", func(t *testing.T) {
		f := newKeygenFixture(t, KeygenOptions{})
		f.tok.failEscrow = errors.New("injected: relabel refused")
		f.tok.onEscrow = func() { breakStore(t, f) }
		_, err := f.keygen("escrow", f.csr(t, "escrow-fails-store-down", &cms.KeyRequest{}), policy.OpSkg)
		wantUnavailable(t, err, "store unavailable", DefaultStoreRetry)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("%v does not wrap store.ErrUnavailable", err)
		}
		assertTokenClean(t, f.tok.Token, 0)
	})
}

// TestServerKeygenTokenFull: a token that answers CKR_DEVICE_MEMORY
// (hsm.ErrTokenFull; injected here, since SoftHSM cannot be made to return
// it: hsm's TestTokenFull maps the real value on the real operation path)
// at key generation or at escrow is 5.03 "hsm full" with StoreRetry, not
// 5.00; a key that could not be escrowed is destroyed and recorded so.
func TestServerKeygenTokenFull(t *testing.T) {
	full := fmt.Errorf("hsm: %w: CKR_DEVICE_MEMORY", hsm.ErrTokenFull)
	t.Run("generate", func(t *testing.T) {
		f := newKeygenFixture(t, KeygenOptions{})
		f.tok.failGen = full
		_, err := f.keygen("escrow", f.csr(t, "full-generate", &cms.KeyRequest{}), policy.OpSkg)
		wantUnavailable(t, err, "hsm full", DefaultStoreRetry)
	})
	t.Run("escrow", func(t *testing.T) {
		f := newKeygenFixture(t, KeygenOptions{})
		f.tok.failEscrow = full
		_, err := f.keygen("escrow", f.csr(t, "full-escrow", &cms.KeyRequest{}), policy.OpSkg)
		wantUnavailable(t, err, "hsm full", DefaultStoreRetry)
		recs, rerr := f.db.AuditRecords(store.AuditFilter{})
		if rerr != nil {
			t.Fatal(rerr)
		}
		if last := recs[len(recs)-1]; last.Event != store.EventKeygen || last.Verdict != VerdictDestroyed {
			t.Fatalf("last record %+v", last)
		}
		assertTokenClean(t, f.tok.Token, 0)
	})
}

func TestServerKeygenRefusals(t *testing.T) {
	f := newKeygenFixture(t, KeygenOptions{})
	rsaCert, _ := testdataPair(t, "recip-rsa")
	weird := pkix.Extension{Id: policy.OIDBasicConstraints, Value: mustMarshal(t, struct{ CA bool }{true})}
	// The engine's refusals: code set, audited as "op: code (class): detail".
	engine := []struct {
		name    string
		profile string
		op      policy.Operation
		csr     []byte
		kind    ErrorKind
		code    policy.Code
	}{
		{"profile without skg", "plain", policy.OpSkg, f.csr(t, "x", &cms.KeyRequest{}), KindForbidden, policy.CodeOperationNotAllowed},
		{"profile without skc", "kgenc", policy.OpSkc, f.csr(t, "x", &cms.KeyRequest{}), KindForbidden, policy.CodeOperationNotAllowed},
		{"plain where encryption is required", "kgenc", policy.OpSkg, f.csr(t, "x", &cms.KeyRequest{}), KindBadRequest,
			policy.CodeKeyEncryptionRequired},
		{"plain with capabilities only, encryption required", "kgenc", policy.OpSkg,
			f.csr(t, "x", &cms.KeyRequest{Capabilities: cms.ContentCapabilities(cms.AES128GCM)}), KindBadRequest,
			policy.CodeKeyEncryptionRequired},
		{"policy: CA requested", "kg", policy.OpSkg, f.csr(t, "x", &cms.KeyRequest{}, weird), KindBadRequest, policy.CodeCARequested},
		{"policy: no common name", "kg", policy.OpSkg, f.csr(t, "", &cms.KeyRequest{}), KindBadRequest, policy.CodeSubjectAttrMissing},
		{"policy: SAN on a profile without", "kgrsa", policy.OpSkg, f.csr(t, "x", &cms.KeyRequest{}, hmnExt(t, "DEMO-0001", "a.example.com")),
			KindBadRequest, policy.CodeSANTypeNotAllowed},
		{"policy: subject bound to the identity", "kgbound", policy.OpSkg, f.csr(t, "admin", &cms.KeyRequest{}), KindForbidden,
			policy.CodeSubjectNotBound},
		{"policy: another device's hardware serial", "kgbound", policy.OpSkg,
			f.rawCSR(t, f.identitySubject(t), &cms.KeyRequest{}, hmnExt(t, "DEMO-0002")), KindForbidden, policy.CodeHardwareNameNotBound},
		{"unknown profile", "nope", policy.OpSkg, f.csr(t, "x", &cms.KeyRequest{}), KindNotFound, policy.CodeProfileUnknown},
		{"malformed CSR", "kg", policy.OpSkg, []byte("not a CSR"), KindBadRequest, policy.CodeCSRMalformed},
		{"malformed key request attribute", "kg", policy.OpSkg, f.csrAttr(t, oidDecryptKeyID, "kek"),
			KindBadRequest, policy.CodeCSRMalformed},
	}
	for _, c := range engine {
		t.Run(c.name, func(t *testing.T) {
			rec, err := f.refusal(t, c.profile, c.csr, c.op)
			wantCode(t, err, c.kind, c.code)
			if !strings.HasPrefix(rec.Reason, c.op.String()+": "+c.code.String()+" (") {
				t.Fatalf("audit reason %q", rec.Reason)
			}
		})
	}
	// The delivery's refusals, after the engine issued: audited as "op: reason".
	delivery := []struct {
		name    string
		profile string
		csr     []byte
		kind    ErrorKind
		reason  string
	}{
		{"unknown KEK", "kg", f.csr(t, "x", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("nope")}),
			KindBadRequest, "unknown key-encryption key"},
		{"identifier matching no key", "kg", f.csr(t, "x", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: rsaCert.SubjectKeyId}),
			KindBadRequest, "no recipient key matches the identifier"},
		{"no usable content encryption", "kg", f.csr(t, "x", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("device-kek-1"),
			Capabilities: []cms.Capability{{ID: asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}}}}), KindBadRequest, "no usable content-encryption algorithm"},
		{"capabilities too weak for P-384", "kg384", f.csr(t, "x", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("device-kek-1"),
			Capabilities: cms.ContentCapabilities(cms.AES128CBC)}), KindBadRequest, "no usable content-encryption algorithm"},
		{"server key type the token cannot make", "kgp521", f.csr(t, "x", &cms.KeyRequest{}), KindInternal,
			"server key type not supported by the token"},
	}
	for _, c := range delivery {
		t.Run(c.name, func(t *testing.T) {
			rec, err := f.refusal(t, c.profile, c.csr, policy.OpSkg)
			wantKind(t, err, c.kind, c.reason)
			if rec.Reason != "skg: "+c.reason {
				t.Fatalf("audit reason %q", rec.Reason)
			}
		})
	}
	if n := f.tok.count(); n != 0 {
		t.Fatalf("%d keys generated for refused requests", n)
	}
	certs := f.count(t)
	// A KEK deleted after it was used (and cached) is refused as unknown,
	// the key generated for the request destroyed, no certificate issued.
	kekCSR := f.csr(t, "kek", &cms.KeyRequest{Delivery: cms.DeliverKEK, KeyID: []byte("device-kek-1")})
	if _, err := f.keygen("kg", kekCSR, policy.OpSkg); err != nil {
		t.Fatal(err)
	}
	if err := f.tok.DeleteKEK([]byte("device-kek-1")); err != nil {
		t.Fatal(err)
	}
	for range 2 { // from the cache, then from the token
		_, err := f.keygen("kg", kekCSR, policy.OpSkg)
		wantKind(t, err, KindBadRequest, "unknown key-encryption key")
	}
	if got := f.count(t); got != certs+1 {
		t.Fatalf("%d certificates, want %d: a packaging failure issued one", got, certs+1)
	}
	assertTokenClean(t, f.tok.Token, 0)
	// The authority keeps serving.
	if _, err := f.keygen("kg", f.csr(t, "after", &cms.KeyRequest{}), policy.OpSkg); err != nil {
		t.Fatal(err)
	}
	// sen is refused where the profile does not offer it.
	_, err := f.a.Enroll(context.Background(), Request{CSR: pkitest.CSR(t, pkitest.Key(t), pkix.Name{CommonName: "s"}),
		Profile: "skgonly", Requester: f.dev})
	wantCode(t, err, KindForbidden, policy.CodeOperationNotAllowed)
}

// TestServerKeygenBinding: /skg binds the certificate to the requester
// like /sen: the identity's subject and hardwareModuleName, whatever the
// CSR leaves out.
func TestServerKeygenBinding(t *testing.T) {
	f := newKeygenFixture(t, KeygenOptions{})
	res, err := f.keygen("kgbound", f.rawCSR(t, []byte{0x30, 0}, &cms.KeyRequest{}), policy.OpSkg)
	if err != nil {
		t.Fatal(err)
	}
	f.open(t, res, nil)
	idev := pkitest.PEMCert(t, f.demo.Valid.Cert)
	if !bytes.Equal(res.Certificate.RawSubject, idev.RawSubject) {
		t.Fatalf("subject %s, want the IDevID's %s", res.Certificate.Subject, idev.Subject)
	}
	want, ok := extensionValue(idev, policy.OIDSubjectAltName)
	got, _ := extensionValue(res.Certificate, policy.OIDSubjectAltName)
	if !ok || !bytes.Equal(got, want) {
		t.Fatalf("SAN %x, want the IDevID's %x", got, want)
	}
}

func extensionValue(c *x509.Certificate, id asn1.ObjectIdentifier) ([]byte, bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(id) {
			return e.Value, true
		}
	}
	return nil, false
}

// TestServerKeygenApproval: on a manual profile /skg waits for the
// operator (5.03 + Max-Age) and no key is generated before the approval;
// the device's retry after it gets one key and certificate, concurrent
// retries share that answer, and a later retry is refused: never two
// certificates for one approved request.
func TestServerKeygenApproval(t *testing.T) {
	f := newKeygenFixture(t, KeygenOptions{})
	csr := f.csr(t, "approved", &cms.KeyRequest{})
	for range 2 { // the retry is answered the same, not recorded again
		_, err := f.keygen("kgmanual", csr, policy.OpSkg)
		wantKind(t, err, KindPending, policy.CodePendingApproval.Text())
		if e := err.(*Error); e.MaxAge != time.Minute || !Audited(err) {
			t.Fatalf("pending %+v", e)
		}
	}
	q, err := f.db.Request(f.dev.Identity.Fingerprint, hexSHA256(csr))
	if err != nil || q.State != store.StatePending {
		t.Fatalf("request %+v, %v", q, err)
	}
	var pending []store.AuditRecord
	recs, err := f.db.AuditRecords(store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Event == store.EventPending {
			pending = append(pending, r)
		}
	}
	if len(pending) != 1 || !strings.HasPrefix(pending[0].Reason, "skg: pending-approval") || !slices.Contains(pending[0].Flags, FlagServerKeygen) {
		t.Fatalf("pending records %+v", pending)
	}
	if n := f.tok.count(); n != 0 {
		t.Fatalf("%d keys generated before the approval", n)
	}
	certs := f.count(t)
	if _, err := f.db.Decide(f.dev.Identity.Fingerprint, hexSHA256(csr), true, "ok", store.AuditRecord{Verdict: "approved"}); err != nil {
		t.Fatal(err)
	}

	const retries = 6
	results := make(chan *KeygenResult, retries)
	errs := make(chan error, retries)
	var wg sync.WaitGroup
	for range retries {
		wg.Go(func() {
			res, err := f.keygen("kgmanual", csr, policy.OpSkg)
			if err != nil {
				errs <- err
				return
			}
			results <- res
		})
	}
	wg.Wait()
	close(results)
	close(errs)
	var serial string
	var first *KeygenResult
	for res := range results {
		if serial == "" {
			serial, first = res.Serial, res
		} else if res.Serial != serial || !bytes.Equal(res.Key, first.Key) {
			t.Fatalf("two answers for one approved request: %s and %s", serial, res.Serial)
		}
	}
	if serial == "" {
		t.Fatal("no retry got the key")
	}
	f.open(t, first, nil)
	for err := range errs {
		wantKind(t, err, KindForbidden, reasonDelivered)
	}
	if got := f.count(t); got != certs+1 {
		t.Fatalf("%d certificates for one approved request", got-certs)
	}
	_, err = f.keygen("kgmanual", csr, policy.OpSkg)
	wantKind(t, err, KindForbidden, reasonDelivered)
	if q, err := f.db.Request(f.dev.Identity.Fingerprint, hexSHA256(csr)); err != nil || q.State != store.StateIssued || q.Serial != serial {
		t.Fatalf("request %+v, %v", q, err)
	}
	// The certificate is mapped to the request, and its issued record
	// names the same CSR digest (the store's verification checks both).
	if c, err := f.db.IssuedFor(f.dev.Identity.Fingerprint, hexSHA256(csr)); err != nil || c.Serial != serial {
		t.Fatalf("issued for the request: %+v, %v", c, err)
	}
	if recs := f.records(t, serial); len(recs) != 1 || recs[0].CSRDigest != hexSHA256(csr) {
		t.Fatalf("issued record %+v", recs)
	}
	if n := f.tok.count(); n != 1 {
		t.Fatalf("%d keys generated for one approved request", n)
	}
	assertTokenClean(t, f.tok.Token, 0)

	// A denied request gets no key either.
	denied := f.csr(t, "denied", &cms.KeyRequest{})
	_, err = f.keygen("kgmanual", denied, policy.OpSkg)
	wantKind(t, err, KindPending, "")
	if _, err := f.db.Decide(f.dev.Identity.Fingerprint, hexSHA256(denied), false, "no", store.AuditRecord{Verdict: "denied"}); err != nil {
		t.Fatal(err)
	}
	_, err = f.keygen("kgmanual", denied, policy.OpSkg)
	wantCode(t, err, KindForbidden, policy.CodeOperatorRejected)
}

// TestServerKeygenLimits: the rate limit counts server-generated keys, and
// a requester revoked since its handshake is refused on its next request.
func TestServerKeygenLimits(t *testing.T) {
	f := newKeygenFixture(t, KeygenOptions{})
	if _, err := f.keygen("kgrated", f.csr(t, "one", &cms.KeyRequest{}), policy.OpSkg); err != nil {
		t.Fatal(err)
	}
	_, err := f.keygen("kgrated", f.csr(t, "two", &cms.KeyRequest{}), policy.OpSkg)
	wantCode(t, err, KindUnavailable, policy.CodeRateLimited)
	if e := err.(*Error); e.MaxAge <= 0 || e.MaxAge > time.Hour {
		t.Fatalf("rate limit Max-Age %v", e.MaxAge)
	}

	// An operational certificate of this CA asks for a server key, then
	// is revoked: the same session's next request is refused.
	res := f.enroll(t, Request{CSR: pkitest.CSR(t, pkitest.Key(t), pkix.Name{CommonName: "op-dev"}), Profile: "kg", Requester: f.dev})
	op, err := f.a.Authenticate([]*x509.Certificate{res.Certificate, f.h.Issuing})
	if err != nil {
		t.Fatal(err)
	}
	// A renewal keeps the names (RFC 7030 §4.2.2): the subject and SAN
	// of the operational certificate.
	san, _ := extensionValue(res.Certificate, policy.OIDSubjectAltName)
	renewal := func() []byte {
		return f.rawCSR(t, res.Certificate.RawSubject, &cms.KeyRequest{}, pkix.Extension{Id: policy.OIDSubjectAltName, Value: san})
	}
	r := KeygenRequest{CSR: renewal(), Profile: "kg", Requester: op, Operation: policy.OpSkc}
	if _, err := f.g.ServerKeygen(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Revoke(res.Serial, 1, "operator:test"); err != nil {
		t.Fatal(err)
	}
	r.CSR = renewal()
	_, err = f.g.ServerKeygen(context.Background(), r)
	wantCode(t, err, KindForbidden, policy.CodeCertRevoked)
	assertTokenClean(t, f.tok.Token, 0)
}

// refusal sends a request that must be refused and returns the one audit
// record it left (a denial flagged server-keygen) and the error.
func (f *keygenFixture) refusal(t testing.TB, profile string, csr []byte, op policy.Operation) (store.AuditRecord, error) {
	t.Helper()
	before := f.countRecords(t)
	_, err := f.keygen(profile, csr, op)
	if err == nil || !Audited(err) {
		t.Fatalf("refusal not audited: %v", err)
	}
	recs, rerr := f.db.AuditRecords(store.AuditFilter{AfterSeq: before})
	if rerr != nil || len(recs) != 1 || recs[0].Event != store.EventDenied || !slices.Contains(recs[0].Flags, FlagServerKeygen) {
		t.Fatalf("audit %+v, %v", recs, rerr)
	}
	return recs[0], err
}

func (f *keygenFixture) countRecords(t testing.TB) uint64 {
	t.Helper()
	recs, err := f.db.AuditRecords(store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return recs[len(recs)-1].Seq
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKeyPackageSigner(t *testing.T) {
	f := newFixture(t)
	issuingKey, err := f.tok.FindKey(LabelIssuing)
	if err != nil {
		t.Fatal(err)
	}
	c, err := IssueKeyPackageSigner(f.tok, "", issuingKey, f.h.Issuing, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature || len(c.ExtKeyUsage) != 0 || c.IsCA {
		t.Fatalf("signer certificate %+v", c)
	}
	// A second call (lost certificate file) re-certifies the same key.
	c2, err := IssueKeyPackageSigner(f.tok, "", issuingKey, f.h.Issuing, InitOptions{})
	if err != nil || !samePublicKey(c.PublicKey, c2.PublicKey) || c.SerialNumber.Cmp(c2.SerialNumber) == 0 {
		t.Fatalf("second certificate %v", err)
	}
	sk, err := f.tok.FindKey(LabelKeyPackage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.NewKeygen(KeygenOptions{Token: f.tok, Signer: sk, SignerCertificate: f.h.Server}); err == nil {
		t.Fatal("the DTLS server certificate (EKU serverAuth, other key) accepted as key-package signer")
	}
	if err := KeyPackageSignerUsable(f.h.Server, f.h.Issuing, time.Now()); err == nil ||
		!strings.Contains(err.Error(), "extended key usage") {
		t.Fatalf("server certificate: %v", err)
	}
	if err := KeyPackageSignerUsable(c, f.h.Root, time.Now()); err == nil {
		t.Fatal("signer certificate accepted under the root")
	}
	if _, err := IssueKeyPackageSigner(f.tok, "", sk, f.h.Issuing, InitOptions{}); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("issuing with the wrong key: %v", err)
	}
}

// TestServerKeygenGCMForOpenSSL: with NoAuthAttrs the AuthEnvelopedData of
// an AES-GCM answer is one OpenSSL (<= 3.6) decrypts.
func TestServerKeygenGCMForOpenSSL(t *testing.T) {
	f := newKeygenFixture(t, KeygenOptions{NoAuthAttrs: true})
	ecCert, _ := testdataPair(t, "recip-p256")
	f.recips[RequesterIdentity(f.dev)] = []*x509.Certificate{ecCert}
	res, err := f.keygen("kg", f.csr(t, "gcm", &cms.KeyRequest{Delivery: cms.DeliverAsymmetric, KeyID: ecCert.SubjectKeyId,
		Capabilities: cms.ContentCapabilities(cms.AES128GCM)}), policy.OpSkg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in, out := dir+"/key.p7m", dir+"/sd.der"
	if err := os.WriteFile(in, res.Key, 0o600); err != nil {
		t.Fatal(err)
	}
	pkitest.OpenSSL(t, "cms", "-decrypt", "-inform", "DER", "-in", in, "-out", out,
		"-recip", "cms/testdata/recip-p256.pem", "-inkey", "cms/testdata/recip-p256.key")
	if b, err := os.ReadFile(out); err != nil || len(b) == 0 || b[0] != 0x30 {
		t.Fatalf("openssl wrote %x, %v", b, err)
	}
}
