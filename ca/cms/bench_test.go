package cms

import (
	"testing"
	"time"
)

// BenchmarkSealKeyPackage measures the server's packaging of one P-256 key
// (sign with a software P-256 signer, encrypt) per recipient kind; the HSM
// signature and KEK wrap of production are not included.
func BenchmarkSealKeyPackage(b *testing.B) {
	p := pki(b)
	d := newDevice(b, p, "p256")
	s := p.signer(b, "p256", false)
	for _, rc := range []recipientCase{recipientCases[0], recipientCases[2], recipientCases[4]} {
		for _, ce := range []ContentEncryption{AES128CBC, AES128GCM} {
			r := rc.rcpt(b, p)
			b.Run(rc.name+"/"+ce.String(), func(b *testing.B) {
				o := SealOptions{EncryptOptions: EncryptOptions{Content: ce}, SigningTime: time.Now()}
				for b.Loop() {
					if _, err := s.SealKeyPackage(d.pkcs8, r, o); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkOpenKeyPackage measures the device side: decrypt, verify the
// signature and the two-certificate chain.
func BenchmarkOpenKeyPackage(b *testing.B) {
	p := pki(b)
	for _, rc := range []recipientCase{recipientCases[0], recipientCases[2], recipientCases[4]} {
		der, _ := sealFor(b, p, rc, AES128CBC)
		key := rc.key(b, p)
		b.Run(rc.name, func(b *testing.B) {
			for b.Loop() {
				kp, err := OpenKeyPackage(der, key, p.verifyOptions())
				if err != nil {
					b.Fatal(err)
				}
				kp.Zero()
			}
		})
	}
}
