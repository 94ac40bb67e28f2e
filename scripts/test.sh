#!/bin/sh
# Install everything the tests need on a Debian machine, then run the whole suite.
# Debian packages: postfix (for smtp-sink/smtp-source; its daemon is NOT started)
# and swaks. Python: this package with its [test] extra.
set -eu
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# A file that each package provides, and the package.
need=""
while read -r file pkg; do
    [ -e "$file" ] || need="$need $pkg"
done <<'PKGS'
/usr/sbin/smtp-sink postfix
/usr/bin/swaks swaks
/usr/sbin/dovecot dovecot-core
/usr/lib/dovecot/lmtp dovecot-lmtpd
/usr/sbin/pflogsumm pflogsumm
/usr/bin/chromium chromium
/usr/sbin/postgrey postgrey
/usr/sbin/opendkim opendkim
/usr/sbin/opendkim-genkey opendkim-tools
/usr/sbin/haproxy haproxy
/usr/bin/redis-server redis-server
PKGS
if [ -n "$need" ]; then
    # Keep the package's service from starting: tests start what they need.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        remove_policy=1
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need
    [ "${remove_policy:-0}" = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d
fi

PY=${PYTHON:-python3}
$PY -m pip install --quiet --disable-pip-version-check ".[test]"

$PY -m ruff check mta twisted_plugins tests bench
$PY -m mypy mta bench
exec $PY -m pytest -q -p no:cacheprovider "$@"
