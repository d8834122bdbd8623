//go:build !cgo

package hsm

import "crypto"

// Without cgo the PKCS#11 module cannot be loaded: the API stays the same and
// every call returns ErrNoCgo, so that code built for devices (which never
// opens a token) still compiles and a misbuilt server says what is wrong.

// Token is an open, logged-in PKCS#11 token; in a build without cgo none can
// be opened.
type Token struct{}

// Key is a private key in a Token; in a build without cgo there is none.
type Key struct{}

func open(Options) (*Token, error) { return nil, ErrNoCgo }

func (t *Token) close() error                                       { return nil }
func (t *Token) tokenLabel() string                                 { return "" }
func (t *Token) status() Status                                     { return Status{Err: ErrNoCgo} }
func (t *Token) check() error                                       { return ErrNoCgo }
func (t *Token) generateKey(string, KeyType) (crypto.Signer, error) { return nil, ErrNoCgo }
func (t *Token) findKey(string) (crypto.Signer, error)              { return nil, ErrNoCgo }
func (t *Token) keyInfo(string) (KeyInfo, error)                    { return KeyInfo{}, ErrNoCgo }
func (t *Token) deleteKey(string) error                             { return ErrNoCgo }

func (k *Key) public() crypto.PublicKey                       { return nil }
func (k *Key) keyLabel() string                               { return "" }
func (k *Key) keyType() KeyType                               { return "" }
func (k *Key) sign([]byte, crypto.SignerOpts) ([]byte, error) { return nil, ErrNoCgo }

func initToken(string, string, string, string) error { return ErrNoCgo }
