"""pop3-handler with real clients and with smtp-handler: curl, fetchmail
(with and without --keep, UIDL-based fetching), SMTP -> POP3 round trips,
the snapshot while mail arrives, POP-before-SMTP, and xinetd."""
import glob
import os
import shutil
import smtplib
import subprocess
import unittest

from harness import main
from pop3_base import (BODY_MARKER, PASSWORD, POP3, SMTP, Pop3TestCase, maildir_base,
                       new_message, wire_lines)


def crlf(data):
    return b''.join(l + b'\r\n' for l in wire_lines(data))


class Curl(Pop3TestCase):
    def setUp(self):
        if not shutil.which('curl'):
            self.skipTest('curl is not installed')
        super().setUp()

    def curl(self, path='', *args):
        r = subprocess.run(['curl', '-sS', '-u', f'alice:{PASSWORD}', *args,
                            f'pop3://127.0.0.1:{self.srv.port}/{path}'],
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_list_retr_uidl_dele(self):
        a = self.put(new_message('a'), base=maildir_base(1700000000))
        b = self.put(b'Subject: b\n\n.dot line\nno final newline', sizes=False,
                     base=maildir_base(1700000001))
        da, db = self.read(a), self.read(b)
        listing = self.curl()
        self.assertEqual(listing, f'1 {len(crlf(da))}\r\n2 {len(crlf(db))}\r\n'.encode())
        self.assertEqual(self.curl('1'), crlf(da))
        self.assertEqual(self.curl('2'), crlf(db))
        uidl = self.curl('', '-X', 'UIDL').decode()
        names = [os.path.basename(p).split(',')[0] for p in (a, b)]
        self.assertEqual(uidl, f'1 {names[0]}\r\n2 {names[1]}\r\n')
        self.curl('1', '-X', 'DELE', '-I')
        left = self.p.messages('alice')
        self.assertEqual(len(left), 1)
        self.assertIn(names[1], left[0])

    def test_wrong_password(self):
        self.put(new_message())
        r = subprocess.run(['curl', '-sS', '-u', 'alice:wrong',
                            f'pop3://127.0.0.1:{self.srv.port}/'],
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 67, r)  # CURLE_LOGIN_DENIED


class Fetchmail(Pop3TestCase):
    def setUp(self):
        if not shutil.which('fetchmail'):
            self.skipTest('fetchmail is not installed (package fetchmail)')
        super().setUp()
        self.home = os.path.join(self.p.dir, 'fetchmail-home')
        self.out = os.path.join(self.p.dir, 'fetched')
        os.makedirs(self.home)
        os.makedirs(self.out)

    def fetchmail(self, *options, uidl=False):
        rc = os.path.join(self.home, 'fetchmailrc')
        with open(rc, 'w') as f:
            f.write(f'set no bouncemail\n'
                    f'poll 127.0.0.1 with protocol POP3 and port {self.srv.port}\n'
                    f'    auth password {"uidl" if uidl else "no uidl"}\n'
                    f'    user "alice" there with password "{PASSWORD}" is "tester" here\n'
                    f'    options {" ".join(options)}\n'
                    f'    sslproto ""\n'
                    f'    mda "cat > {self.out}/msg.$$"\n')
        os.chmod(rc, 0o600)
        env = dict(os.environ, HOME=self.home, FETCHMAILHOME=self.home)
        r = subprocess.run(['fetchmail', '-f', rc, '--nodetach', '--nosyslog'],
                           capture_output=True, env=env, timeout=120)
        return r

    def fetched(self):
        out = []
        for path in sorted(glob.glob(os.path.join(self.out, 'msg.*'))):
            with open(path, 'rb') as f:
                out.append(f.read())
            os.unlink(path)
        return out

    def assert_fetched(self, got, stored):
        """Each stored message arrived whole, after fetchmail's own header."""
        self.assertEqual(len(got), len(stored))
        for data in stored:
            self.assertTrue([g for g in got if g.endswith(data)],
                            f'{data[:60]!r}... not among what fetchmail delivered')

    def test_keep_then_fetch_and_delete(self):
        msgs = [new_message(f'f{i}') for i in range(2)]
        paths = [self.put(m) for m in msgs]
        stored = [self.read(p) for p in paths]
        r = self.fetchmail('keep', uidl=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_fetched(self.fetched(), stored)
        self.assertEqual(len(self.p.messages('alice')), 2, 'keep deletes nothing')
        # One more arrives: with uidl, fetchmail takes only the new one.
        third = self.read(self.put(new_message('f2')))
        r = self.fetchmail('keep', uidl=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_fetched(self.fetched(), [third])
        # Nothing new: fetchmail says so (exit 1).
        r = self.fetchmail('keep', uidl=True)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(self.fetched(), [])
        # Without keep: everything fetched and deleted.
        r = self.fetchmail('nokeep', 'fetchall')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_fetched(self.fetched(), stored + [third])
        self.assertEqual(self.p.messages('alice'), [])
        self.assertTrue(self.log_events(event='disconnect', result='quit', deleted=3))

    def test_wrong_password(self):
        self.put(new_message())
        self.p.sql("UPDATE mailboxes SET password = '$6$abc$x' WHERE login = 'alice'")
        r = self.fetchmail('keep')
        self.assertEqual(r.returncode, 3, r.stderr)  # authentication failed
        self.assertEqual(self.fetched(), [])


class WithSmtp(Pop3TestCase):
    def setUp(self):
        super().setUp()
        self.smtp_srv = self.p.serve(SMTP, ['--mode=mx'])

    def deliver(self, msg, rcpt='alice@example.test'):
        s = smtplib.SMTP(self.smtp_srv.host, self.smtp_srv.port, timeout=30)
        try:
            s.ehlo('client.example')
            # smtplib sends bytes as given: the wire wants CRLF.
            refused = s.sendmail('sender@remote.example', [rcpt], msg.replace(b'\n', b'\r\n'),
                                 mail_options=['BODY=8BITMIME'])
            s.quit()
        finally:
            s.close()
        self.assertEqual(refused, {})

    def test_round_trip_byte_for_byte(self):
        body = (b'first line\n'
                b'.leading dot\n'
                b'..two dots\n'
                b'.\n'
                b'trailing spaces   \n'
                b'\ttab\n'
                b'\n\n'
                b'caf\xc3\xa9 8-bit\n'
                + b'x' * 3000 + b'\n'
                + BODY_MARKER.encode() + b'\n'
                b'last line')
        msg = new_message('round trip', body=body.decode())
        self.deliver(msg)
        m = self.poplib()
        resp, lines, octets = m.retr(1)
        stored = self.read(self.p.messages('alice')[0])
        # What POP3 sends is the file, CRLF on the wire.
        self.assertEqual(lines, wire_lines(stored))
        self.assertEqual(m.list(1), f'+OK 1 {octets}'.encode())
        # And the file is what was sent, below the three headers postage adds.
        sent = msg if msg.endswith(b'\n') else msg + b'\n'
        self.assertTrue(stored.endswith(sent))
        self.assertEqual(lines[-len(wire_lines(sent)):], wire_lines(sent))
        self.assertTrue(lines[0].startswith(b'Return-Path: <sender@remote.example>'))
        m.quit()

    def test_delivered_during_session_seen_next_time(self):
        self.deliver(new_message('before'))
        c = self.session()
        self.assertTrue(c.cmd('STAT').startswith('+OK 1 '))
        self.assertTrue(c.cmd('UIDL').startswith('+OK'))
        first = c.multi()
        self.deliver(new_message('during'))
        self.assertEqual(len(self.p.messages('alice')), 2)
        self.assertTrue(c.cmd('STAT').startswith('+OK 1 '))
        self.assertEqual(c.cmd('RETR 2'), '-ERR no such message')
        self.assertTrue(c.cmd('LIST').startswith('+OK 1 message'))
        self.assertEqual(len(c.multi()), 1)
        self.assertTrue(c.cmd('DELE 1').startswith('+OK'))
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))
        self.assertTrue(c.closed())
        m = self.poplib()
        self.assertEqual(m.stat()[0], 1)
        _, uidl, _ = m.uidl()
        self.assertNotEqual(uidl[0].split()[1], first[0].split()[1])
        self.assertIn(b'Subject: during', b'\n'.join(m.retr(1)[1]))
        m.quit()

    def test_pop_before_smtp(self):
        def rcpt_remote():
            s = smtplib.SMTP(self.smtp_srv.host, self.smtp_srv.port, timeout=30)
            try:
                s.ehlo('client.example')
                s.mail('alice@example.test')
                code, _ = s.rcpt('someone@remote.example')
                s.rset()
                s.quit()
            finally:
                s.close()
            return code

        self.assertEqual(rcpt_remote(), 554)
        m = self.poplib()
        m.quit()
        self.assertEqual(rcpt_remote(), 250)


class UnderXinetd(Pop3TestCase):
    supervisor = 'xinetd'

    def test_fetch_and_delete(self):
        data = new_message('xinetd')
        self.put(data)
        m = self.poplib()
        self.assertEqual(m.stat()[0], 1)
        self.assertEqual(m.retr(1)[1], wire_lines(data))
        m.dele(1)
        m.quit()
        self.assertEqual(self.p.messages('alice'), [])
        self.assertEqual(self.p.sql('SELECT ip, login FROM pop_logins'), [('127.0.0.1', 'alice')])

    def test_in_use(self):
        self.put(new_message())
        a = self.session()
        b = self.connect()
        self.assertTrue(b.login().startswith('-ERR [IN-USE]'))
        self.assertTrue(a.cmd('QUIT').startswith('+OK'))
        self.assertTrue(b.login().startswith('+OK'))


if __name__ == '__main__':
    main()
