"""Mailing lists (issue 21): each paragraph of the issue, with real clients.

Posts go in with smtplib through smtp-handler under systemd-socket-activate;
local members' copies are read from their Maildirs, remote ones from an
aiosmtpd sink (test_queue.Sink) that the queue runner reaches through the
relayhost setting; everything is parsed with python's `email`. The whole
file runs in a private network namespace (netns.py) whose dnsmasq serves
the posters' DMARC and SPF records, the list domain's DKIM key, and (for
the scale test) the MX records of 100 member domains, whose mail goes to a
sink on 127.0.0.2:25.

The list: team@lists.test, owner olivia@lists.test (a local mailbox),
members alice@ and bob@lists.test (local), x@ and y@remote.example
(remote), posting "members", subject prefix "[team]", archive mailbox
"arch".
"""
import base64
import email
import email.policy
import email.utils
import os
import re
import shutil
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
import netns  # noqa: E402
from harness import Postage  # noqa: E402
from test_queue import ScriptedServer, Sink, parse, run_queue  # noqa: E402

SMTP = 'smtp-handler/smtp-handler'
POP3 = 'pop3-handler/pop3-handler'
PASSWORD = 'Lists-test-pw-7f3a'
DOMAIN = 'lists.test'
LIST = 'team@' + DOMAIN
OWNER = 'olivia@' + DOMAIN
RELAY_CLIENT = '127.0.0.2'   # in relay_networks: not checked, unbound
OUTSIDE_CLIENT = '127.0.0.1'  # from outside: SPF, DKIM and DMARC checked
LOCAL_ZONES = ('test', 'example')
DMARC = {
    'reject.example': 'v=DMARC1; p=reject',
    'quarantine.example': 'v=DMARC1; p=quarantine',
    'none.example': 'v=DMARC1; p=none',
}
# Posters' domains let the test clients send (SPF), so their mail passes
# DMARC on the way in.
SPF = 'v=spf1 ip4:127.0.0.0/8 -all'
TOKEN_RE = re.compile(r'team-confirm\+([a-z2-7]{26})@lists\.test')


def crlf(b):
    return b.replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')


def openssl(*args):
    return subprocess.run(['openssl'] + list(args), capture_output=True, check=True).stdout


def message(sender_field, subject='hello list', body='Hello, list.\n', extra=''):
    mid = f'<{time.time_ns()}@test>'
    return (f'From: {sender_field}\nTo: {LIST}\nSubject: {subject}\nMessage-ID: {mid}\n'
            f'Date: Mon, 07 Dec 2026 10:00:00 +0000\n{extra}\n{body}').encode()


def sanitized():
    """Was the build under test made with -Db_sanitize?"""
    import json
    try:
        with open(os.path.join(harness.BUILD, 'meson-info', 'intro-buildoptions.json')) as f:
            opts = {o['name']: o['value'] for o in json.load(f)}
    except (OSError, ValueError, KeyError):
        return True
    return opts.get('b_sanitize', 'none') not in ('none', [])


def parse_bytes(b):
    return email.message_from_bytes(b, policy=email.policy.compat32)


class ListCase(unittest.TestCase):
    list_owner = OWNER

    @classmethod
    def setUpClass(cls):
        cls.keydir = tempfile.mkdtemp(prefix='postage-lists-key-')
        os.chmod(cls.keydir, 0o755)
        cls.key = os.path.join(cls.keydir, 'rsa.pem')
        openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', cls.key)
        os.chmod(cls.key, 0o644)
        cls.pub = base64.b64encode(openssl('pkey', '-in', cls.key, '-pubout', '-outform', 'DER')).decode()
        d = cls.dns = netns.DnsServer(local_zones=LOCAL_ZONES)
        for name, txt in DMARC.items():
            d.txt('_dmarc.' + name, txt)
        for name in list(DMARC) + ['plain.example', 'remote.example', 'elsewhere.example']:
            d.txt(name, SPF)
        d.txt(f'list._domainkey.{DOMAIN}', f'v=DKIM1; k=rsa; p={cls.pub}')
        cls.add_dns(d)
        d.start()

    @classmethod
    def add_dns(cls, d):
        pass

    @classmethod
    def tearDownClass(cls):
        cls.dns.close()
        shutil.rmtree(cls.keydir, ignore_errors=True)

    def setUp(self):
        harness.binary('queue/queue-runner')
        p = self.p = Postage().enter_for(self)
        p.add_domain(DOMAIN)
        for login in ('olivia', 'alice', 'bob', 'arch', 'carol'):
            p.add_mailbox(login, PASSWORD)
            p.add_address(f'{login}@{DOMAIN}', login)
        p.add_relay_network(RELAY_CLIENT + '/32')
        p.sql('INSERT INTO dkim_keys (domain, selector, private_key_path) VALUES (?, ?, ?)',
              DOMAIN, 'list', self.key)
        p.sql("INSERT INTO lists (address, owner, archive, subject_prefix) VALUES (?, ?, 'arch', '[team]')",
              LIST, self.list_owner)
        for m in ('alice@lists.test', 'bob@lists.test', 'x@remote.example', 'y@remote.example'):
            self.add_member(m)
        self.sink = Sink()
        self.addCleanup(self.sink.stop)
        p.set('relayhost', f'[127.0.0.1]:{self.sink.port}')
        self.srv = p.serve(SMTP, ['--mode=mx'])
        self.addCleanup(self.p.check_sanitizers)

    # -- helpers ------------------------------------------------------------

    def add_member(self, address, enabled=1, lst=LIST):
        self.p.sql('INSERT INTO list_members (list, address, enabled) VALUES (?, ?, ?)', lst, address,
                   enabled)

    def members(self, lst=LIST):
        return {a: e for a, e in self.p.sql('SELECT address, enabled FROM list_members WHERE list = ?', lst)}

    def smtp(self, source=RELAY_CLIENT, srv=None):
        srv = srv or self.srv
        c = smtplib.SMTP(srv.host, srv.port, timeout=60, source_address=(source, 0))
        c.ehlo('client.test')
        return c

    def send(self, sender, rcpts, raw, source=RELAY_CLIENT):
        """One message; returns the end-of-DATA reply (code, text)."""
        c = self.smtp(source)
        try:
            code, text = c.mail(sender)
            self.assertEqual(code, 250, text)
            for r in rcpts:
                code, text = c.rcpt(r)
                self.assertEqual(code, 250, f'RCPT {r}: {code} {text}')
            return c.data(crlf(raw))
        finally:
            c.quit()

    def post(self, sender, raw, rcpts=(LIST,), source=RELAY_CLIENT):
        code, text = self.send(sender, rcpts, raw, source)
        self.assertEqual(code, 250, text)
        return text

    def maildir(self, login):
        return [parse(m) for m in self.p.messages(login)]

    def drain(self, **kw):
        run_queue(self.p, **kw)
        return [parse_bytes(m['content']) for m in self.sink.messages]

    def sink_for(self, rcpt):
        return [(m, parse_bytes(m['content'])) for m in self.sink.messages if rcpt in m['rcpts']]

    def token_of(self, msg):
        text = msg.as_string()
        found = set(TOKEN_RE.findall(text))
        self.assertEqual(len(found), 1, f'one token expected in:\n{text[:3000]}')
        return found.pop()

    def log(self):
        return self.p.log_text()


class PostingTest(ListCase):
    """A post to team@ goes to every enabled member: local members by
    hard-linked delivery, remote ones through the queue; each copy carries
    the list's fields and prefix, is DKIM-signed by the list's domain, and
    has the member's VERP address as its envelope sender."""

    def test_every_enabled_member_gets_one_copy_with_the_list_fields(self):
        self.add_member('z@remote.example', enabled=0)
        self.post('x@remote.example', message('X <x@remote.example>'))
        for login in ('alice', 'bob', 'arch'):
            msgs = self.maildir(login)
            self.assertEqual(len(msgs), 1, login)
        self.assertEqual(self.maildir('olivia'), [], 'the owner is not a member')
        remote = self.drain()
        got = sorted(r for m in self.sink.messages for r in m['rcpts'])
        self.assertEqual(got, ['x@remote.example', 'y@remote.example'])
        for m in self.maildir('alice') + remote:
            self.assertEqual(m['List-Id'], '<team.lists.test>')
            self.assertEqual(m['List-Post'], '<mailto:team@lists.test>')
            self.assertEqual(m['List-Unsubscribe'], '<mailto:team-unsubscribe@lists.test>')
            self.assertEqual(m['List-Subscribe'], '<mailto:team-subscribe@lists.test>')
            self.assertEqual(m['List-Owner'], '<mailto:team-owner@lists.test>')
            self.assertEqual(m['Precedence'], 'list')
            self.assertEqual(m['Subject'], '[team] hello list')
            self.assertEqual(m['From'], 'X <x@remote.example>')
            self.assertEqual(len(m.get_all('Subject')), 1)
            self.assertEqual(m.get_payload().replace('\r\n', '\n'), 'Hello, list.\n')
        local = self.maildir('bob')[0]
        self.assertEqual(local['Return-Path'], '<team-bounces@lists.test>')
        self.assertEqual(local['Delivered-To'], LIST)

    def test_envelope_sender_of_each_copy_is_the_members_verp_address(self):
        self.post('x@remote.example', message('X <x@remote.example>'))
        self.drain()
        senders = sorted((m['mail_from'], tuple(m['rcpts'])) for m in self.sink.messages)
        self.assertEqual(senders, [('team-bounces+x=remote.example@lists.test', ('x@remote.example',)),
                                   ('team-bounces+y=remote.example@lists.test', ('y@remote.example',))])

    def test_local_copies_are_one_file_hard_linked(self):
        self.post('x@remote.example', message('X <x@remote.example>'))
        paths = [self.p.messages(login)[0] for login in ('alice', 'bob', 'arch')]
        inodes = {os.stat(p).st_ino for p in paths}
        self.assertEqual(len(inodes), 1, 'one file, linked into each Maildir')
        self.assertEqual(os.stat(paths[0]).st_nlink, 3)
        for p in paths:
            size = int(re.search(r',S=(\d+)', p).group(1))
            self.assertEqual(size, os.path.getsize(p))

    def test_one_queue_entry_for_all_remote_members(self):
        self.post('x@remote.example', message('X <x@remote.example>'))
        rows = self.p.sql('SELECT id, sender, verp FROM queue_messages')
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual(rows[0][1:], ('team-bounces@lists.test', 1))
        rcpts = self.p.sql('SELECT recipient, orig_rcpt FROM queue_recipients ORDER BY recipient')
        self.assertEqual(rcpts, [('x@remote.example', 'x@remote.example'),
                                 ('y@remote.example', 'y@remote.example')])

    def test_copies_are_signed_by_the_lists_domain(self):
        import dkim
        self.post('x@remote.example', message('X <x@remote.example>'))
        self.drain()
        pub = self.pub

        def dnsfunc(name, timeout=5):
            n = name.decode() if isinstance(name, bytes) else name
            if n.rstrip('.') == f'list._domainkey.{DOMAIN}':
                return f'v=DKIM1; k=rsa; p={pub}'.encode()
            return b''
        for m in self.sink.messages:
            msg = parse_bytes(m['content'])
            self.assertIn(f'd={DOMAIN}', msg['DKIM-Signature'].replace('\n', '').replace('\t', ''))
            self.assertTrue(dkim.verify(crlf(m['content']), dnsfunc=dnsfunc),
                            'the signature does not verify')

    def test_subject_prefix_is_not_doubled_and_may_be_unset(self):
        self.post('x@remote.example', message('X <x@remote.example>', subject='Re: [team] hello'))
        self.assertEqual(self.maildir('alice')[0]['Subject'], 'Re: [team] hello')
        self.p.sql('UPDATE lists SET subject_prefix = NULL')
        self.post('x@remote.example', message('X <x@remote.example>', subject='plain'))
        subjects = sorted(m['Subject'] for m in self.maildir('alice'))
        self.assertEqual(subjects, ['Re: [team] hello', 'plain'])

    def test_existing_list_fields_are_replaced_not_added(self):
        extra = ('List-Unsubscribe: <mailto:evil@elsewhere.example>\nPrecedence: bulk\n'
                 'List-Post: <mailto:evil@elsewhere.example>\n')
        self.post('x@remote.example', message('X <x@remote.example>', extra=extra))
        m = self.maildir('alice')[0]
        self.assertEqual(m.get_all('List-Unsubscribe'), ['<mailto:team-unsubscribe@lists.test>'])
        self.assertEqual(m.get_all('List-Post'), ['<mailto:team@lists.test>'])
        self.assertEqual(m.get_all('Precedence'), ['list'])

    def test_a_list_with_an_unhosted_or_gone_mailbox_member_still_posts(self):
        self.add_member('ghost@lists.test')   # no such address here
        self.post('x@remote.example', message('X <x@remote.example>'))
        self.assertEqual(len(self.maildir('alice')), 1)
        self.assertIn('result=member_unknown', self.log())

    def test_post_and_another_recipient_in_one_transaction(self):
        self.post('x@remote.example', message('X <x@remote.example>'), rcpts=(LIST, 'carol@lists.test'))
        carol = self.maildir('carol')
        self.assertEqual(len(carol), 1)
        self.assertIsNone(carol[0]['List-Id'], 'carol got the message itself, not the list copy')
        self.assertEqual(len(self.maildir('alice')), 1)


class ConnectionReuseTest(ListCase):
    """The queue runner sends the copies of one destination over one
    connection, one transaction each (VERP), RSET between them."""

    def test_one_connection_rset_between_copies(self):
        server = ScriptedServer()
        self.addCleanup(server.stop)
        self.p.set('relayhost', f'[127.0.0.1]:{server.port}')
        self.add_member('z@remote.example')
        self.post('x@remote.example', message('X <x@remote.example>'))
        run_queue(self.p)
        lines = [ln.decode().strip() for ln in server.lines]
        verbs = [ln.split(':')[0].split(' ')[0].upper() for ln in lines]
        self.assertEqual(verbs.count('EHLO'), 1, lines)
        self.assertEqual(len(server.data), 3)
        mails = [ln for ln in lines if ln.upper().startswith('MAIL FROM:')]
        self.assertEqual(sorted(m.split('<')[1].split('>')[0] for m in mails),
                         ['team-bounces+x=remote.example@lists.test',
                          'team-bounces+y=remote.example@lists.test',
                          'team-bounces+z=remote.example@lists.test'])
        # MAIL RCPT DATA, then RSET before each further transaction
        self.assertEqual([v for v in verbs if v in ('MAIL', 'RCPT', 'DATA', 'RSET')],
                         ['MAIL', 'RCPT', 'DATA', 'RSET', 'MAIL', 'RCPT', 'DATA',
                          'RSET', 'MAIL', 'RCPT', 'DATA'])


class ArchiveTest(ListCase):
    """With archive set, every post that goes out is also delivered to
    that mailbox, readable over POP3."""

    def test_archive_gets_each_post_and_pop3_reads_it(self):
        self.post('x@remote.example', message('X <x@remote.example>', subject='first'))
        self.post('alice@lists.test', message('Alice <alice@lists.test>', subject='second'))
        # a held post (not a member) is not archived until it goes out
        self.post('eve@elsewhere.example', message('Eve <eve@elsewhere.example>', subject='third'))
        pop = self.p.serve(POP3)
        c = pop.pop3('arch', PASSWORD)
        try:
            count, _size = c.stat()
            self.assertEqual(count, 2)
            subjects = sorted(parse_bytes(b'\n'.join(c.retr(i)[1]))['Subject'] for i in (1, 2))
        finally:
            c.quit()
        self.assertEqual(subjects, ['[team] first', '[team] second'])

    def test_no_archive_when_unset(self):
        self.p.sql('UPDATE lists SET archive = NULL')
        self.post('x@remote.example', message('X <x@remote.example>'))
        self.assertEqual(self.maildir('arch'), [])


class PolicyTest(ListCase):
    """members: a member's post goes out, anyone else's is held for the
    owner; anyone: all go out; moderated: all held; announce: only the
    owner, others get 550 5.7.1. Held posts go out when the owner mails
    the confirm address, and expire after 7 days."""

    def held_notice(self):
        notices = [m for m in self.maildir('olivia') if 'confirm' in (m['Subject'] or '')]
        self.assertEqual(len(notices), 1, [m['Subject'] for m in self.maildir('olivia')])
        return notices[0]

    def test_member_by_from_or_by_envelope_goes_out(self):
        # envelope a member, From: someone else
        self.post('x@remote.example', message('Someone <someone@elsewhere.example>', subject='env'))
        # From: a member, envelope not (a provider's bounce address)
        self.post('bounces-123@elsewhere.example', message('Y <y@remote.example>', subject='from'))
        subjects = sorted(m['Subject'] for m in self.maildir('alice'))
        self.assertEqual(subjects, ['[team] env', '[team] from'])

    def test_a_non_members_post_is_held_and_the_owner_approves_it(self):
        raw = message('Eve <eve@elsewhere.example>', subject='from outside the list')
        self.post('eve@elsewhere.example', raw)
        self.assertEqual(self.maildir('alice'), [], 'held, not sent')
        notice = self.held_notice()
        token = self.token_of(notice)
        confirm = f'team-confirm+{token}@{DOMAIN}'
        self.assertEqual(email.utils.parseaddr(notice['Reply-To'])[1], confirm)
        self.assertIn(token, notice['Subject'])
        self.assertEqual(notice['Auto-Submitted'], 'auto-generated')
        attached = [part for part in notice.walk() if part.get_content_type() == 'message/rfc822']
        self.assertEqual(len(attached), 1, 'the held post travels with the notice')
        self.assertIn('from outside the list', attached[0].as_string())
        # the poster is told nothing (no backscatter)
        self.drain()
        self.assertFalse(self.sink_for('eve@elsewhere.example'))
        held = os.listdir(os.path.join(self.p.spool_dir, 'held'))
        self.assertEqual(len(held), 1)

        # someone else cannot approve it, even with the address
        code, text = self.send('eve@elsewhere.example', [confirm],
                               message('Eve <eve@elsewhere.example>', subject='Re: confirm'))
        self.assertEqual(code, 550, text)
        self.assertIn(b'5.7.1', text)
        # the owner can
        self.post(OWNER, message(f'Olivia <{OWNER}>', subject=f'Re: confirm {token}'), rcpts=(confirm,))
        copies = self.maildir('alice')
        self.assertEqual(len(copies), 1)
        self.assertEqual(copies[0]['Subject'], '[team] from outside the list')
        self.assertEqual(copies[0]['From'], 'Eve <eve@elsewhere.example>')
        self.assertEqual(os.listdir(os.path.join(self.p.spool_dir, 'held')), [])
        self.drain()
        self.assertEqual(len(self.sink_for('x@remote.example')), 1)
        # single use: a second approval is refused at RCPT
        c = self.smtp()
        c.mail(OWNER)
        code, text = c.rcpt(confirm)
        c.quit()
        self.assertEqual(code, 550, text)
        self.assertIn(b'5.1.1', text)
        self.assertEqual(len(self.maildir('alice')), 1, 'sent once')

    def test_a_held_post_expires_after_seven_days(self):
        self.post('eve@elsewhere.example', message('Eve <eve@elsewhere.example>'))
        token = self.token_of(self.held_notice())
        run_queue(self.p, now=time.time() + 6 * 86400)
        self.assertEqual(len(os.listdir(os.path.join(self.p.spool_dir, 'held'))), 1, 'kept 6 days')
        run_queue(self.p, now=time.time() + 7 * 86400 + 60)
        self.assertEqual(os.listdir(os.path.join(self.p.spool_dir, 'held')), [], 'gone after 7')
        self.assertEqual(self.p.sql('SELECT count(*) FROM list_pending')[0][0], 0)
        c = self.smtp()
        c.mail(OWNER)
        code, _ = c.rcpt(f'team-confirm+{token}@{DOMAIN}')
        c.quit()
        self.assertEqual(code, 550)

    def test_anyone(self):
        self.p.sql("UPDATE lists SET posting = 'anyone'")
        self.post('eve@elsewhere.example', message('Eve <eve@elsewhere.example>'))
        self.assertEqual(len(self.maildir('alice')), 1)

    def test_moderated_holds_even_members(self):
        self.p.sql("UPDATE lists SET posting = 'moderated'")
        self.post('x@remote.example', message('X <x@remote.example>'))
        self.assertEqual(self.maildir('alice'), [])
        self.assertIn('moderated', self.held_notice().get_payload()[0].get_payload())

    def test_announce_refuses_anyone_but_the_owner_at_rcpt(self):
        self.p.sql("UPDATE lists SET posting = 'announce'")
        c = self.smtp()
        c.mail('x@remote.example')
        code, text = c.rcpt(LIST)
        self.assertEqual(code, 550, text)
        self.assertIn(b'5.7.1', text)
        # the rest of the transaction goes on
        self.assertEqual(c.rcpt('carol@lists.test')[0], 250)
        self.assertEqual(c.data(crlf(message('X <x@remote.example>')))[0], 250)
        c.quit()
        self.assertEqual(self.maildir('alice'), [])
        self.assertEqual(len(self.maildir('carol')), 1)

    def test_announce_the_owner_posts_after_auth(self):
        self.p.sql("UPDATE lists SET posting = 'announce'")
        sub = self.p.serve(SMTP, ['--mode=submission'])
        c = self.smtp(source=RELAY_CLIENT, srv=sub)
        c.login('olivia', PASSWORD)
        c.sendmail(OWNER, [LIST], crlf(message(f'Olivia <{OWNER}>', subject='news')))
        c.quit()
        copies = self.maildir('alice')
        self.assertEqual(len(copies), 1)
        self.assertEqual(copies[0]['List-Post'], 'NO (posting is for the owner only)')

    def test_announce_a_forged_owner_envelope_is_held_for_the_owner(self):
        self.p.sql("UPDATE lists SET posting = 'announce'")
        # from outside, MAIL FROM the owner's address, no login, no SPF for it
        self.post(OWNER, message(f'Olivia <{OWNER}>', subject='forged news'), source=OUTSIDE_CLIENT)
        self.assertEqual(self.maildir('alice'), [])
        self.assertIn('claims to come from you', self.held_notice().get_payload()[0].get_payload())


class JoinLeaveTest(ListCase):
    """Joining and leaving by mail, double opt-in: a confirmation with a
    team-confirm+TOKEN@ address (Reply-To, Subject, body) goes to the
    address concerned; mail from that address to it does the change.
    Tokens are unguessable, single-use, bound to their list and action,
    and expire."""

    def request(self, who, rcpt='team-subscribe@lists.test', subject='please', source=RELAY_CLIENT,
                extra=''):
        raw = (f'From: <{who}>\nTo: {rcpt}\nSubject: {subject}\nMessage-ID: <{time.time_ns()}@t>\n'
               f'{extra}\nhello\n').encode()
        code, text = self.send(who, [rcpt], raw, source)
        self.assertEqual(code, 250, text)

    def confirmation_for(self, who):
        self.drain()
        got = self.sink_for(who)
        self.assertEqual(len(got), 1, f'{len(got)} mails to {who}')
        return got[0]

    def test_subscribe_needs_a_reply_from_the_address(self):
        self.request('carol@elsewhere.example')
        self.assertNotIn('carol@elsewhere.example', self.members(), 'not before confirming')
        env, msg = self.confirmation_for('carol@elsewhere.example')
        token = self.token_of(msg)
        confirm = f'team-confirm+{token}@{DOMAIN}'
        self.assertEqual(email.utils.parseaddr(msg['Reply-To'])[1], confirm)
        self.assertIn(token, msg['Subject'])
        self.assertIn(confirm, msg.get_payload())
        self.assertEqual(msg['Auto-Submitted'], 'auto-replied')
        self.assertEqual(env['mail_from'], 'team-bounces@lists.test')
        self.assertEqual(email.utils.parseaddr(msg['From'])[1], 'team-request@lists.test')
        # the token is stored only as its hash
        with open(self.p.db, 'rb') as f:
            self.assertNotIn(token.encode(), f.read())
        for wal in (self.p.db + '-wal',):
            if os.path.exists(wal):
                with open(wal, 'rb') as f:
                    self.assertNotIn(token.encode(), f.read())

        code, text = self.send('mallory@elsewhere.example', [confirm],
                               message('Mallory <mallory@elsewhere.example>'))
        self.assertEqual(code, 550, 'only the address concerned may confirm')
        self.assertNotIn('carol@elsewhere.example', self.members())

        self.post('carol@elsewhere.example', message('Carol <carol@elsewhere.example>',
                                                     subject='Re: ' + msg['Subject']), rcpts=(confirm,))
        self.assertEqual(self.members().get('carol@elsewhere.example'), 1)
        self.assertIn('result=subscribed', self.log())
        # single use
        c = self.smtp()
        c.mail('carol@elsewhere.example')
        self.assertEqual(c.rcpt(confirm)[0], 550)
        c.quit()
        # a welcome goes out
        self.drain()
        welcome = [m for _, m in self.sink_for('carol@elsewhere.example') if 'Welcome' in m['Subject']]
        self.assertEqual(len(welcome), 1)

    def test_nobody_can_subscribe_someone_else(self):
        # mallory forges the victim's address: the confirmation goes to the
        # victim only, and mallory has no token to use
        self.request('victim@elsewhere.example', source=OUTSIDE_CLIENT)
        self.drain()
        self.assertFalse(self.sink_for('mallory@elsewhere.example'))
        self.assertEqual(len(self.sink_for('victim@elsewhere.example')), 1)
        self.assertNotIn('victim@elsewhere.example', self.members())
        # guessing a token: refused at RCPT, and counted as harvesting
        for guess in ('a' * 26, 'b' * 26):
            c = self.smtp(source=OUTSIDE_CLIENT)
            c.mail('victim@elsewhere.example')
            code, text = c.rcpt(f'team-confirm+{guess}@{DOMAIN}')
            c.quit()
            self.assertEqual(code, 550, text)
        self.assertNotIn('victim@elsewhere.example', self.members())

    def test_unsubscribe_needs_a_reply_from_the_member(self):
        # a forged unsubscribe of x: the confirmation goes to x
        self.request('x@remote.example', rcpt='team-unsubscribe@lists.test', source=OUTSIDE_CLIENT)
        self.assertEqual(self.members()['x@remote.example'], 1, 'still a member')
        _, msg = self.confirmation_for('x@remote.example')
        token = self.token_of(msg)
        self.post('x@remote.example', message('X <x@remote.example>'),
                  rcpts=(f'team-confirm+{token}@{DOMAIN}',))
        self.assertNotIn('x@remote.example', self.members())
        self.assertIn('result=unsubscribed', self.log())

    def test_leaving_a_list_one_is_not_on_sends_nothing(self):
        self.request('nobody@elsewhere.example', rcpt='team-unsubscribe@lists.test')
        self.request('alice@lists.test', rcpt='team-subscribe@lists.test')  # already a member
        self.drain()
        self.assertEqual(self.sink.messages, [])
        self.assertEqual(self.maildir('alice'), [])

    def test_request_address_subject_commands(self):
        req = 'team-request@lists.test'
        self.request('carol@elsewhere.example', rcpt=req, subject='subscribe')
        self.request('x@remote.example', rcpt=req, subject='Re: unsubscribe')
        self.request('dave@elsewhere.example', rcpt=req, subject='help')
        self.request('erin@elsewhere.example', rcpt=req, subject='what is this?')
        self.drain()
        _, sub = self.sink_for('carol@elsewhere.example')[0]
        self.assertIn('add carol@elsewhere.example to the list', sub.get_payload())
        _, unsub = self.sink_for('x@remote.example')[0]
        self.assertIn('remove x@remote.example from the list', unsub.get_payload())
        _, helpmsg = self.sink_for('dave@elsewhere.example')[0]
        self.assertIn('team-subscribe@lists.test', helpmsg.get_payload())
        self.assertIsNone(helpmsg['Reply-To'])
        self.assertFalse(self.sink_for('erin@elsewhere.example'), 'an unknown command gets no answer')
        # "confirm TOKEN" in the Subject to -request@ works as the address does
        token = self.token_of(sub)
        self.request('carol@elsewhere.example', rcpt=req, subject=f'Re: confirm {token}')
        self.assertEqual(self.members().get('carol@elsewhere.example'), 1)

    def test_token_is_bound_to_its_list_and_action_and_expires(self):
        self.p.sql("INSERT INTO lists (address, owner) VALUES ('other@lists.test', ?)", OWNER)
        self.request('carol@elsewhere.example')
        _, msg = self.confirmation_for('carol@elsewhere.example')
        token = self.token_of(msg)
        c = self.smtp()
        c.mail('carol@elsewhere.example')
        code, _ = c.rcpt(f'other-confirm+{token}@{DOMAIN}')
        c.quit()
        self.assertEqual(code, 550, "another list's confirm address does not take it")
        self.p.sql('UPDATE list_pending SET expires_at = 1')
        c = self.smtp()
        c.mail('carol@elsewhere.example')
        code, _ = c.rcpt(f'team-confirm+{token}@{DOMAIN}')
        c.quit()
        self.assertEqual(code, 550, 'expired')
        self.assertNotIn('carol@elsewhere.example', self.members())

    def test_auto_replies_and_bounces_never_confirm_or_get_answers(self):
        self.request('carol@elsewhere.example')
        _, msg = self.confirmation_for('carol@elsewhere.example')
        confirm = f'team-confirm+{self.token_of(msg)}@{DOMAIN}'
        # a vacation reply to the confirmation's Reply-To
        self.request('carol@elsewhere.example', rcpt=confirm, subject='Out of office',
                     extra='Auto-Submitted: auto-replied\n')
        self.assertNotIn('carol@elsewhere.example', self.members())
        # a bounce (null sender) to the request addresses: no answer
        for rcpt in ('team-subscribe@lists.test', 'team-request@lists.test'):
            raw = (f'From: MAILER-DAEMON@elsewhere.example\nTo: {rcpt}\nSubject: subscribe\n\nx\n').encode()
            self.assertEqual(self.send('', [rcpt], raw)[0], 250)
        self.request('dave@elsewhere.example', extra='Precedence: bulk\n')
        self.sink.handler.messages.clear()
        self.drain()
        self.assertEqual(self.sink.messages, [])

    def test_confirmations_to_one_address_are_limited(self):
        for _ in range(5):
            self.request('carol@elsewhere.example', source=OUTSIDE_CLIENT)
        self.drain()
        self.assertEqual(len(self.sink_for('carol@elsewhere.example')), 3)
        self.assertIn('earlier replies to this address still wait', self.log())


class DmarcTest(ListCase):
    """When the poster's domain publishes p=reject or p=quarantine, the
    copy's From: becomes "Poster via team" <team@lists.test> with the
    poster in Reply-To:; otherwise From: stays."""

    def add_posters(self):
        for a in ('ann@reject.example', 'quin@quarantine.example', 'nina@none.example',
                  'pat@plain.example'):
            self.add_member(a)

    def test_munged_for_reject_and_quarantine_not_otherwise(self):
        self.add_posters()
        cases = {'ann@reject.example': 'Ann Example', 'quin@quarantine.example': 'Quin',
                 'nina@none.example': 'Nina', 'pat@plain.example': 'Pat'}
        for addr, name in cases.items():
            self.post(addr, message(f'{name} <{addr}>', subject=addr))
        got = {m['Subject'][7:]: m for m in self.maildir('alice')}
        self.assertEqual(got['ann@reject.example']['From'], f'"Ann Example via team" <{LIST}>')
        self.assertEqual(got['ann@reject.example']['Reply-To'], 'Ann Example <ann@reject.example>')
        self.assertEqual(got['quin@quarantine.example']['From'], f'"Quin via team" <{LIST}>')
        self.assertEqual(got['nina@none.example']['From'], 'Nina <nina@none.example>')
        self.assertIsNone(got['nina@none.example']['Reply-To'])
        self.assertEqual(got['pat@plain.example']['From'], 'Pat <pat@plain.example>')
        self.assertEqual(len(got['ann@reject.example'].get_all('From')), 1)

    def test_munged_copy_keeps_an_existing_reply_to_and_is_aligned(self):
        import dkim
        self.add_posters()
        self.post('ann@reject.example', message('"Doe, Ann" <ann@reject.example>',
                                                extra='Reply-To: <ann-replies@reject.example>\n'))
        m = self.maildir('alice')[0]
        self.assertEqual(m['From'], f'"Doe, Ann via team" <{LIST}>')
        self.assertEqual(m['Reply-To'], '<ann-replies@reject.example>, "Doe, Ann" <ann@reject.example>')
        self.drain()
        raw = self.sink_for('x@remote.example')[0][0]['content']
        sig = parse_bytes(raw)['DKIM-Signature'].replace('\n', '').replace('\t', '').replace(' ', '')
        self.assertIn(f'd={DOMAIN}', sig, 'signed by the domain now in From:')
        pub = self.pub
        self.assertTrue(dkim.verify(crlf(raw), dnsfunc=lambda n, timeout=5: f'v=DKIM1; k=rsa; p={pub}'.encode()))

    def test_a_from_in_the_lists_domain_that_nothing_vouches_for_is_munged(self):
        # The copy is signed by lists.test: an outsider writing as alice@
        # must not come out with an aligned signature under her name.
        self.post('alice@lists.test', message('Alice <alice@lists.test>', subject='forged'),
                  source=OUTSIDE_CLIENT)
        m = self.maildir('bob')[0]
        self.assertEqual(m['From'], f'"Alice via team" <{LIST}>')
        self.assertEqual(m['Reply-To'], 'Alice <alice@lists.test>')
        # the same from a trusted network (or after AUTH: IdentityTest) stays
        self.post('alice@lists.test', message('Alice <alice@lists.test>', subject='real'))
        real = [m for m in self.maildir('bob') if m['Subject'] == '[team] real'][0]
        self.assertEqual(real['From'], 'Alice <alice@lists.test>')

    def test_checked_mail_from_outside_uses_the_policy_found_on_the_way_in(self):
        self.add_posters()
        self.post('ann@reject.example', message('Ann <ann@reject.example>'), source=OUTSIDE_CLIENT)
        m = self.maildir('alice')[0]
        self.assertEqual(m['From'], f'"Ann via team" <{LIST}>')
        self.assertIn('dmarc=pass', m['Authentication-Results'])


class BounceTest(ListCase):
    """A bounce to a member's VERP address (an RFC 3464 report, or any
    mail to it) counts against that member; after list_bounce_limit days
    within 30 the member is disabled and the owner is told. Bounces never
    reach the poster."""

    def report(self, rcpt, action='failed', status='5.1.1'):
        return (f'From: MAILER-DAEMON@remote.example\nTo: team-bounces@lists.test\n'
                f'Subject: Undelivered Mail\nMIME-Version: 1.0\n'
                f'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
                f'--b\nContent-Type: text/plain\n\nIt did not work.\n\n'
                f'--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.remote.example\n\n'
                f'Final-Recipient: rfc822; {rcpt}\nAction: {action}\nStatus: {status}\n\n--b--\n').encode()

    def days(self, member):
        """The bounces counted against member."""
        return self.p.sql('SELECT count(*) FROM list_bounces WHERE address = ?', member)[0][0]

    def test_report_or_any_mail_to_the_verp_address_counts(self):
        verp = 'team-bounces+x=remote.example@lists.test'
        self.assertEqual(self.send('', [verp], self.report('x@remote.example'))[0], 250)
        self.assertEqual(self.days('x@remote.example'), 1)
        # a plain message to y's VERP address counts too
        verp_y = 'team-bounces+y=remote.example@lists.test'
        raw = b'From: postmaster@remote.example\nSubject: mailbox gone\n\nno such user\n'
        self.assertEqual(self.send('postmaster@remote.example', [verp_y], raw)[0], 250)
        self.assertEqual(self.days('y@remote.example'), 1)

    def test_delays_and_auto_replies_do_not_count(self):
        verp = 'team-bounces+x=remote.example@lists.test'
        self.send('', [verp], self.report('x@remote.example', action='delayed', status='4.4.1'))
        raw = b'From: x@remote.example\nSubject: Out of office\nAuto-Submitted: auto-replied\n\naway\n'
        self.send('x@remote.example', [verp], raw)
        self.assertEqual(self.days('x@remote.example'), 0)

    def test_a_forged_verp_address_gives_nothing_away(self):
        replies = []
        for verp in ('team-bounces+x=remote.example@lists.test',          # a member
                     'team-bounces+nobody=remote.example@lists.test',     # not one
                     'team-bounces+garbage@lists.test'):                  # not even an address
            c = self.smtp(source=OUTSIDE_CLIENT)
            c.mail('')
            replies.append(c.rcpt(verp))
            replies.append(c.data(crlf(self.report('z@remote.example')))[:1])
            c.quit()
        self.assertEqual(replies[0][0], 250)
        self.assertEqual(replies[0], replies[2])
        self.assertEqual(replies[2], replies[4])
        self.assertEqual(replies[1], replies[3])
        self.assertEqual(self.p.sql('SELECT count(*) FROM list_bounces')[0][0], 1)

    def test_bare_bounces_address_reads_final_recipient(self):
        self.send('', ['team-bounces@lists.test'], self.report('y@remote.example'))
        self.send('', ['team-bounces@lists.test'], self.report('stranger@remote.example'))
        self.assertEqual(self.days('y@remote.example'), 1)
        self.assertEqual(self.days('stranger@remote.example'), 0)

    def test_limit_disables_the_member_and_tells_the_owner(self):
        self.p.set('list_bounce_limit', 3)
        verp = 'team-bounces+x=remote.example@lists.test'
        for _ in range(2):
            self.send('', [verp], self.report('x@remote.example'))
        self.assertEqual(self.members()['x@remote.example'], 1, 'two are not three')
        self.send('', [verp], self.report('x@remote.example'))
        self.assertEqual(self.members()['x@remote.example'], 0, 'disabled at the third')
        self.assertEqual(self.days('x@remote.example'), 0, 'its bounces forgotten')
        notices = [m for m in self.maildir('olivia') if 'disabled' in m['Subject']]
        self.assertEqual(len(notices), 1)
        self.assertIn('x@remote.example', notices[0].get_payload())
        self.assertIn('bounced 3 times', notices[0].get_payload())
        self.assertEqual(notices[0]['Auto-Submitted'], 'auto-generated')
        # more bounces change nothing and tell nobody again
        self.send('', [verp], self.report('x@remote.example'))
        self.assertEqual(len([m for m in self.maildir('olivia') if 'disabled' in m['Subject']]), 1)
        # a disabled member is no longer sent to
        self.post('y@remote.example', message('Y <y@remote.example>'))
        self.drain()
        self.assertFalse(self.sink_for('x@remote.example'))
        self.assertTrue(self.sink_for('y@remote.example'))

    def test_only_bounces_within_thirty_days_count(self):
        self.p.set('list_bounce_limit', 2)
        now = int(time.time())
        self.p.sql('INSERT INTO list_bounces VALUES (?, ?, ?)', LIST, 'y@remote.example',
                   now - 31 * 86400)
        self.send('', ['team-bounces+y=remote.example@lists.test'], self.report('y@remote.example'))
        self.assertEqual(self.members()['y@remote.example'], 1, 'the one 31 days ago is outside')
        self.p.sql('INSERT INTO list_bounces VALUES (?, ?, ?)', LIST, 'x@remote.example',
                   now - 29 * 86400)
        self.send('', ['team-bounces+x=remote.example@lists.test'], self.report('x@remote.example'))
        self.assertEqual(self.members()['x@remote.example'], 0, 'the one 29 days ago is inside')
        # the queue runner forgets what is older than the window
        run_queue(self.p)
        self.assertEqual(self.p.sql('SELECT count(*) FROM list_bounces WHERE at < ?',
                                    now - 30 * 86400)[0][0], 0)

    def test_subscribing_again_enables_and_forgets(self):
        self.p.sql("UPDATE list_members SET enabled = 0 WHERE address = 'x@remote.example'")
        raw = (b'From: <x@remote.example>\nTo: team-subscribe@lists.test\nSubject: again\n\nhi\n')
        self.assertEqual(self.send('x@remote.example', ['team-subscribe@lists.test'], raw)[0], 250)
        self.drain()
        _, msg = [(e, m) for e, m in self.sink_for('x@remote.example')][0]
        token = self.token_of(msg)
        self.post('x@remote.example', message('X <x@remote.example>'),
                  rcpts=(f'team-confirm+{token}@{DOMAIN}',))
        self.assertEqual(self.members()['x@remote.example'], 1)

    def test_remote_refusal_counts_and_never_reaches_the_poster(self):
        self.sink.handler.rules['x@remote.example'] = '550 5.1.1 no such user'
        self.post('alice@lists.test', message('Alice <alice@lists.test>'))
        self.drain()
        self.assertEqual(self.days('x@remote.example'), 1)
        # alice, the poster, has only her own copy of the post: no bounce
        msgs = self.maildir('alice')
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0]['List-Id'], '<team.lists.test>')
        self.assertEqual(self.p.sql('SELECT count(*) FROM queue_messages')[0][0], 0)


class LoopTest(ListCase):
    """A message that already carries this list's List-Id is not sent out
    again; a post to a list that is itself a member of another list still
    works once."""

    def test_own_list_id_is_not_sent_again(self):
        raw = message('X <x@remote.example>', extra='List-Id: <team.lists.test>\n')
        self.post('x@remote.example', raw)
        self.assertEqual(self.maildir('alice'), [])
        self.assertEqual(self.p.sql('SELECT count(*) FROM queue_messages')[0][0], 0)
        self.assertIn('reason=loop', self.log())

    def test_another_lists_id_does_not_stop_a_post(self):
        raw = message('X <x@remote.example>', extra='List-Id: Other <other.elsewhere.example>\n')
        self.post('x@remote.example', raw)
        m = self.maildir('alice')[0]
        self.assertEqual(sorted(m.get_all('List-Id')), ['<team.lists.test>', 'Other <other.elsewhere.example>'])

    def test_a_list_that_is_a_member_gets_the_post_once(self):
        self.p.sql("INSERT INTO lists (address, owner) VALUES ('sub@lists.test', ?)", OWNER)
        self.add_member('carol@lists.test', lst='sub@lists.test')
        self.add_member('alice@lists.test', lst='sub@lists.test')
        self.add_member('sub@lists.test')
        self.post('x@remote.example', message('X <x@remote.example>'))
        carol = self.maildir('carol')
        self.assertEqual(len(carol), 1)
        self.assertEqual(sorted(carol[0].get_all('List-Id')), ['<sub.lists.test>', '<team.lists.test>'])
        self.assertEqual(carol[0]['List-Post'], '<mailto:sub@lists.test>')
        # alice is on both: one copy through each
        self.assertEqual(len(self.maildir('alice')), 2)

    def test_two_lists_members_of_each_other_do_not_loop(self):
        self.p.sql("INSERT INTO lists (address, owner) VALUES ('sub@lists.test', ?)", OWNER)
        self.add_member('carol@lists.test', lst='sub@lists.test')
        self.add_member(LIST, lst='sub@lists.test')
        self.add_member('sub@lists.test')
        self.post('x@remote.example', message('X <x@remote.example>'))
        self.assertEqual(len(self.maildir('carol')), 1)
        self.assertEqual(len(self.maildir('alice')), 1)
        # and a copy that comes back from outside with team's List-Id stops
        back = message('X <x@remote.example>', extra='List-Id: <sub.lists.test>\nList-Id: <team.lists.test>\n')
        self.post('sub-bounces@lists.test', back)
        self.assertEqual(len(self.maildir('alice')), 1)


class OwnerAndRepliesTest(ListCase):
    """team-owner@ reaches the owner; the list's own mail goes with the
    -bounces@ address as envelope sender and RFC 3834 Auto-Submitted."""

    list_owner = 'boss@elsewhere.example'

    def test_owner_address_reaches_a_remote_owner_through_srs(self):
        raw = b'From: <x@remote.example>\nSubject: question\n\nhi\n'
        self.assertEqual(self.send('x@remote.example', ['team-owner@lists.test'], raw)[0], 250)
        self.drain()
        got = self.sink_for('boss@elsewhere.example')
        self.assertEqual(len(got), 1)
        self.assertTrue(got[0][0]['mail_from'].startswith('SRS0='), got[0][0]['mail_from'])

    def test_held_notice_to_a_remote_owner_is_signed_and_auto_submitted(self):
        self.post('eve@elsewhere.example', message('Eve <eve@elsewhere.example>'))
        self.drain()
        got = self.sink_for('boss@elsewhere.example')
        self.assertEqual(len(got), 1)
        env, msg = got[0]
        self.assertEqual(env['mail_from'], 'team-bounces@lists.test')
        self.assertEqual(msg['Auto-Submitted'], 'auto-generated')
        self.assertIn(f'd={DOMAIN}', msg['DKIM-Signature'].replace('\n', '').replace('\t', ''))


class IdentityTest(ListCase):
    """A list resending a member's post is the list's own mail: the post is
    bound to the login that sends it (DESIGN "Tenants and abuse"), the
    copies are not."""

    def test_login_posts_its_own_from_and_not_anothers(self):
        sub = self.p.serve(SMTP, ['--mode=submission'])
        c = self.smtp(srv=sub)
        c.login('alice', PASSWORD)
        c.sendmail('alice@lists.test', [LIST], crlf(message('Alice <alice@lists.test>', subject='mine')))
        with self.assertRaises(smtplib.SMTPDataError) as e:
            c.sendmail('alice@lists.test', [LIST], crlf(message('Bob <bob@lists.test>', subject='his')))
        self.assertEqual(e.exception.smtp_code, 553)
        c.quit()
        copies = self.maildir('bob')
        self.assertEqual([m['Subject'] for m in copies], ['[team] mine'])
        self.assertEqual(copies[0]['From'], 'Alice <alice@lists.test>')


class ScaleTest(ListCase):
    """A post to 1,000 members (900 remote in 100 domains, 100 local) is
    accepted with one queue transaction and answered within 100 ms more
    than a one-recipient message (release build; the sanitizer build here
    is given more room); the runner delivers the copies over one
    connection per destination, RSET between messages, at most
    QUEUE_PARALLEL_MAX at once."""

    SINK_HOST = '127.0.0.2'

    @classmethod
    def add_dns(cls, d):
        d.a('mx.sink.test', cls.SINK_HOST)
        for i in range(100):
            d.mx(f'd{i:02d}.test', 'mx.sink.test')

    def setUp(self):
        super().setUp()
        self.p.set('relayhost', None)
        self.mx_sink = Sink(host=self.SINK_HOST, port=25)
        self.addCleanup(self.mx_sink.stop)
        con = sqlite3.connect(self.p.db, timeout=30)
        with con:
            hashed = con.execute("SELECT password FROM mailboxes WHERE login = 'alice'").fetchone()[0]
            con.execute('DELETE FROM list_members')
            for i in range(100):
                con.execute('INSERT INTO mailboxes (login, password) VALUES (?, ?)', (f'm{i:03d}', hashed))
                con.execute('INSERT INTO addresses VALUES (?, ?)', (f'm{i:03d}@{DOMAIN}', f'm{i:03d}'))
                con.execute('INSERT INTO list_members (list, address) VALUES (?, ?)', (LIST, f'm{i:03d}@{DOMAIN}'))
            for i in range(900):
                con.execute('INSERT INTO list_members (list, address) VALUES (?, ?)',
                            (LIST, f'u{i:03d}@d{i % 100:02d}.test'))
        con.close()
        # Mailboxes that have had mail before: a Maildir's first delivery
        # makes its folders (four directory fsyncs), which is not what a
        # list's post costs from then on.
        for i in range(100):
            for sub in ('tmp', 'new', 'cur'):
                os.makedirs(os.path.join(self.p.maildir(f'm{i:03d}'), sub), mode=0o700)
        for login in ('carol', 'arch'):
            for sub in ('tmp', 'new', 'cur'):
                os.makedirs(os.path.join(self.p.maildir(login), sub), mode=0o700, exist_ok=True)

    def timed(self, rcpts, raw):
        c = self.smtp()
        try:
            c.mail('m000@' + DOMAIN)
            for r in rcpts:
                self.assertEqual(c.rcpt(r)[0], 250)
            code, _ = c.docmd('DATA')
            self.assertEqual(code, 354)
            c.send(crlf(raw) + b'.\r\n')
            t0 = time.perf_counter()
            code, text = c.getreply()
            elapsed = time.perf_counter() - t0
            self.assertEqual(code, 250, text)
        finally:
            c.quit()
        return elapsed

    def test_thousand_members(self):
        body = 'x' * 70 + '\n'
        raw = message(f'M <m000@{DOMAIN}>', body=body * 58)
        single = min(self.timed(['carol@' + DOMAIN], raw) for _ in range(3))
        fan = self.timed([LIST], raw)
        print(f'\nend of DATA: one recipient {single * 1000:.1f} ms, list of 1000 {fan * 1000:.1f} ms',
              file=sys.stderr)
        # 100 ms in a build without sanitizers (bench/README.md measures
        # it too). Under ASan every fresh page SQLite touches faults and
        # the time swings with the machine's load: there the bound is
        # only against the absurd, and the cost per member is checked by
        # counting fsyncs instead (test_fsyncs_do_not_grow_with_members).
        limit = float(os.environ.get('POSTAGE_LIST_MS', '10000' if sanitized() else '100'))
        self.assertLess((fan - single) * 1000, limit)
        rows = self.p.sql('SELECT id, verp FROM queue_messages')
        self.assertEqual(len(rows), 1, 'one queue entry for the 900 remote copies')
        self.assertEqual(self.p.sql('SELECT count(*) FROM queue_recipients')[0][0], 900)
        self.assertEqual(sum(len(self.p.messages(f'm{i:03d}')) for i in range(100)), 100)
        self.assertRegex(self.log(), r'result=posted [^\n]*local=101 remote=900')

        t0 = time.monotonic()
        run_queue(self.p, timeout=300)
        took = time.monotonic() - t0
        msgs = self.mx_sink.messages
        self.assertEqual(len(msgs), 900)
        self.assertEqual(len({m['mail_from'] for m in msgs}), 900, 'one VERP sender each')
        self.assertTrue(all(len(m['rcpts']) == 1 for m in msgs))
        peers = {m['peer'] for m in msgs}
        self.assertLessEqual(len(peers), 100, 'one connection per destination')
        self.assertGreater(len(msgs) / len(peers), 5, 'connections carry many messages')
        # at most QUEUE_PARALLEL_MAX connections at once
        spans = {}
        for peer, start, end in self.mx_sink.handler.sessions:
            s0, e0 = spans.get(peer, (start, end))
            spans[peer] = (min(s0, start), max(e0, end))
        events = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
        most = cur = 0
        for _, step in events:
            cur += step
            most = max(most, cur)
        self.assertLessEqual(most, 4)
        print(f'runner: 900 copies over {len(peers)} connections in {took:.2f} s', file=sys.stderr)

    def test_fsyncs_do_not_grow_with_members(self):
        # The handler on pipes under strace: a post to the 1,000 members
        # makes the local copies durable with a handful of fsyncs (the
        # shared file, the journal, the queue, the database), not one a
        # member.
        strace = shutil.which('strace')
        if not strace:
            self.skipTest('strace is not installed')
        raw = crlf(message(f'M <m000@{DOMAIN}>'))
        dialog = (f'EHLO client.test\r\nMAIL FROM:<m000@{DOMAIN}>\r\nRCPT TO:<{LIST}>\r\n'
                  'DATA\r\n').encode() + raw + b'.\r\nQUIT\r\n'
        out = os.path.join(self.p.dir, 'strace.txt')
        r = subprocess.run([strace, '-f', '-c', '-o', out, '-e', 'trace=fsync,fdatasync,syncfs,sync',
                            harness.binary(SMTP), '--db', self.p.db], input=dialog,
                           capture_output=True, env=self.p.env(), timeout=300)
        self.assertIn(b'250 2.0.0 Ok: queued', r.stdout, r.stdout[-500:])
        self.assertEqual(sum(len(self.p.messages(f'm{i:03d}')) for i in range(100)), 100)
        calls = 0
        with open(out) as f:
            for line in f:
                fields = line.split()
                if fields and fields[-1] in ('fsync', 'fdatasync', 'syncfs', 'sync'):
                    calls += int(fields[3])
        self.assertLess(calls, 25, f'{calls} fsyncs for one post to 1,000 members')


if __name__ == '__main__':
    netns.main()
