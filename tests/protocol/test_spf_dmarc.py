"""Inbound checks on --mode=mx: SPF (MAIL FROM and HELO), DKIM
verification, DMARC, the Authentication-Results field and the policy
settings dmarc_reject and spf_reject_fail.

Everything runs in a private network namespace (netns.py): dnsmasq on
127.0.0.1 serves the test domains' records, the client connects from
198.51.100.7 (outside) to postage on 192.0.2.1. SPF verdicts are compared
with python3-spf's for the same records; DKIM signatures are made by
python3-dkim (and by postage itself); the Authentication-Results field is
parsed with python3-authres.

Run: POSTAGE_BUILD=build /usr/bin/python3 tests/protocol/test_spf_dmarc.py -v
"""
import base64
import email.parser
import email.policy
import email.utils
import os
import re
import smtplib
import subprocess
import sys
import tempfile
import shutil
import unittest
import uuid
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns  # noqa: E402
from harness import Postage, optional_module, smtp_quit  # noqa: E402

warnings.simplefilter('ignore', DeprecationWarning)
spf = optional_module('spf')
dkim = optional_module('dkim')
authres = optional_module('authres')

SMTP = 'smtp-handler/smtp-handler'
SERVER = '192.0.2.1'
CLIENT = '198.51.100.7'
CLIENT6 = '2001:db8::7'
RELAY_CLIENT = '192.0.2.20'
HOST = 'mx.test.example'
BODY_MARKER = 'auth-body-never-in-logs-31337'
EXPLANATION = "%{i} is not one of %{d}'s designated mail servers; see http://%{d}/why?s=%{S}"

# SPF records: name -> TXT. Names outside the local zones (test, example)
# get REFUSED from dnsmasq, a temporary error.
SPF = {
    'pass.example': 'v=spf1 ip4:198.51.100.0/24 ip6:2001:db8::/64 -all',
    'fail.example': 'v=spf1 ip4:203.0.113.5 -all',
    'soft.example': 'v=spf1 ip4:203.0.113.5 ~all',
    'neutral.example': 'v=spf1 ?all',
    'redir.example': 'v=spf1 redirect=pass.example',
    'amx.example': 'v=spf1 mx a:host.amx.example/32 -all',
    'amxfail.example': 'v=spf1 mx -all',
    'macro.example': 'v=spf1 exists:%{i}._spf.%{d} -all',
    'incl.example': 'v=spf1 include:neutral.example include:pass.example -all',
    'many.example': 'v=spf1 ' + ' '.join(f'include:n{i}.example' for i in range(11)) + ' -all',
    'void.example': 'v=spf1 a:v1.example a:v2.example a:v3.example ip4:198.51.100.7 -all',
    'bad.example': 'v=spf1 foo:bar.example -all',
    'two.example': ('v=spf1 -all', 'v=spf1 +all'),
    'mail.pass.example': 'v=spf1 a -all',
    # exp= (RFC 7208 6.2): the failing record's own explanation only.
    'expl.example': 'v=spf1 ip4:203.0.113.5 -all exp=why._spf.%{d}',
    'exinc.example': 'v=spf1 include:expl.example -all',
    'exred.example': 'v=spf1 exp=why._spf.exinc.example redirect=expl.example',
    'exnone.example': 'v=spf1 -all exp=missing._spf.%{d}',
    'exsoft.example': 'v=spf1 ~all exp=why._spf.expl.example',
    # DMARC test domains, with SPF that passes for the client.
    'reject.example': 'v=spf1 -all',
    'quar.example': 'v=spf1 -all',
    'pnone.example': 'v=spf1 -all',
    'aligned.example': 'v=spf1 ip4:198.51.100.7 -all',
    'signed.example': 'v=spf1 -all',
    'sub.orgpol.example': 'v=spf1 -all',
    # 公司.cn (xn--55qx5d.cn) is a public suffix: shop. and other. under
    # it are two registrants, each its own organizational domain.
    'shop.xn--55qx5d.cn': 'v=spf1 ip4:198.51.100.0/24 -all',
    'other.xn--55qx5d.cn': 'v=spf1 ip4:198.51.100.0/24 -all',
    # p=reject, and its own SPF ends in a temporary error (temp.invalid
    # is outside the local zones: REFUSED).
    'tempalign.example': 'v=spf1 include:temp.invalid -all',
}
for i in range(11):
    SPF[f'n{i}.example'] = 'v=spf1 ?all'

DMARC = {
    'reject.example': 'v=DMARC1; p=reject',
    'quar.example': 'v=DMARC1; p=quarantine; adkim=r',
    'pnone.example': 'v=DMARC1; p=none; rua=mailto:dmarc@pnone.example',
    'aligned.example': 'v=DMARC1; p=reject; aspf=s',
    'signed.example': 'v=DMARC1; p=reject; adkim=s',
    'orgpol.example': 'v=DMARC1; p=none; sp=reject',
    'example.test': 'v=DMARC1; p=reject',
    'shop.xn--55qx5d.cn': 'v=DMARC1; p=reject',
    'tempalign.example': 'v=DMARC1; p=reject',
}
# The zones the test DNS server answers for itself (NXDOMAIN for what it
# does not know); any other name gets REFUSED, a temporary error.
LOCAL_ZONES = ('test', 'example', 'cn')


def crlf(b):
    return b.replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')


def openssl(*args):
    return subprocess.run(['openssl'] + list(args), capture_output=True, check=True).stdout


class ChecksTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keydir = tempfile.mkdtemp(prefix='postage-authres-')
        os.chmod(cls.keydir, 0o755)
        rsa = os.path.join(cls.keydir, 'rsa.pem')
        openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', rsa)
        cls.rsa_path = rsa
        cls.rsa_pem = openssl('rsa', '-in', rsa, '-traditional')
        cls.rsa_pub = base64.b64encode(openssl('pkey', '-in', rsa, '-pubout', '-outform', 'DER')).decode()
        ed = os.path.join(cls.keydir, 'ed.pem')
        openssl('genpkey', '-algorithm', 'ed25519', '-out', ed)
        cls.ed_path = ed
        der = openssl('pkey', '-in', ed, '-outform', 'DER')
        cls.ed_seed = base64.b64encode(der[-32:])
        cls.ed_pub = base64.b64encode(openssl('pkey', '-in', ed, '-pubout', '-outform', 'DER')[-32:]).decode()

        d = cls.dns = netns.DnsServer(local_zones=LOCAL_ZONES)
        for name, txt in SPF.items():
            d.txt(name, *(txt if isinstance(txt, tuple) else (txt,)))
        for name, txt in DMARC.items():
            d.txt('_dmarc.' + name, txt)
        d.mx('amx.example', 'mail.amx.example')
        d.a('mail.amx.example', CLIENT)
        d.a('host.amx.example', '203.0.113.9')
        d.mx('amxfail.example', 'mx1.amxfail.example')
        d.a('mx1.amxfail.example', '203.0.113.10')
        d.a('198.51.100.7._spf.macro.example', '127.0.0.2')
        d.txt('why._spf.expl.example', EXPLANATION)
        d.txt('why._spf.exinc.example', 'never shown: the redirecting record')
        d.a('mail.pass.example', CLIENT)
        d.a('unrelated.example', '203.0.113.11')
        for dom in ('signed.example', 'reject.example', 'example.test'):
            d.txt(f'rsa._domainkey.{dom}', f'v=DKIM1; k=rsa; p={cls.rsa_pub}')
            d.txt(f'ed._domainkey.{dom}', f'v=DKIM1; k=ed25519; p={cls.ed_pub}')
        d.txt('revoked._domainkey.signed.example', 'v=DKIM1; p=')
        d.start()

    @classmethod
    def tearDownClass(cls):
        cls.dns.close()
        shutil.rmtree(cls.keydir, ignore_errors=True)

    def setUp(self):
        p = self.p = Postage(hostname=HOST).enter_for(self)
        p.add_domain('example.test')
        p.add_account('alice', 'pw-unused-3', 'alice@example.test')
        p.add_relay_network('192.0.2.0/24')
        self.srv = p.serve(SMTP, ['--mode=mx'], host=SERVER)
        self.srv6 = None
        self.addCleanup(self.final_checks)

    def final_checks(self):
        self.p.check_sanitizers()
        self.assertNotIn(BODY_MARKER, self.p.log_text())

    # -- helpers ---------------------------------------------------------

    def client(self, helo='mail.pass.example', source=CLIENT, srv=None):
        srv = srv or self.srv
        c = smtplib.SMTP(srv.host, srv.port, timeout=60, source_address=(source, 0))
        self.addCleanup(smtp_quit, c)
        c.ehlo(helo)
        return c

    def message(self, from_addr, extra=b'', body=None, from_field=None):
        """A message From: Someone <from_addr>, or From: from_field."""
        tag = uuid.uuid4().hex
        body = body if body is not None else f'Hello {tag}\n{BODY_MARKER}\n'.encode()
        from_field = from_field if from_field is not None else f'Someone <{from_addr}>'
        return crlf(f'From: {from_field}\nTo: alice@example.test\nSubject: check {tag}\n'
                    f'Date: {email.utils.formatdate()}\nMessage-ID: <{tag}@test>\n'.encode()
                    + extra + b'\n' + body), tag

    def send(self, c, mail_from, msg, expect=250):
        """One transaction; the final reply (code, text)."""
        code, text = c.mail(mail_from)
        if code != 250:
            c.rset()
            return code, text
        code, text = c.rcpt('alice@example.test')
        self.assertEqual(code, 250, text)
        code, text = c.data(msg)
        if expect is not None:
            self.assertEqual(code, expect, text)
        return code, text

    def deliver(self, c, mail_from, from_addr, **kw):
        """A message From: from_addr (message's keywords) sent with
        MAIL FROM:<mail_from>, accepted (250): the copy delivered."""
        msg, tag = self.message(from_addr, **kw)
        self.send(c, mail_from, msg)
        return self.delivered(tag)

    def delivered(self, tag):
        for path in self.p.messages('alice'):
            with open(path, 'rb') as f:
                data = f.read()
            if tag.encode() in data:
                if os.environ.get('POSTAGE_SHOW_MESSAGES'):
                    print(data.decode(errors='replace')[:1500], file=sys.stderr)
                return data
        self.fail(f'message {tag} not delivered')

    def auth_results(self, data):
        """The Authentication-Results fields of a delivered message, as
        {method: [(result, {property: value})]} of the one that is ours."""
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
        fields = msg.get_all('Authentication-Results') or []
        ours = [f for f in fields if f.strip().split(';')[0].strip().lower() == HOST]
        self.assertEqual(len(ours), 1, fields)
        out = {}
        if authres is not None:
            h = authres.AuthenticationResultsHeader.parse('Authentication-Results: ' + ours[0])
            self.assertEqual(h.authserv_id.lower(), HOST)
            for r in h.results:
                out.setdefault(r.method, []).append(
                    (r.result, {f'{p.type}.{p.name}': p.value for p in r.properties}))
        else:  # a plain parse, good enough for these fields
            for part in ours[0].split(';')[1:]:
                part = re.sub(r'\([^)]*\)', '', part).split()
                method, result = part[0].split('=', 1)
                props = dict(x.split('=', 1) for x in part[1:])
                out.setdefault(method, []).append((result, props))
        return out

    def spf_of(self, data, identity='smtp.mailfrom'):
        ar = self.auth_results(data)
        for result, props in ar.get('spf', []):
            if identity in props:
                return result, props[identity]
        self.fail(f'no spf result for {identity} in {ar}')

    def pyspf(self, ip, sender, helo):
        return spf.check2(i=ip, s=sender, h=helo)[0]

    def sign(self, msg, domain, selector='rsa', alg=b'rsa-sha256', canon=(b'relaxed', b'relaxed')):
        key = self.rsa_pem if alg == b'rsa-sha256' else self.ed_seed
        sig = dkim.sign(msg, selector.encode(), domain.encode(), key, canonicalize=canon,
                        signature_algorithm=alg,
                        include_headers=[b'from', b'to', b'subject', b'date', b'message-id'])
        return sig + msg

    # -- SPF -----------------------------------------------------------------

    def test_spf_verdicts_match_pyspf(self):
        if spf is None:
            self.skipTest('python3-spf is not installed')
        cases = [
            ('x@pass.example', 'pass'), ('x@fail.example', 'fail'),
            ('x@soft.example', 'softfail'), ('x@neutral.example', 'neutral'),
            ('x@nospf.example', 'none'), ('x@temp.invalid', 'temperror'),
            ('x@many.example', 'permerror'), ('x@void.example', 'permerror'),
            ('x@bad.example', 'permerror'), ('x@two.example', 'permerror'),
            ('x@redir.example', 'pass'), ('x@amx.example', 'pass'),
            ('x@amxfail.example', 'fail'), ('x@macro.example', 'pass'),
            ('x@incl.example', 'pass'),
        ]
        c = self.client()
        for sender, want in cases:
            with self.subTest(sender=sender):
                theirs = self.pyspf(CLIENT, sender, 'mail.pass.example')
                ours, domain = self.spf_of(self.deliver(c, sender, 'someone@unrelated.example'))
                self.assertEqual(domain, sender.split('@')[1])
                self.assertEqual(theirs, want, f'python3-spf on {sender}')
                self.assertEqual(ours, want, f'postage on {sender}')
        log = self.p.log_text()
        self.assertIn('event=spf', log)

    def test_spf_ipv6_and_helo(self):
        if spf is None:
            self.skipTest('python3-spf is not installed')
        srv6 = self.p.serve(SMTP, ['--mode=mx'], host='2001:db8::1')
        c = self.client(helo='mail.pass.example', source=CLIENT6, srv=srv6)
        data = self.deliver(c, 'x@pass.example', 'someone@unrelated.example')
        self.assertEqual(self.spf_of(data)[0], self.pyspf(CLIENT6, 'x@pass.example', 'h'))
        self.assertEqual(self.spf_of(data)[0], 'pass')
        # HELO mail.pass.example says "a": only 198.51.100.7 (IPv4).
        self.assertEqual(self.spf_of(data, 'smtp.helo'),
                         (self.pyspf(CLIENT6, 'postmaster@mail.pass.example', 'mail.pass.example'),
                          'mail.pass.example'))
        c4 = self.client(helo='mail.pass.example')
        data = self.deliver(c4, '', 'someone@unrelated.example')
        self.assertEqual(self.spf_of(data, 'smtp.helo'), ('pass', 'mail.pass.example'))

    def test_spf_reject_fail_setting(self):
        c = self.client()
        msg, tag = self.message('someone@unrelated.example')
        self.send(c, 'x@fail.example', msg)  # default: delivered, marked
        self.assertEqual(self.spf_of(self.delivered(tag))[0], 'fail')
        self.p.set('spf_reject_fail', '1')
        c = self.client()
        code, text = c.mail('x@fail.example')
        self.assertEqual(code, 550, text)
        self.assertTrue(text.startswith(b'5.7.23'), text)
        self.assertIn(b'SPF', text)
        # softfail and temperror are never refused
        for sender in ('x@soft.example', 'x@temp.invalid'):
            code, text = c.mail(sender)
            self.assertEqual(code, 250, (sender, text))
            c.rset()

    def test_spf_fail_explanation(self):
        """RFC 7208 6.2: with spf_reject_fail, the 550 carries the failing
        record's exp= text, macro-expanded as python3-spf expands it and
        marked as the domain's words; an include's or a redirecting
        record's exp= is never used, and a missing one is no explanation."""
        self.p.set('spf_reject_fail', '1')
        c = self.client()
        code, text = c.mail('x@expl.example')
        self.assertEqual(code, 550, text)
        want = ("198.51.100.7 is not one of expl.example's designated mail servers; "
                "see http://expl.example/why?s=x%40expl.example")
        self.assertIn(b'expl.example explains: ' + want.encode(), text)
        if spf is not None:
            result, exp = spf.check2(i=CLIENT, s='x@expl.example', h='mail.pass.example')
            self.assertEqual((result, exp), ('fail', want))
        # redirect=: the target's exp=, with %{d} the target's domain
        code, text = c.mail('y@exred.example')
        self.assertEqual(code, 550, text)
        self.assertIn(b'exred.example explains: 198.51.100.7 is not one of expl.example', text)
        self.assertNotIn(b'never shown', text)
        # include: the included record's fail is only "no match"; the
        # including record's -all has no exp=
        for sender in ('z@exinc.example', 'w@exnone.example'):
            code, text = c.mail(sender)
            self.assertEqual(code, 550, (sender, text))
            self.assertTrue(text.startswith(b'5.7.23'), text)
            self.assertNotIn(b'explains', text, sender)
        # softfail is never refused, exp= or not
        code, text = c.mail('v@exsoft.example')
        self.assertEqual(code, 250, text)
        c.rset()
        # not refusing: no explanation is fetched, the mail is marked
        self.p.set('spf_reject_fail', '0')
        c = self.client()
        msg, tag = self.message('someone@unrelated.example')
        self.send(c, 'x@expl.example', msg)
        self.assertEqual(self.spf_of(self.delivered(tag))[0], 'fail')

    # -- DKIM ------------------------------------------------------------------

    def test_dkim_signatures_from_python_verify(self):
        if dkim is None:
            self.skipTest('python3-dkim is not installed')
        c = self.client()
        for alg, sel, canon in ((b'rsa-sha256', 'rsa', (b'relaxed', b'relaxed')),
                                (b'rsa-sha256', 'rsa', (b'simple', b'simple')),
                                (b'ed25519-sha256', 'ed', (b'relaxed', b'simple'))):
            with self.subTest(alg=alg, canon=canon):
                msg, tag = self.message('a@signed.example',
                                        body=b'  Body with  spaces\t\r\n\r\n\r\n' + BODY_MARKER.encode() + b'\r\n\r\n')
                signed = self.sign(msg, 'signed.example', sel, alg, canon)
                self.send(c, 'x@fail.example', signed)
                ar = self.auth_results(self.delivered(tag))
                (result, props), = ar['dkim']
                self.assertEqual(result, 'pass', ar)
                self.assertEqual(props['header.d'], 'signed.example')
                self.assertEqual(props['header.a'], alg.decode())
                self.assertEqual(props['header.s'], sel)
                b = re.search(rb'b=([A-Za-z0-9+/]{8})', signed.split(b'bh=')[1]).group(1)
                self.assertEqual(props['header.b'], b.decode())
                # aligned DKIM pass: DMARC passes despite SPF fail
                self.assertEqual(ar['dmarc'][0][0], 'pass', ar)

    def test_verifying_loads_no_library(self):
        """DKIM verification is nettle's, linked in: a checked, signed
        message (RSA and Ed25519) makes the handler load no shared
        library at all (GnuTLS cost 4 million instructions a message)."""
        if dkim is None:
            self.skipTest('python3-dkim is not installed')
        lddir = os.path.join(self.p.dir, 'ld')
        os.makedirs(lddir)
        items = self.p.env_items
        self.p.env_items = lambda: items() + [('LD_DEBUG', 'files'),
                                              ('LD_DEBUG_OUTPUT', os.path.join(lddir, 'ld'))]
        srv = self.p.serve(SMTP, ['--mode=mx'], host=SERVER)
        c = self.client(srv=srv)
        for alg, sel in ((b'rsa-sha256', 'rsa'), (b'ed25519-sha256', 'ed')):
            msg, tag = self.message('a@signed.example')
            self.send(c, 'x@pass.example', self.sign(msg, 'signed.example', sel, alg))
            (result, _), = self.auth_results(self.delivered(tag))['dkim']
            self.assertEqual(result, 'pass')
        smtp_quit(c)
        srv.wait_handlers()
        logs = ''
        for name in os.listdir(lddir):
            with open(os.path.join(lddir, name), errors='replace') as f:
                logs += f.read()
        self.assertIn('calling init', logs)  # LD_DEBUG worked
        loaded = re.findall(r'file=(\S+) \[0\];  dynamically loaded by', logs)
        self.assertEqual(loaded, [], 'the handler loaded %s' % loaded)

    def test_tampered_and_broken_signatures_fail(self):
        if dkim is None:
            self.skipTest('python3-dkim is not installed')
        c = self.client()
        msg, tag = self.message('a@signed.example')
        signed = self.sign(msg, 'signed.example').replace(b'Hello', b'Jello')
        code, text = self.send(c, 'x@pass.example', signed, expect=550)
        self.assertTrue(text.startswith(b'5.7.1'), text)
        self.assertIn(b'DMARC', text)
        self.assertIn(b'signed.example', text)
        self.assertEqual(self.p.messages('alice'), [])
        log = self.p.log_text()
        self.assertIn('reason=dmarc', log)
        self.assertIn('dkim=fail', log)
        # With dmarc_reject off, the same is delivered and says why.
        self.p.set('dmarc_reject', '0')
        c = self.client()
        self.send(c, 'x@pass.example', signed)
        ar = self.auth_results(self.delivered(tag))
        self.assertEqual(ar['dkim'][0][0], 'fail')
        self.assertEqual(ar['dmarc'][0][0], 'fail')
        # A revoked key and a signature with an unknown selector: permerror.
        msg, tag = self.message('a@signed.example')
        signed = self.sign(msg, 'signed.example', 'revoked')
        self.send(c, 'x@pass.example', signed)
        self.assertEqual(self.auth_results(self.delivered(tag))['dkim'][0][0], 'permerror')
        msg, tag = self.message('a@signed.example')
        self.send(c, 'x@pass.example', self.sign(msg, 'signed.example', 'nokey'))
        self.assertEqual(self.auth_results(self.delivered(tag))['dkim'][0][0], 'permerror')

    def test_postage_signature_verifies_at_postage(self):
        """A message signed by postage for example.test, sent back in from
        outside, passes DKIM (and so DMARC, though SPF fails)."""
        self.p.sql('INSERT INTO dkim_keys (domain, selector, algorithm, private_key_path) '
                   "VALUES ('example.test', 'rsa', 'rsa-sha256', ?), "
                   "('example.test', 'ed', 'ed25519-sha256', ?)", self.rsa_path, self.ed_path)
        r = self.client(source=RELAY_CLIENT)
        msg, tag = self.message('bob@example.test')
        r.sendmail('bob@example.test', ['carol@remote.example'], msg)
        import glob
        files = glob.glob(os.path.join(self.p.spool_dir, 'queue', '*'))
        self.assertEqual(len(files), 1)
        with open(files[0], 'rb') as f:
            queued = f.read()
        self.assertEqual(queued.count(b'DKIM-Signature:'), 2)
        c = self.client()
        self.send(c, 'x@fail.example', crlf(queued))
        ar = self.auth_results(self.delivered(tag))
        self.assertEqual([r[0] for r in ar['dkim']], ['pass', 'pass'], ar)
        self.assertEqual(ar['dmarc'][0][0], 'pass')

    # -- DMARC -------------------------------------------------------------------

    def test_dmarc_reject_quarantine_none(self):
        c = self.client()
        # p=reject, From and MAIL FROM aligned and SPF pass: delivered.
        ar = self.auth_results(self.deliver(c, 'bounce@aligned.example', 'a@aligned.example'))
        self.assertEqual(ar['dmarc'], [('pass', {'header.from': 'aligned.example'})])
        # aspf=s: a subdomain's SPF pass does not align.
        # p=reject, no aligned pass: refused at the end of data with the reason.
        msg, tag = self.message('a@reject.example')
        code, text = self.send(c, 'x@pass.example', msg, expect=550)
        self.assertTrue(text.startswith(b'5.7.1'), text)
        self.assertIn(b'reject.example', text)
        # p=quarantine: delivered, marked.
        data = self.deliver(c, 'x@pass.example', 'a@quar.example')
        self.assertEqual(self.auth_results(data)['dmarc'][0][0], 'fail')
        self.assertRegex(data, rb'(?m)^X-Postage-Quarantine: ')
        # p=none: delivered, no mark.
        data = self.deliver(c, 'x@pass.example', 'a@pnone.example')
        self.assertEqual(self.auth_results(data)['dmarc'][0][0], 'fail')
        self.assertNotIn(b'X-Postage-Quarantine', data)
        # sp= of the organizational domain applies to its subdomains.
        msg, tag = self.message('a@sub.orgpol.example')
        self.send(c, 'x@pass.example', msg, expect=550)
        # Several authors: the strictest of their domains' outcomes.
        msg, tag = self.message('a@reject.example>, <b@reject.example')
        self.send(c, 'x@pass.example', msg, expect=550)
        msg, tag = self.message('a@pnone.example>, <b@reject.example')
        self.send(c, 'x@pass.example', msg, expect=550)
        msg, tag = self.message('a@pnone.example>, <b@unrelated.example')
        self.send(c, 'x@pass.example', msg)
        self.assertEqual(self.auth_results(self.delivered(tag))['dmarc'],
                         [('fail', {'header.from': 'pnone.example'})])
        # No policy at all: dmarc=none.
        msg, tag = self.message('a@unrelated.example')
        self.send(c, 'x@pass.example', msg)
        self.assertEqual(self.auth_results(self.delivered(tag))['dmarc'][0][0], 'none')

    def test_two_from_fields(self):
        """RFC 7489 6.6.1: a second From field, one author harmless and the
        other of a p=reject domain, is refused under dmarc_reject, in either
        order; without it, delivered with dmarc=permerror."""
        c = self.client()
        for first, second in (('a@unrelated.example', 'b@reject.example'),
                              ('b@reject.example', 'a@unrelated.example')):
            with self.subTest(first=first):
                msg, tag = self.message(first, extra=f'From: {second}\n'.encode())
                code, text = self.send(c, 'x@pass.example', msg, expect=None)
                self.assertEqual(code, 550, f'two From fields ({first}, {second}): {text}')
                self.assertTrue(text.startswith(b'5.7.1'), text)
                self.assertIn(b'more than one From field', text)
        self.assertEqual(self.p.messages('alice'), [])
        self.assertIn('reason=dmarc_from', self.p.log_text())
        self.p.set('dmarc_reject', '0')
        c = self.client()
        msg, tag = self.message('a@unrelated.example', extra=b'From: b@reject.example\n')
        self.send(c, 'x@pass.example', msg)
        ar = self.auth_results(self.delivered(tag))
        self.assertEqual(ar['dmarc'][0][0], 'permerror', ar)

    def test_every_author_checked(self):
        """Every author of a From list is checked and the strictest outcome
        counts: a p=reject author fifth in the list, or written so that the
        list is malformed, is found; a list naming more domains than
        DMARC_FROM_DOMAINS_MAX (8) is refused under dmarc_reject."""
        harmless = [f'a{i}@n{i}.example' for i in range(9)]
        c = self.client()
        cases = [
            ('fifth author', ', '.join(harmless[:4] + ['e@reject.example'])),
            ('an address as display name', 'e@reject.example <a@unrelated.example>'),
            ('two addresses in one mailbox', 'e@reject.example a@unrelated.example'),
            ('obsolete spaces in the domain', 'a@unrelated.example, e@reject . example'),
        ]
        for what, field in cases:
            with self.subTest(what):
                msg, tag = self.message(None, from_field=field)
                code, text = self.send(c, 'x@pass.example', msg, expect=None)
                self.assertEqual(code, 550, f'From: {field}: {text}')
                self.assertTrue(text.startswith(b'5.7.1'), text)
                self.assertIn(b'DMARC policy of reject.example is reject', text)
        # Authors of 9 domains: more than are checked.
        msg, tag = self.message(None, from_field=', '.join(harmless))
        code, text = self.send(c, 'x@pass.example', msg, expect=550)
        self.assertTrue(text.startswith(b'5.7.1'), text)
        self.assertIn(b'more than 8 domains', text)
        # 8 domains, each once or more: all checked, none with a policy.
        msg, tag = self.message(None, from_field=', '.join(harmless[:8] + ['b1@n1.example']))
        self.send(c, 'x@pass.example', msg)
        self.assertEqual(self.auth_results(self.delivered(tag))['dmarc'][0][0], 'none')
        self.assertEqual(len(self.p.messages('alice')), 1)
        self.p.set('dmarc_reject', '0')
        c = self.client()
        msg, tag = self.message(None, from_field=', '.join(harmless))
        self.send(c, 'x@pass.example', msg)
        self.assertEqual(self.auth_results(self.delivered(tag))['dmarc'][0][0], 'permerror')

    def test_header_too_large_to_check(self):
        """A header section beyond what is read for the checks (1000
        fields, 256 KiB) cannot hide its From field: refused under
        dmarc_reject, delivered with dmarc=permerror without."""
        pad = b''.join(b'X-Pad-%d: x\n' % i for i in range(1000))
        c = self.client()
        for what, frm in (('p=reject', 'a@reject.example'), ('no policy', 'a@unrelated.example')):
            with self.subTest(what):
                msg, tag = self.message(frm, extra=pad)
                code, text = self.send(c, 'x@pass.example', msg, expect=None)
                self.assertEqual(code, 550, f'From {frm} after 1000 fields: {text}')
                self.assertTrue(text.startswith(b'5.7.1'), text)
                self.assertIn(b'header section', text)
        self.assertEqual(self.p.messages('alice'), [])
        # Within the bounds (a few hundred fields): checked as usual.
        msg, tag = self.message('a@unrelated.example', extra=pad[:pad.index(b'X-Pad-300:')])
        self.send(c, 'x@pass.example', msg)
        self.assertEqual(self.auth_results(self.delivered(tag))['dmarc'][0][0], 'none')
        self.p.set('dmarc_reject', '0')
        c = self.client()
        ar = self.auth_results(self.deliver(c, 'x@pass.example', 'a@reject.example', extra=pad))
        self.assertEqual(ar['dmarc'][0][0], 'permerror', ar)

    def test_idn_organizational_domain(self):
        """The public suffix list's internationalised rules (from libpsl):
        公司.cn is a public suffix, so the policy of shop.xn--55qx5d.cn
        (p=reject) covers mail.shop.xn--55qx5d.cn, written in A-labels or
        in U-labels, and another registrant under 公司.cn does not align
        with it."""
        c = self.client()
        for frm in ('x@mail.shop.xn--55qx5d.cn', 'x@mail.shop.公司.cn', 'x@MAIL.Shop.XN--55QX5D.cn'):
            with self.subTest(frm=frm):
                msg, tag = self.message(frm)
                code, text = self.send(c, 'bounce@pass.example', msg, expect=None)
                self.assertEqual(code, 550, f'From {frm}: {text}')
                self.assertIn(b'DMARC policy of mail.shop.xn--55qx5d.cn is reject', text)
        # SPF passes for other.xn--55qx5d.cn: another organization.
        msg, tag = self.message('x@mail.shop.xn--55qx5d.cn')
        code, text = self.send(c, 'bounce@other.xn--55qx5d.cn', msg, expect=None)
        self.assertEqual(code, 550, text)
        # SPF passes for shop.xn--55qx5d.cn itself: aligned (relaxed).
        ar = self.auth_results(self.deliver(c, 'bounce@shop.xn--55qx5d.cn', 'x@mail.shop.公司.cn'))
        self.assertEqual(ar['dmarc'], [('pass', {'header.from': 'mail.shop.xn--55qx5d.cn'})])

    def test_dns_trouble_never_gives_5xx(self):
        c = self.client()
        # SPF temperror for the From domain itself (p=reject): delivered
        # with temperror, since its SPF might have passed.
        data = self.deliver(c, 'x@tempalign.example', 'a@tempalign.example')
        self.assertEqual(self.spf_of(data)[0], 'temperror')
        self.assertEqual(self.auth_results(data)['dmarc'][0][0], 'temperror')
        # The policy lookup itself fails: temperror, delivered.
        msg, tag = self.message('a@policy.invalid')
        self.send(c, 'x@pass.example', msg)
        self.assertEqual(self.auth_results(self.delivered(tag))['dmarc'][0][0], 'temperror')

    def test_unaligned_dns_trouble_does_not_dodge(self):
        """Only an identifier aligned with From can pass DMARC, so the
        temporary error of another one (an SPF domain or a DKIM d= whose
        DNS fails, as any sender can arrange) leaves a p=reject failure a
        failure."""
        c = self.client()
        msg, tag = self.message('a@reject.example')
        cases = [('MAIL FROM in a failing DNS zone', 'x@temp.invalid', msg)]
        if dkim is not None:
            msg, tag = self.message('a@reject.example')
            cases.append(('DKIM d= in a failing DNS zone', 'x@pass.example',
                          self.sign(msg, 'temp.invalid')))
        for what, sender, data in cases:
            with self.subTest(what):
                code, text = self.send(c, sender, data, expect=None)
                self.assertEqual(code, 550, f'{what}, From p=reject: {text}')
                self.assertIn(b'DMARC policy of reject.example is reject', text)
        self.assertEqual(self.p.messages('alice'), [])
        self.p.set('dmarc_reject', '0')
        c = self.client()
        data = self.deliver(c, 'x@temp.invalid', 'a@reject.example')
        self.assertEqual(self.spf_of(data)[0], 'temperror')
        self.assertEqual(self.auth_results(data)['dmarc'][0][0], 'fail')

    # -- the field itself ---------------------------------------------------------

    def test_forged_auth_results_removed_others_kept(self):
        c = self.client()
        forged = (f'Authentication-Results: {HOST.upper()}; dkim=pass header.d=reject.example\n'
                  'Authentication-Results: other.example; spf=pass smtp.mailfrom=x.example\n'
                  f'Authentication-Results:\n\t{HOST} (comment); dmarc=pass\n').encode()
        data = self.deliver(c, 'x@pass.example', 'a@unrelated.example', extra=crlf(forged))
        fields = re.findall(rb'(?mi)^Authentication-Results:[^\n]*(?:\n[ \t][^\n]*)*', data)
        self.assertEqual(len(fields), 2, fields)
        self.assertTrue(fields[0].startswith(f'Authentication-Results: {HOST};'.encode()))
        self.assertIn(b'other.example', fields[1])
        self.assertTrue(data.index(b'Authentication-Results: ' + HOST.encode())
                        < data.index(b'Received:'), 'our field is on top')
        # The Maildir name's S= is the file size (the copy was re-measured).
        path = [p for p in self.p.messages('alice')][0]
        size = int(re.search(r',S=(\d+)', path).group(1))
        self.assertEqual(size, os.path.getsize(path))
        w = int(re.search(r',W=(\d+)', path).group(1))
        self.assertEqual(w, size + data.count(b'\n'))

    def test_loopback_checked_with_local_resolver_relay_not(self):
        # In this namespace the resolver is on loopback, so mail from a
        # loopback client is checked like any other: the DMARC reject holds.
        srv_lo = self.p.serve(SMTP, ['--mode=mx'], host='127.0.0.1')
        c = self.client(source='127.0.0.1', srv=srv_lo)
        msg, tag = self.message('a@reject.example')
        code, text = self.send(c, 'x@fail.example', msg, expect=550)
        self.assertIn(b'DMARC', text)
        # A relay_networks client is never checked.
        c = self.client(source=RELAY_CLIENT, srv=self.srv)
        msg, tag = self.message('a@reject.example')
        self.send(c, 'x@fail.example', msg)
        self.assertNotIn(b'Authentication-Results', self.delivered(tag))

if __name__ == '__main__':
    netns.main()
