"""The outbound queue (issue 7): queue-runner against a real SMTP server on
loopback (Python aiosmtpd, started here), reached through the relayhost
setting `[127.0.0.1]:PORT`.

Mail goes in the way it does in production: through smtp-handler under
systemd-socket-activate, from a client in relay_networks (127.0.0.0/8).
Then `queue-runner --once` runs, with `--now` to move its clock for
retries and expiry. The sink answers 250, 451 or 550 per recipient, and
can offer STARTTLS (a self-signed certificate made with openssl), AUTH,
PIPELINING, or no 8BITMIME.

The Sink class is also used by test_queue_mx.py (MX lookup in a network
namespace).
"""
import asyncio
import email
import email.policy
import fcntl
import os
import re
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Postage  # noqa: E402

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
except ImportError:  # pragma: no cover
    Controller = None

SMTP = 'smtp-handler/smtp-handler'
RUNNER = 'queue/queue-runner'
PASSWORD = 'Queue-test-pw-8d1c'
RELAY_LOGIN = 'relayuser'
RELAY_PASSWORD = 'Relay-secret-never-logged-4k'
HOSTNAME = harness.HOSTNAME


def make_cert(directory, cn='sink.test'):
    """A self-signed certificate and key for the sink (openssl)."""
    cert = os.path.join(directory, 'sink.crt')
    key = os.path.join(directory, 'sink.key')
    if not os.path.exists(cert):
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
                        '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=' + cn],
                       check=True, capture_output=True)
    return cert, key


def _openssl(*args):
    subprocess.run(['openssl'] + list(args), check=True, capture_output=True)


def make_ca(directory, name='ca'):
    """A private certificate authority (openssl): (cert, key) paths."""
    cert = os.path.join(directory, name + '.crt')
    key = os.path.join(directory, name + '.key')
    if not os.path.exists(cert):
        _openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                 '-keyout', key, '-out', cert, '-days', '2', '-subj', f'/CN=Postage test {name}',
                 '-addext', 'basicConstraints=critical,CA:TRUE',
                 '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
    return cert, key


def make_signed_cert(directory, name, ca, sans, cn=None):
    """A server certificate signed by ca, naming sans (a list such as
    ['IP:127.0.0.1', 'DNS:relay.test']; [] for none): (cert, key)."""
    cert = os.path.join(directory, name + '.crt')
    key = os.path.join(directory, name + '.key')
    if not os.path.exists(cert):
        csr = os.path.join(directory, name + '.csr')
        ext = os.path.join(directory, name + '.ext')
        with open(ext, 'w') as f:
            f.write('basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n')
            if sans:
                f.write('subjectAltName=' + ','.join(sans) + '\n')
        _openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                 '-keyout', key, '-out', csr, '-subj', '/CN=' + (cn or name))
        _openssl('x509', '-req', '-in', csr, '-CA', ca[0], '-CAkey', ca[1], '-CAcreateserial',
                 '-out', cert, '-days', '2', '-extfile', ext)
    return cert, key


def make_self_signed(directory, name, sans):
    """A self-signed certificate that names sans, as an attacker on the
    path would make: the right name, no trusted signature."""
    cert = os.path.join(directory, name + '.crt')
    key = os.path.join(directory, name + '.key')
    if not os.path.exists(cert):
        _openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                 '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=' + name,
                 '-addext', 'subjectAltName=' + ','.join(sans))
    return cert, key


class SinkHandler:
    """aiosmtpd handler: records every message, answers RCPT per rule."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = {}          # lower-case address -> reply for RCPT
        self.data_reply = None   # reply to the end of DATA, default 250
        self.rcpt_delay = 0.0    # seconds to wait before answering RCPT
        self.data_delay = 0.0    # seconds to wait, after taking the message, before answering
        self.reached = threading.Event()  # set when a delay begins
        self.strip = set()       # EHLO keywords not to offer
        self.add = []            # EHLO keywords to offer as well
        self.messages = []       # dicts: mail_from, rcpts, content, tls, login, peer, options
        self.rcpt_attempts = []  # (peer, address, reply)
        self.auth_attempts = []  # (mechanism, login)
        self.sni = []            # server names the clients asked for in TLS (None: none)
        self.sessions = []       # (peer, start, end) of each DATA, for overlap checks

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        out = []
        for r in responses:
            kw = r[4:].split(' ')[0].upper()
            if kw in self.strip:
                continue
            out.append(r)
        last = out.pop()
        out += ['250-' + a for a in self.add]
        out.append(last)
        return out

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_delay:
            self.reached.set()
            await asyncio.sleep(self.rcpt_delay)
        reply = self.rules.get(address.lower(), '250 2.1.5 Ok')
        with self.lock:
            self.rcpt_attempts.append((session.peer, address, reply))
        if reply.startswith('2'):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        start = time.monotonic()
        with self.lock:
            self.messages.append({
                'mail_from': envelope.mail_from,
                'rcpts': list(envelope.rcpt_tos),
                'content': envelope.original_content or envelope.content,
                'options': list(envelope.mail_options),
                'tls': server._tls_protocol is not None,
                'login': getattr(session, 'auth_data', None),
                'peer': session.peer,
            })
        if self.data_delay:
            # The message is taken; the client waits for the reply.
            self.reached.set()
            await asyncio.sleep(self.data_delay)
        with self.lock:
            self.sessions.append((session.peer, start, time.monotonic()))
        return self.data_reply or '250 2.0.0 Ok: queued as SINK'

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        login = auth_data.login.decode() if isinstance(auth_data.login, bytes) else auth_data.login
        password = auth_data.password
        if isinstance(password, bytes):
            password = password.decode()
        with self.lock:
            self.auth_attempts.append((mechanism, login))
        ok = login == RELAY_LOGIN and password == RELAY_PASSWORD
        return AuthResult(success=ok, handled=False)


class Sink:
    """A real SMTP server on host:port, in a thread of this process."""

    def __init__(self, host='127.0.0.1', port=None, tls_cert=None, auth=False,
                 auth_require_tls=True, data_size_limit=33554432, smtputf8=True,
                 implicit_tls=False, server_hostname='sink.test', tls_max_version=None,
                 tls_ciphers=None):
        if Controller is None:
            raise unittest.SkipTest('aiosmtpd is not installed (package python3-aiosmtpd)')
        self.handler = SinkHandler()
        self.host = host
        self.port = port or harness._free_port(host)
        kw = {'decode_data': False, 'enable_SMTPUTF8': smtputf8,
              'data_size_limit': data_size_limit}
        ssl_context = None
        if tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls_cert)
            if tls_max_version is not None:
                # An old server: no TLS version in common with postage's.
                ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                ctx.maximum_version = tls_max_version
            if tls_ciphers:
                # An old MX: TLS 1.2 and only these suites.
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                ctx.set_ciphers(tls_ciphers)

            def record_sni(sslobj, name, context):
                with self.handler.lock:
                    self.handler.sni.append(name)
            ctx.sni_callback = record_sni
            if implicit_tls:
                ssl_context = ctx
            else:
                kw['tls_context'] = ctx
        if auth:
            kw['authenticator'] = self.handler.authenticator
            kw['auth_require_tls'] = auth_require_tls
        self.controller = Controller(self.handler, hostname=host, port=self.port,
                                     server_hostname=server_hostname, ready_timeout=10,
                                     ssl_context=ssl_context, **kw)
        self.controller.start()
        # (With implicit TLS, start() itself connects once to see it is up.)
        with self.handler.lock:
            self.handler.sni.clear()

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self):
        with self.handler.lock:
            return list(self.handler.messages)


class ScriptedServer:
    """A hand-written SMTP server on loopback that answers from a table,
    for replies a real server would not give: multi-line, overlong,
    endless, garbage, or none (the connection dropped). It records every
    line it reads and the raw DATA bytes."""

    DEFAULTS = {
        'greeting': b'220 scripted.test ESMTP\r\n',
        'EHLO': b'250-scripted.test\r\n250-8BITMIME\r\n250 SIZE 100000\r\n',
        'HELO': b'250 scripted.test\r\n',
        'MAIL': b'250 2.1.0 Ok\r\n',
        'RCPT': b'250 2.1.5 Ok\r\n',
        'DATA': b'354 go ahead\r\n',
        '.': b'250 2.0.0 Ok: queued\r\n',
        'RSET': b'250 2.0.0 Ok\r\n',
        'QUIT': b'221 2.0.0 Bye\r\n',
    }

    def __init__(self, **replies):
        self.replies = dict(self.DEFAULTS)
        # dot= is the reply to the end of DATA
        self.replies.update({('.' if k == 'dot' else k): v for k, v in replies.items()})
        self.lines = []
        self.data = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(20)
                self._session(conn)
            except (OSError, ValueError):
                pass
            finally:
                conn.close()

    def _send(self, conn, reply):
        if reply is None:
            raise ValueError('hang up')
        conn.sendall(reply)

    def _session(self, conn):
        f = conn.makefile('rb')
        self._send(conn, self.replies['greeting'])
        while True:
            line = f.readline(4096)
            if not line:
                return
            self.lines.append(line)
            verb = line.split(b' ')[0].strip().upper().decode(errors='replace')
            if verb == 'DATA':
                reply = self.replies['DATA']
                self._send(conn, reply)
                if not reply.startswith(b'354'):
                    continue
                data = b''
                while True:
                    chunk = f.readline(1 << 20)
                    if not chunk:
                        return
                    if chunk == b'.\r\n':
                        break
                    data += chunk
                self.data.append(data)
                self._send(conn, self.replies['.'])
                continue
            self._send(conn, self.replies.get(verb, b'502 5.5.2 Error: command not recognized\r\n'))
            if verb == 'QUIT':
                return

    def stop(self):
        self.sock.close()


def run_queue(p, now=None, once=True, timeout=60):
    """Runs queue-runner; fails the test if it did not exit 0."""
    args = ['--once'] if once else []
    if now is not None:
        args += ['--now', str(int(now))]
    r = p.run(RUNNER, args, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f'queue-runner {args} exited {r.returncode}: '
                             f'{r.stderr.decode(errors="replace")}\nlog:\n{p.log_text()[-4000:]}')
    return r


def parse(path):
    with open(path, 'rb') as f:
        return email.message_from_bytes(f.read(), policy=email.policy.compat32)


def dsn_parts(msg):
    """(human text, [delivery-status blocks], original headers text) of a
    multipart/report."""
    assert msg.get_content_type() == 'multipart/report', msg.get_content_type()
    assert msg.get_param('report-type') == 'delivery-status', msg['Content-Type']
    parts = msg.get_payload()
    assert len(parts) == 3, [p.get_content_type() for p in parts]
    assert parts[0].get_content_type() == 'text/plain'
    assert parts[1].get_content_type() == 'message/delivery-status'
    assert parts[2].get_content_type() == 'text/rfc822-headers'
    text = parts[0].get_payload(decode=True).decode()
    blocks = parts[1].get_payload()
    headers = parts[2].get_payload()
    return text, blocks, headers


def local_postage(test):
    """A Postage, removed at test's cleanup, hosting local.test (alice)
    and relaying for 127.0.0.0/8; FileNotFoundError when the queue runner
    is not built."""
    harness.binary(RUNNER)
    p = Postage().enter_for(test)
    p.add_domain('local.test')
    p.add_account('alice', PASSWORD, 'alice@local.test')
    p.add_relay_network('127.0.0.0/8')
    return p


class QueueCase(unittest.TestCase):
    """A postage with local.test (alice), a sink, and relayhost to it."""

    sink_kw = {}

    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.mkdtemp(prefix='postage-queue-cert-')
        cls.cert = make_cert(cls.certdir)

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.certdir, ignore_errors=True)

    def setUp(self):
        p = self.p = local_postage(self)
        self.sink = self.make_sink(**self.sink_kw)
        p.set('relayhost', f'[127.0.0.1]:{self.sink.port}')
        self.srv = p.serve(SMTP, ['--mode=mx'])

    def make_sink(self, **kw):
        sink = Sink(**kw)
        self.addCleanup(sink.stop)
        return sink

    def tearDown(self):
        self.p.check_sanitizers()

    # -- helpers ----------------------------------------------------------

    def submit(self, sender, rcpts, body=None, subject='queue test', raw=None, options=()):
        """Sends one message through smtp-handler; returns its bytes."""
        if raw is None:
            body = body or 'Hello from the queue test.\n'
            raw = (f'From: <{sender}>\nTo: <{rcpts[0]}>\nSubject: {subject}\n'
                   f'Message-ID: <{time.time_ns()}@local.test>\n\n{body}').encode()
        with smtplib.SMTP(self.srv.host, self.srv.port, timeout=30) as s:
            s.ehlo('client.test')
            refused = s.sendmail(sender, rcpts, raw.replace(b'\n', b'\r\n'),
                                 mail_options=list(options))
            self.assertEqual(refused, {})
        return raw

    def queue_rows(self):
        return self.p.sql('SELECT r.recipient, r.state, r.attempts, r.next_attempt, '
                          'r.last_error, m.created_at FROM queue_recipients r '
                          'JOIN queue_messages m ON m.id = r.message_id ORDER BY r.recipient')

    def spool_files(self):
        d = os.path.join(self.p.spool_dir, 'queue')
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def assert_queue_empty(self):
        self.assertEqual(self.p.sql('SELECT count(*) FROM queue_messages')[0][0], 0,
                         f'queue rows left: {self.queue_rows()}')
        self.assertEqual(self.spool_files(), [], 'spool files left in queue/')

    def bounces(self, login='alice'):
        return [parse(m) for m in self.p.messages(login)]


class DeliveryTest(QueueCase):

    def test_relay_network_client_reaches_sink_once_and_only_once(self):
        raw = self.submit('alice@local.test', ['bob@remote.test'],
                          body='First line.\n.leading dot\n..two dots\n.\nlast\n')
        self.assertEqual(len(self.spool_files()), 1, 'smtp-handler did not queue the message')
        self.assertEqual(self.sink.messages, [], 'delivered before the runner ran')
        run_queue(self.p)
        msgs = self.sink.messages
        self.assertEqual(len(msgs), 1, msgs)
        m = msgs[0]
        self.assertEqual(m['mail_from'], 'alice@local.test')
        self.assertEqual(m['rcpts'], ['bob@remote.test'])
        content = m['content'].replace(b'\r\n', b'\n')
        # Our Received header on top, no Return-Path, the body as sent
        # (dot-stuffing undone by the sink).
        self.assertTrue(content.startswith(b'Received: from client.test'), content[:200])
        self.assertNotIn(b'Return-Path:', content)
        self.assertTrue(content.endswith(raw.split(b'\n\n', 1)[1]), content)
        self.assert_queue_empty()
        log = self.p.log_text()
        self.assertRegex(log, r'event=delivery id=\w+ rcpt="bob@remote.test" '
                              r'relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+ delay=\d+ attempts=1 '
                              r'tls="none" tls_verified=- status=sent dsn=2\.0\.0 '
                              r'reply="250 2\.0\.0 Ok: queued as SINK"')
        # A second run finds nothing to send.
        run_queue(self.p)
        run_queue(self.p, now=time.time() + 30 * 86400)
        self.assertEqual(len(self.sink.messages), 1)
        self.assertEqual(self.bounces(), [], 'a bounce for a delivered message')

    def test_recipients_of_a_message_share_one_transaction(self):
        self.submit('alice@local.test', ['bob@remote.test', 'carol@remote.test',
                                         'dave@other.test'])
        run_queue(self.p)
        msgs = self.sink.messages
        # Through the relayhost every recipient goes in one transaction.
        self.assertEqual(len(msgs), 1, msgs)
        self.assertEqual(sorted(msgs[0]['rcpts']),
                         ['bob@remote.test', 'carol@remote.test', 'dave@other.test'])
        self.assert_queue_empty()

    def test_connection_reused_across_messages(self):
        for i in range(3):
            self.submit('alice@local.test', [f'bob{i}@remote.test'], subject=f'n{i}')
        run_queue(self.p)
        msgs = self.sink.messages
        self.assertEqual(len(msgs), 3, msgs)
        self.assertEqual(len({m['peer'] for m in msgs}), 1,
                         f'expected one connection for three messages: {msgs}')
        self.assert_queue_empty()

    def test_8bit_body_intact_with_and_without_8bitmime(self):
        body = 'Grüße, naïve café — ünïcödé\nLatin: \xe9t\xe9\n'.encode('utf-8') + \
            b'raw byte \xff\xfe end\n'
        raw = (b'From: <alice@local.test>\nTo: <bob@remote.test>\nSubject: 8bit\n'
               b'MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n'
               b'Content-Transfer-Encoding: 8bit\n\n' + body)
        self.submit('alice@local.test', ['bob@remote.test'], raw=raw, options=['BODY=8BITMIME'])
        run_queue(self.p)
        msgs = self.sink.messages
        self.assertEqual(len(msgs), 1)
        self.assertTrue(msgs[0]['content'].replace(b'\r\n', b'\n').endswith(b'\n\n' + body))
        self.assertIn('BODY=8BITMIME', msgs[0]['options'])
        # A peer without 8BITMIME gets it anyway (as Postfix does), logged.
        self.sink.handler.strip.add('8BITMIME')
        self.submit('alice@local.test', ['carol@remote.test'], raw=raw, options=['BODY=8BITMIME'])
        run_queue(self.p)
        msgs = self.sink.messages
        self.assertEqual(len(msgs), 2)
        self.assertTrue(msgs[1]['content'].replace(b'\r\n', b'\n').endswith(b'\n\n' + body))
        self.assertNotIn('BODY=8BITMIME', msgs[1]['options'])
        self.assertIn('note=8bit_without_8bitmime', self.p.log_text())
        self.assert_queue_empty()

    def test_smtputf8_addresses(self):
        raw = 'From: <alice@local.test>\nTo: <bøb@remote.test>\nSubject: ütf\n\nhej\n'.encode()
        self.submit('alice@local.test', ['bøb@remote.test'], raw=raw,
                    options=['SMTPUTF8', 'BODY=8BITMIME'])
        run_queue(self.p)
        msgs = self.sink.messages
        self.assertEqual(len(msgs), 1, self.p.log_text()[-3000:])
        self.assertEqual(msgs[0]['rcpts'], ['bøb@remote.test'])
        self.assertIn('SMTPUTF8', msgs[0]['options'])
        # A server without SMTPUTF8 cannot take a UTF-8 address: bounced
        # (RFC 6531 3.2), in a UTF-8 report (RFC 6533).
        self.sink.stop()
        self.sink = self.make_sink(smtputf8=False)
        self.p.set('relayhost', f'[127.0.0.1]:{self.sink.port}')
        self.submit('alice@local.test', ['bøb@remote.test'], raw=raw,
                    options=['SMTPUTF8', 'BODY=8BITMIME'])
        run_queue(self.p)
        self.assertEqual(self.sink.messages, [])
        bounces = self.bounces()
        self.assertEqual(len(bounces), 1)
        parts = bounces[0].get_payload()
        self.assertEqual([x.get_content_type() for x in parts],
                         ['text/plain', 'message/global-delivery-status', 'message/global-headers'])
        report = parts[1].as_bytes().decode()
        self.assertIn('Final-Recipient: utf-8; bøb@remote.test', report)
        self.assertIn('Status: 5.6.7', report)
        self.assert_queue_empty()

    def test_second_runner_exits_quietly_while_one_holds_the_lock(self):
        self.submit('alice@local.test', ['bob@remote.test'])
        lock = os.path.join(self.p.spool_dir, 'queue.lock')
        with open(lock, 'a') as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            t = time.monotonic()
            run_queue(self.p)
            self.assertLess(time.monotonic() - t, 10)
            self.assertEqual(self.sink.messages, [])
            self.assertIn('event=runner result=busy', self.p.log_text())
        run_queue(self.p)
        self.assertEqual(len(self.sink.messages), 1)

    def test_without_once_it_also_drains(self):
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p, once=False)
        self.assertEqual(len(self.sink.messages), 1)
        self.assert_queue_empty()

    def test_mail_queued_during_a_pass_leaves_in_the_same_run(self):
        # systemd does not start postage-queue.service again for a .path
        # event while it runs: mail queued during a slow pass must not
        # wait for the timer. The next hop takes 3 s per message.
        self.sink.handler.data_delay = 3
        for once in (True, False):
            with self.subTest(once=once):
                self.sink.handler.reached.clear()
                before = len(self.sink.messages)
                self.submit('alice@local.test', [f'first{once}@remote.test'], subject='first')
                args = (['--once'] if once else [])
                runner = self.p.spawn(RUNNER, args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    self.assertTrue(self.sink.handler.reached.wait(20), 'first never reached the sink')
                    # The pass is under way (the sink holds the first
                    # message): queue the second now.
                    self.submit('alice@local.test', [f'second{once}@remote.test'], subject='second')
                    runner.wait(timeout=60)
                finally:
                    if runner.poll() is None:
                        runner.kill()
                        runner.wait()
                self.assertEqual(runner.returncode, 0)
                got = [m['rcpts'] for m in self.sink.messages[before:]]
                self.assertEqual(got, [[f'first{once}@remote.test'], [f'second{once}@remote.test']],
                                 'the message queued during the pass did not leave in that run')
                self.assert_queue_empty()

    def test_forward_to_remote_address_goes_through_the_queue(self):
        self.p.add_forward('list@local.test', 'bob@remote.test')
        self.p.add_forward('list@local.test', 'alice@local.test')
        self.p.sql('DELETE FROM relay_networks')  # a stranger may write to a local list
        self.submit('stranger@elsewhere.test', ['list@local.test'])
        self.assertEqual(len(self.p.messages('alice')), 1, 'local member got no copy')
        rows = self.p.sql('SELECT recipient, orig_rcpt FROM queue_recipients')
        self.assertEqual(rows, [('bob@remote.test', 'list@local.test')])
        run_queue(self.p)
        msgs = self.sink.messages
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0]['rcpts'], ['bob@remote.test'])
        self.assert_queue_empty()


class RetryTest(QueueCase):

    def test_451_stays_queued_and_is_retried_after_the_backoff(self):
        h = self.sink.handler
        h.rules['bob@remote.test'] = '451 4.3.0 <bob@remote.test>: try again later'
        self.submit('alice@local.test', ['bob@remote.test'])
        t0 = int(time.time()) + 5
        run_queue(self.p, now=t0)
        rows = self.queue_rows()
        self.assertEqual(len(rows), 1)
        rcpt, state, attempts, next_attempt, last_error, _created = rows[0]
        self.assertEqual((state, attempts), ('queued', 1))
        self.assertEqual(next_attempt, t0 + 5 * 60)
        self.assertEqual(last_error, '451 4.3.0 <bob@remote.test>: try again later')
        self.assertEqual(len(self.spool_files()), 1)
        self.assertIn('status=deferred', self.p.log_text())
        tries = len(h.rcpt_attempts)
        # Not due yet: nothing is tried.
        run_queue(self.p, now=t0 + 299)
        self.assertEqual(len(h.rcpt_attempts), tries)
        # Due: tried again, still 451; the next wait is 15 minutes.
        run_queue(self.p, now=t0 + 300)
        self.assertEqual(len(h.rcpt_attempts), tries + 1)
        self.assertEqual(self.queue_rows()[0][2:4], (2, t0 + 300 + 15 * 60))
        run_queue(self.p, now=t0 + 300 + 15 * 60 - 1)
        self.assertEqual(len(h.rcpt_attempts), tries + 1)
        # The remote takes it now.
        del h.rules['bob@remote.test']
        run_queue(self.p, now=t0 + 300 + 15 * 60)
        self.assertEqual(len(self.sink.messages), 1)
        self.assert_queue_empty()
        self.assertEqual(self.bounces(), [], 'no bounce for a temporary failure')

    def test_backoff_schedule(self):
        h = self.sink.handler
        h.rules['bob@remote.test'] = '451 4.7.1 greylisted'
        self.submit('alice@local.test', ['bob@remote.test'])
        now = int(time.time()) + 5
        waits = []
        for _ in range(7):
            run_queue(self.p, now=now)
            nxt = self.queue_rows()[0][3]
            waits.append(nxt - now)
            now = nxt
        self.assertEqual(waits, [300, 900, 1800, 3600, 7200, 7200, 7200])

    def test_unreachable_relayhost_is_a_temporary_failure(self):
        port = harness._free_port('127.0.0.1')  # nothing listens there
        self.p.set('relayhost', f'[127.0.0.1]:{port}')
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        rows = self.queue_rows()
        self.assertEqual(rows[0][1:3], ('queued', 1))
        self.assertIn(f'connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused', rows[0][4])
        self.assertEqual(self.bounces(), [])

    def test_expiry_after_queue_lifetime_bounces_with_a_clear_reason(self):
        self.sink.handler.rules['bob@remote.test'] = '451 4.2.0 <bob@remote.test>: mailbox busy'
        self.submit('alice@local.test', ['bob@remote.test'], subject='will expire')
        created = self.queue_rows()[0][5]
        run_queue(self.p, now=created + 60)
        self.assertEqual(self.bounces(), [])
        # One second short of 120 hours: retried, still queued, no bounce
        # (a delay warning, since 4 hours have passed).
        run_queue(self.p, now=created + 120 * 3600 - 1)
        self.assertEqual(self.queue_rows()[0][1], 'queued')
        notices = self.bounces()
        self.assertEqual(len(notices), 1)
        self.assertIn('Delayed Mail', notices[0]['Subject'])
        run_queue(self.p, now=created + 120 * 3600)
        self.assert_queue_empty()
        notices = self.bounces()
        self.assertEqual(len(notices), 2, [n['Subject'] for n in notices])
        bounce = [n for n in notices if n['Subject'] == 'Undelivered Mail Returned to Sender']
        self.assertEqual(len(bounce), 1)
        text, blocks, headers = dsn_parts(bounce[0])
        self.assertIn('120 hours', text)
        self.assertIn('queue_lifetime_hours', text)
        self.assertIn('451 4.2.0 <bob@remote.test>: mailbox busy', text)
        self.assertEqual(blocks[1]['Action'], 'failed')
        self.assertEqual(blocks[1]['Status'], '4.2.0')
        self.assertIn('Subject: will expire', headers)
        self.assertIn('reason=expired', self.p.log_text())

    def test_delay_warning_once_after_four_hours(self):
        self.sink.handler.rules['bob@remote.test'] = '451 4.3.0 later'
        self.submit('alice@local.test', ['bob@remote.test'], subject='slow one')
        created = self.queue_rows()[0][5]
        run_queue(self.p, now=created + 60)
        run_queue(self.p, now=created + 3 * 3600)
        self.assertEqual(self.bounces(), [], 'warned before 4 hours')
        run_queue(self.p, now=created + 4 * 3600 + 10)
        notices = self.bounces()
        self.assertEqual(len(notices), 1)
        w = notices[0]
        self.assertEqual(w['Subject'], 'Delayed Mail (still being retried)')
        text, blocks, headers = dsn_parts(w)
        self.assertIn('WARNING ONLY', text)
        self.assertIn('will give up at', text)
        self.assertIn('451 4.3.0 later', text)
        self.assertEqual(blocks[1]['Action'], 'delayed')
        self.assertEqual(blocks[1]['Status'], '4.3.0')
        self.assertTrue(blocks[1]['Will-Retry-Until'])
        self.assertIn('Subject: slow one', headers)
        for hours in (8, 12, 30):
            run_queue(self.p, now=created + hours * 3600)
        self.assertEqual(len(self.bounces()), 1, 'more than one delay warning')
        self.assertEqual(self.queue_rows()[0][1], 'queued')


class BounceTest(QueueCase):

    def check_bounce(self, msg, failed, reply, orig_subject):
        self.assertEqual(msg['Return-Path'], '<>')
        self.assertEqual(msg['From'], f'Mail Delivery System <MAILER-DAEMON@{HOSTNAME}>')
        self.assertEqual(msg['Auto-Submitted'], 'auto-replied')
        text, blocks, headers = dsn_parts(msg)
        self.assertIn(f'<{failed}>', text)
        self.assertIn(reply, text, 'the remote server\'s own words are quoted')
        self.assertEqual(blocks[0]['Reporting-MTA'], f'dns; {HOSTNAME}')
        self.assertEqual(len(blocks), 2, 'one block per failed recipient')
        r = blocks[1]
        self.assertEqual(r['Final-Recipient'], f'rfc822; {failed}')
        self.assertEqual(r['Action'], 'failed')
        self.assertEqual(r['Status'], re.search(r'\d\.\d+\.\d+', reply).group(0))
        self.assertEqual(r['Remote-MTA'], 'dns; 127.0.0.1')
        self.assertEqual(r['Diagnostic-Code'], 'smtp; ' + reply)
        self.assertIn(f'Subject: {orig_subject}', headers)
        self.assertNotIn('Hello from the queue test', headers, 'the body is not sent back')
        return text, blocks

    def test_550_gives_exactly_one_rfc3464_bounce_with_the_remote_text(self):
        reply = '550 5.1.1 <bob@remote.test>: Recipient address rejected: user unknown'
        self.sink.handler.rules['bob@remote.test'] = reply
        self.submit('alice@local.test', ['bob@remote.test'], subject='to nobody')
        run_queue(self.p)
        self.assertEqual(self.sink.messages, [])
        bounces = self.bounces()
        self.assertEqual(len(bounces), 1)
        self.check_bounce(bounces[0], 'bob@remote.test', reply, 'to nobody')
        self.assertIn('in reply to RCPT TO', dsn_parts(bounces[0])[0])
        self.assert_queue_empty()
        run_queue(self.p)
        run_queue(self.p, now=time.time() + 7 * 86400)
        self.assertEqual(len(self.bounces()), 1, 'bounced twice')
        self.assertRegex(self.p.log_text(), r'rcpt="bob@remote.test" .* status=bounced dsn=5\.1\.1')

    def test_remote_utf8_reply_is_kept_in_a_global_delivery_status(self):
        # RFC 6533: message/global-delivery-status carries UTF-8; the
        # remote server's own words reach the sender as it said them.
        reply = '550 5.1.1 <bob@remote.test>: Empfänger unbekannt – Postfach gelöscht'
        self.sink.handler.rules['bob@remote.test'] = reply
        self.submit('alice@local.test', ['bob@remote.test'], subject='utf8 reply')
        run_queue(self.p)
        bounces = self.bounces()
        self.assertEqual(len(bounces), 1)
        parts = bounces[0].get_payload()
        self.assertEqual([p.get_content_type() for p in parts],
                         ['text/plain', 'message/global-delivery-status', 'message/global-headers'])
        with open(self.p.messages('alice')[0], 'rb') as f:
            raw = f.read()
        self.assertIn(('Diagnostic-Code: smtp; ' + reply).encode(), raw)
        self.assertIn(reply.encode(), parts[0].get_payload(decode=True))
        self.assertNotIn(b'??', raw)
        self.assertIn('Final-Recipient: rfc822; bob@remote.test', raw.decode())
        # The log stays ASCII: the same words, escaped.
        log = self.p.log_text()
        self.assertIn('Empf\\xc3\\xa4nger', log)
        self.assertTrue(all(32 <= ord(c) < 127 or c == '\n' for c in log), 'non-ASCII in the log')
        self.assert_queue_empty()

    def test_partial_failure_bounces_only_the_refused_one(self):
        for pipelining in (False, True):
            with self.subTest(pipelining=pipelining):
                h = self.sink.handler
                h.add = ['PIPELINING'] if pipelining else []
                reply = '550 5.1.1 <bob@remote.test>: no such user here'
                h.rules['bob@remote.test'] = reply
                before = len(self.bounces())
                n = len(self.sink.messages)
                self.submit('alice@local.test', ['bob@remote.test', 'carol@remote.test'],
                            subject=f'half {pipelining}')
                run_queue(self.p)
                msgs = self.sink.messages[n:]
                self.assertEqual(len(msgs), 1)
                self.assertEqual(msgs[0]['rcpts'], ['carol@remote.test'])
                # Both RCPTs went over one connection, in one transaction.
                peers = {a[0] for a in h.rcpt_attempts[-2:]}
                self.assertEqual(len(peers), 1)
                bounces = self.bounces()
                self.assertEqual(len(bounces), before + 1)
                new = [b for b in bounces if f'half {pipelining}' in dsn_parts(b)[2]]
                self.assertEqual(len(new), 1)
                text, blocks = self.check_bounce(new[0], 'bob@remote.test', reply,
                                                 f'half {pipelining}')
                self.assertNotIn('carol@remote.test', text.split('attached.')[1])
                self.assertNotIn('carol', str(blocks[1]))
                self.assert_queue_empty()

    def test_550_at_end_of_data(self):
        self.sink.handler.data_reply = '554 5.7.1 Message rejected: looks like spam to us'
        self.submit('alice@local.test', ['bob@remote.test', 'carol@remote.test'],
                    subject='spammy')
        run_queue(self.p)
        bounces = self.bounces()
        self.assertEqual(len(bounces), 1)
        text, blocks, _ = dsn_parts(bounces[0])
        self.assertEqual(len(blocks), 3, 'both recipients in one bounce')
        self.assertIn('554 5.7.1 Message rejected: looks like spam to us', text)
        self.assertIn('in reply to end of DATA', text)
        self.assertEqual({b['Final-Recipient'] for b in blocks[1:]},
                         {'rfc822; bob@remote.test', 'rfc822; carol@remote.test'})
        self.assert_queue_empty()

    def test_null_sender_is_never_bounced(self):
        self.sink.handler.rules['bob@remote.test'] = '550 5.1.1 unknown'
        self.submit('', ['bob@remote.test'], subject='a bounce itself')
        run_queue(self.p)
        self.assertEqual(self.bounces(), [])
        self.assert_queue_empty()
        self.assertEqual(self.sink.messages, [])
        self.assertIn('event=bounce result=dropped', self.p.log_text())
        self.assertIn('reason=null_sender', self.p.log_text())

    def test_remote_sender_gets_the_bounce_through_the_queue(self):
        reply = '550 5.2.1 <bob@remote.test>: mailbox disabled'
        self.sink.handler.rules['bob@remote.test'] = reply
        self.submit('someone@elsewhere.test', ['bob@remote.test'], subject='from afar')
        # The bounce is queued, and leaves in the same run: a run goes on
        # while anything queued meanwhile is due.
        run_queue(self.p)
        self.assertEqual(self.bounces(), [])
        self.assertRegex(self.p.log_text(), r'event=delivery id=\w+ rcpt="someone@elsewhere\.test" '
                                            r'.* status=sent')
        msgs = self.sink.messages
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0]['mail_from'], '<>', 'a bounce has the null sender')
        self.assertEqual(msgs[0]['rcpts'], ['someone@elsewhere.test'])
        bounce = email.message_from_bytes(msgs[0]['content'], policy=email.policy.compat32)
        text, blocks, headers = dsn_parts(bounce)
        self.assertIn(reply, text)
        self.assertEqual(blocks[1]['Final-Recipient'], 'rfc822; bob@remote.test')
        self.assertIn('Subject: from afar', headers)
        self.assert_queue_empty()

    def test_bounce_of_forwarded_mail_goes_to_the_original_sender(self):
        # The forward sends bob's copy on with an SRS sender of ours; the
        # bounce for it must reach the original sender, not the SRS form.
        self.p.add_forward('list@local.test', 'bob@remote.test')
        self.p.sql('DELETE FROM relay_networks')
        reply = '550 5.1.1 <bob@remote.test>: gone'
        self.sink.handler.rules['bob@remote.test'] = reply
        self.submit('stranger@elsewhere.test', ['list@local.test'], subject='to the list')
        run_queue(self.p)
        msgs = self.sink.messages
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0]['rcpts'], ['stranger@elsewhere.test'])
        bounce = email.message_from_bytes(msgs[0]['content'], policy=email.policy.compat32)
        self.assertEqual(bounce['To'], '<stranger@elsewhere.test>')
        text, blocks, headers = dsn_parts(bounce)
        self.assertIn(reply, text)
        self.assertEqual(blocks[1]['Original-Recipient'], 'rfc822; list@local.test')
        self.assertIn('Subject: to the list', headers)
        self.assertIn('event=bounce result=srs_reversed', self.p.log_text())
        self.assert_queue_empty()

    def test_message_too_big_for_the_remote_bounces_before_sending(self):
        self.sink.stop()
        self.sink = self.make_sink(data_size_limit=2000)
        self.p.set('relayhost', f'[127.0.0.1]:{self.sink.port}')
        self.submit('alice@local.test', ['bob@remote.test'], body='x' * 70 + '\n' * 1 + 'y' * 5000)
        run_queue(self.p)
        self.assertEqual(self.sink.messages, [])
        bounces = self.bounces()
        self.assertEqual(len(bounces), 1)
        text, blocks, _ = dsn_parts(bounces[0])
        self.assertIn('exceeds the size limit 2000', text)
        self.assertEqual(blocks[1]['Status'], '5.3.4')


class TLSTest(QueueCase):
    """STARTTLS to the relayhost, and where its password may go
    (relayhost_tls, relayhost_tls_ca; issue 19). The certificates: a
    private CA (trusted only through relayhost_tls_ca), server
    certificates it signed, and a self-signed one naming 127.0.0.1 as an
    attacker on the path would make."""

    sink_kw = {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d = cls.certdir
        cls.ca = make_ca(d)
        cls.ip_cert = make_signed_cert(d, 'ip-127.0.0.1', cls.ca, ['IP:127.0.0.1'])
        cls.other_ip_cert = make_signed_cert(d, 'ip-127.0.0.2', cls.ca,
                                             ['IP:127.0.0.2', 'DNS:sink.test'])
        cls.cn_only_cert = make_signed_cert(d, 'cn-127.0.0.1', cls.ca, [], cn='127.0.0.1')
        cls.forged_cert = make_self_signed(d, 'forged-127.0.0.1', ['IP:127.0.0.1'])

    def setUp(self):
        super().setUp()
        self.sink.stop()

    def use_sink(self, **kw):
        self.sink = self.make_sink(**kw)
        self.p.set('relayhost', f'[127.0.0.1]:{self.sink.port}')

    def with_login(self):
        self.p.set('relayhost_login', RELAY_LOGIN)
        self.p.set('relayhost_password', RELAY_PASSWORD)

    def send_via(self, tls=None, ca=None, login=False, **sink_kw):
        """A sink (make_sink's keywords) as the relayhost, relayhost_tls
        and relayhost_tls_ca set when given, the relayhost login when
        login; then alice's message to bob@remote.test is submitted and
        the queue run once."""
        self.use_sink(**sink_kw)
        if tls is not None:
            self.p.set('relayhost_tls', tls)
        if ca is not None:
            self.p.set('relayhost_tls_ca', ca)
        if login:
            self.with_login()
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)

    def assert_sent_with_login(self):
        """One message reached the sink, over TLS, after AUTH PLAIN with
        the relayhost login."""
        msgs = self.sink.messages
        self.assertEqual(len(msgs), 1, self.p.log_text()[-3000:])
        self.assertTrue(msgs[0]['tls'])
        self.assertEqual(self.sink.handler.auth_attempts, [('PLAIN', RELAY_LOGIN)])

    def recipient_row(self):
        rows = self.p.sql('SELECT state, attempts, last_status, last_error FROM queue_recipients')
        self.assertEqual(len(rows), 1, rows)
        return rows[0]

    def assert_deferred_unseen(self, attempts=1):
        """Deferred with 4.7.5; the sink got no AUTH and no transaction;
        nothing bounced. Returns the recorded reason."""
        h = self.sink.handler
        self.assertEqual(h.auth_attempts, [],
                         'the relayhost password went to a server relayhost_tls does not accept')
        self.assertEqual(h.rcpt_attempts, [], 'a transaction went to a server relayhost_tls '
                         'does not accept')
        self.assertEqual(self.sink.messages, [])
        state, n, status, error = self.recipient_row()
        self.assertEqual((state, n, status), ('queued', attempts, '4.7.5'),
                         f'{error}\n{self.p.log_text()[-3000:]}')
        self.assertEqual(len(self.spool_files()), 1)
        self.assertEqual(self.bounces(), [], 'bounced instead of deferred')
        self.assertNotIn(RELAY_PASSWORD, self.p.log_text())
        return error

    def test_starttls_used_when_offered(self):
        self.send_via(tls_cert=self.cert)
        msgs = self.sink.messages
        self.assertEqual(len(msgs), 1)
        self.assertTrue(msgs[0]['tls'], 'sent in clear although STARTTLS was offered')
        log = self.p.log_text()
        # No login, no relayhost_tls: "may". Self-signed: used, but not
        # verified, and the log says so.
        self.assertRegex(log, r'status=sent')
        self.assertRegex(log, r'tls="TLSv1\.[23] with cipher [^"]+" tls_verified=no status=sent')
        self.assertIn('event=client_tls result=ok mode=starttls', log)
        self.assert_queue_empty()

    def test_starttls_with_an_mx_that_only_speaks_cbc(self):
        """Our server side offers no CBC and no static RSA (issue 18), but
        outbound TLS is opportunistic: refusing an old MX's suites would
        send the mail in clear, so the queue runner still takes them."""
        self.send_via(tls_cert=self.cert, tls_ciphers='AES128-SHA')
        msgs = self.sink.messages
        self.assertEqual(len(msgs), 1)
        self.assertTrue(msgs[0]['tls'], 'sent in clear to an MX offering only AES128-SHA')
        self.assertRegex(self.p.log_text(),
                         r'event=client_tls result=ok mode=starttls .*'
                         r'tls="TLSv1\.2 with cipher TLS_RSA_WITH_AES_128_CBC_SHA ')
        self.assert_queue_empty()

    def test_relayhost_auth_over_tls(self):
        self.send_via(ca=self.ca[0], login=True, tls_cert=self.ip_cert, auth=True)
        self.assert_sent_with_login()
        self.assertIn('event=relay_auth result=ok', self.p.log_text())
        self.assertNotIn(RELAY_PASSWORD, self.p.log_text())
        self.assert_queue_empty()

    def test_relayhost_auth_login_when_plain_is_not_offered(self):
        self.use_sink(tls_cert=self.cert, auth=True)
        self.sink.handler.add = []
        self.p.set('relayhost_tls', 'encrypt')
        self.with_login()

        async def ehlo(server, session, envelope, hostname, responses):
            session.host_name = hostname
            return [r.replace('AUTH LOGIN PLAIN', 'AUTH LOGIN') for r in responses]
        self.sink.handler.handle_EHLO = ehlo
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        self.assertEqual(len(self.sink.messages), 1, self.p.log_text()[-3000:])
        self.assertEqual(self.sink.handler.auth_attempts, [('LOGIN', RELAY_LOGIN)])

    def test_wrong_relayhost_password_defers(self):
        self.use_sink(tls_cert=self.ip_cert, auth=True)
        self.p.set('relayhost_tls_ca', self.ca[0])
        self.p.set('relayhost_login', RELAY_LOGIN)
        self.p.set('relayhost_password', 'not-the-password')
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        self.assertEqual(self.sink.messages, [])
        rows = self.queue_rows()
        self.assertEqual(rows[0][1], 'queued')
        self.assertIn('535', rows[0][4])
        self.assertEqual(self.bounces(), [])

    def test_relayhost_password_never_sent_without_tls(self):
        # relayhost_tls=may (opportunistic) with a login: AUTH is offered
        # in clear text, and the runner must not use it.
        self.send_via(tls='may', login=True, auth=True, auth_require_tls=False)
        self.assertEqual(self.sink.handler.auth_attempts, [], 'password sent without TLS')
        self.assertEqual(self.sink.messages, [])
        rows = self.queue_rows()
        self.assertEqual(rows[0][1:3], ('queued', 1))
        self.assertIn('without TLS', rows[0][4])
        self.assertEqual(self.recipient_row()[2], '4.7.5')
        self.assertIn('event=relay_auth result=refused', self.p.log_text())
        self.assertNotIn(RELAY_PASSWORD, self.p.log_text())
        self.assertEqual(self.bounces(), [])

    # -- relayhost_tls=verify, the default with a login --------------------

    def test_default_with_a_login_refuses_a_certificate_nobody_vouches_for(self):
        # The attack: someone on the path answers for [127.0.0.1] with a
        # self-signed certificate that names the address. Before
        # relayhost_tls the runner logged verified=no and sent the password.
        self.send_via(login=True, tls_cert=self.forged_cert, auth=True)
        error = self.assert_deferred_unseen()
        self.assertIn('certificate of 127.0.0.1[127.0.0.1]', error)
        self.assertIn('not verified', error)
        self.assertIn('issuer is not trusted', error)
        log = self.p.log_text()
        self.assertIn('event=client_tls result=ok mode=starttls host=127.0.0.1', log)
        self.assertIn('verified=no', log)
        self.assertIn('event=relay_tls result=refused level=verify', log)
        # Still deferred on the next try, never bounced.
        run_queue(self.p, now=time.time() + 3600)
        self.assert_deferred_unseen(attempts=2)

    def test_verify_with_relayhost_tls_ca_and_an_ip_literal(self):
        self.send_via(ca=self.ca[0], login=True, tls_cert=self.ip_cert, auth=True)
        self.assert_sent_with_login()
        log = self.p.log_text()
        self.assertRegex(log, r'tls="TLSv1\.[23] with cipher [^"]+" tls_verified=yes status=sent')
        self.assertRegex(log, r'event=client_tls result=ok mode=starttls host=127\.0\.0\.1 '
                              r'ip=127\.0\.0\.1 tls="[^"]+" verified=yes')
        # No server name for an address (RFC 6066 3).
        self.assertEqual(self.sink.handler.sni, [None])
        self.assert_queue_empty()

    def test_verify_refuses_a_trusted_certificate_for_another_address(self):
        # Signed by the trusted CA, but for 127.0.0.2 (and a name): a
        # certificate of someone else.
        self.send_via(ca=self.ca[0], login=True, tls_cert=self.other_ip_cert, auth=True)
        error = self.assert_deferred_unseen()
        self.assertIn('does not name 127.0.0.1', error)

    def test_verify_needs_the_address_in_subject_alt_name(self):
        # 127.0.0.1 as the common name is not enough: an address is
        # matched only against the certificate's IP address entries.
        self.send_via(ca=self.ca[0], login=True, tls_cert=self.cn_only_cert, auth=True)
        self.assertIn('does not name 127.0.0.1', self.assert_deferred_unseen())

    def test_verify_without_a_login_keeps_the_mail_from_a_stranger(self):
        # relayhost_tls=verify set by hand: the mail itself waits too.
        self.send_via(tls='verify', tls_cert=self.forged_cert)
        self.assert_deferred_unseen()

    def test_verify_without_starttls_defers_and_never_sends_the_password(self):
        # STARTTLS stripped from the EHLO reply; AUTH offered in clear.
        self.send_via(login=True, auth=True, auth_require_tls=False)
        self.assertIn('does not offer STARTTLS', self.assert_deferred_unseen())

    def test_unknown_relayhost_tls_is_taken_as_verify(self):
        self.send_via(tls='verfy', login=True, tls_cert=self.forged_cert, auth=True)
        self.assert_deferred_unseen()
        self.assertIn('event=config result=bad_relayhost_tls relayhost_tls="verfy" using=verify',
                      self.p.log_text())

    def test_unreadable_relayhost_tls_ca_is_logged_and_trusts_nothing_more(self):
        self.send_via(ca=os.path.join(self.certdir, 'no-such-ca.pem'), login=True,
                      tls_cert=self.ip_cert, auth=True)
        self.assert_deferred_unseen()
        self.assertIn('event=tls result=bad_ca ca_file=', self.p.log_text())

    # -- relayhost_tls=encrypt: TLS required, any certificate ---------------

    def test_encrypt_takes_any_certificate_and_says_it_is_unverified(self):
        self.send_via(tls='encrypt', login=True, tls_cert=self.forged_cert, auth=True)
        self.assert_sent_with_login()
        self.assertRegex(self.p.log_text(), r'tls_verified=no status=sent')
        self.assert_queue_empty()

    def test_encrypt_without_starttls_sends_nothing_in_clear(self):
        # No login: what must not go in clear is the mail itself.
        self.send_via(tls='encrypt')
        self.assertIn('does not offer STARTTLS', self.assert_deferred_unseen())

    def test_encrypt_without_starttls_never_sends_the_password(self):
        self.send_via(tls='encrypt', login=True, auth=True, auth_require_tls=False)
        self.assert_deferred_unseen()

    def test_encrypt_does_not_retry_in_clear_after_a_failed_handshake(self):
        # STARTTLS offered, but no handshake can succeed (the server speaks
        # TLS 1.1 at most): "may" retries in clear, "encrypt" must not.
        self.use_sink(tls_cert=self.cert, auth=True, auth_require_tls=False,
                      tls_max_version=ssl.TLSVersion.TLSv1_1)
        self.p.set('relayhost_tls', 'encrypt')
        self.with_login()
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        self.assertIn('TLS handshake with 127.0.0.1[127.0.0.1] failed', self.assert_deferred_unseen())
        # The same server under "may" and no login gets the mail in clear,
        # as before (Postfix's "may").
        self.p.set('relayhost_tls', 'may')
        self.p.set('relayhost_login', None)
        run_queue(self.p, now=time.time() + 3600)
        self.assertEqual(len(self.sink.messages), 1, self.p.log_text()[-3000:])
        self.assertFalse(self.sink.messages[0]['tls'])
        self.assertEqual(self.sink.handler.auth_attempts, [])


class ClientRobustnessTest(QueueCase):
    """The SMTP client against replies no polite server gives."""

    def scripted(self, **replies):
        srv = ScriptedServer(**replies)
        self.addCleanup(srv.stop)
        self.p.set('relayhost', f'[127.0.0.1]:{srv.port}')
        return srv

    def deferred_with(self, text):
        rows = self.queue_rows()
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual(rows[0][1:3], ('queued', 1), rows)
        self.assertIn(text, rows[0][4])
        self.assertEqual(self.bounces(), [])
        return rows[0][4]

    def test_wire_form_crlf_and_dot_stuffing(self):
        srv = self.scripted()
        self.submit('alice@local.test', ['bob@remote.test'],
                    body='.starts with a dot\n..two\n.\nplain\n. space\nend')
        run_queue(self.p)
        self.assertEqual(len(srv.data), 1, self.p.log_text()[-3000:])
        data = srv.data[0]
        self.assertNotIn(b'\n', data.replace(b'\r\n', b''), 'a bare LF on the wire')
        self.assertNotIn(b'\r', data.replace(b'\r\n', b''), 'a bare CR on the wire')
        body = data.split(b'\r\n\r\n', 1)[1]
        self.assertEqual(body, b'..starts with a dot\r\n...two\r\n..\r\nplain\r\n.. space\r\n'
                               b'end\r\n')
        self.assertTrue(data.startswith(b'Received: '))
        cmds = [l.split(b':')[0] for l in srv.lines]
        self.assertEqual(cmds[:4], [b'EHLO mx.test.example\r\n', b'MAIL FROM', b'RCPT TO', b'DATA\r\n'])
        self.assertRegex(srv.lines[1], rb'^MAIL FROM:<alice@local.test> SIZE=\d+\r\n$')
        self.assert_queue_empty()

    def test_pipelining_sends_mail_rcpt_data_in_one_batch(self):
        # The server reads MAIL, both RCPTs and DATA before it answers
        # anything: a client that waited for the MAIL reply would time out.
        srv = self.scripted(EHLO=b'250-scripted.test\r\n250 PIPELINING\r\n')
        batch = {}

        def session(conn, f=None):
            f = conn.makefile('rb')
            conn.sendall(srv.replies['greeting'])
            f.readline()
            conn.sendall(srv.replies['EHLO'])
            conn.settimeout(5)
            got = [f.readline() for _ in range(4)]
            batch['lines'] = got
            conn.sendall(b'250 ok\r\n250 ok\r\n550 5.1.1 no carol\r\n354 go\r\n')
            while f.readline() not in (b'.\r\n', b''):
                pass
            conn.sendall(b'250 2.0.0 taken\r\n')
            if f.readline().startswith(b'QUIT'):
                conn.sendall(b'221 bye\r\n')
        srv._session = session
        self.submit('alice@local.test', ['bob@remote.test', 'carol@remote.test'])
        run_queue(self.p)
        self.assertEqual([l.split(b':')[0].strip() for l in batch.get('lines', [])],
                         [b'MAIL FROM', b'RCPT TO', b'RCPT TO', b'DATA'])
        self.assertEqual(len(self.bounces()), 1)
        text, blocks, _ = dsn_parts(self.bounces()[0])
        self.assertEqual(blocks[1]['Final-Recipient'], 'rfc822; carol@remote.test')
        self.assertIn('550 5.1.1 no carol', text)
        self.assert_queue_empty()

    def test_greeting_421_defers(self):
        self.scripted(greeting=b'421 4.3.2 Service not available, closing channel\r\n')
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        self.deferred_with('421 4.3.2 Service not available, closing channel')

    def test_multiline_reply_quoted_whole_in_the_bounce(self):
        self.scripted(RCPT=b'550-5.1.1 The email account that you tried to reach does not\r\n'
                           b'550-5.1.1 exist. Please try double-checking the recipient\'s\r\n'
                           b'550 5.1.1 address for typos. xyz - gsmtp\r\n')
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        text, blocks, _ = dsn_parts(self.bounces()[0])
        self.assertIn('550 5.1.1 The email account that you tried to reach does not 5.1.1 exist.', text)
        self.assertIn('address for typos. xyz - gsmtp', text)
        self.assertEqual(blocks[1]['Status'], '5.1.1')
        self.assert_queue_empty()

    def test_broken_utf8_and_control_bytes_in_a_reply_become_question_marks(self):
        # Well-formed UTF-8 is kept; a lone 0xff, an overlong sequence, a
        # surrogate and a control byte are not.
        self.scripted(RCPT='550 5.1.1 gut: ü, schlecht: '.encode() +
                      b'\xff \xc0\xaf \xed\xa0\x80 \x1b[31m end\r\n')
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        with open(self.p.messages('alice')[0], 'rb') as f:
            raw = f.read()
        self.assertIn('Diagnostic-Code: smtp; 550 5.1.1 gut: ü, schlecht: ? ?? ??? ?[31m end'.encode(),
                      raw)
        self.assert_queue_empty()

    def test_overlong_reply_line_is_a_protocol_error(self):
        self.scripted(EHLO=b'250-' + b'x' * 5000 + b'\r\n250 OK\r\n')
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        self.deferred_with('protocol error')

    def test_endless_multiline_reply_is_a_protocol_error(self):
        self.scripted(EHLO=b'250-more\r\n' * 5000 + b'250 OK\r\n')
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        self.deferred_with('protocol error')

    def test_garbage_reply_is_a_protocol_error(self):
        self.scripted(MAIL=b'hello, I am not an SMTP server\r\n')
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        self.deferred_with('protocol error')

    def test_connection_dropped_after_rcpt_defers(self):
        self.scripted(RCPT=None)
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        self.deferred_with('lost connection with 127.0.0.1[127.0.0.1] while sending RCPT TO')

    def test_helo_when_ehlo_is_unknown(self):
        srv = self.scripted(EHLO=b'502 5.5.2 what is EHLO\r\n')
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        self.assertEqual(len(srv.data), 1)
        self.assertIn(b'HELO mx.test.example\r\n', srv.lines)
        self.assert_queue_empty()

    def test_temporary_failure_at_end_of_data(self):
        self.scripted(dot=b'452 4.3.1 Insufficient system storage\r\n')
        self.submit('alice@local.test', ['bob@remote.test'])
        run_queue(self.p)
        self.deferred_with('452 4.3.1 Insufficient system storage')


class HousekeepingTest(QueueCase):

    # README's mailq: what is waiting, and why.
    MAILQ = ("SELECT m.id, datetime(m.created_at, 'unixepoch') AS queued, m.sender, "
             "r.recipient, r.attempts, datetime(r.next_attempt, 'unixepoch') AS next_try, "
             "r.last_error FROM queue_messages m JOIN queue_recipients r "
             "ON r.message_id = m.id WHERE r.state = 'queued' ORDER BY m.created_at")

    def test_mailq_query(self):
        self.sink.handler.rules['bob@remote.test'] = '451 4.7.1 greylisted, come back later'
        self.submit('alice@local.test', ['bob@remote.test', 'carol@remote.test'])
        run_queue(self.p)
        rows = self.p.sql(self.MAILQ)
        self.assertEqual(len(rows), 1)
        _id, queued, sender, rcpt, attempts, next_try, error = rows[0]
        self.assertEqual((sender, rcpt, attempts), ('alice@local.test', 'bob@remote.test', 1))
        self.assertEqual(error, '451 4.7.1 greylisted, come back later')
        self.assertTrue(queued and next_try > queued)

    def test_rows_without_their_queue_file_are_dropped_not_bounced(self):
        self.submit('alice@local.test', ['bob@remote.test'])
        name, = self.spool_files()
        os.unlink(os.path.join(self.p.spool_dir, 'queue', name))
        run_queue(self.p)
        self.assertEqual(self.sink.messages, [])
        self.assertEqual(self.bounces(), [])
        self.assert_queue_empty()
        self.assertIn(f'event=queue_drop id={name}', self.p.log_text())

    def begin_big_data(self):
        """A session in the middle of a DATA past STAGING_MEMORY_MAX (so
        staged on disk): returns (socket, its reader, handler pid, staging
        path)."""
        tdir = os.path.join(self.p.spool_dir, 'tmp')
        before = set(os.listdir(tdir)) if os.path.isdir(tdir) else set()
        pids_before = set(self.srv.handler_pids())
        sock = self.srv.connect(timeout=30)
        f = sock.makefile('rb')
        f.readline()
        for line in (b'EHLO client.test', b'MAIL FROM:<alice@local.test>',
                     b'RCPT TO:<bob@remote.test>', b'DATA'):
            sock.sendall(line + b'\r\n')
            while True:
                reply = f.readline()
                if reply[3:4] != b'-':
                    break
        self.assertTrue(reply.startswith(b'354'), reply)
        sock.sendall(b'Subject: big\r\n\r\n' + (b'x' * 998 + b'\r\n') * 1600)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = set(os.listdir(tdir)) if os.path.isdir(tdir) else set()
            if now - before:
                break
            time.sleep(0.05)
        new = sorted((set(os.listdir(tdir)) if os.path.isdir(tdir) else set()) - before)
        self.assertEqual(len(new), 1, f'no staging file on disk: {new}')
        pid, = set(self.srv.handler_pids()) - pids_before
        return sock, f, pid, os.path.join(tdir, new[0])

    def wait_gone(self, pid):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid in self.srv.handler_pids():
            time.sleep(0.02)
        self.assertNotIn(pid, self.srv.handler_pids())

    def test_staging_file_of_a_stopped_session_does_not_stay(self):
        # SIGTERM (systemctl stop, RuntimeMaxSec=): gone at once.
        sock, reader, pid, path = self.begin_big_data()
        os.kill(pid, signal.SIGTERM)
        self.wait_gone(pid)
        sock.close()
        self.assertFalse(os.path.exists(path), 'staging file left after SIGTERM')
        # SIGKILL: left, but unlocked; the runner sweeps it once it is
        # older than a minute, not before.
        sock, reader, pid, path = self.begin_big_data()
        os.kill(pid, signal.SIGKILL)
        self.wait_gone(pid)
        sock.close()
        self.assertTrue(os.path.exists(path))
        run_queue(self.p)
        self.assertTrue(os.path.exists(path), 'a young staging file was swept')
        old = time.time() - 120
        os.utime(path, (old, old))
        run_queue(self.p)
        self.assertFalse(os.path.exists(path), 'the dead session\'s staging file was not swept')
        self.assertIn(f'event=sweep result=removed file=tmp/{os.path.basename(path)}',
                      self.p.log_text())
        # A live session's file stays however old it looks, and its
        # message is then accepted whole.
        sock, reader, pid, path = self.begin_big_data()
        old = time.time() - 7200
        os.utime(path, (old, old))
        run_queue(self.p)
        self.assertTrue(os.path.exists(path), 'a live session\'s staging file was swept')
        sock.sendall(b'.\r\n')
        self.assertTrue(reader.readline().startswith(b'250'))
        sock.sendall(b'QUIT\r\n')
        sock.close()
        run_queue(self.p)
        got = [m for m in self.sink.messages if b'Subject: big' in m['content']]
        self.assertEqual(len(got), 1)
        self.assertGreater(len(got[0]['content']), 1600 * 998)
        self.assert_queue_empty()

    def test_orphans_swept_only_when_old(self):
        qdir = os.path.join(self.p.spool_dir, 'queue')
        tdir = os.path.join(self.p.spool_dir, 'tmp')
        os.makedirs(qdir, exist_ok=True)
        os.makedirs(tdir, exist_ok=True)
        old = time.time() - 3 * 86400
        paths = {}
        for d, name, age in ((qdir, '00000000DEADBEEF', old), (qdir, '00000000CAFEBABE', None),
                             (tdir, 'staging-old', old), (tdir, 'staging-young', None)):
            path = os.path.join(d, name)
            with open(path, 'w') as f:
                f.write('Subject: orphan\n\nx\n')
            if age:
                os.utime(path, (age, age))
            paths[name] = path
        # An old queue file that the database still knows stays.
        self.submit('alice@local.test', ['bob@remote.test'])
        self.sink.handler.rules['bob@remote.test'] = '451 4.3.0 later'
        known, = [f for f in self.spool_files() if f not in paths]
        os.utime(os.path.join(qdir, known), (old, old))
        run_queue(self.p)
        self.assertFalse(os.path.exists(paths['00000000DEADBEEF']))
        self.assertFalse(os.path.exists(paths['staging-old']))
        self.assertTrue(os.path.exists(paths['00000000CAFEBABE']))
        self.assertTrue(os.path.exists(paths['staging-young']))
        self.assertTrue(os.path.exists(os.path.join(qdir, known)), 'a queued message was swept')
        self.assertIn('event=sweep result=removed file=queue/00000000DEADBEEF', self.p.log_text())


class CrashTest(QueueCase):

    def lock_free_within(self, seconds):
        path = os.path.join(self.p.spool_dir, 'queue.lock')
        deadline = time.monotonic() + seconds
        with open(path, 'a') as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(f, fcntl.LOCK_UN)
                    return True
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.05)

    def test_sigkill_mid_transaction_then_run_again_delivers(self):
        # 'rcpt': killed before the message was sent: exactly one copy
        # later. 'reply': killed after the sink took the message, before
        # its reply came: the next run sends it again (at most one extra
        # copy, never lost).
        # 'parent': only the parent is killed, during RCPT; its delivery
        # process must not live on (holding the lock, sending unrecorded).
        for phase, copies in (('rcpt', (1,)), ('reply', (2,)), ('parent', (1,))):
            with self.subTest(phase=phase):
                h = self.sink.handler
                h.reached.clear()
                setattr(h, 'data_delay' if phase == 'reply' else 'rcpt_delay', 30.0)
                n = len(self.sink.messages)
                subject = b'Subject: kill ' + phase.encode()
                self.submit('alice@local.test', ['bob@remote.test'], subject=f'kill {phase}')
                proc = subprocess.Popen([harness.binary(RUNNER), '--db', self.p.db, '--once'],
                                        env=self.p.env(), start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    self.assertTrue(h.reached.wait(30), 'the runner never got that far')
                    time.sleep(0.2)
                    if phase == 'parent':
                        os.kill(proc.pid, signal.SIGKILL)
                    else:
                        os.killpg(proc.pid, signal.SIGKILL)
                finally:
                    proc.wait(timeout=30)
                self.assertEqual(proc.returncode, -signal.SIGKILL)
                self.assertTrue(self.lock_free_within(5), 'a delivery process outlived the runner')
                # The queue still has it, and the lock is free again.
                self.assertEqual(self.p.sql('SELECT state FROM queue_recipients'), [('queued',)])
                h.rcpt_delay = h.data_delay = 0
                run_queue(self.p)
                got = [m for m in self.sink.messages[n:] if subject in m['content']]
                self.assertIn(len(got), copies, got)
                self.assert_queue_empty()
                run_queue(self.p)
                self.assertEqual(len([m for m in self.sink.messages[n:]
                                      if subject in m['content']]), len(got))


if __name__ == '__main__':
    harness.main()
