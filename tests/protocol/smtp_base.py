"""Shared fixture and a raw SMTP client for the test_smtp_*.py files.

The fixture (SmtpTestCase.setUp) hosts three domains:

  example.test   alice@ -> alice, bob@ -> bob, special@catch.test -> bob,
                 list@ forwards to alice@ and bob@,
                 loop1@ <-> loop2@ forward to each other, self@ to itself
  other.test     alice@ -> alice too, info@ -> alice (one mailbox, two domains)
  catch.test     @catch.test -> carol (catch-all)

and a mailbox dave (quota 3000 bytes) at dave@example.test. Nothing may
relay (relay_networks stays empty, as in a fresh schema).

TlsTestCase is the class-wide fixture of the TLS and AUTH tests
(test_auth.py, test_relay.py, test_security.py, test_tls_smtp.py): a
self-signed certificate as tls_cert/tls_key and mailboxes with a password.
"""
import os
import re
import socket
import ssl
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HandlerTestCase, Postage  # noqa: E402

SMTP = 'smtp-handler/smtp-handler'
PASSWORD = 'Pw-never-in-logs-7f3a'
# Bodies of test messages carry this, so the logs can be searched for it.
BODY_MARKER = 'body-never-in-logs-Q9z'

MAILDIR_NAME = re.compile(
    r'^(?P<sec>\d+)\.M(?P<usec>\d+)P(?P<pid>\d+)(?:Q\d+)?\.(?P<host>[^,/:]+)'
    r',S=(?P<S>\d+),W=(?P<W>\d+)$')


class Raw:
    """A line-oriented SMTP client on a socket (or a pair of pipes)."""

    def __init__(self, sock=None, rfile=None, wfile=None, timeout=20):
        self.sock = sock
        self.rfile = rfile
        self.wfile = wfile
        self.buf = b''
        self.timeout = timeout
        if sock is not None:
            sock.settimeout(timeout)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        if self.sock is not None:
            self.sock.sendall(data)
        else:
            self.wfile.write(data)
            self.wfile.flush()

    def _recv(self):
        if self.sock is not None:
            return self.sock.recv(65536)
        return os.read(self.rfile.fileno(), 65536)

    def line(self):
        """One reply line without CRLF, or None at EOF."""
        while b'\r\n' not in self.buf:
            chunk = self._recv()
            if not chunk:
                if self.buf:
                    raise AssertionError(f'reply line without CRLF at EOF: {self.buf!r}')
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b'\r\n', 1)
        return line.decode('utf-8', 'replace')

    def reply(self):
        """(code, [text lines]) of one possibly multi-line reply."""
        lines = []
        while True:
            line = self.line()
            if line is None:
                raise EOFError('connection closed; got so far: %r' % lines)
            if not re.match(r'^\d{3}[ -]', line) and not re.match(r'^\d{3}$', line):
                raise AssertionError(f'malformed reply line {line!r}')
            lines.append(line[4:])
            if len(line) == 3 or line[3] == ' ':
                return int(line[:3]), lines

    def cmd(self, line):
        self.send(line + '\r\n')
        return self.reply()

    def closed(self, wait=10):
        """True when the server closed the connection (nothing more comes)."""
        if self.buf:
            return False
        if self.sock is not None:
            self.sock.settimeout(wait)
        try:
            data = self._recv()
        except (ConnectionResetError, BrokenPipeError):
            return True
        finally:
            if self.sock is not None:
                self.sock.settimeout(self.timeout)
        self.buf += data
        return data == b''

    def close(self):
        if self.sock is not None:
            self.sock.close()


class Lines:
    """A tiny SMTP client over a (possibly TLS) socket, for the dialogs
    smtplib will not produce."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b''

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b'\n' not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError('connection closed; had %r' % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b'\n', 1)
        return line.rstrip(b'\r').decode('utf-8', 'replace')

    def reply(self):
        """(code, [lines]) of one possibly multi-line reply."""
        lines = []
        while True:
            ln = self.line()
            lines.append(ln)
            if len(ln) < 4 or ln[3] != '-':
                return int(ln[:3]), lines

    def cmd(self, text):
        self.send(text.encode() + b'\r\n')
        return self.reply()

    def closed(self, timeout=10):
        """True when the server has hung up."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False


def wire(message):
    """bytes with LF or CRLF line ends -> SMTP DATA wire form (CRLF,
    dot-stuffed) followed by the terminator."""
    if isinstance(message, str):
        message = message.encode()
    lines = message.replace(b'\r\n', b'\n').split(b'\n')
    if lines and lines[-1] == b'':
        lines.pop()
    out = b''.join((b'.' + l if l.startswith(b'.') else l) + b'\r\n' for l in lines)
    return out + b'.\r\n'


def stored(message):
    """What a Maildir file holds of message: LF line ends."""
    if isinstance(message, str):
        message = message.encode()
    m = message.replace(b'\r\n', b'\n')
    return m if m.endswith(b'\n') else m + b'\n'


def new_message(subject='test', body=None, extra_headers=''):
    return harness.new_message('someone@example.test', BODY_MARKER, subject, body, extra_headers)


def make_cert(directory, name='server', cn='mx.test.example', kind='ec', days=2, san=None):
    """A self-signed certificate and key made with openssl, as
    directory/name.crt and name.key: (cert path, key path). kind 'ec' is
    P-256 ECDSA, 'rsa' RSA 2048; san, e.g. 'DNS:mx.test.example,IP:127.0.0.1',
    adds a subjectAltName."""
    cert = os.path.join(directory, name + '.crt')
    key = os.path.join(directory, name + '.key')
    if kind == 'ec':
        newkey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']
    elif kind == 'rsa':
        newkey = ['-newkey', 'rsa:2048']
    else:
        raise ValueError(f'unknown key kind {kind}')
    extra = ['-addext', 'subjectAltName=' + san] if san else []
    subprocess.run(['openssl', 'req', '-x509'] + newkey + ['-nodes', '-keyout', key, '-out', cert,
                    '-days', str(days), '-subj', '/CN=' + cn] + extra,
                   check=True, capture_output=True)
    return cert, key


def use_cert(p):
    """A new certificate in p.dir as p's tls_cert and tls_key: (cert, key)."""
    cert, key = make_cert(p.dir)
    p.set('tls_cert', cert)
    p.set('tls_key', key)
    return cert, key


def insecure_context(**kw):
    """A TLS client context that takes our self-signed certificates; each
    keyword sets that attribute of it (minimum_version=...)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


class TlsTestCase(unittest.TestCase):
    """One Postage for the whole class (cls.p) with a self-signed
    certificate as tls_cert/tls_key (cls.cert, cls.key), the domain DOMAIN
    and, for each login in LOGINS, a mailbox with the password PASSWORD at
    login@DOMAIN; for each name: mode in SMTP_SERVERS, smtp-handler
    --mode=mode served as cls.name. A subclass sets PASSWORD (and LOGINS,
    SMTP_SERVERS), adds what else it needs and starts its other servers in
    setUpClass after super().setUpClass(); tearDownClass checks the
    sanitizer logs."""
    PASSWORD = None
    LOGINS = ('alice',)
    DOMAIN = 'example.test'
    SMTP_SERVERS = {}

    @classmethod
    def setUpClass(cls):
        cls.p = Postage().__enter__()
        cls.cert, cls.key = use_cert(cls.p)
        cls.p.add_domain(cls.DOMAIN)
        for login in cls.LOGINS:
            cls.p.add_account(login, cls.PASSWORD, f'{login}@{cls.DOMAIN}')
        for name, mode in cls.SMTP_SERVERS.items():
            setattr(cls, name, cls.p.serve(SMTP, ['--mode=' + mode]))

    @classmethod
    def tearDownClass(cls):
        cls.p.finish()

    def greeted(self, sock, tls):
        """A Lines dialog on the connected sock after the greeting (220)
        and EHLO (250); with tls, also after STARTTLS (220) and a second
        EHLO (250). Returns (the dialog, the last EHLO reply's lines)."""
        c = Lines(sock)
        self.assertEqual(c.reply()[0], 220)
        code, lines = c.cmd('EHLO client.test')
        self.assertEqual(code, 250, lines)
        if tls:
            self.assertEqual(c.cmd('STARTTLS')[0], 220)
            c.sock = insecure_context().wrap_socket(sock, server_hostname='mx.test.example')
            self.addCleanup(c.sock.close)
            code, lines = c.cmd('EHLO client.test')
            self.assertEqual(code, 250, lines)
        return c, lines


class SmtpTestCase(HandlerTestCase):
    LOG_SECRETS = (PASSWORD, BODY_MARKER)
    supervisor = 'socket-activate'
    host = '127.0.0.1'
    start_server = True

    def setUp(self):
        self.p = Postage().enter_for(self)
        p = self.p
        for d in ('example.test', 'other.test', 'catch.test'):
            p.add_domain(d)
        for login in ('alice', 'bob', 'carol'):
            p.add_mailbox(login, PASSWORD)
        p.add_mailbox('dave', PASSWORD, quota=3000)
        for address, login in (('alice@example.test', 'alice'), ('alice@other.test', 'alice'),
                               ('info@other.test', 'alice'), ('bob@example.test', 'bob'),
                               ('special@catch.test', 'bob'), ('@catch.test', 'carol'),
                               ('dave@example.test', 'dave')):
            p.add_address(address, login)
        for address, target in (('list@example.test', 'alice@example.test'),
                                ('list@example.test', 'bob@example.test'),
                                ('loop1@example.test', 'loop2@example.test'),
                                ('loop2@example.test', 'loop1@example.test'),
                                ('self@example.test', 'self@example.test')):
            p.add_forward(address, target)
        self.srv = None
        self.clients = []
        if self.start_server:
            self.srv = p.serve(SMTP, ['--mode=mx'], host=self.host, supervisor=self.supervisor)

    # -- helpers ----------------------------------------------------------

    def connect(self, greet=True):
        c = Raw(self.srv.connect())
        self.clients.append(c)
        if greet:
            code, text = c.reply()
            self.assertEqual(code, 220, text)
        return c

    def smtp(self):
        """An smtplib client connected to the server."""
        s = self.srv.smtp()
        self.clients.append(s)
        return s

    def session(self, helo='client.example'):
        """A connected client that has said EHLO."""
        c = self.connect()
        code, _ = c.cmd(f'EHLO {helo}')
        self.assertEqual(code, 250)
        return c

    def send_data(self, c, message, expect=250):
        """DATA, the message (dot-stuffed), the terminator: the final reply."""
        code, text = c.cmd('DATA')
        self.assertEqual(code, 354, text)
        c.send(wire(message))
        code, text = c.reply()
        if expect is not None:
            self.assertEqual(code, expect, text)
        return code, text

    def envelope(self, c, sender, rcpts):
        """MAIL FROM:<sender> and RCPT TO: each of rcpts, all accepted."""
        code, text = c.cmd(f'MAIL FROM:<{sender}>')
        self.assertEqual(code, 250, text)
        for r in rcpts:
            code, text = c.cmd(f'RCPT TO:<{r}>')
            self.assertEqual(code, 250, (r, text))

    def start_data(self, c, sender='s@remote.example', rcpts=('alice@example.test',)):
        """The envelope, then DATA (354): what c sends next is the body."""
        self.envelope(c, sender, rcpts)
        code, text = c.cmd('DATA')
        self.assertEqual(code, 354, text)

    def transaction(self, c, sender, rcpts, message, expect=250):
        self.envelope(c, sender, rcpts)
        return self.send_data(c, message, expect)

    def only_message(self, login):
        msgs = self.p.messages(login)
        self.assertEqual(len(msgs), 1, f'{login}: {msgs}')
        return self.read(msgs[0])

    def all_messages(self):
        out = []
        root = self.p.mail_root
        for login in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            out += self.p.messages(login)
        return out

    def assert_no_mail(self):
        self.assertEqual(self.all_messages(), [])

    def assert_nothing_queued(self):
        self.assertEqual(self.p.sql('SELECT count(*) FROM queue_messages')[0][0], 0)
        self.assertEqual(self.p.sql('SELECT count(*) FROM queue_recipients')[0][0], 0)
        qdir = os.path.join(self.p.spool_dir, 'queue')
        if os.path.isdir(qdir):
            self.assertEqual(os.listdir(qdir), [])

    def assert_body_kept(self, body):
        """A message with body, sent to alice, is stored as sent after the
        three fields we add."""
        msg = new_message(body=body)
        self.transaction(self.session(), 's@remote.example', ['alice@example.test'], msg)
        _, rest = self.split_prefix(self.only_message('alice'))
        self.assertEqual(rest, stored(msg))

    def split_prefix(self, data, n=3):
        """The file's first n header fields (with folded lines) and the rest."""
        lines = data.split(b'\n')
        fields = []
        i = 0
        while len(fields) < n:
            field = lines[i]
            i += 1
            while lines[i].startswith((b' ', b'\t')):
                field += b'\n' + lines[i]
                i += 1
            fields.append(field)
        return fields, b'\n'.join(lines[i:])

