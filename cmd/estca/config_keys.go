package main

import (
	"fmt"
	"slices"

	"github.com/estca/estca/ca"
	"github.com/estca/estca/hsm"
	"github.com/estca/estca/policy"
)

// KeysConfig configures server-side key generation (/skg, /skc) besides
// the profile keys (operations, server_key_type, require_encrypted_keys,
// escrow_keys).
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
}

func (k *KeysConfig) problems() []string {
	var out []string
	if k.SignerKey == ca.LabelIssuing || k.SignerKey == ca.LabelServer || k.SignerKey == ca.LabelAudit || k.SignerKey == ca.LabelRoot {
		out = append(out, fmt.Sprintf("signer_key %q is a CA key label: use a key of its own", k.SignerKey))
	}
	return out
}

// operations converts the profile's operation names (validated).
func (p ProfileConfig) operations() []policy.Operation {
	var ops []policy.Operation
	for _, s := range p.Operations {
		if op, ok := policy.ParseOperation(s); ok {
			ops = append(ops, op)
		}
	}
	return ops
}

// keygenProblems reports the problems of the profile's key generation keys.
func (p ProfileConfig) keygenProblems() []string {
	var out []string
	for _, s := range p.Operations {
		if _, ok := policy.ParseOperation(s); !ok {
			out = append(out, fmt.Sprintf("operations: unknown %q (sen, sren, skg, skc)", s))
		}
	}
	keygen := slices.Contains(p.Operations, "skg") || slices.Contains(p.Operations, "skc")
	if !keygen {
		if p.ServerKeyType != "" || p.RequireEncryptedKeys || p.EscrowKeys {
			out = append(out, "server_key_type, require_encrypted_keys and escrow_keys need skg or skc in operations")
		}
		return out
	}
	name := p.ServerKeyType
	if name == "" && len(p.KeyTypes) > 0 {
		name = p.KeyTypes[0]
	}
	if _, err := hsm.ParseDeviceKeyType(name); err != nil {
		out = append(out, fmt.Sprintf("server_key_type: %q cannot be generated in the token (ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072)", name))
	}
	return out
}
