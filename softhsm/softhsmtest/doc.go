// Package softhsmtest provides a fresh, opened SoftHSM2 token to tests.
//
// Tests that use it must not call t.Parallel: SoftHSM reads SOFTHSM2_CONF once
// per C_Initialize, so one token is open per process at a time (see the
// softhsm package documentation). New sets SOFTHSM2_CONF with t.Setenv, which
// the testing package refuses in parallel tests.
//
// It does not mock anything: the token is a real SoftHSM2 token in a
// temporary directory. When libsofthsm2.so is absent, tests are skipped,
// except under CI=true (or CI=1), where they fail.
package softhsmtest
