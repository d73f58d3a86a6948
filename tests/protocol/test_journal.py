"""What the journal gets (issue 18): the native protocol's fields, as an
administrator searches them with journalctl.

Runs inside a private mount namespace (`unshare --mount`) where a tmpfs
covers /run/systemd and this test binds the journal's datagram socket at
/run/systemd/journal/socket, so the handlers, started without
POSTAGE_LOG_FILE, talk to it exactly as they talk to systemd-journald.
Each datagram is parsed as journald parses it (one FIELD=value per line).
Skips (exit 77) when mount namespaces are not permitted.

Checked: a field carries the value alone, the same in every event
(`POSTAGE_LOGIN=alice` whether the line wrote login="alice" or
login=alice, so `journalctl POSTAGE_LOGIN=alice` finds them all); every
field and MESSAGE is printable ASCII, UTF-8 from a client escaped as
\\xNN the same way in every program; a session that ends with QUIT logs
its disconnect, SMTP and POP3 alike.
"""
import os
import shutil
import smtplib
import socket
import sys
import tempfile
import poplib
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
INSIDE = 'POSTAGE_JOURNAL_NS'
JOURNAL_DIR = '/run/systemd/journal'


def reexec_in_namespace():
    for tool in ('unshare', 'mount'):
        if not shutil.which(tool):
            harness.skip_file(f'{tool} is not installed')
    base = ['unshare', '--mount']
    if os.geteuid() != 0:
        base[1:1] = ['--map-root-user']
    harness.rerun_unshared(base, INSIDE, 'mount namespaces',
                           setup='mount --make-rprivate / && mkdir -p /run/systemd && '
                                 'mount -t tmpfs -o mode=0755 tmpfs /run/systemd && '
                                 f'mkdir -p {JOURNAL_DIR}')


if __name__ == '__main__' and os.environ.get(INSIDE) != '1':
    reexec_in_namespace()

from harness import Postage  # noqa: E402

SMTP = 'smtp-handler/smtp-handler'
POP3 = 'pop3-handler/pop3-handler'
PASSWORD = 'Journal-test-pw-71'


class JournalPostage(Postage):
    """Handlers log to the journal socket, not to a file."""

    def env_items(self):
        return [(k, v) for k, v in super().env_items() if k != 'POSTAGE_LOG_FILE']


def parse_datagram(data):
    fields = {}
    for line in data.split(b'\n'):
        if not line:
            continue
        key, sep, value = line.partition(b'=')
        assert sep, f'a journal line without "=": {line!r}'
        fields.setdefault(key.decode('ascii'), []).append(value)
    return fields


class JournalFields(unittest.TestCase):

    def setUp(self):
        if os.environ.get(INSIDE) != '1':
            self.skipTest('runs inside its own mount namespace only')
        path = os.path.join(JOURNAL_DIR, 'socket')
        if os.path.exists(path):
            os.unlink(path)
        self.journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.journal.bind(path)
        os.chmod(path, 0o666)
        self.journal.settimeout(0.2)
        self.addCleanup(self.journal.close)
        p = self.p = JournalPostage().enter_for(self)
        p.add_domain('example.test')
        p.add_account('alice', PASSWORD, 'alice@example.test')
        p.add_relay_network('127.0.0.0/8')

    def tearDown(self):
        self.p.check_sanitizers()

    def events(self):
        out = []
        while True:
            try:
                data = self.journal.recv(65536)
            except socket.timeout:
                return out
            out.append(parse_datagram(data))

    def test_fields_hold_the_value_alone_and_stay_ascii(self):
        smtp = self.p.serve(SMTP, ['--mode=mx'])
        pop3 = self.p.serve(POP3)
        with smtplib.SMTP(smtp.host, smtp.port, timeout=30) as s:
            s.ehlo('client.test')
            s.login('alice', PASSWORD)
            refused = s.sendmail('alice@example.test',
                                 ['alice@example.test', 'jörg@remote.test'],
                                 b'From: <alice@example.test>\r\nSubject: j\r\n\r\nhi\r\n',
                                 mail_options=['SMTPUTF8'])
            self.assertEqual(refused, {})
        box = poplib.POP3(pop3.host, pop3.port, timeout=30)
        box.user('alice')
        box.pass_(PASSWORD)
        box.stat()
        box.quit()
        smtp.wait_handlers()
        pop3.wait_handlers()
        events = self.events()
        self.assertGreater(len(events), 5, events)

        for ev in events:
            for key, values in ev.items():
                for v in values:
                    self.assertTrue(all(0x20 <= b < 0x7f for b in v),
                                    f'{key} is not printable ASCII: {v!r}')
            self.assertIn('POSTAGE_SESSION', ev)

        def event(ident, name, **want):
            found = []
            for ev in events:
                if ev.get('SYSLOG_IDENTIFIER') != [ident.encode()]:
                    continue
                if ev.get('POSTAGE_EVENT') != [name.encode()]:
                    continue
                if all(ev.get('POSTAGE_' + k.upper()) == [v.encode()] for k, v in want.items()):
                    found.append(ev)
            return found

        # login="alice" (AUTH), login=alice (message, POP3): one value.
        logins = [ev for ev in events if 'POSTAGE_LOGIN' in ev]
        self.assertGreaterEqual(len(logins), 3, logins)
        self.assertEqual({v for ev in logins for v in ev['POSTAGE_LOGIN']}, {b'alice'})
        self.assertEqual(len(event('postage-smtp', 'auth', result='ok', login='alice')), 1)
        self.assertEqual(len(event('postage-pop3', 'login', result='ok', login='alice')), 1)
        msg = event('postage-smtp', 'message', result='accepted')
        self.assertEqual(len(msg), 1, events)
        self.assertEqual(msg[0]['POSTAGE_FROM'], [b'alice@example.test'])
        self.assertEqual(msg[0]['POSTAGE_LOGIN'], [b'alice'])
        # UTF-8 from the client: escaped, the same way in every event.
        queued = event('postage-smtp', 'queue', result='ok')
        self.assertEqual([ev['POSTAGE_RCPT'] for ev in queued], [[b'j\\xc3\\xb6rg@remote.test']])
        self.assertIn(b'rcpt="j\\xc3\\xb6rg@remote.test"', queued[0]['MESSAGE'][0])
        # QUIT ends a session with a disconnect line, in both programs.
        self.assertEqual(len(event('postage-smtp', 'disconnect', result='quit')), 1, events)
        self.assertEqual(len(event('postage-pop3', 'disconnect', result='quit')), 1, events)


if __name__ == '__main__':
    harness.main()
