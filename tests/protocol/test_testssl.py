"""testssl.sh, as an auditor runs it (issue 18), against implicit TLS on
465 and 995 and STARTTLS on 587 (SMTP) and 110 (POP3), all on loopback:
no finding of severity LOW or above, except the two that a self-signed
certificate gets whatever the server does (EXEMPT).

465 and 587 serve an RSA certificate (static RSA key exchange and DHE
exist only with one), 995 and 110 a P-256 ECDSA one. Each certificate
names mx.test.example and 127.0.0.1 and lives a year, so testssl.sh's
name and expiry checks pass as they would for a real certificate.

A full testssl.sh run takes two minutes or more a port here, so each port
gets the checks that bear on what issue 18 changed; the TLS code and
priority behind the four are the same, and test_tls_policy.py checks
the same things directly on every port:
  -s cipher categories (NULL, export, RC4, 3DES, CBC: what SWEET32,
     LUCKY13 and FREAK follow from), on 465 (with an ECDSA certificate
     the suites are a subset of these)
  -P the server's cipher order, on 465
  -S server defaults (the certificate, session tickets), on 995
  -R renegotiation, on all four: it is what differed between implicit TLS
     and STARTTLS
The README's "Checking TLS" gives the full commands; what they check
besides is protocol versions (test_tls_smtp.py refuses TLS 1.1), forward
secrecy (no suite without it is left), OpenSSL's bugs (Heartbleed, CCS)
and HTTP's (BREACH).

testssl.sh makes no DNS query (--nodns none, an IP address as the
target) and talks to nothing but the servers here."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Postage  # noqa: E402
from smtp_base import make_cert  # noqa: E402

SMTP = 'smtp-handler/smtp-handler'
POP3 = 'pop3-handler/pop3-handler'

# name: (certificate, program, arguments, testssl.sh --starttls, checks)
PORTS = {
    '465': ('rsa', SMTP, ['--mode=submissions'], None, ['-s', '-P', '-R']),
    '995': ('ec', POP3, ['--tls'], None, ['-S', '-R']),
    '587': ('rsa', SMTP, ['--mode=submission'], 'smtp', ['-R']),
    '110': ('ec', POP3, [], 'pop3', ['-R']),
}

# Findings that any self-signed certificate gets, and only those: the
# chain ends in no trusted CA, and a certificate no CA issued has no CRL
# or OCSP address. id: a word its finding must hold.
EXEMPT = {
    'cert_chain_of_trust': 'self signed',
    'cert_revocation': 'Neither CRL nor OCSP URI provided',
}

FAILING = ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')

# Findings each check must have made (whatever their verdict), so that a
# check that did not run cannot pass for one that found nothing.
# (testssl.sh 3.0 says PFS where 3.1 says FS.)
EXPECTED = {
    '-p': ('TLS1_2',), '-s': ('cipherlist_AVERAGE',), '-f': ('PFS', 'FS'),
    '-P': ('cipher_order',), '-S': ('cert_chain_of_trust',), '-R': ('secure_client_renego',),
}

TESTSSL_TIMEOUT = 300


def testssl_binary():
    return shutil.which('testssl') or shutil.which('testssl.sh')


def run_testssl(exe, host, port, starttls, checks, jsonfile):
    cmd = [exe, '--quiet', '--color', '0', '--warnings', 'off', '--nodns', 'none',
           '--connect-timeout', '10', '--openssl-timeout', '10', '--jsonfile', jsonfile]
    if starttls:
        cmd += ['--starttls', starttls]
    cmd += checks + [f'{host}:{port}']
    # A pause after each ClientHello sent, 0.1 s by default, is for
    # servers across a network; the replies are waited for all the same.
    env = dict(os.environ, USLEEP_SND='0.01')
    started = time.monotonic()
    # Its own process group, so that a run that hangs is ended with every
    # openssl it started.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TESTSSL_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f'\n(killed after {TESTSSL_TIMEOUT} s)'.encode()
    r = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    return cmd, r, time.monotonic() - started


class TestSSL(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.exe = testssl_binary()
        if not cls.exe:
            raise unittest.SkipTest('testssl.sh is not installed (package testssl.sh)')
        cls.tmp = tempfile.mkdtemp(prefix='postage-testssl-')
        cls.installs = {}
        cls.servers = {}
        try:
            for kind in ('rsa', 'ec'):
                p = Postage().__enter__()
                cls.installs[kind] = p
                cert, key = make_cert(p.dir, kind=kind, days=365,
                                      san='DNS:mx.test.example,IP:127.0.0.1')
                p.set('tls_cert', cert)
                p.set('tls_key', key)
            for name, (kind, prog, args, _, _) in PORTS.items():
                cls.servers[name] = cls.installs[kind].serve(prog, args)
        except BaseException:
            cls.cleanup()
            raise

    @classmethod
    def cleanup(cls):
        for p in cls.installs.values():
            p.__exit__(None, None, None)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        try:
            for p in cls.installs.values():
                p.check_sanitizers()
        finally:
            cls.cleanup()

    def test_no_finding_at_low_or_above(self):
        def scan(name):
            _, _, _, starttls, checks = PORTS[name]
            srv = self.servers[name]
            jsonfile = os.path.join(self.tmp, f'{name}.json')
            return name, jsonfile, run_testssl(self.exe, srv.host, srv.port, starttls,
                                               checks, jsonfile)

        # Two at a time: testssl.sh is a shell script that forks for much
        # of what it does, and two cores is what CI has.
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(scan, PORTS))

        problems = []
        for name, jsonfile, (cmd, r, seconds) in results:
            print(f'testssl.sh on {name}: {seconds:.0f} s, exit {r.returncode}: '
                  + ' '.join(cmd), file=sys.stderr)
            try:
                with open(jsonfile) as f:
                    findings = json.load(f)
            except (OSError, ValueError) as e:
                problems.append(f'{name}: no JSON from testssl.sh ({e}); exit {r.returncode}\n'
                                + r.stdout.decode(errors='replace')[-3000:]
                                + r.stderr.decode(errors='replace')[-2000:])
                continue
            ids = {f['id'] for f in findings}
            for check in PORTS[name][4]:
                if not ids.intersection(EXPECTED[check]):
                    problems.append(f'{name}: {check} reported no {EXPECTED[check][0]}: '
                                    'the check did not run')
            for f in findings:
                sev, fid, text = f['severity'], f['id'], f.get('finding', '')
                if fid in EXEMPT and EXEMPT[fid] in text:
                    continue
                if sev in FAILING or sev == 'FATAL':
                    problems.append(f'{name}: {fid} {sev}: {text}')
        if problems:
            self.fail('testssl.sh findings:\n' + '\n'.join(problems))


if __name__ == '__main__':
    harness.main()
