"""MX lookup of the queue runner (issue 7) against a real DNS server.

The whole file runs inside a private network and mount namespace
(`unshare --net --mount`, with `--map-root-user` when not root): loopback
is brought up, a temporary resolv.conf saying `nameserver 127.0.0.1` is
bind-mounted over /etc/resolv.conf, and dnsmasq serves the test zone on
127.0.0.1:53. The SMTP sinks (aiosmtpd, from test_queue.py) listen on port
25 of other loopback addresses (127.0.0.x, ::1), so no relayhost is set
and the runner finds its way by MX records alone. Skips (exit 77) when
namespaces are not permitted or dnsmasq is missing.

The zone (all under .test, answered only from here: --local=/test/):
  mx.test       MX 10 mx1.mx.test (127.0.0.2, nobody listens)
                MX 20 mx2.mx.test (127.0.0.3, a sink)
  eq.test       MX 10 eqa.mx.test (127.0.0.4), MX 10 eqb.mx.test (127.0.0.5)
  amx.test      no MX, A 127.0.0.6                 (implicit MX)
  nullmx.test   MX 0 .                             (RFC 7505)
  txtonly.test  TXT only: no MX, no address
  v6mx.test     MX 10 v6.mx.test (AAAA ::1 only)
  relay.test    MX 10 relaymx.test (127.0.0.7), and A 127.0.0.8
  broken.test   forwarded to a server that does not answer: SERVFAIL
  nosuch.test   NXDOMAIN
  self.test     MX 10 <our hostname>                (mail loops back to us)
  selfbest.test MX 5 <our hostname>, MX 10 backup.mx.test (127.0.0.12)
  selfbackup.test MX 5 primary.mx.test (127.0.0.11), MX 10 <our hostname>
  ouraddr.test  MX 10 ouraddr.mx.test (192.0.2.25, on a veth of this namespace)
  greets.test   MX 10 greets.mx.test (127.0.0.13: a server greeting with our name)
  smarthost.test MX 10 out.smarthost.test (127.0.0.14)
  host.test     MX 10 badhost.test (127.0.0.15: ends in host.test, is not under it)

RelayTLSTest checks relayhost_tls=verify by name (issue 19) here, where
names resolve: certificates from a private CA (trusted through
relayhost_tls_ca) and self-signed ones, made with openssl.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

INSIDE = 'POSTAGE_QUEUE_NETNS'


def reexec_in_namespace():
    """Runs this file again inside new net+mount namespaces; exits with its
    status, or 77 when that is not possible here."""
    for tool in ('unshare', 'ip', 'mount'):
        if not shutil.which(tool):
            harness.skip_file(f'{tool} is not installed')
    if not shutil.which('dnsmasq'):
        harness.skip_file('dnsmasq is not installed (package dnsmasq-base)')
    base = ['unshare', '--net', '--mount']
    if os.geteuid() != 0:
        base.insert(1, '--map-root-user')
    harness.rerun_unshared(base, INSIDE, 'network namespaces')


if __name__ == '__main__' and os.environ.get(INSIDE) != '1':
    reexec_in_namespace()

from test_queue import (RELAY_LOGIN, RELAY_PASSWORD, SMTP, Sink,  # noqa: E402
                        dsn_parts, local_postage, make_ca, make_cert, make_self_signed,
                        make_signed_cert, parse, run_queue)

DNSMASQ_RECORDS = [
    '--mx-host=mx.test,mx1.mx.test,10',
    '--mx-host=mx.test,mx2.mx.test,20',
    '--host-record=mx1.mx.test,127.0.0.2',
    '--host-record=mx2.mx.test,127.0.0.3',
    '--mx-host=eq.test,eqa.mx.test,10',
    '--mx-host=eq.test,eqb.mx.test,10',
    '--host-record=eqa.mx.test,127.0.0.4',
    '--host-record=eqb.mx.test,127.0.0.5',
    '--host-record=amx.test,127.0.0.6',
    '--mx-host=nullmx.test,.,0',
    '--txt-record=txtonly.test,no mail here',
    '--mx-host=v6mx.test,v6.mx.test,10',
    '--host-record=v6.mx.test,::1',
    '--mx-host=relay.test,relaymx.test,10',
    '--host-record=relaymx.test,127.0.0.7',
    '--host-record=relay.test,127.0.0.8',
    f'--mx-host=self.test,{harness.HOSTNAME},10',
    f'--mx-host=selfbest.test,{harness.HOSTNAME},5',
    '--mx-host=selfbest.test,backup.mx.test,10',
    '--host-record=backup.mx.test,127.0.0.12',
    '--mx-host=selfbackup.test,primary.mx.test,5',
    f'--mx-host=selfbackup.test,{harness.HOSTNAME},10',
    '--host-record=primary.mx.test,127.0.0.11',
    '--mx-host=ouraddr.test,ouraddr.mx.test,10',
    '--host-record=ouraddr.mx.test,192.0.2.25',
    '--mx-host=greets.test,greets.mx.test,10',
    '--host-record=greets.mx.test,127.0.0.13',
    '--mx-host=smarthost.test,out.smarthost.test,10',
    '--host-record=out.smarthost.test,127.0.0.14',
    '--mx-host=host.test,badhost.test,10',
    '--host-record=badhost.test,127.0.0.15',
]

_state = {}


def setUpModule():
    if os.environ.get(INSIDE) != '1':
        raise unittest.SkipTest('must run inside its network namespace (run the file itself)')
    tmp = tempfile.mkdtemp(prefix='postage-mx-')
    _state['tmp'] = tmp
    try:
        subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True, capture_output=True)
        # An address of this host that is not loopback (TEST-NET-1, on a
        # veth pair that exists only in this namespace).
        for cmd in (['ip', 'link', 'add', 'pgv0', 'type', 'veth', 'peer', 'name', 'pgv1'],
                    ['ip', 'addr', 'add', '192.0.2.25/24', 'dev', 'pgv0'],
                    ['ip', 'link', 'set', 'pgv0', 'up']):
            if subprocess.run(cmd, capture_output=True).returncode != 0:
                _state['no_veth'] = ' '.join(cmd)
                break
        resolv = os.path.join(tmp, 'resolv.conf')
        with open(resolv, 'w') as f:
            f.write('nameserver 127.0.0.1\noptions timeout:1 attempts:2\n')
        subprocess.run(['mount', '--bind', resolv, '/etc/resolv.conf'], check=True,
                       capture_output=True)
    except subprocess.CalledProcessError as e:
        raise unittest.SkipTest(f'cannot set up the namespace: {e.stderr.decode(errors="replace")}')
    log = open(os.path.join(tmp, 'dnsmasq.log'), 'wb')
    # --user=root --group=: no privilege change (impossible in a user
    # namespace, pointless in a throwaway one).
    dns = subprocess.Popen(
        ['dnsmasq', '--keep-in-foreground', '--no-resolv', '--no-hosts', '--no-poll',
         '--listen-address=127.0.0.1', '--bind-interfaces', '--port=53', '--user=root',
         '--group=', '--pid-file=', '--log-facility=-', '--log-queries', '--local=/test/',
         '--server=/broken.test/127.0.0.1#5399'] + DNSMASQ_RECORDS,
        stdout=log, stderr=subprocess.STDOUT)
    log.close()
    _state['dns'] = dns
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if dns.poll() is not None:
            with open(os.path.join(tmp, 'dnsmasq.log')) as f:
                raise RuntimeError('dnsmasq did not start: ' + f.read())
        try:
            socket.getaddrinfo('mx1.mx.test', 25, socket.AF_UNSPEC, socket.SOCK_STREAM)
            return
        except socket.gaierror:
            time.sleep(0.05)
    raise RuntimeError('dnsmasq does not answer on 127.0.0.1:53')


def tearDownModule():
    dns = _state.get('dns')
    if dns:
        dns.terminate()
        dns.wait(timeout=10)
    if _state.get('tmp'):
        shutil.rmtree(_state['tmp'], ignore_errors=True)


class MXCase(unittest.TestCase):
    """A postage with local.test (alice) and no relayhost."""

    def setUp(self):
        p = self.p = local_postage(self)
        self.srv = p.serve(SMTP, ['--mode=mx'])

    def tearDown(self):
        self.p.check_sanitizers()

    def sink(self, host, port=25, **kw):
        s = Sink(host=host, port=port, **kw)
        self.addCleanup(s.stop)
        return s

    def submit(self, rcpts, subject='mx test', sender='alice@local.test'):
        import smtplib
        raw = (f'From: <{sender}>\nTo: <{rcpts[0]}>\nSubject: {subject}\n\n'
               'Hello through DNS.\n').encode()
        with smtplib.SMTP(self.srv.host, self.srv.port, timeout=30) as s:
            self.assertEqual(s.sendmail(sender, rcpts, raw.replace(b'\n', b'\r\n')), {})

    def rows(self):
        return self.p.sql('SELECT recipient, state, attempts, last_error FROM queue_recipients '
                          'ORDER BY recipient')

    def only_bounce(self):
        msgs = self.p.messages('alice')
        self.assertEqual(len(msgs), 1, self.p.log_text()[-3000:])
        return dsn_parts(parse(msgs[0]))


class MXTest(MXCase):

    def test_mx_by_preference_then_the_next_host(self):
        mx2 = self.sink('127.0.0.3')
        self.submit(['bob@mx.test', 'carol@mx.test'])
        run_queue(self.p)
        msgs = mx2.messages
        self.assertEqual(len(msgs), 1, self.p.log_text()[-3000:])
        self.assertEqual(sorted(msgs[0]['rcpts']), ['bob@mx.test', 'carol@mx.test'])
        log = self.p.log_text()
        # The preferred host (10) was tried first and refused the connection.
        self.assertIn('event=connect result=failed host=mx1.mx.test ip=127.0.0.2 port=25', log)
        self.assertIn('relay=mx2.mx.test[127.0.0.3]:25', log)
        self.assertLess(log.index('host=mx1.mx.test'), log.index('relay=mx2.mx.test'))
        self.assertEqual(self.rows(), [])

    def test_no_mx_falls_back_to_the_address(self):
        a = self.sink('127.0.0.6')
        self.submit(['dave@amx.test'])
        run_queue(self.p)
        self.assertEqual(len(a.messages), 1, self.p.log_text()[-3000:])
        self.assertIn('relay=amx.test[127.0.0.6]:25', self.p.log_text())

    def test_one_message_to_two_domains_two_hosts(self):
        mx2 = self.sink('127.0.0.3')
        a = self.sink('127.0.0.6')
        self.submit(['bob@mx.test', 'dave@amx.test', 'erin@MX.test'])
        run_queue(self.p)
        self.assertEqual([sorted(m['rcpts']) for m in mx2.messages],
                         [['bob@mx.test', 'erin@mx.test']])
        self.assertEqual([m['rcpts'] for m in a.messages], [['dave@amx.test']])
        self.assertEqual(self.rows(), [])

    def test_null_mx_is_an_immediate_permanent_failure(self):
        self.submit(['x@nullmx.test'], subject='to null mx')
        run_queue(self.p)
        text, blocks, headers = self.only_bounce()
        self.assertIn('null MX', text)
        self.assertEqual(blocks[1]['Status'], '5.1.10')
        self.assertEqual(blocks[1]['Final-Recipient'], 'rfc822; x@nullmx.test')
        self.assertIsNone(blocks[1]['Remote-MTA'], 'no server was involved')
        self.assertTrue(blocks[1]['Diagnostic-Code'].startswith('X-Postage; '))
        self.assertIn('Subject: to null mx', headers)
        self.assertEqual(self.rows(), [])

    def test_nxdomain_bounces(self):
        self.submit(['x@nosuch.test'])
        run_queue(self.p)
        text, blocks, _ = self.only_bounce()
        self.assertIn('nosuch.test does not exist', text)
        self.assertEqual(blocks[1]['Status'], '5.1.2')

    def test_no_mx_and_no_address_bounces(self):
        self.submit(['x@txtonly.test'])
        run_queue(self.p)
        text, blocks, _ = self.only_bounce()
        self.assertIn('txtonly.test has no address', text)
        self.assertEqual(blocks[1]['Status'], '5.1.2')

    def test_dns_temporary_failure_defers(self):
        self.submit(['x@broken.test'])
        run_queue(self.p)
        rows = self.rows()
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][1:3], ('queued', 1))
        self.assertIn('temporary DNS failure', rows[0][3])
        self.assertEqual(self.p.messages('alice'), [])

    def test_ipv6_only_mx_host(self):
        if not harness.have_ipv6_loopback():
            self.skipTest('no IPv6 loopback in this namespace')
        v6 = self.sink('::1')
        self.submit(['x@v6mx.test'])
        run_queue(self.p)
        self.assertEqual(len(v6.messages), 1, self.p.log_text()[-3000:])
        self.assertIn('relay=v6.mx.test[::1]:25', self.p.log_text())

    def test_equal_preference_hosts_are_both_used(self):
        a, b = self.sink('127.0.0.4'), self.sink('127.0.0.5')
        for i in range(16):
            self.submit([f'u{i}@eq.test'])
            run_queue(self.p)
        self.assertEqual(len(a.messages) + len(b.messages), 16)
        # Random order among equals: with 16 tries both are used, unless
        # the coin came up the same 16 times (p = 2^-15).
        self.assertGreater(len(a.messages), 0)
        self.assertGreater(len(b.messages), 0)

    def test_domains_are_served_in_parallel(self):
        slow1, slow2 = self.sink('127.0.0.3'), self.sink('127.0.0.6')
        slow1.handler.data_delay = slow2.handler.data_delay = 2.0
        self.submit(['bob@mx.test'])
        self.submit(['dave@amx.test'])
        run_queue(self.p)
        (_, s1, e1), = slow1.handler.sessions
        (_, s2, e2), = slow2.handler.sessions
        self.assertLess(max(s1, s2), min(e1, e2), 'the two domains were served one after another')

    def test_relayhost_host_port_uses_mx_and_brackets_do_not(self):
        via_mx = self.sink('127.0.0.7', port=2525)
        via_a = self.sink('127.0.0.8', port=2525)
        self.p.set('relayhost', 'relay.test:2525')
        self.submit(['x@anywhere.example'])
        run_queue(self.p)
        self.assertEqual((len(via_mx.messages), len(via_a.messages)), (1, 0))
        self.p.set('relayhost', '[relay.test]:2525')
        self.submit(['y@anywhere.example'])
        run_queue(self.p)
        self.assertEqual((len(via_mx.messages), len(via_a.messages)), (1, 1))
        self.assertEqual(self.rows(), [])

    def test_relayhost_on_port_465_uses_implicit_tls(self):
        # RFC 8314: a submission server on 465 speaks TLS from the start.
        certdir = tempfile.mkdtemp(prefix='postage-mx-cert-')
        self.addCleanup(shutil.rmtree, certdir, True)
        # (aiosmtpd does not know its implicit TLS is TLS: it must be told
        # to offer AUTH anyway.)
        smtps = self.sink('127.0.0.10', port=465, tls_cert=make_cert(certdir), implicit_tls=True,
                          auth=True, auth_require_tls=False)
        self.p.set('relayhost', '[127.0.0.10]:465')
        # Self-signed: TLS without verification (RelayTLSTest verifies).
        self.p.set('relayhost_tls', 'encrypt')
        self.p.set('relayhost_login', RELAY_LOGIN)
        self.p.set('relayhost_password', RELAY_PASSWORD)
        self.submit(['x@anywhere.example'])
        run_queue(self.p)
        self.assertEqual(len(smtps.messages), 1, self.p.log_text()[-3000:])
        self.assertEqual(smtps.handler.auth_attempts, [('PLAIN', RELAY_LOGIN)])
        self.assertIn('event=client_tls result=ok mode=implicit', self.p.log_text())

    def test_relayhost_tls_leaves_mx_delivery_opportunistic(self):
        # relayhost_tls is about the relayhost: without one, an MX with a
        # certificate nobody vouches for still gets its mail over TLS.
        certdir = tempfile.mkdtemp(prefix='postage-mx-cert-')
        self.addCleanup(shutil.rmtree, certdir, True)
        a = self.sink('127.0.0.6', tls_cert=make_cert(certdir))
        self.p.set('relayhost_tls', 'verify')
        self.p.set('relayhost_login', RELAY_LOGIN)
        self.p.set('relayhost_password', RELAY_PASSWORD)
        self.submit(['dave@amx.test'])
        run_queue(self.p)
        self.assertEqual(len(a.messages), 1, self.p.log_text()[-3000:])
        self.assertTrue(a.messages[0]['tls'])
        self.assertEqual(a.handler.auth_attempts, [])
        self.assertIn('tls_verified=no status=sent', self.p.log_text())

    def test_address_literal_recipient(self):
        lit = self.sink('127.0.0.9')
        self.submit(['postmaster@[127.0.0.9]'])
        run_queue(self.p)
        self.assertEqual([m['rcpts'] for m in lit.messages], [['postmaster@[127.0.0.9]']],
                         self.p.log_text()[-3000:])

    # -- mail that would come back to us (a domain whose MX is this host,
    # but which is not in domains) bounces, as in Postfix --------------------

    def assert_loop_bounce(self, domain):
        text, blocks, _ = self.only_bounce()
        self.assertEqual(blocks[1]['Status'], '5.4.6', self.p.log_text()[-3000:])
        self.assertIn(f'mail for {domain} loops back to myself', text)
        self.assertIn(f'mail for {domain} loops back to myself', blocks[1]['Diagnostic-Code'])
        self.assertEqual(self.rows(), [])
        self.assertIn(f'event=connect result=loop host={domain}', self.p.log_text())

    def test_mx_named_as_us_bounces_without_a_connection(self):
        self.submit(['bob@self.test'])
        run_queue(self.p)
        self.assert_loop_bounce('self.test')
        self.assertNotIn(f'host={harness.HOSTNAME} ip=', self.p.log_text())

    def test_when_we_are_the_best_mx_a_less_preferred_one_is_not_used(self):
        backup = self.sink('127.0.0.12')
        self.submit(['bob@selfbest.test'])
        run_queue(self.p)
        self.assert_loop_bounce('selfbest.test')
        self.assertEqual(backup.messages, [], 'the backup MX got mail the best MX (us) should take')

    def test_a_more_preferred_mx_than_us_still_gets_the_mail(self):
        primary = self.sink('127.0.0.11')
        self.submit(['bob@selfbackup.test'])
        run_queue(self.p)
        self.assertEqual([m['rcpts'] for m in primary.messages], [['bob@selfbackup.test']],
                         self.p.log_text()[-3000:])
        self.assertEqual(self.p.messages('alice'), [], 'a bounce for delivered mail')
        # With the primary down, the mail waits: it never comes to us.
        primary.stop()
        self.submit(['carol@selfbackup.test'])
        run_queue(self.p)
        self.assertEqual([r[:2] for r in self.rows()], [('carol@selfbackup.test', 'queued')])

    def test_mx_at_one_of_our_addresses_bounces_without_a_connection(self):
        if _state.get('no_veth'):
            self.skipTest('cannot add a veth address here: ' + _state['no_veth'])
        self.submit(['bob@ouraddr.test'])
        run_queue(self.p)
        self.assert_loop_bounce('ouraddr.test')
        self.assertNotIn('ip=192.0.2.25', self.p.log_text())

    def test_server_greeting_with_our_name_bounces(self):
        us = self.sink('127.0.0.13', server_hostname=harness.HOSTNAME)
        self.submit(['bob@greets.test'])
        run_queue(self.p)
        self.assert_loop_bounce('greets.test')
        self.assertEqual(us.messages, [])

    def test_relayhost_greeting_with_our_name_defers(self):
        # Our own setting pointing back here: deferred, never bounced.
        us = self.sink('127.0.0.13', server_hostname=harness.HOSTNAME)
        self.p.set('relayhost', '[127.0.0.13]:25')
        self.submit(['bob@far.test'])
        run_queue(self.p)
        self.assertEqual(us.messages, [])
        self.assertEqual(self.p.messages('alice'), [], 'bounced instead of deferred')
        (rcpt, state, _attempts, error), = self.rows()
        self.assertEqual((rcpt, state), ('bob@far.test', 'queued'))
        self.assertIn('relayhost 127.0.0.13 loops back to myself', error)


class RelayTLSTest(MXCase):
    """relayhost_tls=verify, the default with a login, by name: the
    certificate must chain to a trusted CA and name the relayhost as
    configured. For host:port (MX looked up) the MX host's own name counts
    only within the relayhost's domain: the MX answer is not
    authenticated, so whoever forges it must still show a certificate
    for a name under the relayhost's."""

    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.mkdtemp(prefix='postage-relaytls-')
        d = cls.certdir
        cls.ca = make_ca(d)
        cls.relay_cert = make_signed_cert(d, 'relay.test', cls.ca, ['DNS:relay.test'])
        cls.other_cert = make_signed_cert(d, 'other.test', cls.ca, ['DNS:other.test', 'IP:127.0.0.8'])
        cls.relaymx_cert = make_signed_cert(d, 'relaymx.test', cls.ca, ['DNS:relaymx.test'])
        cls.out_cert = make_signed_cert(d, 'out.smarthost.test', cls.ca, ['DNS:out.smarthost.test'])
        cls.badhost_cert = make_signed_cert(d, 'badhost.test', cls.ca, ['DNS:badhost.test'])
        cls.ip10_cert = make_signed_cert(d, 'ip-127.0.0.10', cls.ca, ['IP:127.0.0.10'])
        cls.forged_ip10 = make_self_signed(d, 'forged-127.0.0.10', ['IP:127.0.0.10'])
        cls.forged_relay = make_self_signed(d, 'forged-relay.test', ['DNS:relay.test'])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certdir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.p.set('relayhost_login', RELAY_LOGIN)
        self.p.set('relayhost_password', RELAY_PASSWORD)
        self.p.set('relayhost_tls_ca', self.ca[0])

    def tls_sink(self, host, cert, port=2525, implicit=False):
        return self.sink(host, port=port, tls_cert=cert, auth=True, implicit_tls=implicit,
                         auth_require_tls=not implicit)

    def send(self, relayhost):
        self.p.set('relayhost', relayhost)
        self.submit(['x@anywhere.example'])
        run_queue(self.p)

    def assert_delivered_verified(self, sink, sni):
        log = self.p.log_text()
        self.assertEqual(len(sink.messages), 1, log[-3000:])
        self.assertEqual(sink.handler.auth_attempts, [('PLAIN', RELAY_LOGIN)])
        self.assertRegex(log, r'tls_verified=yes status=sent')
        self.assertEqual(sink.handler.sni, [sni])
        self.assertEqual(self.rows(), [])

    def assert_deferred_unseen(self, sink):
        """Deferred (4.7.5), not bounced; the server saw no AUTH and no
        transaction. Returns the recorded reason."""
        self.assertEqual(sink.handler.auth_attempts, [],
                         'the relayhost password went to a server relayhost_tls does not accept')
        self.assertEqual(sink.handler.rcpt_attempts, [])
        self.assertEqual(sink.messages, [])
        (state, status, error), = self.p.sql('SELECT state, last_status, last_error '
                                             'FROM queue_recipients')
        self.assertEqual((state, status), ('queued', '4.7.5'), error)
        self.assertEqual(self.p.messages('alice'), [], 'bounced instead of deferred')
        self.assertNotIn(RELAY_PASSWORD, self.p.log_text())
        return error

    def test_bracketed_name_verified_against_the_name(self):
        s = self.tls_sink('127.0.0.8', self.relay_cert)
        self.send('[relay.test]:2525')
        self.assert_delivered_verified(s, 'relay.test')

    def test_bracketed_name_refuses_a_trusted_certificate_for_another_name(self):
        # Signed by the trusted CA, even for the address connected to, but
        # not for relay.test.
        s = self.tls_sink('127.0.0.8', self.other_cert)
        self.send('[relay.test]:2525')
        self.assertIn('does not name relay.test', self.assert_deferred_unseen(s))

    def test_bracketed_name_refuses_a_self_signed_certificate_with_the_name(self):
        s = self.tls_sink('127.0.0.8', self.forged_relay)
        self.send('[relay.test]:2525')
        self.assertIn('issuer is not trusted', self.assert_deferred_unseen(s))

    def test_mx_host_outside_the_relayhost_domain_is_not_trusted_by_its_own_name(self):
        # relay.test:2525 has MX relaymx.test (127.0.0.7). Anyone who can
        # forge that answer can name a host of their own with a valid
        # certificate: the certificate must name relay.test.
        s = self.tls_sink('127.0.0.7', self.relaymx_cert)
        self.send('relay.test:2525')
        self.assertIn('does not name relay.test', self.assert_deferred_unseen(s))

    def test_mx_host_with_a_certificate_for_the_relayhost_name(self):
        s = self.tls_sink('127.0.0.7', self.relay_cert)
        self.send('relay.test:2525')
        # SNI names the host connected to.
        self.assert_delivered_verified(s, 'relaymx.test')

    def test_mx_host_within_the_relayhost_domain_by_its_own_name(self):
        s = self.tls_sink('127.0.0.14', self.out_cert)
        self.send('smarthost.test:2525')
        self.assert_delivered_verified(s, 'out.smarthost.test')

    def test_mx_host_merely_ending_in_the_relayhost_name_is_not_within_it(self):
        # badhost.test ends in "host.test" but is no name under it.
        s = self.tls_sink('127.0.0.15', self.badhost_cert)
        self.send('host.test:2525')
        self.assertIn('does not name host.test', self.assert_deferred_unseen(s))

    def test_implicit_tls_on_465_verified(self):
        s = self.tls_sink('127.0.0.10', self.ip10_cert, port=465, implicit=True)
        self.send('[127.0.0.10]:465')
        self.assert_delivered_verified(s, None)
        self.assertIn('event=client_tls result=ok mode=implicit', self.p.log_text())

    def test_implicit_tls_on_465_by_name(self):
        s = self.tls_sink('127.0.0.8', self.relay_cert, port=465, implicit=True)
        self.send('[relay.test]:465')
        self.assert_delivered_verified(s, 'relay.test')

    def test_implicit_tls_on_465_refuses_a_forged_certificate(self):
        s = self.tls_sink('127.0.0.10', self.forged_ip10, port=465, implicit=True)
        self.send('[127.0.0.10]:465')
        self.assertIn('issuer is not trusted', self.assert_deferred_unseen(s))


if __name__ == '__main__':
    harness.main()
