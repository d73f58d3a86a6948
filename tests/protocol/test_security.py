"""No way in (issue 10): what the handlers leave on disk and in the logs,
and what a hostile client cannot make them do.

- FileModes: with a umask of 000 in the handlers' environment (more
  permissive than 022, so it proves the code does not lean on the unit's
  UMask=0077), every file the programs create under mail_root and
  spool_dir is 0600 and every directory 0700: a first delivery that makes
  the Maildir, a queued remote message, a bounce the queue runner writes,
  a POP3 session (lock file, moves to cur/), and the log file.
- Logs: SMTP AUTH (PLAIN both ways, LOGIN; right and wrong) and POP3
  (USER/PASS, AUTH PLAIN; right and wrong) and a message with a marker in
  its body: neither password, in clear or base64, nor the body is in any
  log line; and every log line is printable ASCII even when the client
  sends control bytes, escape sequences and UTF-8 in EHLO, MAIL FROM,
  RCPT, AUTH and USER.
- Smuggling: every published fake end of data (SEC Consult's SMTP
  smuggling, 2023, and its follow-ups: <LF>.<LF>, <CR>.<CR>, <CR><LF>.<CR>,
  NUL around the dot, ...) is refused with a 5xx after the real end of
  data, and neither the message nor the smuggled one is delivered. A
  control proves that the same dialog with a real <CRLF>.<CRLF> would have
  delivered the smuggled message.
- Injection: CR, NUL and control bytes in MAIL FROM / RCPT TO paths and
  parameters are refused and leave no state; a hostile EHLO name never
  becomes a header field of its own.
- Open relay: <postmaster> without a domain only ever reaches a local
  mailbox; IDNA (xn--) and UTF-8 domains we do not host are refused, with
  or without SMTPUTF8 and in any case; look-alike domains never queue.

test_smtp_session.py (Smuggling), test_smtp_relay.py and test_relay.py
cover the classic variants and address tricks; this file adds the rest.
"""
import base64
import os
import re
import socket
import stat
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Postage  # noqa: E402
from smtp_base import (BODY_MARKER, SmtpTestCase, Raw, TlsTestCase,  # noqa: E402
                       insecure_context, new_message, wire)
import pop3_base  # noqa: E402

SMTP = 'smtp-handler/smtp-handler'
POP3 = 'pop3-handler/pop3-handler'
RUNNER = 'queue/queue-runner'

RIGHT = 'Right-Pw-never-logged-x7Q'
WRONG = 'Wrong-Pw-never-logged-k3Z'
MARKER = 'SECRET-BODY-MARKER-9vX'
PRINTABLE_LINE = re.compile(rb'^[\x20-\x7e]*$')


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def header_section(data):
    return data.split(b'\n\n', 1)[0]


# -- 0600 / 0700 ---------------------------------------------------------------

class FileModes(unittest.TestCase):
    def setUp(self):
        harness.binary(RUNNER)
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        p = self.p = Postage().enter_for(self)
        # Let the programs make mail_root and the spool themselves.
        os.rmdir(p.mail_root)
        os.rmdir(p.spool_dir)
        os.chmod(p.db, 0o600)
        p.add_domain('example.test')
        for login in ('alice', 'bob'):
            p.add_mailbox(login, RIGHT)
            p.add_address(f'{login}@example.test', login)
        p.add_relay_network('127.0.0.0/8')
        from test_queue import ScriptedServer
        self.remote = ScriptedServer(RCPT=b'550 5.1.1 no such user here\r\n')
        self.addCleanup(self.remote.stop)
        p.set('relayhost', f'[127.0.0.1]:{self.remote.port}')
        self.seen = {}

    def collect(self, *roots):
        """Records the mode of everything under roots (and the roots)."""
        for root in roots:
            if not os.path.exists(root):
                continue
            for d, dirs, files in os.walk(root):
                self.seen[d] = os.lstat(d).st_mode
                for n in files:
                    path = os.path.join(d, n)
                    self.seen[path] = os.lstat(path).st_mode

    def handler_umask(self, srv):
        pids = srv.handler_pids()
        self.assertTrue(pids, 'no handler running during the session')
        with open(f'/proc/{pids[0]}/status') as f:
            return re.search(r'^Umask:\s*(\d+)', f.read(), re.M).group(1)

    def test_created_files_0600_directories_0700(self):
        p = self.p
        roots = (p.mail_root, p.spool_dir)
        smtp = p.serve(SMTP, ['--mode=mx'])
        c = Raw(smtp.connect())
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd('EHLO client.test')[0], 250)
        # The umask really reached the handler (the unit would set 0077).
        self.assertEqual(self.handler_umask(smtp), '0000')
        self.assertEqual(c.cmd('MAIL FROM:<alice@example.test>')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<bob@example.test>')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<far@remote.example>')[0], 250)
        self.assertEqual(c.cmd('DATA')[0], 354)
        c.send(wire(new_message()))
        code, text = c.reply()
        self.assertEqual(code, 250, text)
        self.assertEqual(c.cmd('QUIT')[0], 221)
        c.close()
        smtp.wait_handlers()
        self.assertEqual(len(p.messages('bob')), 1)
        queued = os.listdir(os.path.join(p.spool_dir, 'queue'))
        self.assertEqual(len(queued), 1)
        self.collect(*roots)

        # The queue runner: the remote host refuses, so it writes a bounce
        # (through the spool) into alice's Maildir, which it creates.
        r = p.run(RUNNER, ['--once'])
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors='replace') + p.log_text())
        self.assertEqual(len(p.messages('alice')), 1, p.log_text())
        self.collect(*roots)

        # POP3: the lock file, new/ -> cur/, a deletion.
        pop = p.serve(POP3)
        c = pop3_base.Raw(pop.connect())
        self.assertTrue(c.resp().startswith('+OK'))
        self.assertEqual(self.handler_umask(pop), '0000')
        self.assertTrue(c.login('bob', RIGHT).startswith('+OK'))
        self.collect(*roots)  # while the lock is held
        self.assertTrue(c.cmd('RETR 1').startswith('+OK'))
        c.multi()
        self.assertTrue(c.cmd('QUIT').startswith('+OK'))
        c.close()
        pop.wait_handlers()
        self.collect(*roots)

        files = {k: v for k, v in self.seen.items() if stat.S_ISREG(v)}
        dirs = {k: v for k, v in self.seen.items() if stat.S_ISDIR(v)}
        others = {k: oct(v) for k, v in self.seen.items() if k not in files and k not in dirs}
        # Enough was looked at: both Maildirs (3 subdirectories each), the
        # queued file, the delivered message and the bounce.
        self.assertGreaterEqual(len(dirs), 2 + 2 * 4 + 2, sorted(dirs))
        self.assertGreaterEqual(len(files), 3, sorted(files))
        self.assertIn(p.mail_root, dirs)
        self.assertIn(p.spool_dir, dirs)
        self.assertEqual(others, {}, 'neither file nor directory')
        bad = [f'{k} {oct(stat.S_IMODE(v))}' for k, v in sorted(files.items())
               if stat.S_IMODE(v) != 0o600]
        bad += [f'{k}/ {oct(stat.S_IMODE(v))}' for k, v in sorted(dirs.items())
                if stat.S_IMODE(v) != 0o700]
        self.assertEqual(bad, [], 'wrong modes')

        # The log file, and SQLite's files beside a 0600 database.
        self.assertEqual(stat.S_IMODE(os.stat(p.log_file).st_mode), 0o600)
        for n in os.listdir(p.dir):
            if n.startswith('postage.db'):
                self.assertEqual(stat.S_IMODE(os.stat(os.path.join(p.dir, n)).st_mode), 0o600, n)
        p.check_sanitizers()


# -- logs ---------------------------------------------------------------------

class Logs(TlsTestCase):
    PASSWORD = RIGHT
    LOGINS = ('alice', 'bob')
    SMTP_SERVERS = {'subs': 'submissions', 'mx': 'mx'}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        p = cls.p
        cls.pop = p.serve(POP3)
        cls.pops = p.serve(POP3, ['--tls'])

    def setUp(self):
        # Keep the throttle's delay out of these dialogs.
        self.p.sql('DELETE FROM auth_failures')
        self.socks = []
        self.addCleanup(self.hang_up_and_wait)

    def tls(self, srv):
        sock = insecure_context().wrap_socket(srv.connect(timeout=30),
                                              server_hostname='mx.test.example')
        self.socks.append(sock)
        return sock

    def plain(self, srv):
        sock = srv.connect(timeout=30)
        self.socks.append(sock)
        return sock

    def hang_up_and_wait(self):
        """Closes every connection, then waits for the handlers to end
        (so everything they log is in the file)."""
        for sock in self.socks:
            try:
                sock.close()
            except OSError:
                pass
        self.socks = []
        for srv in (self.mx, self.subs, self.pop, self.pops):
            self.assertTrue(srv.wait_handlers(), 'a handler outlived its connection')

    def smtps(self):
        c = Raw(self.tls(self.subs))
        self.assertEqual(c.reply()[0], 220)
        self.assertEqual(c.cmd('EHLO client.test')[0], 250)
        return c

    def pop3(self, tls=False):
        c = pop3_base.Raw(self.tls(self.pops) if tls else self.plain(self.pop))
        self.assertTrue(c.resp().startswith('+OK'))
        return c

    def assert_log_clean(self, secrets):
        log = self.p.log_text()
        self.assertTrue(log, 'nothing was logged at all')
        for s in secrets:
            self.assertNotIn(s, log)
        return log

    def test_no_password_nor_body_in_logs(self):
        p = self.p
        secrets = [RIGHT, WRONG, MARKER]
        # SMTP AUTH PLAIN with an initial response and after a 334,
        # AUTH LOGIN; wrong first, then right, each on its connection.
        for password, want in ((WRONG, 535), (RIGHT, 235)):
            blob = b64(f'\0alice\0{password}')
            blob_authzid = b64(f'alice\0alice\0{password}')
            secrets += [b64(password), blob, blob_authzid]
            c = self.smtps()
            self.assertEqual(c.cmd('AUTH PLAIN ' + blob)[0], want)
            c = self.smtps()
            self.assertEqual(c.cmd('AUTH PLAIN')[0], 334)
            self.assertEqual(c.cmd(blob_authzid)[0], want)
            c = self.smtps()
            self.assertEqual(c.cmd('AUTH LOGIN')[0], 334)
            self.assertEqual(c.cmd(b64('alice'))[0], 334)
            self.assertEqual(c.cmd(b64(password))[0], want)
            self.p.sql('DELETE FROM auth_failures')
        # An unknown login with the right password of someone else.
        c = self.smtps()
        self.assertEqual(c.cmd('AUTH PLAIN ' + b64(f'\0nobody\0{RIGHT}'))[0], 535)

        # A message with the marker in its body, to a local and a remote
        # recipient (the queue), after a right login.
        c = self.smtps()
        self.assertEqual(c.cmd('AUTH PLAIN ' + b64(f'\0alice\0{RIGHT}'))[0], 235)
        self.assertEqual(c.cmd('MAIL FROM:<alice@example.test>')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<bob@example.test>')[0], 250)
        self.assertEqual(c.cmd('RCPT TO:<far@remote.example>')[0], 250)
        self.assertEqual(c.cmd('DATA')[0], 354)
        c.send(wire(f'From: alice@example.test\nSubject: {MARKER}\n\n{MARKER}\n'
                    f'password is {RIGHT}\n'))
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(len(p.messages('bob')), 1)

        # POP3 USER/PASS in clear on loopback, AUTH PLAIN inside TLS.
        self.p.sql('DELETE FROM auth_failures')
        for password, ok in ((WRONG, False), (RIGHT, True)):
            c = self.pop3()
            r = c.login('bob', password)
            self.assertEqual(r.startswith('+OK'), ok, r)
            if ok:
                self.assertTrue(c.cmd('RETR 1').startswith('+OK'))
                self.assertIn(MARKER.encode(), b'\n'.join(c.multi()))
            c.cmd('QUIT')
            c = self.pop3(tls=True)
            blob = b64(f'\0bob\0{password}')
            secrets.append(blob)
            r = c.cmd('AUTH PLAIN ' + blob)
            self.assertEqual(r.startswith('+OK'), ok, r)
            c.cmd('QUIT')
            c = self.pop3(tls=True)
            self.assertEqual(c.cmd('AUTH PLAIN'), '+ ')
            r = c.cmd(blob)
            self.assertEqual(r.startswith('+OK'), ok, r)
            c.cmd('QUIT')
        c = self.pop3()
        self.assertTrue(c.cmd('USER nobody').startswith('+OK'))
        self.assertFalse(c.cmd(f'PASS {RIGHT}').startswith('+OK'))
        c.cmd('QUIT')

        self.hang_up_and_wait()
        log = self.assert_log_clean(secrets)
        # The events themselves were logged: the search above is not
        # looking at an empty or unrelated log.
        self.assertRegex(log, r'postage-smtp.*login=alice')
        self.assertRegex(log, r'postage-pop3.*bob')
        self.assertIn('result=accepted', log)
        for line in log.splitlines():
            self.assertNotIn('Subject', line)

    HOSTILE = [b'\x01\x02\x7f', b'\x1b[31mred\x1b[0m', b'caf\xc3\xa9', b'\xff\xfe',
               b'\xe2\x80\xae' + b'txt.exe', b'a\rb', b'a\x0bb\x0cc', b'\xc0\x80']

    def test_log_lines_printable_ascii(self):
        p = self.p
        for bad in self.HOSTILE:
            # SMTP on the MX: EHLO, MAIL FROM (with and without SMTPUTF8),
            # RCPT TO, an unknown verb.
            c = Raw(self.plain(self.mx))
            self.assertEqual(c.reply()[0], 220)
            c.send(b'EHLO h' + bad + b'.example\r\n')
            c.reply()
            c.send(b'EHLO client.test\r\n')
            self.assertEqual(c.reply()[0], 250)
            c.send(b'MAIL FROM:<s' + bad + b'@remote.example> SMTPUTF8\r\n')
            c.reply()
            c.send(b'RSET\r\n')
            c.reply()
            c.send(b'MAIL FROM:<s@remote.example> SMTPUTF8\r\n')
            self.assertEqual(c.reply()[0], 250)
            for rcpt in (b'<u' + bad + b'@example.test>', b'<u@elsewhere' + bad + b'.test>',
                         b'<nobody' + bad + b'@example.test>'):
                c.send(b'RCPT TO:' + rcpt + b'\r\n')
                c.reply()
            c.send(b'X' + bad + b'\r\n')
            c.reply()
            c.send(b'QUIT\r\n')
            c.close()
            # AUTH with a hostile login name (and authzid).
            c = self.smtps()
            c.send(b'AUTH PLAIN ' + base64.b64encode(b'z' + bad + b'\0u' + bad + b'\0' + WRONG.encode())
                   + b'\r\n')
            c.reply()
            c.send(b'AUTH LOGIN\r\n')
            c.reply()
            c.send(base64.b64encode(b'v' + bad) + b'\r\n')
            c.reply()
            c.send(base64.b64encode(WRONG.encode()) + b'\r\n')
            c.reply()
            # POP3 USER, and an unknown command.
            c = self.pop3()
            c.send(b'USER w' + bad + b'\r\n')
            c.resp()
            c.send(b'PASS ' + WRONG.encode() + b'\r\n')
            c.resp()
            c.send(b'Y' + bad + b'\r\n')
            c.resp()
            c.send(b'QUIT\r\n')
            p.sql('DELETE FROM auth_failures')
        self.hang_up_and_wait()
        with open(p.log_file, 'rb') as f:
            raw = f.read()
        self.assertTrue(raw.endswith(b'\n'))
        bad_lines = [l for l in raw.split(b'\n')[:-1] if not PRINTABLE_LINE.match(l)]
        self.assertEqual(bad_lines, [], 'log lines with bytes outside printable ASCII')
        # The hostile values were logged (escaped), so the check saw them.
        text = raw.decode()
        self.assertRegex(text, r'rcpt result=unknown rcpt="nobody\S+@example.test"')
        self.assertRegex(text, r'rcpt result=relay_denied .*elsewhere')
        self.assertNotIn(WRONG, text)


# -- SMTP smuggling -------------------------------------------------------------

SMUGGLED_BODY = b'smuggled-body-Hq4'

# (name, fake end of data). None of them holds a real <CRLF>.<CRLF>.
FAKE_ENDS = [
    ('<LF>.<LF>', b'\n.\n'),
    ('<CR>.<CR>', b'\r.\r'),
    ('<LF>.<CR><LF>', b'\n.\r\n'),
    ('<CR><LF>.<LF>', b'\r\n.\n'),
    ('<CR><LF>.<CR>', b'\r\n.\r'),
    ('<CR>.<LF>', b'\r.\n'),
    ('<LF>.<CR>', b'\n.\r'),
    ('<CR>.<CR><LF>', b'\r.\r\n'),
    ('<LF><CR>.<CR><LF>', b'\n\r.\r\n'),
    ('<CR><LF>.<CR><CR><LF>', b'\r\n.\r\r\n'),
    ('<CR><LF>.<LF><CR><LF>', b'\r\n.\n\r\n'),
    ('<CR><LF><NUL>.<CR><LF>', b'\r\n\x00.\r\n'),
    ('<CR><LF>.<NUL><CR><LF>', b'\r\n.\x00\r\n'),
    ('<CR><LF>.<NUL><LF>', b'\r\n.\x00\n'),
    ('<CR><NUL><LF>.<CR><LF>', b'\r\x00\n.\r\n'),
    ('<CR><LF><NUL><CR><LF>.<LF>', b'\r\n\x00\r\n.\n'),
]


class Smuggling(SmtpTestCase):
    def attempt(self, c, end):
        """A message whose body holds end followed by a whole second
        transaction; returns the reply to the one real end of data."""
        self.start_data(c)
        c.send(b'Subject: first\r\n\r\nfirst part' + end +
               b'MAIL FROM:<evil@remote.example>\r\n'
               b'RCPT TO:<bob@example.test>\r\n'
               b'DATA\r\n'
               b'Subject: smuggled\r\n\r\n' + SMUGGLED_BODY + b'\r\n'
               b'.\r\n')
        return c.reply()

    def test_control_real_end_runs_the_second_transaction(self):
        # With a real <CRLF>.<CRLF> the "smuggled" commands are commands:
        # bob gets the second message. This is what the table below must
        # never let happen, and shows the test would see it.
        c = self.session()
        self.assertEqual(self.attempt(c, b'\r\n.\r\n')[0], 250)
        self.assertEqual([c.reply()[0] for _ in range(4)], [250, 250, 354, 250])
        self.assertEqual(len(self.p.messages('alice')), 1)
        self.assertIn(SMUGGLED_BODY, self.only_message('bob'))

    def test_fake_ends_refused(self):
        for name, end in FAKE_ENDS:
            with self.subTest(fake_end=name):
                c = self.session()
                code, text = self.attempt(c, end)
                self.assertEqual(code, 550, (name, text))
                self.assertTrue(text[0].startswith('5.6.0'), (name, text))
                # No reply to a smuggled command is waiting: NOOP is next.
                self.assertEqual(c.cmd('NOOP'), (250, ['2.0.0 Ok']), name)
                self.assertEqual(self.all_messages(), [], name)
                self.assert_nothing_queued()
                self.assertEqual(c.cmd('QUIT')[0], 221)
                c.close()
        log = self.p.log_text()
        self.assertNotIn(SMUGGLED_BODY.decode(), log)
        self.assertEqual(log.count('event=data result=refused'), len(FAKE_ENDS), log[-2000:])

    def test_relayed_message_with_fake_end_not_queued(self):
        # The same from a client that may relay: nothing reaches the queue,
        # where a less careful server further on would meet it.
        self.p.add_relay_network('127.0.0.0/8')
        for name, end in FAKE_ENDS:
            with self.subTest(fake_end=name):
                c = self.session()
                self.start_data(c, rcpts=['far@elsewhere.test'])
                c.send(b'Subject: x\r\n\r\nfirst' + end +
                       b'MAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@elsewhere.test>\r\n'
                       b'DATA\r\nSubject: spoofed\r\n\r\n' + SMUGGLED_BODY + b'\r\n.\r\n')
                self.assertEqual(c.reply()[0], 550, name)
                self.assertEqual(c.cmd('NOOP')[0], 250, name)
                self.assert_nothing_queued()
                c.close()

    def test_nul_in_data_refused(self):
        # A NUL anywhere (no BINARYMIME is offered, RFC 6152 forbids it).
        c = self.session()
        self.start_data(c)
        c.send(b'Subject: nul\r\n\r\nbefore\x00after\r\n.\r\n')
        code, text = c.reply()
        self.assertEqual((code, text[0][:5]), (550, '5.6.0'), text)
        self.assert_no_mail()
        # The session goes on.
        self.transaction(c, 's@remote.example', ['alice@example.test'], new_message())
        self.assertEqual(len(self.p.messages('alice')), 1)


# -- injection through commands --------------------------------------------------

# MAIL FROM lines that must be refused (5xx) and leave no transaction.
BAD_MAIL = [
    b'MAIL FROM:<a@remote.example>\rRCPT TO:<bob@example.test>',
    b'MAIL FROM:<a@remote.example>\r',
    b'MAIL FROM:<a@remote.example\r> SIZE=10',
    b'MAIL FROM:<a@remote.example> BODY=8BITMIME\x00',
    b'MAIL FROM:<a@remote.example>\x00 BODY=8BITMIME',
    b'MAIL FROM:<a@remote.example> BODY=8BITMIME\rX-Injected: yes',
    b'MAIL FROM:<a\x00@remote.example>',
    b'MAIL FROM:<a@remote\x00.example>',
    b'MAIL FROM:<"a\rX-Injected: yes"@remote.example>',
    b'MAIL FROM:<"a\x0bb"@remote.example>',
    b'MAIL FROM:<a\x1b[2J@remote.example>',
    b'MAIL FROM:<a@remote.example> SIZE=1\x0b',
    b'MAIL FROM:<a@remote.example> SIZE=10\x00',
    b'MAIL FROM:<a@remote.example> ENVID=x\x01y',
    b'MAIL FROM:<a@remote.example> AUTH=<a\x0bb>',
    b'MAIL FROM:<a@remote.example> RET=HDRS\x7f',
    b'MAIL FROM:<a@remote.example> BODY=8BITMIME\tX-Injected: yes',
]

BAD_RCPT = [
    b'RCPT TO:<bob@example.test>\rX-Injected: yes',
    b'RCPT TO:<bob@example.test>\r',
    b'RCPT TO:<bob@example.test> NOTIFY=NEVER\x00',
    b'RCPT TO:<bob\x00@example.test>',
    b'RCPT TO:<"bob\rX-Injected: yes"@example.test>',
    b'RCPT TO:<bob@example.test> ORCPT=rfc822;x\x01@y',
]


class Injection(SmtpTestCase):
    def test_bad_mail_from_refused_and_leaves_no_transaction(self):
        for line in BAD_MAIL:
            with self.subTest(line=line):
                c = self.session()
                c.send(line + b'\r\n')
                code, text = c.reply()
                self.assertEqual(code // 100, 5, (line, text))
                # Nothing was taken: no sender, so RCPT needs a MAIL.
                self.assertEqual(c.cmd('RCPT TO:<bob@example.test>')[0], 503, line)
                self.assertEqual(c.cmd('NOOP')[0], 250, line)
                c.close()

    def test_bad_rcpt_refused_and_adds_nobody(self):
        for line in BAD_RCPT:
            with self.subTest(line=line):
                c = self.session()
                self.assertEqual(c.cmd('MAIL FROM:<s@remote.example>')[0], 250)
                c.send(line + b'\r\n')
                code, text = c.reply()
                self.assertEqual(code // 100, 5, (line, text))
                code, text = c.cmd('DATA')
                self.assertEqual(code // 100, 5, (line, 'DATA without a recipient', text))
                self.assertEqual(c.cmd('NOOP')[0], 250, line)
                c.close()
        self.assert_no_mail()

    HELOS = [b'a\rX-Injected: yes', b'a\x0bX-Injected: yes', b'a\x1b[31m', b'\xc3\xa9t\xc3\xa9.example',
             b'[127.0.0.1]\rX-Injected: yes', b'a\tX-Injected: yes', b'a (X-Injected: yes)']

    def test_hostile_helo_never_makes_a_header_field(self):
        for helo in self.HELOS:
            with self.subTest(helo=helo):
                c = self.connect()
                c.send(b'EHLO ' + helo + b'\r\n')
                code, _ = c.reply()
                if code != 250:
                    self.assertEqual(code // 100, 5, helo)
                    continue
                before = set(self.p.messages('alice'))
                self.transaction(c, 's@remote.example', ['alice@example.test'],
                                 b'Subject: helo\n\nbody\n')
                new = set(self.p.messages('alice')) - before
                self.assertEqual(len(new), 1)
                head = header_section(self.read(new.pop()))
                for line in head.split(b'\n'):
                    self.assertFalse(re.search(rb'[\x00-\x08\x0a-\x1f\x7f-\xff]', line),
                                     (helo, line))
                    self.assertFalse(line.startswith(b'X-Injected'), (helo, head))
                c.close()


# -- open relay ------------------------------------------------------------------

class OpenRelay(SmtpTestCase):
    """From an untrusted address (relay_networks is empty), without AUTH."""

    def rcpt(self, rcpt, utf8=False):
        c = self.session()
        self.assertEqual(c.cmd('MAIL FROM:<s@remote.example>' + (' SMTPUTF8' if utf8 else ''))[0],
                         250)
        c.send(b'RCPT TO:<' + rcpt.encode() + b'>\r\n')
        return c, c.reply()

    def test_postmaster_without_domain_is_local_only(self):
        # Nobody is postmaster yet (the fixture's catch-all would be):
        # refused, not sent on to postmaster@hostname.
        self.p.sql("DELETE FROM addresses WHERE address = '@catch.test'")
        for form in ('postmaster', 'POSTMASTER', 'PostMaster'):
            c, (code, text) = self.rcpt(form)
            self.assertEqual(code, 550, (form, text))
            c.close()
        self.assert_nothing_queued()
        # A hosted domain's postmaster takes it.
        self.p.add_address('postmaster@example.test', 'alice')
        for form in ('postmaster', 'POSTMASTER', 'PostMaster'):
            c, (code, text) = self.rcpt(form)
            self.assertEqual(code, 250, (form, text))
            self.send_data(c, new_message())
            c.close()
        self.assertEqual(len(self.p.messages('alice')), 3)
        # When the host name is hosted, its postmaster comes first.
        self.p.add_domain('mx.test.example')
        self.p.add_address('postmaster@mx.test.example', 'bob')
        c, (code, text) = self.rcpt('postmaster')
        self.assertEqual(code, 250, text)
        self.send_data(c, new_message())
        self.assertEqual(len(self.p.messages('bob')), 1)
        self.assertEqual(len(self.p.messages('alice')), 3)
        self.assert_nothing_queued()
        # Dressed-up domainless postmasters are not domainless.
        for form in ('postmaster%elsewhere.test', 'elsewhere.test!postmaster',
                     '"postmaster@elsewhere.test"', 'postmaster@', 'postmaster.',
                     'postmaster@elsewhere.test'):
            c, (code, text) = self.rcpt(form)
            self.assertGreaterEqual(code, 500, (form, text))
            c.close()
        # A source route is ignored (RFC 5321 C): what is left is the
        # local <postmaster>, or a refusal.
        c, (code, text) = self.rcpt('@elsewhere.test:postmaster')
        if code == 250:
            self.send_data(c, new_message())
            self.assertEqual(len(self.p.messages('bob')), 2)
        else:
            self.assertGreaterEqual(code, 500, text)
        self.assert_nothing_queued()

    def test_every_hosted_domain_has_a_postmaster(self):
        # RFC 5321 4.5.1: postmaster@ each domain we serve is accepted. A
        # domain that defines none (no address, forward or catch-all) hands
        # it to where <postmaster> goes; a domain we do not host never.
        self.p.sql("DELETE FROM addresses WHERE address = '@catch.test'")
        for form in ('postmaster@other.test', 'postmaster@example.test'):
            c, (code, text) = self.rcpt(form)
            self.assertEqual(code, 550, (form, text))  # nobody is postmaster yet
            c.close()
        self.p.add_address('postmaster@example.test', 'alice')
        before = len(self.p.messages('alice'))
        for form in ('postmaster@other.test', 'PostMaster@Other.Test', 'postmaster@catch.test'):
            c, (code, text) = self.rcpt(form)
            self.assertEqual(code, 250, (form, text))
            self.send_data(c, new_message())
            c.close()
        self.assertEqual(len(self.p.messages('alice')), before + 3)
        # What the domain defines itself comes first.
        self.p.add_address('postmaster@other.test', 'bob')
        before_bob = len(self.p.messages('bob'))
        c, (code, text) = self.rcpt('postmaster@other.test')
        self.assertEqual(code, 250, text)
        self.send_data(c, new_message())
        self.assertEqual(len(self.p.messages('bob')), before_bob + 1)
        self.assertEqual(len(self.p.messages('alice')), before + 3)
        for form in ('postmaster@elsewhere.test', 'postmaster@sub.example.test'):
            c, (code, text) = self.rcpt(form)
            self.assertGreaterEqual(code, 500, (form, text))
            c.close()
        self.assert_nothing_queued()

    # Domains we do not host, written as IDNA, as UTF-8 and in mixed case.
    FOREIGN = ['u@xn--bcher-kva.example', 'u@XN--BCHER-KVA.EXAMPLE', 'u@Xn--BcHeR-kVa.Example',
               'u@sub.xn--bcher-kva.example', 'alice@xn--exmple-cua.test',
               'u@bücher.example', 'u@BÜCHER.EXAMPLE', 'u@Bücher.Example',
               'u@xn--bcher-kva.example.', 'u@[xn--bcher-kva.example]',
               'pöstmaster@bücher.example', 'u@例え.テスト', 'u@xn--r8jz45g.xn--zckzah']
    # Look-alikes of a hosted domain (example.test): refused, or at most
    # delivered locally (UTS 46 maps the full-width forms to ASCII).
    LOOKALIKES = ['alice@example\u3002test', 'alice@example\uff0etest', 'alice@example\uff61test',
                  'alice@\uff45xample.test', 'alice@ex\u0430mple.test', 'alice@example.test\u200b',
                  'alice@EXAMPLE\u3002TEST', 'alice@xn--example-.test']

    def test_idna_and_utf8_domains_not_hosted_refused(self):
        for rcpt in self.FOREIGN:
            for utf8 in (True, False):
                with self.subTest(rcpt=rcpt, smtputf8=utf8):
                    c, (code, text) = self.rcpt(rcpt, utf8)
                    self.assertIn(code, (501, 550, 553, 554), text)
                    if rcpt.isascii() and not rcpt.startswith('u@[') and not rcpt.endswith('.'):
                        # A well-formed foreign domain: the relay refusal.
                        self.assertEqual(code, 554, text)
                    c.close()
        self.assert_nothing_queued()
        self.assert_no_mail()

    def test_lookalike_domains_never_queued(self):
        for rcpt in self.LOOKALIKES:
            for utf8 in (True, False):
                with self.subTest(rcpt=rcpt, smtputf8=utf8):
                    c, (code, text) = self.rcpt(rcpt, utf8)
                    self.assertIn(code, (250, 501, 550, 553, 554), text)
                    if code == 250:
                        self.send_data(c, new_message())
                    c.close()
                    self.assert_nothing_queued()
        self.assertEqual(self.p.messages('bob'), [])
        self.assertEqual(self.p.messages('carol'), [])

    def test_trusted_client_relays_idna_to_its_ascii_form(self):
        # The other side: a client that may relay gets a UTF-8 domain queued
        # under one spelling, lower case, so the checks above are about
        # trust and not about a parser that refuses every such domain.
        self.p.add_relay_network('127.0.0.0/8')
        c, (code, text) = self.rcpt('u@XN--BCHER-KVA.example')
        self.assertEqual(code, 250, text)
        self.send_data(c, new_message())
        rows = [r[0] for r in self.p.sql('SELECT recipient FROM queue_recipients')]
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual(rows[0].split('@')[1], 'xn--bcher-kva.example')


if __name__ == '__main__':
    harness.main()
