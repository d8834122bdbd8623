#!/usr/bin/env bash
# Installs estca as a systemd service (make install-systemd): the binary in
# $PREFIX/bin, the unit cmd/estca/systemd/estca.service in $UNITDIR (its
# ExecStart pointed at that binary), and, on the live system (no DESTDIR),
# the system user estca and a daemon-reload. It does not create or start the
# appliance: see the unit's header or README "Running under systemd".
#
#   PREFIX   default /usr/local
#   UNITDIR  default /etc/systemd/system
#   BIN      the binary to install, default bin/estca
#   DESTDIR  staging root for packaging (then no user, no daemon-reload)
#   SYSTEM   yes|no: create the user and reload systemd (default: yes
#            without DESTDIR)
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
UNITDIR=${UNITDIR:-/etc/systemd/system}
BIN=${BIN:-bin/estca}
DESTDIR=${DESTDIR:-}
if [ -z "${SYSTEM:-}" ]; then
	if [ -z "$DESTDIR" ]; then SYSTEM=yes; else SYSTEM=no; fi
fi

[ -x "$BIN" ] || { echo "estca: $BIN not built (make build)" >&2; exit 1; }
case "$PREFIX" in /*) ;; *) echo "estca: PREFIX must be absolute" >&2; exit 1 ;; esac

install -D -m 0755 "$BIN" "$DESTDIR$PREFIX/bin/estca"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
sed "s|/usr/local/bin/estca|$PREFIX/bin/estca|g" cmd/estca/systemd/estca.service >"$tmp"
install -D -m 0644 "$tmp" "$DESTDIR$UNITDIR/estca.service"
echo "installed $DESTDIR$PREFIX/bin/estca and $DESTDIR$UNITDIR/estca.service"

if [ "$SYSTEM" = yes ]; then
	if ! getent passwd estca >/dev/null; then
		useradd --system --user-group --home-dir /var/lib/estca --no-create-home \
			--shell /usr/sbin/nologin --comment "estca CA appliance" estca
		echo "created the system user estca"
	fi
	command -v systemctl >/dev/null 2>&1 && systemctl daemon-reload || true
	cat <<EOT
next, once:
  sudo install -d -o estca -g estca -m 0700 /var/lib/estca
  sudo -u estca $PREFIX/bin/estca init --dir /var/lib/estca --server-name NAME --server-ip IP
  sudo systemctl enable --now estca
EOT
fi
