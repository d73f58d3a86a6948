"""Shared fixture and a raw POP3 client for the test_pop3*.py files.

The fixture (Pop3TestCase.setUp) makes a Postage with the domain
example.test, a mailbox alice (sha512crypt, PASSWORD) at
alice@example.test, and serves pop3-handler under systemd-socket-activate
on 127.0.0.1. Messages are put straight into the Maildir with put_message,
as smtp-handler (or any MDA) would leave them.
"""
import itertools
import os
import re
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HandlerTestCase, Postage  # noqa: E402,F401

POP3 = 'pop3-handler/pop3-handler'
SMTP = 'smtp-handler/smtp-handler'
PASSWORD = 'Pop-pw-never-in-logs-3k9'
# Bodies of test messages carry this, so the logs can be searched for it.
BODY_MARKER = 'pop-body-never-in-logs-W7x'

_seq = itertools.count(1)


def maildir_base(t=None, usec=None):
    """A Dovecot-style unique base name."""
    n = next(_seq)
    t = int(time.time()) if t is None else t
    usec = (n * 7919) % 1000000 if usec is None else usec
    return f'{t}.M{usec}P{os.getpid()}Q{n}.testhost'


def put_message(p, login, data, sizes=True, where='new', base=None, flags=None):
    """Writes data (bytes, LF line ends as in a Maildir) into login's
    Maildir the way an MDA does (tmp/ then rename). sizes: add ,S= and ,W=
    (True), only ,S= ('S'), or nothing (False). Returns the file path."""
    if isinstance(data, str):
        data = data.encode()
    md = p.maildir(login)
    for sub in ('tmp', 'new', 'cur'):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    name = base or maildir_base()
    if sizes is True:
        lfs = data.count(b'\n')
        name += f',S={len(data)},W={len(data) + lfs}'
    elif sizes == 'S':
        name += f',S={len(data)}'
    if where == 'cur':
        name += ':2,' + (flags or '')
    tmp = os.path.join(md, 'tmp', name.replace(':', '_'))
    with open(tmp, 'wb') as f:
        f.write(data)
    path = os.path.join(md, where, name)
    os.rename(tmp, path)
    return path


def wire_lines(data):
    """What poplib's retr() returns as lines for a stored message: one
    entry per line, CR/LF removed (unstuffed)."""
    if isinstance(data, str):
        data = data.encode()
    if not data:
        return []
    lines = data.split(b'\n')
    if data.endswith(b'\n'):
        lines.pop()
    return lines


def wire_octets(data):
    """Octets of the wire form (LF -> CRLF, a CRLF added when the last
    line has none), unstuffed: what LIST must say."""
    return sum(len(l) + 2 for l in wire_lines(data))


def new_message(subject='test', body=None, extra_headers=''):
    return harness.new_message('alice@example.test', BODY_MARKER, subject, body, extra_headers)


class Raw:
    """A line-oriented POP3 client on a socket (plain or TLS)."""

    def __init__(self, sock, timeout=20):
        self.sock = sock
        self.buf = b''
        self.timeout = timeout
        sock.settimeout(timeout)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        """One line without CRLF (bytes), or None at EOF."""
        while b'\r\n' not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b''
            if not chunk:
                if self.buf:
                    raise AssertionError(f'line without CRLF at EOF: {self.buf!r}')
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b'\r\n', 1)
        return line

    def resp(self):
        """The status line as str; EOFError when the server hung up."""
        line = self.line()
        if line is None:
            raise EOFError('connection closed')
        text = line.decode('utf-8', 'replace')
        if not (text.startswith('+OK') or text.startswith('-ERR') or text.startswith('+ ')
                or text == '+'):
            raise AssertionError(f'malformed status line {text!r}')
        return text

    def multi(self):
        """The lines of a multi-line body up to '.', unstuffed."""
        out = []
        while True:
            line = self.line()
            if line is None:
                raise EOFError('connection closed inside a multi-line response; got %r' % out)
            if line == b'.':
                return out
            if line.startswith(b'.'):
                line = line[1:]
            out.append(line)

    def raw_multi(self):
        """The raw bytes of a multi-line body, terminator included."""
        while b'\r\n.\r\n' not in b'\r\n' + self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError('connection closed: %r' % self.buf[:200])
            self.buf += chunk
        i = (b'\r\n' + self.buf).index(b'\r\n.\r\n')
        out, self.buf = self.buf[:i + 3], self.buf[i + 3:]
        return out

    def cmd(self, line):
        self.send(line + '\r\n')
        return self.resp()

    def login(self, user='alice', password=PASSWORD):
        r = self.cmd(f'USER {user}')
        if not r.startswith('+OK'):
            return r
        return self.cmd(f'PASS {password}')

    def closed(self, wait=10):
        """True when the server closed the connection (nothing more comes)."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        self.buf += data
        return data == b''

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Pop3TestCase(HandlerTestCase):
    LOG_SECRETS = (PASSWORD, BODY_MARKER)
    supervisor = 'socket-activate'
    host = '127.0.0.1'
    server_args = ()
    start_server = True

    def setUp(self):
        self.p = Postage().enter_for(self)
        self.p.add_domain('example.test')
        self.p.add_account('alice', PASSWORD, 'alice@example.test')
        self.clients = []
        self.srv = None
        if self.start_server:
            self.srv = self.p.serve(POP3, list(self.server_args), host=self.host,
                                    supervisor=self.supervisor)

    # -- helpers ----------------------------------------------------------

    def connect(self, greet=True, srv=None):
        c = Raw((srv or self.srv).connect())
        self.clients.append(c)
        if greet:
            g = c.resp()
            self.assertEqual(g, '+OK mx.test.example POP3 ready')
        return c

    def session(self, user='alice', password=PASSWORD):
        """A connected client logged in (TRANSACTION state)."""
        c = self.connect()
        r = c.login(user, password)
        self.assertTrue(r.startswith('+OK'), f'login as {user}: got {r!r}')
        return c

    def poplib(self, login=True, srv=None):
        import poplib
        # RFC 5322 lines may reach 998 octets and Maildirs hold longer
        # ones; poplib's default cap (2048) is its own choice.
        poplib._MAXLINE = 1 << 20
        srv = srv or self.srv
        m = poplib.POP3(srv.host, srv.port, timeout=30)
        self.clients.append(Closer(m))
        if login:
            m.user('alice')
            m.pass_(PASSWORD)
        return m

    def put(self, data, **kw):
        return put_message(self.p, 'alice', data, **kw)

    def log_events(self, **fields):
        """Log lines whose key=value fields include all of fields."""
        out = []
        for line in self.p.log_text().splitlines():
            if all(re.search(rf'(^|\s){k}="?{re.escape(str(v))}"?(\s|$)', line)
                   for k, v in fields.items()):
                out.append(line)
        return out


class Closer:
    """Closes a poplib client at teardown without QUIT (which would
    commit deletions a test did not ask for)."""

    def __init__(self, m):
        self.m = m

    def close(self):
        try:
            self.m.close()
        except (OSError, AttributeError):
            pass


def median(xs):
    return statistics.median(xs)
