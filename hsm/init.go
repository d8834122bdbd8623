//go:build cgo

package hsm

import (
	"errors"
	"fmt"
	"os"

	"github.com/miekg/pkcs11"
)

func initToken(module, label, soPIN, userPIN string) (err error) {
	if label == "" || len(label) > 32 {
		return fmt.Errorf("hsm: init token: label must be 1 to 32 bytes, got %d", len(label))
	}
	if soPIN == "" || userPIN == "" {
		return fmt.Errorf("%w: init token needs an SO PIN and a user PIN", ErrNoPIN)
	}
	if _, err := os.Stat(module); err != nil {
		return fmt.Errorf("%w: %w", ErrModule, err)
	}
	ctx := pkcs11.New(module)
	if ctx == nil {
		return fmt.Errorf("%w: cannot load %s as a pkcs11 module", ErrModule, module)
	}
	defer ctx.Destroy()
	if err := ctx.Initialize(); err != nil {
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
			return fmt.Errorf("%w: close open tokens before initialising one", ErrInUse)
		}
		return fmt.Errorf("%w: C_Initialize %s: %w", ErrModule, module, err)
	}
	defer func() {
		if ferr := ctx.Finalize(); ferr != nil && err == nil {
			err = fmt.Errorf("hsm: init token: C_Finalize: %w", ferr)
		}
	}()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return fmt.Errorf("hsm: init token: list slots: %w", err)
	}
	free, found := uint(0), false
	for _, s := range slots {
		info, err := ctx.GetTokenInfo(s)
		if err != nil {
			return fmt.Errorf("hsm: init token: token info: %w", err)
		}
		if info.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			if !found {
				free, found = s, true
			}
		} else if info.Label == label {
			return fmt.Errorf("%w: label %q", ErrTokenExists, label)
		}
	}
	if !found {
		return fmt.Errorf("hsm: init token: no slot with an uninitialised token")
	}
	if err := ctx.InitToken(free, soPIN, label); err != nil {
		return fmt.Errorf("hsm: init token: C_InitToken: %w", err)
	}
	// SoftHSM moves the new token to a slot numbered after its serial: look it up again.
	t := &Token{ctx: ctx, label: label}
	slot, _, err := t.findSlot()
	if err != nil {
		return fmt.Errorf("hsm: init token: %w", err)
	}
	s, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("hsm: init token: open session: %w", err)
	}
	defer func() { _ = ctx.CloseSession(s) }()
	if err := ctx.Login(s, pkcs11.CKU_SO, soPIN); err != nil {
		return fmt.Errorf("hsm: init token: SO login: %w", err)
	}
	if err := ctx.InitPIN(s, userPIN); err != nil {
		return fmt.Errorf("hsm: init token: C_InitPIN: %w", err)
	}
	if err := ctx.Logout(s); err != nil {
		return fmt.Errorf("hsm: init token: logout: %w", err)
	}
	return nil
}
