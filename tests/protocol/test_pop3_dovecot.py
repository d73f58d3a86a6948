"""Moving from Dovecot's POP3 (issue 18), against a real Dovecot: a
Dovecot POP3 server of our own (Debian's dovecot-pop3d) serves the
Maildir postage delivers to, then postage's pop3-handler serves it with
pop3_uidl_format set to what Dovecot's was: every client sees the same
UIDLs. A message delivered after the switch gets a UIDL from postage
that stays, and that Dovecot, started again on the same Maildir, shows
too. Dovecot's saved UIDLs (pop3_save_uidl) win in both.

Dovecot does not give a mailbox to root, so both servers run as the
unprivileged user nobody, who owns the test's files, as a provider's
virtual mailboxes belong to one user. The test needs root (to switch
users) and skips (exit 77) without Dovecot, which it never installs.
"""
import os
import pwd
import shutil
import signal
import subprocess
import time
import unittest

import harness
from harness import main
from pop3_base import PASSWORD, POP3, SMTP, Pop3TestCase, put_message

NOBODY = 65534
DEFAULT = '%08Xu%08Xv'   # Dovecot 2.3's pop3_uidl_format


def dovecot_binary():
    for path in (shutil.which('dovecot'), '/usr/sbin/dovecot'):
        if path and os.access(path, os.X_OK):
            return path
    return None


class Dovecot:
    """Dovecot's POP3 (or IMAP: start(protocol='imap'), for
    test_pop3_imap.py) on a free 127.0.0.1 port, with a configuration of
    our own: a passwd-file passdb, a static userdb (uid nobody), mail in
    postage's Maildirs, no TLS, its run and state dirs and log in dir."""

    def __init__(self, dir, mail_root, login, password):
        self.dir = dir
        self.mail_root = mail_root
        self.proc = None
        self.port = None
        os.makedirs(dir, exist_ok=True)
        self.passwd = os.path.join(dir, 'passwd')
        with open(self.passwd, 'w') as f:
            f.write(f'{login}:{{PLAIN}}{password}\n')
        self.home = os.path.join(dir, 'home')
        os.makedirs(self.home, exist_ok=True)
        os.chown(self.home, NOBODY, NOBODY)
        self.log = os.path.join(dir, 'dovecot.log')

    def start(self, uidl_format=DEFAULT, save_uidl=False, protocol='pop3'):
        self.port = harness._free_port('127.0.0.1')
        conf = os.path.join(self.dir, 'dovecot.conf')
        with open(conf, 'w') as f:
            f.write(f'''# written by tests/protocol/test_pop3_dovecot.py
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.log}
protocols = {protocol}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{self.mail_root}/%u
pop3_uidl_format = {uidl_format}
pop3_save_uidl = {'yes' if save_uidl else 'no'}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd}
}}
userdb {{
  driver = static
  args = uid={NOBODY} gid={NOBODY} home={self.home}
}}
service {protocol}-login {{
  inet_listener {protocol} {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener {protocol}s {{
    port = 0
  }}
}}
''')
        self.proc = subprocess.Popen([dovecot_binary(), '-F', '-c', conf],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if harness._listening('127.0.0.1', self.port, self.proc.pid):
                return
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f'Dovecot did not listen on 127.0.0.1:{self.port}: '
                             + self.log_text()[-3000:])

    def stop(self):
        if not self.proc:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        # the master's children (auth, login, pop3) are in its group
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)
        self.proc = None

    def log_text(self):
        try:
            with open(self.log, errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    # Looks like a harness Server to Pop3TestCase.poplib.
    @property
    def host(self):
        return '127.0.0.1'


class DovecotTestCase(Pop3TestCase):
    start_server = False

    def setUp(self):
        if not dovecot_binary():
            self.skipTest('Dovecot is not installed (package dovecot-pop3d)')
        if os.geteuid() != 0:
            self.skipTest('needs root: Dovecot and postage run as the user nobody')
        for user in ('dovecot', 'dovenull'):
            try:
                pwd.getpwnam(user)
            except KeyError:
                self.skipTest(f'no user {user} (made by the dovecot-core package)')
        if not shutil.which('setpriv'):
            self.skipTest('setpriv is not installed (package util-linux)')
        super().setUp()
        self.dovecot = Dovecot(os.path.join(self.p.dir, 'dovecot'), self.p.mail_root, 'alice',
                               PASSWORD)
        self.addCleanup(self.dovecot.stop)
        self.p.chown_all(NOBODY)
        self.smtp = self.p.serve(SMTP, ['--mode=mx'], run_as=NOBODY)
        self.pop3 = self.p.serve(POP3, run_as=NOBODY)
        self.seq = 0

    def deliver(self, n=1):
        """n messages through postage's smtp-handler; their Message-IDs."""
        ids = []
        with self.smtp.smtp() as s:
            for _ in range(n):
                self.seq += 1
                mid = f'<m{self.seq}.{time.time_ns()}@remote.example>'
                msg = (f'From: sender@remote.example\r\nTo: alice@example.test\r\n'
                       f'Subject: message {self.seq}\r\nMessage-ID: {mid}\r\n\r\n'
                       f'body {self.seq}\r\n')
                self.assertEqual(s.sendmail('sender@remote.example', ['alice@example.test'],
                                            msg), {})
                ids.append(mid)
        return ids

    def put_foreign(self, data, **kw):
        """A message another MDA left (a name without sizes), owned by
        nobody."""
        path = put_message(self.p, 'alice', data, sizes=False, **kw)
        os.chown(path, NOBODY, NOBODY)
        return path

    def listing(self, srv):
        """{Message-ID: UIDL} of one session on srv (a postage server or
        the Dovecot), ended by QUIT with nothing deleted."""
        m = self.poplib(srv=srv)
        _, lines, _ = m.uidl()
        out = {}
        for line in lines:
            n, uidl = line.decode().split(' ', 1)
            head = m.top(int(n), 0)[1]
            mid = [h for h in head if h.lower().startswith(b'message-id:')]
            self.assertEqual(len(mid), 1, head)
            out[mid[0].split(b':', 1)[1].strip().decode()] = uidl
        m.quit()
        return out

    def dovecot_listing(self, **kw):
        self.dovecot.start(**kw)
        try:
            got = self.listing(self.dovecot)
        finally:
            self.dovecot.stop()
        self.assertNotIn('Error', self.dovecot.log_text())
        return got

    def uidlist(self):
        with open(os.path.join(self.p.maildir('alice'), 'dovecot-uidlist')) as f:
            return f.read()


class Switch(DovecotTestCase):
    def test_same_uidls_after_the_switch_and_after(self):
        # Before the switch: Dovecot served the mailbox.
        ids = self.deliver(3)
        foreign = '<foreign.1@remote.example>'
        self.put_foreign(f'Subject: foreign\nMessage-ID: {foreign}\n\nbody\n'.encode(),
                         base='1700000000.M1P1.other')
        ids.append(foreign)
        dovecot = self.dovecot_listing()
        self.assertEqual(sorted(dovecot), sorted(ids))

        # Without the setting postage's UIDLs are its own: every client
        # would fetch everything again (issue 18).
        own = self.listing(self.pop3)
        self.assertEqual(sorted(own), sorted(ids))
        self.assertFalse(set(own.values()) & set(dovecot.values()), (own, dovecot))

        # The switch: pop3_uidl_format as Dovecot's was. The same UIDLs.
        self.p.set('pop3_uidl_format', DEFAULT)
        self.assertEqual(self.listing(self.pop3), dovecot)

        # After it: a message delivered by postage gets a UIDL from
        # postage that stays...
        new = self.deliver(1)[0]
        after = self.listing(self.pop3)
        self.assertEqual({k: v for k, v in after.items() if k != new}, dovecot)
        self.assertNotIn(after[new], dovecot.values())
        self.assertEqual(self.listing(self.pop3), after)
        # ... because it is in Dovecot's file, where Dovecot finds it:
        # Dovecot (IMAP kept on, or POP3 back) shows the same UIDLs.
        head, *records = self.uidlist().splitlines()
        uv = int([f for f in head.split() if f.startswith('V')][0][1:])
        uid = int(records[-1].split()[0])
        self.assertEqual(after[new], f'{uid:08x}{uv:08x}', records[-1])
        self.assertEqual(self.dovecot_listing(), after)

        # And the other way: one Dovecot sees first, then postage.
        newer = self.deliver(1)[0]
        dovecot = self.dovecot_listing()
        self.assertEqual(len(dovecot), len(after) + 1)
        self.assertEqual(self.listing(self.pop3), dovecot)
        self.assertIn(newer, dovecot)

        # Deleting through postage: the rest keep their UIDLs in both.
        m = self.poplib(srv=self.pop3)
        m.dele(1)
        m.quit()
        left = self.listing(self.pop3)
        self.assertEqual(len(left), len(dovecot) - 1)
        for k, v in left.items():
            self.assertEqual(dovecot[k], v)
        self.assertEqual(self.dovecot_listing(), left)

    def test_formats(self):
        # Each format as Dovecot makes it; %f and %g are long file names,
        # past RFC 1939's 70 characters, and sent all the same, as by
        # Dovecot.
        self.deliver(2)
        self.put_foreign(b'Subject: f\nMessage-ID: <f.2@remote.example>\n\nbody\n',
                         base='1700000001.M2P2.other', where='cur', flags='S')
        for fmt in (DEFAULT, '%v.%u', '%f', '%g', '%08Xv%08Xu', '%u-%.4f', 'x%%%05u'):
            with self.subTest(format=fmt):
                dovecot = self.dovecot_listing(uidl_format=fmt)
                self.p.set('pop3_uidl_format', fmt)
                self.assertEqual(self.listing(self.pop3), dovecot)
        self.deliver(1)
        self.p.set('pop3_uidl_format', '%f')
        self.assertEqual(self.listing(self.pop3), self.dovecot_listing(uidl_format='%f'))


class SavedUidls(DovecotTestCase):
    def test_saved_uidls_win(self):
        # A provider whose Dovecot once had another format and saved the
        # UIDLs it gave (pop3_save_uidl): those messages keep them under
        # the new format, in Dovecot and in postage.
        old = self.deliver(2)
        saved = self.dovecot_listing(uidl_format='%v.%u', save_uidl=True)
        self.assertIn(' P', self.uidlist())
        later = self.deliver(1)
        dovecot = self.dovecot_listing()
        for k in old:
            self.assertEqual(dovecot[k], saved[k])
        self.assertNotEqual(dovecot[later[0]].count('.'), 1)
        self.p.set('pop3_uidl_format', DEFAULT)
        self.assertEqual(self.listing(self.pop3), dovecot)


if __name__ == '__main__':
    main()
