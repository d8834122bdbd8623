package main

// JSON output. Every --json of every command prints one of the view types
// below (or a slice of them), never a struct of another package: the views
// fix the names and formats operators script against, and the README lists
// every field ("JSON output"; a test checks it). The conventions:
//
//   - keys are snake_case, every key always present ("" , 0, [] or null when
//     there is nothing), so that `jq .field` never needs a default;
//   - times are RFC 3339 in UTC (Go's time.Time encoding, nanoseconds when
//     the value has them);
//   - binary values (hashes, key identifiers, signatures) are lowercase hex;
//     serials are the store's form (lowercase hex, no leading zeros, what
//     parseSerial returns);
//   - a list is a JSON array, empty as [], never null.
//
// The admin socket answers certificate and audit queries with the same
// views, so both paths print the same bytes.

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"time"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/store"
)

// printJSON prints v indented, with a final newline.
func printJSON(a *app, v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Certificate status values of certView.Status.
const (
	statusValid   = "valid"
	statusExpired = "expired"
	statusRevoked = "revoked"
)

// certView is an issued certificate (certs list, certs show).
type certView struct {
	Seq        uint64          `json:"seq"`
	Serial     string          `json:"serial"`
	Subject    string          `json:"subject"`
	Profile    string          `json:"profile"`
	Requester  string          `json:"requester"`
	IssuedAt   time.Time       `json:"issued_at"`
	NotBefore  time.Time       `json:"not_before"`
	NotAfter   time.Time       `json:"not_after"`
	Status     string          `json:"status"`
	Revocation *revocationView `json:"revocation"`
	SKI        string          `json:"ski"`
	CSRDigest  string          `json:"csr_sha256"`
	PEM        string          `json:"pem"`
}

// revocationView is a revocation: of a certificate, or stated by an audit record.
type revocationView struct {
	Reason     string    `json:"reason"`
	ReasonCode int       `json:"reason_code"`
	Time       time.Time `json:"time"`
}

// newCertView renders c with its revocation (nil if not revoked) as of now.
func newCertView(c store.Certificate, rev *store.Revocation, now time.Time) certView {
	v := certView{
		Seq: c.Seq, Serial: c.Serial, Subject: c.Subject, Profile: c.Profile, Requester: c.Requester,
		IssuedAt: c.IssuedAt.UTC(), NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(),
		Status: statusValid, SKI: hex.EncodeToString(c.SKI), CSRDigest: c.CSRDigest,
		PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER})),
	}
	switch {
	case rev != nil:
		v.Status, v.Revocation = statusRevoked, newRevocationView(*rev)
	case now.After(c.NotAfter):
		v.Status = statusExpired
	}
	return v
}

func newRevocationView(r store.Revocation) *revocationView {
	return &revocationView{Reason: ca.RevocationReasonName(r.Reason), ReasonCode: r.Reason, Time: r.Time.UTC()}
}

// auditView is one audit record (audit list).
type auditView struct {
	Seq        uint64          `json:"seq"`
	Time       time.Time       `json:"time"`
	Event      string          `json:"event"`
	Requester  *identityView   `json:"requester"`
	CSRDigest  string          `json:"csr_sha256"`
	Serial     string          `json:"serial"`
	Profile    string          `json:"profile"`
	Verdict    string          `json:"verdict"`
	Reason     string          `json:"reason"`
	Flags      []string        `json:"flags"`
	CertSeq    uint64          `json:"cert_seq"`
	CertDigest string          `json:"cert_sha256"`
	Revocation *revocationView `json:"revocation"`
	Head       *headView       `json:"head"`
	Ack        *headRefView    `json:"ack"`
	Prev       string          `json:"prev"`
	Hash       string          `json:"hash"`
}

// identityView is the requester of an audit record.
type identityView struct {
	Fingerprint  string `json:"fingerprint"`
	Subject      string `json:"subject"`
	IDevIDSerial string `json:"idevid_serial"`
	Anchor       string `json:"anchor"`
	Kind         string `json:"kind"`
}

// headView is a signed audit head.
type headView struct {
	Counter          uint64    `json:"counter"`
	Seq              uint64    `json:"seq"`
	Hash             string    `json:"hash"`
	Prev             string    `json:"prev"`
	Revocations      uint64    `json:"revocations"`
	RevocationDigest string    `json:"revocation_digest"`
	Time             time.Time `json:"time"`
	StoreID          string    `json:"store_id"`
	Signature        string    `json:"signature"`
}

// headRefView names a signed head.
type headRefView struct {
	Counter uint64 `json:"counter"`
	Seq     uint64 `json:"seq"`
	Digest  string `json:"digest"`
}

func newAuditView(r store.AuditRecord) auditView {
	v := auditView{
		Seq: r.Seq, Time: r.Time.UTC(), Event: string(r.Event), CSRDigest: r.CSRDigest, Serial: r.Serial,
		Profile: r.Profile, Verdict: r.Verdict, Reason: r.Reason, Flags: r.Flags, CertSeq: r.CertSeq,
		CertDigest: hex.EncodeToString(r.CertDigest), Prev: hex.EncodeToString(r.Prev), Hash: hex.EncodeToString(r.Hash),
	}
	if v.Flags == nil {
		v.Flags = []string{}
	}
	if id := r.Requester; id != (store.Identity{}) {
		v.Requester = &identityView{Fingerprint: id.Fingerprint, Subject: id.Subject,
			IDevIDSerial: id.IDevIDSerial, Anchor: id.Anchor, Kind: id.Kind}
	}
	if r.Revocation != nil {
		v.Revocation = newRevocationView(*r.Revocation)
	}
	if h := r.Head; h != nil {
		v.Head = &headView{Counter: h.Counter, Seq: h.Seq, Hash: hex.EncodeToString(h.Hash), Prev: hex.EncodeToString(h.Prev),
			Revocations: h.Revocations, RevocationDigest: hex.EncodeToString(h.RevocationDigest), Time: h.Time.UTC(),
			StoreID: hex.EncodeToString(h.Store), Signature: hex.EncodeToString(h.Signature)}
	}
	if a := r.Ack; a != nil {
		v.Ack = &headRefView{Counter: a.Counter, Seq: a.Seq, Digest: hex.EncodeToString(a.Digest)}
	}
	return v
}

func newAuditViews(rs []store.AuditRecord) []auditView {
	out := make([]auditView, len(rs))
	for i, r := range rs {
		out[i] = newAuditView(r)
	}
	return out
}

// requestView is an enrollment request kept for an operator's decision
// (requests list, approve, deny).
type requestView struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Profile    string `json:"profile"`
	Requester  string `json:"requester"`
	Anchor     string `json:"anchor"`
	Identity   string `json:"identity"`
	CSRSubject string `json:"csr_subject"`
	CSRDigest  string `json:"csr_sha256"`
	Serial     string `json:"serial"`
	Reason     string `json:"reason"`
	Created    string `json:"created"`
	Decided    string `json:"decided"`
}

// newRequestView renders r; text that came from a device is made printable.
func newRequestView(r store.Request) requestView {
	v := requestView{ID: r.ID(), State: string(r.State), Profile: r.Profile, Requester: printable(r.Requester.Subject),
		Anchor: r.Requester.Anchor, Identity: printable(r.Identity), CSRDigest: r.CSRDigest, Serial: r.Serial,
		Reason: printable(r.Reason), Created: r.Created.UTC().Format(time.RFC3339)}
	if !r.Decided.IsZero() {
		v.Decided = r.Decided.UTC().Format(time.RFC3339)
	}
	if csr, err := x509.ParseCertificateRequest(r.CSR); err == nil {
		v.CSRSubject = printable(csr.Subject.String())
	}
	return v
}

func requestViews(rs []store.Request) []requestView {
	out := make([]requestView, 0, len(rs))
	for _, r := range rs {
		out = append(out, newRequestView(r))
	}
	return out
}

// keysView is what `estca keys list` shows: the escrowed keys, the
// key-encryption keys and the registered recipient certificates of
// server-side key generation.
type keysView struct {
	Escrowed   []escrowView    `json:"escrowed"`
	KEKs       []kekView       `json:"keks"`
	Recipients []recipientView `json:"recipients"`
}

// escrowView is a server-generated key escrowed in the token.
type escrowView struct {
	Serial  string `json:"serial"`
	KeyType string `json:"key_type"`
	Label   string `json:"label"`
}

// kekView is a pre-shared key-encryption key in the token.
type kekView struct {
	ID   string `json:"id"`
	Bits int    `json:"bits"`
}

// recipientView is a recipient certificate registered for a device identity.
type recipientView struct {
	Identity string    `json:"identity"`
	Subject  string    `json:"subject"`
	KeyID    string    `json:"key_id"`
	NotAfter time.Time `json:"not_after"`
}

// jsonViews lists one value of every view type printed with --json, for
// the tests (snake_case keys, fields documented in the README).
func jsonViews() []any {
	return []any{certView{}, revocationView{}, auditView{}, identityView{}, headView{}, headRefView{}, doctorReport{}, finding{}, requestView{},
		keysView{}, escrowView{}, kekView{}, recipientView{}}
}
