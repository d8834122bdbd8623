//go:build !cgo

package hsm

// KEK is a key-encryption key in a Token; in a build without cgo there is none.
type KEK struct{}

func (t *Token) generateExportable(KeyType, bool) (*ExportedKey, error) { return nil, ErrNoCgo }
func (t *Token) escrowKey(string, string) error                         { return ErrNoCgo }
func (t *Token) cleanupGenerated() (int, error)                         { return 0, ErrNoCgo }
func (t *Token) escrowedKeys() ([]EscrowedKey, error)                   { return nil, ErrNoCgo }
func (t *Token) destroyEscrowed(string) error                           { return ErrNoCgo }
func (t *Token) importKEK([]byte, []byte) error                         { return ErrNoCgo }
func (t *Token) findKEK([]byte) (*KEK, error)                           { return nil, ErrNoCgo }
func (t *Token) keks() ([]KEKInfo, error)                               { return nil, ErrNoCgo }
func (t *Token) deleteKEK([]byte) error                                 { return ErrNoCgo }
func (k *KEK) wrapKey([]byte) ([]byte, error)                           { return nil, ErrNoCgo }
func (k *KEK) kekBits() int                                             { return 0 }
func (k *KEK) kekID() []byte                                            { return nil }
