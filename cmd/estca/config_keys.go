package main

import (
	"fmt"
	"slices"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy"
)

// KeysConfig configures server-side key generation (/skg, /skc) besides
// the profile keys, which are the policy's (operations, server_key_type,
// require_encrypted_keys, escrow_keys: policyconfig.go).
type KeysConfig struct {
	// SignerKey is the token label of the key-package signing key and
	// SignerCert its certificate (PEM), issued by the issuing CA; `estca
	// serve` makes both when missing.
	SignerKey  string `yaml:"signer_key"`
	SignerCert string `yaml:"signer_cert"`
	// RecipientsDir holds the recipient certificates registered for device
	// identities (`estca keys add-recipient`).
	RecipientsDir string `yaml:"recipients_dir"`
	// GCMAuthAttrs sends the authenticated attributes RFC 5083 requires in
	// an AuthEnvelopedData (AES-GCM, when a device asks for it); false for
	// devices that decrypt with OpenSSL (<= 3.6 cannot parse them).
	GCMAuthAttrs *bool `yaml:"gcm_auth_attrs"`
	// PackageChain puts the issuing CA certificate into the key package
	// besides the signer's (the default); false saves about 400 bytes and a
	// Block2 exchange for fleets whose devices fetch /crts as 281 (the
	// chain): ca.KeygenOptions.SignerCertificateOnly.
	PackageChain *bool `yaml:"package_chain"`
}

func (k *KeysConfig) applyDefaults() {
	if k.SignerKey == "" {
		k.SignerKey = ca.LabelKeyPackage
	}
	if k.SignerCert == "" {
		k.SignerCert = "ca/keypkg.pem"
	}
	if k.RecipientsDir == "" {
		k.RecipientsDir = "keys/recipients"
	}
	if k.GCMAuthAttrs == nil {
		t := true
		k.GCMAuthAttrs = &t
	}
	if k.PackageChain == nil {
		t := true
		k.PackageChain = &t
	}
}

// validate reports the problems of the keys section by path.
func (k *KeysConfig) validate(bad func(string, ...any)) {
	if slices.Contains([]string{ca.LabelIssuing, ca.LabelServer, ca.LabelAudit, ca.LabelRoot}, k.SignerKey) {
		bad("keys.signer_key: %q is a CA key label: use a key of its own", k.SignerKey)
	}
}

// serverKeyProblem checks, for a profile offering skg or skc (ops), that
// the token can generate its server key type (server_key_type, else the
// first of key_types): the policy engine knows more key types than
// hsm.Token.GenerateExportable makes. It returns the key's path and the
// problem, or "" (the engine reports the other combinations).
func serverKeyProblem(where string, pc ProfileConfig, ops []policy.Operation) (string, string) {
	if !slices.Contains(ops, policy.OpSkg) && !slices.Contains(ops, policy.OpSkc) {
		return "", ""
	}
	name, at := pc.ServerKeyType, where+".server_key_type"
	if name == "" {
		name, at = "ecdsa-p256", where+".key_types[0]"
		if len(pc.KeyTypes) > 0 {
			name = pc.KeyTypes[0]
		}
	}
	if _, err := hsm.ParseDeviceKeyType(name); err != nil {
		return at, fmt.Sprintf("%q cannot be generated in the token for skg/skc (ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072)", name)
	}
	return "", ""
}
