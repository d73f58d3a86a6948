"""Least privilege after a POP3 login (issue 23, part 6): the handler
closes the database and confines itself with Landlock to the mailbox's
Maildir, so a bug reached after the login cannot read another customer's
mail, the password hashes or a key.

The check is made from outside, on the running handler as production
starts it: gdb attaches to the handler that serves the session and makes
it call open(2) on paths, as code that an attacker took over would. Each
"cannot" is paired with a "can" (the same probe before the login, or on
the mailbox's own files), so the probe itself is shown to work.

Skips (exit 77) without gdb (package gdb, which scripts/test installs),
when not root (ptrace of the handler), or when the kernel has no Landlock
(the handler then logs confined=no).
"""
import os
import re
import shutil
import subprocess
import time

from harness import main
from pop3_base import PASSWORD, Pop3TestCase, put_message

EACCES = 13


class Confined(Pop3TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest('needs root (gdb attaches to the handler)')
        if not shutil.which('gdb'):
            self.skipTest('gdb is not installed (package gdb)')
        super().setUp()
        self.p.add_account('bob', PASSWORD, 'bob@example.test')
        self.own = self.put('Subject: own\n\nalice reads this\n')
        self.other = put_message(self.p, 'bob', 'Subject: bob\n\nnot for alice\n')
        self.tls_key = os.path.join(self.p.dir, 'key.pem')
        with open(self.tls_key, 'w') as f:
            f.write('-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n')
        os.chmod(self.tls_key, 0o600)

    def handler_pid(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = self.srv.handler_pids()
            if len(pids) == 1:
                return pids[0]
            time.sleep(0.05)
        self.fail(f'expected one handler, found {self.srv.handler_pids()}')

    def probe_open(self, pid, path, flags=0):
        """(result, errno) of open(path, flags) called inside the handler."""
        r = subprocess.run(['gdb', '-p', str(pid), '-batch', '-nx',
                            '-ex', f'call (int)open("{path}", {flags})',
                            '-ex', 'call (int*)__errno_location()',
                            '-ex', 'print *$2'],
                           capture_output=True, text=True, timeout=60)
        values = dict(re.findall(r'^\$(\d+) = (.*)$', r.stdout, re.M))
        self.assertIn('1', values, f'gdb did not call open: {r.stdout}\n{r.stderr}')
        return int(values['1']), int(values['3'])

    def require_landlock(self):
        if 'confined=no' in self.p.log_text():
            self.skipTest('the kernel has no Landlock (ABI 2 or later): confined=no')
        self.assertIn('confined=landlock', self.p.log_text())

    def test_before_login_the_probe_reaches_everything(self):
        # The control: before a login the handler must read the database,
        # and the probe shows what it can open.
        c = self.connect()
        pid = self.handler_pid()
        for path in (self.other, self.p.db, self.tls_key):
            fd, _ = self.probe_open(pid, path)
            self.assertGreaterEqual(fd, 0, f'before login, open({path}) failed')
        self.assertEqual(c.cmd('QUIT'), f'+OK {self.p.hostname} POP3 server signing off')

    def test_after_login_only_the_own_maildir(self):
        c = self.session()
        self.require_landlock()
        pid = self.handler_pid()
        # No descriptor of the database is kept open.
        links = [os.readlink(f'/proc/{pid}/fd/{fd}') for fd in os.listdir(f'/proc/{pid}/fd')]
        self.assertFalse([l for l in links if l.startswith(self.p.db)], links)
        # The mailbox's own mail (moved from new/ into cur/ at the login): yes.
        cur = os.path.join(self.p.maildir('alice'), 'cur')
        (name,) = os.listdir(cur)
        own = os.path.join(cur, name)
        fd, err = self.probe_open(pid, own)
        self.assertGreaterEqual(fd, 0, f'errno {err}')
        # Another customer's mail, the database, a key, the mail root,
        # the system's accounts: no.
        for path in (self.other, self.p.db, self.p.db + '-wal', self.tls_key,
                     self.p.mail_root, os.path.dirname(self.other), '/etc/passwd'):
            fd, err = self.probe_open(pid, path)
            self.assertEqual((fd, err), (-1, EACCES), f'after login, open({path})')
        # Nor can it write outside: create a file in the test dir.
        fd, err = self.probe_open(pid, os.path.join(self.p.dir, 'planted'), os.O_WRONLY | os.O_CREAT)
        self.assertEqual((fd, err), (-1, EACCES))
        self.assertFalse(os.path.exists(os.path.join(self.p.dir, 'planted')))

        # The session itself goes on: RETR, DELE, QUIT remove the message.
        self.assertTrue(c.cmd('RETR 1').startswith('+OK'))
        self.assertIn(b'alice reads this', c.raw_multi())
        self.assertTrue(c.cmd('DELE 1').startswith('+OK'))
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))
        self.wait_for(lambda: not os.path.exists(own))
        self.assertEqual(self.p.messages('alice'), [])
        self.assertEqual(len(self.p.messages('bob')), 1)

    def test_new_mail_is_seen_by_the_next_session(self):
        # New mail is moved from new/ into cur/ at login (a rename across
        # directories, which Landlock allows only where it is granted).
        self.put('Subject: second\n\nanother\n')
        c = self.session()
        self.require_landlock()
        self.assertEqual(c.cmd('STAT').split()[:2], ['+OK', '2'])
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))
        cur = os.path.join(self.p.maildir('alice'), 'cur')
        self.assertEqual(len(os.listdir(cur)), 2)

    def test_a_mailbox_without_a_maildir_reaches_nothing(self):
        self.p.add_account('carol', PASSWORD, 'carol@example.test')
        c = self.session('carol')
        self.require_landlock()
        pid = self.handler_pid()
        for path in (self.other, self.own, self.p.db):
            fd, err = self.probe_open(pid, path)
            self.assertEqual((fd, err), (-1, EACCES), f'after login, open({path})')
        self.assertEqual(c.cmd('STAT'), '+OK 0 0')
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))


if __name__ == '__main__':
    main()
