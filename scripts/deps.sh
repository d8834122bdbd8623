#!/usr/bin/env bash
# Installs what `make run` and `make test` need on a Debian machine: SoftHSM2,
# libcoap's coap-client (OpenSSL and GnuTLS builds), OpenSSL, and systemd's
# systemd-analyze (the test of the service unit). As root it
# runs `apt-get update` once and installs the missing packages; otherwise it
# stops with one line naming them.
set -euo pipefail

need=()
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
{ [ -e /usr/lib/softhsm/libsofthsm2.so ] || [ -e /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so ] ||
  [ -e /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so ] || [ -e /usr/local/lib/softhsm/libsofthsm2.so ]; } ||
  [[ " ${need[*]} " == *" softhsm2 "* ]] || need+=(softhsm2)
{ command -v coap-client-openssl >/dev/null 2>&1 && command -v coap-client-gnutls >/dev/null 2>&1; } || need+=(libcoap3-bin)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)

[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "estca: missing packages: ${need[*]} (install them with: sudo apt-get install ${need[*]})" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "estca: missing packages: ${need[*]} and no apt-get to install them" >&2
	exit 1
fi
echo "estca: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
