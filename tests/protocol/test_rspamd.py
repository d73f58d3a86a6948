"""Spam filtering with rspamd (issue 24): the settings rspamd,
rspamd_required and rspamd_outbound, against a real rspamd.

Everything runs in a private network namespace (netns.py): dnsmasq on
127.0.0.1 answers rspamd's and postage's lookups, rspamd's normal worker
listens on 127.0.0.1 and on a unix socket with the private configuration
of rspamd_server.py (no network rules, no Redis, GTUBE's test patterns
on, a local rule for soft reject, greylist and the envelope), and the
client connects from 198.51.100.7 (outside) to postage on 192.0.2.1.
Each action is checked end to end: the SMTP reply, what is delivered,
the Maildir name's S= and W=, and the log.

Run: POSTAGE_BUILD=build /usr/bin/python3 tests/protocol/test_rspamd.py -v
"""
import email.header
import email.parser
import email.policy
import os
import re
import shutil
import smtplib
import socket
import sys
import tempfile
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns  # noqa: E402
import rspamd_server  # noqa: E402
from harness import Postage, smtp_quit  # noqa: E402

SMTP = 'smtp-handler/smtp-handler'
SERVER = '192.0.2.1'
CLIENT = '198.51.100.7'
RELAY_CLIENT = '192.0.2.20'
HOST = 'mx.test.example'
HELO = 'mail.client.test'
SENDER = 'sender@client.test'
PASSWORD = 'rspamd-pw-4711'
GTUBE = rspamd_server.GTUBE
RSPAMD_TIMEOUT_S = 10  # shared/limits.h RSPAMD_TIMEOUT_MS


def crlf(b):
    return b.replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')


class SilentServer:
    """Accepts connections on loopback and never answers: rspamd hung."""

    def __init__(self, answer=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.conns = []
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if self.answer is not None:
                threading.Thread(target=self._answer, args=(c,), daemon=True).start()

    def _answer(self, c):
        c.settimeout(20)
        data = b''
        try:
            while b'\r\n\r\n' not in data:
                chunk = c.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, body = data.split(b'\r\n\r\n', 1)
            n = int(re.search(rb'(?i)content-length: *(\d+)', head).group(1))
            while len(body) < n:
                chunk = c.recv(65536)
                if not chunk:
                    return
                body += chunk
            c.sendall(self.answer)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


class RspamdTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        why = rspamd_server.unavailable()
        if why:
            raise unittest.SkipTest(why)
        cls.dns = netns.DnsServer(local_zones=('test', 'example'))
        cls.dns.txt('client.test', 'v=spf1 ip4:198.51.100.0/24 -all')
        cls.dns.mx('client.test', HELO)
        cls.dns.a(HELO, CLIENT)
        cls.dns.ptr(CLIENT, HELO)
        cls.dns.start()
        cls.rdir = tempfile.mkdtemp(prefix='postage-rspamd-')
        os.chmod(cls.rdir, 0o755)
        cls.sock_path = os.path.join(cls.rdir, 'run', 'normal.sock')
        cls.rspamd = rspamd_server.Rspamd(cls.rdir, '127.0.0.1:11333',
                                          also=[cls.sock_path + ' mode=0666'])
        try:
            cls.rspamd.start(timeout=180)
        except RuntimeError as e:
            cls.dns.close()
            raise unittest.SkipTest('rspamd does not start here: %s' % e)

    @classmethod
    def tearDownClass(cls):
        cls.rspamd.close()
        cls.dns.close()

    def setUp(self):
        p = self.p = Postage(hostname=HOST).enter_for(self)
        p.add_domain('example.test')
        p.add_account('alice', PASSWORD, 'alice@example.test')
        p.add_account('bob', PASSWORD, 'bob@example.test')
        p.add_relay_network('192.0.2.0/24')
        p.set('rspamd', self.rspamd.normal)
        self.srv = p.serve(SMTP, ['--mode=mx'], host=SERVER)
        self.addCleanup(self.p.check_sanitizers)

    # -- helpers ---------------------------------------------------------

    def client(self, source=CLIENT):
        c = smtplib.SMTP(self.srv.host, self.srv.port, timeout=60, source_address=(source, 0))
        self.addCleanup(smtp_quit, c)
        c.ehlo(HELO)
        return c

    def message(self, subject='hello', body='', extra=''):
        tag = uuid.uuid4().hex
        msg = (f'From: Sender <{SENDER}>\nTo: alice@example.test\nSubject: {subject}\n'
               f'Message-ID: <{tag}@client.test>\nDate: Mon, 07 Dec 2026 10:00:00 +0000\n'
               f'MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n'
               f'Content-Transfer-Encoding: 8bit\n{extra}\n'
               f'Hello {tag}\n{body}\n')
        return crlf(msg.encode()), tag

    def send(self, c, msg, rcpts=('alice@example.test',), sender=SENDER):
        """One transaction; the final reply (code, text)."""
        code, text = c.mail(sender)
        self.assertEqual(code, 250, text)
        for r in rcpts:
            code, text = c.rcpt(r)
            self.assertEqual(code, 250, text)
        code, text = c.data(msg)
        return code, text.decode(errors='replace')

    def delivered(self, tag, login='alice'):
        for path in self.p.messages(login):
            with open(path, 'rb') as f:
                data = f.read()
            if tag.encode() in data:
                return path, data
        return None, None

    def assert_maildir_name(self, path, data):
        """S= is the file's size, W= its size with CRLF line ends."""
        size = int(re.search(r',S=(\d+)', path).group(1))
        self.assertEqual(size, os.path.getsize(path), path)
        w = int(re.search(r',W=(\d+)', path).group(1))
        self.assertEqual(w, size + data.count(b'\n'), path)

    @staticmethod
    def fields(data, name):
        """The values of the fields named name, unfolded."""
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
        return [re.sub(r'\r?\n', '', v) for v in msg.get_all(name) or []]

    def wait_log(self, text, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.p.log_text():
                return True
            time.sleep(0.05)
        self.fail('%r not in the log:\n%s' % (text, self.p.log_text()[-3000:]))

    # -- the actions ------------------------------------------------------

    def test_gtube_is_rejected_with_rspamds_message(self):
        c = self.client()
        msg, tag = self.message(body=GTUBE['reject'])
        code, text = self.send(c, msg)
        self.assertEqual(code, 550, text)
        self.assertTrue(text.startswith('5.7.1 Gtube pattern'), text)
        self.assertEqual(self.delivered(tag), (None, None))
        self.wait_log('event=rspamd result=ok')
        log = self.p.log_text()
        self.assertIn('action="reject"', log)
        self.assertIn('reason=spam', log)
        # The session goes on: the next message is taken.
        msg, tag = self.message()
        code, text = self.send(c, msg)
        self.assertEqual(code, 250, text)
        self.assertIsNotNone(self.delivered(tag)[0])

    def test_soft_reject_and_greylist_are_451(self):
        c = self.client()
        for word, said in (('postage-test-soft-reject', 'Deferred by the test rule'),
                           ('postage-test-greylist', 'Greylisted by the test rule')):
            with self.subTest(word=word):
                msg, tag = self.message(subject='about ' + word)
                code, text = self.send(c, msg)
                self.assertEqual(code, 451, text)
                self.assertEqual(text, '4.7.1 ' + said)
                self.assertEqual(self.delivered(tag), (None, None))

    def test_add_header_marks_the_message(self):
        c = self.client()
        # A sender's own spam fields are not what the reader sees.
        msg, tag = self.message(body=GTUBE['add header'],
                                extra='X-Spam: No\nX-Spam-Status: No, score=-100\n')
        code, text = self.send(c, msg)
        self.assertEqual(code, 250, text)
        path, data = self.delivered(tag)
        self.assertIsNotNone(path)
        self.assertEqual(self.fields(data, 'X-Spam'), ['Yes'])
        self.assertEqual(self.fields(data, 'X-Spam-Status'), [])
        result = self.fields(data, 'X-Spamd-Result')
        self.assertEqual(len(result), 1, result)
        self.assertRegex(result[0], r'^default: True \[\d+\.\d\d / 15\.00\]$')
        self.assertEqual(self.fields(data, 'Subject'), ['hello'])
        # on top, above our Received
        self.assertTrue(data.startswith(b'Return-Path:'), data[:200])
        self.assertLess(data.index(b'X-Spam: Yes'), data.index(b'Received:'))
        self.assert_maildir_name(path, data)
        self.wait_log('action="add header"')

    def test_rewrite_subject(self):
        c = self.client()
        msg, tag = self.message(subject='cheap watches', body=GTUBE['rewrite subject'])
        code, text = self.send(c, msg)
        self.assertEqual(code, 250, text)
        path, data = self.delivered(tag)
        self.assertEqual(self.fields(data, 'Subject'), ['[SPAM] cheap watches'])
        self.assertEqual(self.fields(data, 'X-Spam'), ['Yes'])
        self.assert_maildir_name(path, data)

    def test_rewrite_subject_not_ascii_and_long(self):
        c = self.client()
        words = 'Grüße aus Köln, 日本語のテキスト ' + ' '.join('wort%d' % i for i in range(30))
        encoded = email.header.Header(words, 'utf-8').encode()
        msg, tag = self.message(subject=encoded, body=GTUBE['rewrite subject'])
        code, text = self.send(c, msg)
        self.assertEqual(code, 250, text)
        path, data = self.delivered(tag)
        subjects = self.fields(data, 'Subject')
        self.assertEqual(len(subjects), 1, subjects)
        decoded = str(email.header.make_header(email.header.decode_header(subjects[0])))
        self.assertEqual(decoded.replace('\n', '').replace('\r', ''), '[SPAM] ' + words)
        head = data.split(b'\n\n', 1)[0]
        for line in head.split(b'\n'):
            self.assertLessEqual(len(line), 998)
        # rspamd encodes the subject itself (RFC 2047): ASCII only, folded
        raw = re.search(rb'(?m)^Subject:.*\n(?:[ \t].*\n)*', head).group(0)
        raw.decode('ascii')
        self.assertGreater(raw.count(b'\n'), 1, raw)
        self.assert_maildir_name(path, data)

    def test_rewrite_subject_of_a_plain_long_subject_folds(self):
        c = self.client()
        subject = ' '.join('word%d' % i for i in range(40))
        msg, tag = self.message(subject=subject, body=GTUBE['rewrite subject'])
        self.assertEqual(self.send(c, msg)[0], 250)
        path, data = self.delivered(tag)
        raw = re.search(rb'(?m)^Subject:.*\n(?:[ \t].*\n)*', data).group(0)
        self.assertGreater(raw.count(b'\n'), 1, raw)
        self.assertEqual(self.fields(data, 'Subject'), ['[SPAM] ' + subject])
        self.assert_maildir_name(path, data)

    def test_no_action_leaves_the_message_as_it_came(self):
        c = self.client()
        msg, tag = self.message(body=GTUBE['no action'], extra='X-Spam: Yes\n')
        code, text = self.send(c, msg)
        self.assertEqual(code, 250, text)
        path, data = self.delivered(tag)
        # the body and the sender's fields as sent, its X-Spam excepted
        self.assertIn(crlf(msg).replace(b'\r\n', b'\n').replace(b'X-Spam: Yes\n', b''), data)
        self.assertEqual(self.fields(data, 'X-Spam'), [])
        self.assertEqual(self.fields(data, 'X-Spamd-Result'), [])
        self.assert_maildir_name(path, data)
        self.wait_log('action="no action"')

    def test_envelope_reaches_rspamd(self):
        c = self.client()
        msg, tag = self.message(subject='postage-test-envelope')
        code, text = self.send(c, msg, rcpts=('alice@example.test', 'bob@example.test'))
        self.assertEqual(code, 550, text)
        m = re.match(r'5\.7\.1 envelope ip=(\S+) hostname=(\S+) helo=(\S+) from=(\S+) rcpt=(\S+) '
                     r'user=(\S+) qid=(\S+)$', text)
        self.assertIsNotNone(m, text)
        # hostname: the client's forward-confirmed reverse DNS name
        self.assertEqual(m.groups()[:6], (CLIENT, HELO, HELO, SENDER,
                                          'alice@example.test,bob@example.test', '-'))
        self.assertRegex(m.group(7), r'^[0-9A-F]{16}$')
        self.assertIn('id=' + m.group(7), self.p.log_text())

    def test_unix_socket(self):
        self.p.set('rspamd', self.sock_path)
        c = self.client()
        msg, tag = self.message(body=GTUBE['reject'])
        code, text = self.send(c, msg)
        self.assertEqual(code, 550, text)

    def test_unset_means_no_filter(self):
        self.p.sql("DELETE FROM settings WHERE key = 'rspamd'")
        c = self.client()
        msg, tag = self.message(body=GTUBE['reject'])
        self.assertEqual(self.send(c, msg)[0], 250)
        self.assertIsNotNone(self.delivered(tag)[0])
        self.assertNotIn('event=rspamd', self.p.log_text())

    # -- our own users ------------------------------------------------------

    def test_outbound_scanned_only_under_rspamd_outbound(self):
        c = self.client(source=RELAY_CLIENT)  # in relay_networks: one of ours
        msg, tag = self.message(body=GTUBE['reject'])
        self.assertEqual(self.send(c, msg, sender='alice@example.test')[0], 250)
        self.assertIsNotNone(self.delivered(tag)[0])
        self.assertNotIn('event=rspamd', self.p.log_text())

        self.p.set('rspamd_outbound', '1')
        c = self.client(source=RELAY_CLIENT)
        msg, tag = self.message(body=GTUBE['reject'])
        code, text = self.send(c, msg, sender='alice@example.test')
        self.assertEqual(code, 550, text)
        self.assertEqual(self.delivered(tag), (None, None))
        # a mark is not put on mail our users send
        msg, tag = self.message(body=GTUBE['add header'])
        self.assertEqual(self.send(c, msg, sender='alice@example.test')[0], 250)
        path, data = self.delivered(tag)
        self.assertEqual(self.fields(data, 'X-Spam'), [])
        self.wait_log('outbound=1 action="add header"')

    def test_outbound_tells_rspamd_the_login(self):
        self.p.set('rspamd_outbound', '1')
        c = self.client(source=RELAY_CLIENT)
        # relay_networks: a password may come without TLS
        c.login('alice', PASSWORD)
        msg, tag = self.message(subject='postage-test-envelope')
        code, text = self.send(c, msg, rcpts=('bob@example.test',), sender='alice@example.test')
        self.assertEqual(code, 550, text)
        self.assertIn(' user=alice ', text)
        self.assertIn(' from=alice@example.test ', text)

    # -- rspamd unwell --------------------------------------------------------

    def test_rspamd_down_accepts_or_defers(self):
        s = socket.socket()
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        for where in ('127.0.0.1:%d' % port, '/nonexistent/rspamd.sock'):
            with self.subTest(where=where):
                self.p.set('rspamd', where)
                self.p.set('rspamd_required', '0')
                c = self.client()
                msg, tag = self.message(body=GTUBE['reject'])
                self.assertEqual(self.send(c, msg)[0], 250)
                self.assertIsNotNone(self.delivered(tag)[0])
                self.wait_log('event=rspamd result=unreachable')
                self.assertIn('then=accepted_unscanned', self.p.log_text())
                self.p.set('rspamd_required', '1')
                c = self.client()  # settings are read when a session begins
                msg, tag = self.message(body=GTUBE['reject'])
                code, text = self.send(c, msg)
                self.assertEqual(code, 451, text)
                self.assertTrue(text.startswith('4.3.0 '), text)
                self.assertEqual(self.delivered(tag), (None, None))
        self.p.set('rspamd', 'not a host:port:at all')
        c = self.client()
        msg, tag = self.message()
        self.assertEqual(self.send(c, msg)[0], 451)

    def test_rspamd_bad_replies_give_no_verdict(self):
        answers = [
            b'HTTP/1.1 500 Internal Server Error\r\nContent-Length: 18\r\n\r\n{"error":"broken"}',
            b'HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{"action":"reject",',
            b'HTTP/1.1 200 OK\r\n\r\n{"action":"explode"}',
            b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"act\r\n0\r\n\r\n',
            b'garbage\r\n\r\n',
            b'HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n' + b'[' * 30,
        ]
        for answer in answers:
            with self.subTest(answer=answer[:40]):
                srv = SilentServer(answer)
                self.addCleanup(srv.close)
                self.p.set('rspamd', '127.0.0.1:%d' % srv.port)
                self.p.set('rspamd_required', '0')
                c = self.client()
                msg, tag = self.message(body=GTUBE['reject'])
                self.assertEqual(self.send(c, msg)[0], 250)
                self.p.set('rspamd_required', '1')
                c = self.client()
                msg, tag = self.message(body=GTUBE['reject'])
                self.assertEqual(self.send(c, msg)[0], 451)
        self.assertIn('event=rspamd result=bad_reply', self.p.log_text())

    def test_rspamd_silent_times_out(self):
        srv = SilentServer()
        self.addCleanup(srv.close)
        self.p.set('rspamd', '127.0.0.1:%d' % srv.port)
        for required, want in (('0', 250), ('1', 451)):
            with self.subTest(rspamd_required=required):
                self.p.set('rspamd_required', required)
                c = self.client()
                msg, tag = self.message(body=GTUBE['reject'])
                t0 = time.monotonic()
                code, text = self.send(c, msg)
                took = time.monotonic() - t0
                self.assertEqual(code, want, text)
                self.assertGreaterEqual(took, RSPAMD_TIMEOUT_S - 0.5)
                self.assertLess(took, RSPAMD_TIMEOUT_S + 10)
        self.assertIn('event=rspamd result=timeout', self.p.log_text())


if __name__ == '__main__':
    netns.main()
