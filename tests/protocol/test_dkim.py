"""DKIM: postage signs what its users send to remote recipients, and the
signatures verify with independent implementations (Python's dkim, and
opendkim-testmsg against a DNS server in a private network namespace).

Run: POSTAGE_BUILD=build /usr/bin/python3 tests/protocol/test_dkim.py -v
(as root: it makes its own network namespace; skipped otherwise).
"""
import base64
import email.utils
import glob
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns  # noqa: E402
from harness import Postage, optional_module  # noqa: E402

dkim = optional_module('dkim')

SMTP = 'smtp-handler/smtp-handler'
BODY_MARKER = 'dkim-body-never-in-logs-4711'
RELAY_CLIENT = '192.0.2.20'     # in relay_networks
OUTSIDE_CLIENT = '198.51.100.7'  # anybody on the Internet
SERVER = '192.0.2.1'


def openssl(*args, input=None):
    r = subprocess.run(['openssl'] + list(args), input=input, capture_output=True, check=True)
    return r.stdout


def make_keys(d):
    """An RSA 2048 and an Ed25519 key in d: {alg: (path, p= value)}."""
    rsa = os.path.join(d, 'rsa.pem')
    ed = os.path.join(d, 'ed25519.pem')
    openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', rsa)
    openssl('genpkey', '-algorithm', 'ed25519', '-out', ed)
    rsa_pub = openssl('pkey', '-in', rsa, '-pubout', '-outform', 'DER')
    ed_pub = openssl('pkey', '-in', ed, '-pubout', '-outform', 'DER')[-32:]
    return {
        'rsa-sha256': (rsa, base64.b64encode(rsa_pub).decode()),
        'ed25519-sha256': (ed, base64.b64encode(ed_pub).decode()),
    }


def key_record(alg, p):
    return f'v=DKIM1; k={"ed25519" if alg.startswith("ed25519") else "rsa"}; p={p}'


def message(sender='Alice Example <alice@example.test>', to='Bob <bob@remote.example>',
            extra='', body=None):
    tag = uuid.uuid4().hex
    if body is None:
        body = (f'Hello   world \t\n  indented\tline  {tag}\n\n{BODY_MARKER}\n'
                f'.a line that starts with a dot\n\n\n')
    return (f'From: {sender}\nTo: {to}\nSubject:  signed   test\t {tag}\n'
            f'Date: {email.utils.formatdate()}\nMessage-ID: <{tag}@example.test>\n'
            f'MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n{extra}\n{body}')


def crlf(data):
    return data.replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')


class DkimSigningTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keydir = tempfile.mkdtemp(prefix='postage-dkim-keys-')
        os.chmod(cls.keydir, 0o755)
        cls.keys = make_keys(cls.keydir)
        cls.dns = netns.DnsServer()
        for alg, sel in (('rsa-sha256', 'rsa2024'), ('ed25519-sha256', 'ed2024')):
            cls.dns.txt(f'{sel}._domainkey.example.test', key_record(alg, cls.keys[alg][1]))
        cls.dns.start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.close()
        shutil.rmtree(cls.keydir, ignore_errors=True)

    def setUp(self):
        p = self.p = Postage().enter_for(self)
        p.add_domain('example.test')
        p.add_account('alice', 'pw-unused-1', 'alice@example.test')
        p.add_forward('list@example.test', 'carol@remote.example')
        p.add_relay_network('192.0.2.0/24')
        self.srv = p.serve(SMTP, ['--mode=mx'], host=SERVER)

    def tearDown(self):
        self.p.check_sanitizers()
        self.assertNotIn(BODY_MARKER, self.p.log_text())

    def add_key(self, alg, selector, path=None, enabled=1):
        self.p.sql('INSERT INTO dkim_keys (domain, selector, algorithm, private_key_path, enabled)'
                   ' VALUES (?, ?, ?, ?, ?)', 'example.test', selector, alg,
                   path or self.keys[alg][0], enabled)

    def send(self, msg, sender='alice@example.test', rcpts=('bob@remote.example',),
             source=RELAY_CLIENT):
        with smtplib.SMTP(SERVER, self.srv.port, timeout=30,
                          source_address=(source, 0)) as c:
            c.ehlo('client.example.test')
            c.sendmail(sender, list(rcpts), crlf(msg.encode()))

    def queued(self):
        """The one queued message file's bytes (LF form), and its row."""
        files = glob.glob(os.path.join(self.p.spool_dir, 'queue', '*'))
        self.assertEqual(len(files), 1, files)
        rows = self.p.sql('SELECT id, sender, size FROM queue_messages')
        self.assertEqual(len(rows), 1)
        with open(files[0], 'rb') as f:
            data = f.read()
        self.assertEqual(rows[0][2], len(data), 'queue_messages.size is the file size')
        return data, rows[0]

    def dnsfunc(self, name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        for alg, sel in (('rsa-sha256', 'rsa2024'), ('ed25519-sha256', 'ed2024')):
            if name.rstrip('.') == f'{sel}._domainkey.example.test':
                return key_record(alg, self.keys[alg][1]).encode()
        return None

    def signatures(self, data):
        return re.findall(rb'^DKIM-Signature:.*?(?=^\S)', data, re.M | re.S)

    def py_verify(self, data, idx):
        d = dkim.DKIM(crlf(data))
        try:
            return d.verify(idx=idx, dnsfunc=self.dnsfunc)
        except dkim.ValidationError:
            return False

    def test_rsa_and_ed25519_signatures_verify(self):
        if dkim is None:
            self.skipTest('python3-dkim is not installed')
        self.add_key('rsa-sha256', 'rsa2024')
        self.add_key('ed25519-sha256', 'ed2024')
        self.send(message())
        data, row = self.queued()
        sigs = self.signatures(data)
        self.assertEqual(len(sigs), 2, data[:2000])
        self.assertTrue(data.startswith(b'DKIM-Signature:'), 'signatures on top')
        self.assertIn(b'a=rsa-sha256', sigs[0])
        self.assertIn(b'a=ed25519-sha256', sigs[1])
        for s in sigs:
            flat = re.sub(rb'\s+', b'', s)
            self.assertIn(b'c=relaxed/relaxed', flat)
            self.assertIn(b'd=example.test;', flat)
            h = re.search(rb';h=([^;]*);', flat).group(1).split(b':')
            self.assertEqual(h.count(b'from'), 2, 'From over-signed')
            for name in (b'to', b'subject', b'date', b'message-id'):
                self.assertIn(name, h)
            self.assertNotIn(b'received', h)
        self.assertTrue(self.py_verify(data, 0), 'rsa-sha256 signature verifies (python dkim)')
        self.assertTrue(self.py_verify(data, 1), 'ed25519-sha256 signature verifies (python dkim)')
        # The check can fail: a changed body or an added From breaks it.
        tampered = data.replace(b'indented', b'Indented')
        self.assertFalse(self.py_verify(tampered, 0))
        self.assertFalse(self.py_verify(tampered, 1))
        added = data.replace(b'\nFrom: ', b'\nFrom: Mallory <m@evil.example>\nFrom: ', 1)
        self.assertFalse(self.py_verify(added, 0))
        self.assertIn('event=dkim result=signed', self.p.log_text())

    def test_opendkim_testmsg_verifies(self):
        exe = shutil.which('opendkim-testmsg')
        if not exe:
            self.skipTest('opendkim-testmsg is not installed (package opendkim-tools)')
        self.add_key('rsa-sha256', 'rsa2024')
        self.send(message())
        data, _ = self.queued()
        r = subprocess.run([exe], input=crlf(data), capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors='replace'))
        # ...and it is a real check: a changed Subject fails it.
        bad = data.replace(b'signed   test', b'signed test!', 1)
        r = subprocess.run([exe], input=crlf(bad), capture_output=True, timeout=60)
        self.assertNotEqual(r.returncode, 0, 'opendkim-testmsg accepted a tampered message')

    def test_missing_key_file_sends_unsigned(self):
        self.add_key('rsa-sha256', 'gone', path=os.path.join(self.keydir, 'missing.pem'))
        self.send(message())
        data, _ = self.queued()
        self.assertEqual(self.signatures(data), [])
        self.assertIn(BODY_MARKER.encode(), data)
        log = self.p.log_text()
        self.assertIn('result=key_unreadable', log)
        self.assertIn('selector=gone', log)

    def test_broken_key_file_and_wrong_type_are_skipped(self):
        bad = os.path.join(self.p.dir, 'bad.pem')
        with open(bad, 'w') as f:
            f.write('-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n')
        self.add_key('rsa-sha256', 'broken', path=bad)
        # an Ed25519 key in a row that says rsa-sha256
        self.add_key('rsa-sha256', 'mismatch', path=self.keys['ed25519-sha256'][0])
        self.add_key('ed25519-sha256', 'ed2024')
        self.send(message())
        data, _ = self.queued()
        sigs = self.signatures(data)
        self.assertEqual(len(sigs), 1)
        self.assertIn(b'a=ed25519-sha256', sigs[0])
        if dkim is not None:
            self.assertTrue(self.py_verify(data, 0))
        self.assertEqual(self.p.log_text().count('result=key_invalid'), 2)

    def test_disabled_key_and_foreign_from_are_not_signed(self):
        self.add_key('rsa-sha256', 'rsa2024', enabled=0)
        self.send(message())
        data, _ = self.queued()
        self.assertEqual(self.signatures(data), [])
        self.p.sql('UPDATE dkim_keys SET enabled = 1')
        self.p.sql('DELETE FROM queue_recipients')
        self.p.sql('DELETE FROM queue_messages')
        for f in glob.glob(os.path.join(self.p.spool_dir, 'queue', '*')):
            os.unlink(f)
        # From: a domain we do not host: never signed with our keys.
        self.send(message(sender='Someone <someone@elsewhere.example>'),
                  sender='someone@elsewhere.example')
        data, _ = self.queued()
        self.assertEqual(self.signatures(data), [])

    def test_mail_from_outside_is_not_signed(self):
        """A forward sends mail from outside on to a remote address: it is
        not ours to sign, even with a From: in our domain."""
        self.add_key('rsa-sha256', 'rsa2024')
        self.send(message(), sender='someone@elsewhere.example', rcpts=['list@example.test'],
                  source=OUTSIDE_CLIENT)
        data, _ = self.queued()
        self.assertEqual(self.signatures(data), [])

    def test_signatures_verify_at_the_remote_sink(self):
        """Through the queue runner to the remote MX (a sink in the
        namespace): what arrives still verifies, both signatures, with an
        8-bit body too."""
        if dkim is None:
            self.skipTest('python3-dkim is not installed')
        try:
            from test_queue import RUNNER, Sink, run_queue
        except ImportError as e:
            self.skipTest(f'test_queue helpers unavailable: {e}')
        try:
            self.p.binary(RUNNER)
        except FileNotFoundError:
            self.skipTest('queue-runner is not built')
        sink = Sink(host='203.0.113.25', port=25)
        self.addCleanup(sink.stop)
        self.dns.mx('remote.example', 'mx.remote.example').a('mx.remote.example', '203.0.113.25')
        self.dns.start()
        self.add_key('rsa-sha256', 'rsa2024')
        self.add_key('ed25519-sha256', 'ed2024')
        body = 'Grüße aus dem Süden\n.leading dot\n\n' + BODY_MARKER + '\n'
        self.send(message(body=body, extra='Content-Transfer-Encoding: 8bit\n'))
        run_queue(self.p)
        self.assertEqual(len(sink.messages), 1, self.p.log_text()[-2000:])
        got = crlf(sink.messages[0]['content'])
        self.assertEqual(got.count(b'DKIM-Signature:'), 2)
        for idx in (0, 1):
            d = dkim.DKIM(got)
            self.assertTrue(d.verify(idx=idx, dnsfunc=self.dnsfunc), f'signature {idx} at the sink')

    def test_local_delivery_is_not_signed(self):
        self.add_key('rsa-sha256', 'rsa2024')
        self.send(message(to='alice@example.test'), rcpts=['alice@example.test'])
        msgs = self.p.messages('alice')
        self.assertEqual(len(msgs), 1)
        with open(msgs[0], 'rb') as f:
            self.assertNotIn(b'DKIM-Signature:', f.read())


if __name__ == '__main__':
    netns.main()
