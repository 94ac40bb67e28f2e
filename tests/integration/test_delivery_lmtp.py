"""LMTP (RFC 2033) into Debian's real Dovecot, over TCP and a UNIX socket.

The test starts ``dovecot -F`` with its own configuration in a temporary
directory (LMTP only, users from a passwd-file, maildirs under the test
directory), routes mail to it with transport_maps (``lmtp:inet:...`` and
``lmtp:unix:...``) and checks the per-recipient replies after the data and
the files in the users' maildirs.  Dovecot offers CHUNKING, so the body
goes as BDAT.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor

from tests.integration.deliverykit import Run, config, message_file, reply_of
from tests.integration.harness import free_port, port_open, wait_for

reactor: Any = _reactor
pytestmark = pytest.mark.timeout(60)
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """A running Dovecot LMTP server: (TCP port, socket path, mail root)."""
    if not os.path.exists("/usr/lib/dovecot/lmtp"):
        pytest.skip("dovecot-lmtpd is not installed")
    # Not under tmp_path: pytest's base directory is mode 0700, and the
    # mail user (nobody, when the tests run as root) must reach the maildirs.
    root = Path(tempfile.mkdtemp(prefix="mta-dovecot-"))
    mail = root / "mail"
    for d in ("run", "state", "mail"):
        (root / d).mkdir(parents=True)
    uid, gid = (65534, 65534) if os.getuid() == 0 else (os.getuid(), os.getgid())
    os.chmod(mail, 0o777)
    os.chmod(root, 0o755)
    users = root / "users"
    users.write_text(
        "".join(f"{u}@lmtp.test::{uid}:{gid}::{mail}/{u}::\n" for u in ("alice", "bob"))
    )
    port = free_port()
    import grp
    import pwd

    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    (root / "dovecot.conf").write_text(
        f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = mta-test-{port}
protocols = lmtp
ssl = no
listen = 127.0.0.1
default_internal_user = {me}
default_login_user = {me}
default_internal_group = {group}
mail_location = maildir:~/Maildir
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    path = lmtp
    mode = 0666
  }}
}}
"""
    )
    proc = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: port_open(port), 15, "dovecot lmtp")
        yield port, root / "run" / "lmtp", mail
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(root, ignore_errors=True)


def maildir_messages(mail: Path, user: str) -> list[bytes]:
    new = mail / user / "Maildir" / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []


@pytest_twisted.ensureDeferred
async def test_lmtp_into_dovecot_over_tcp_and_unix_socket(
    tmp_path: Path, dovecot: tuple[int, Path, Path]
) -> None:
    """Over TCP: alice and bob get the message in their maildirs, each
    with Dovecot's own 250 after the data, and an unknown user gets
    Dovecot's 550 at RCPT; over the UNIX socket the same again."""
    port, sock, mail = dovecot
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "transport").write_text(f"lmtp.test lmtp:inet:127.0.0.1:{port}\n")
    run = Run(reactor, config(conf, {"transport_maps": "texthash:transport"}))
    body = b"Subject: to the store\r\n\r\n.leading dot\r\nbody\r\n"
    msg = message_file(tmp_path / "msg", body)
    results = await run.deliver(msg, ["alice@lmtp.test", "carol@lmtp.test", "bob@lmtp.test"])
    run.close()
    alice = reply_of(results, "alice@lmtp.test")
    assert (alice.code, alice.status) == (250, "2.0.0")
    assert "<alice@lmtp.test>" in alice.text and "Saved" in alice.text
    assert "<bob@lmtp.test>" in reply_of(results, "bob@lmtp.test").text
    carol = reply_of(results, "carol@lmtp.test")
    assert (carol.code, carol.status) == (550, "5.1.1")
    assert results["alice@lmtp.test"][0].transport == "lmtp"
    assert results["alice@lmtp.test"][1].relay == f"127.0.0.1[127.0.0.1]:{port}"
    [got] = maildir_messages(mail, "alice")
    assert got.endswith(b"Subject: to the store\n\n.leading dot\nbody\n")
    assert len(maildir_messages(mail, "bob")) == 1

    (conf / "transport").write_text(f"lmtp.test lmtp:unix:{sock}\n")
    run = Run(reactor, config(conf, {"transport_maps": "texthash:transport"}))
    results = await run.deliver(msg, ["bob@lmtp.test"])
    run.close()
    assert reply_of(results, "bob@lmtp.test").code == 250
    assert results["bob@lmtp.test"][1].relay == f"{sock}[{sock}]"
    assert len(maildir_messages(mail, "bob")) == 2
