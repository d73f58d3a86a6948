"""The shipped xinetd entries (units/xinetd/), run by a real xinetd as the
unprivileged user they name (issue 18).

A TLS key is often readable only through a supplementary group (Debian's
`ssl-cert`, mode 0640). The systemd units give the service its user's
supplementary groups; xinetd does so only with `groups = yes`. Here each
shipped entry is started as it is written, but with a test user whose
supplementary group alone may read the key (root in a private mount
namespace, with /etc/passwd and /etc/group copies that add the user and
the group, bind-mounted over the real ones), its port, address, program
and database paths changed for the test. Then STARTTLS (587) and implicit
TLS (465, 995) must work. With the `groups` line taken out, they must not:
the check can fail.

Skips (exit 77) when not root, or xinetd or mount namespaces are missing.
"""
import os
import poplib
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
INSIDE = 'POSTAGE_XINETD_NS'
UID, GID, CERT_GID = 64123, 64123, 64124
USER, CERT_GROUP = 'pgxuser', 'pgxcert'


def reexec_in_namespace():
    if os.geteuid() != 0:
        harness.skip_file('needs root (xinetd changes to the user an entry names)')
    for tool in ('unshare', 'mount'):
        if not shutil.which(tool):
            harness.skip_file(f'{tool} is not installed')
    if not (shutil.which('xinetd') or os.access('/usr/sbin/xinetd', os.X_OK)):
        harness.skip_file('xinetd is not installed (package xinetd)')
    tmp = tempfile.mkdtemp(prefix='postage-xinetd-etc-')
    try:
        with open('/etc/passwd') as f:
            passwd = f.read()
        with open('/etc/group') as f:
            group = f.read()
        with open(os.path.join(tmp, 'passwd'), 'w') as f:
            f.write(passwd + f'{USER}:x:{UID}:{GID}::/nonexistent:/usr/sbin/nologin\n')
        with open(os.path.join(tmp, 'group'), 'w') as f:
            f.write(group + f'{USER}:x:{GID}:\n{CERT_GROUP}:x:{CERT_GID}:{USER}\n')
        for name in ('passwd', 'group'):
            os.chmod(os.path.join(tmp, name), 0o644)
        harness.rerun_unshared(['unshare', '--mount'], INSIDE, 'mount namespaces',
                               setup='mount --make-rprivate / && '
                                     f'mount --bind {tmp}/passwd /etc/passwd && '
                                     f'mount --bind {tmp}/group /etc/group')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__' and os.environ.get(INSIDE) != '1':
    reexec_in_namespace()

from harness import Postage  # noqa: E402

ENTRIES = os.path.join(os.environ.get('POSTAGE_SOURCE', os.path.dirname(os.path.dirname(HERE))),
                       'units', 'xinetd')
PASSWORD = 'Xinetd-entry-pw-5'


def entry_attributes(text):
    """The service block's lines as (name, value) pairs, comments out."""
    body = text[text.index('{') + 1:text.rindex('}')]
    out = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        name, value = re.split(r'\s*=\s*', line, maxsplit=1)
        out.append((name, value))
    return out


class ShippedEntries(unittest.TestCase):

    def setUp(self):
        if os.environ.get(INSIDE) != '1':
            self.skipTest('runs inside its own mount namespace only')
        p = self.p = Postage().enter_for(self)
        os.chmod(p.dir, 0o755)
        p.add_domain('example.test')
        p.add_account('alice', PASSWORD, 'alice@example.test')
        tls = os.path.join(p.dir, 'tls')
        os.mkdir(tls, 0o755)
        self.cert = os.path.join(tls, 'cert.pem')
        key = os.path.join(tls, 'key.pem')
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                        'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', self.cert,
                        '-days', '2', '-subj', '/CN=' + p.hostname],
                       check=True, capture_output=True)
        # The key: root's, readable by the group only (as Debian's ssl-cert).
        os.chown(key, 0, CERT_GID)
        os.chmod(key, 0o640)
        os.chmod(self.cert, 0o644)
        p.set('tls_cert', self.cert)
        p.set('tls_key', key)
        # The programs, where the user can exec them (the build dir may be
        # under root's 0700 home, as in scripts/fresh --test).
        for program in ('smtp-handler', 'pop3-handler'):
            p.reachable_binary(harness.binary(f'{program}/{program}'))
        for root, dirs, files in os.walk(p.dir):
            for n in dirs + files:
                path = os.path.join(root, n)
                if path != key:
                    os.chown(path, UID, GID)
        os.chown(p.dir, UID, GID)
        self.xinetd = []

    def tearDown(self):
        for proc in self.xinetd:
            if proc.poll() is None:
                proc.terminate()
                harness.stop_process(proc, timeout=10)
        self.p.check_sanitizers()

    def serve_entry(self, name, with_groups=True):
        """Starts xinetd with the shipped entry `name`, changed only where a
        test must; returns its port."""
        with open(os.path.join(ENTRIES, name)) as f:
            attrs = entry_attributes(f.read())
        names = [a for a, _ in attrs]
        self.assertIn('groups', names, f'{name} has no groups line')
        self.assertIn(('groups', 'yes'), attrs)
        port = harness._free_port('127.0.0.1')
        program = os.path.basename(dict(attrs)['server'])
        binary = self.p.reachable_binary(harness.binary(f'{program}/{program}'))
        lines = ['defaults', '{',
                 f'\tlog_type = FILE {os.path.join(self.p.dir, "xinetd.log")}', '}',
                 f'service {name}', '{']
        for attr, value in attrs:
            if attr == 'groups' and not with_groups:
                continue
            if attr in ('port', 'server', 'log_type', 'log_on_success', 'log_on_failure',
                        'flags', 'rlimit_as'):
                continue
            if attr == 'user':
                value = USER
            if attr == 'group':
                value = USER
            if attr == 'server_args':
                value += f' --db {self.p.db}'
            lines.append(f'\t{attr} = {value}')
        lines += [f'\tport = {port}', '\tbind = 127.0.0.1', f'\tserver = {binary}',
                  '\tenv = ' + ' '.join(f'{k}={v}' for k, v in self.p.env_items()), '}']
        conf = os.path.join(self.p.dir, f'xinetd-{name}.conf')
        with open(conf, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        exe = shutil.which('xinetd') or '/usr/sbin/xinetd'
        proc = subprocess.Popen([exe, '-dontfork', '-f', conf, '-pidfile',
                                 os.path.join(self.p.dir, f'xinetd-{name}.pid')],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.xinetd.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.assertIsNone(proc.poll(), f'xinetd exited; config:\n' + '\n'.join(lines))
            try:
                socket.create_connection(('127.0.0.1', port), timeout=1).close()
                return port
            except OSError:
                time.sleep(0.05)
        self.fail(f'xinetd did not listen for {name}')

    def client_context(self):
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.check_hostname = False
        return ctx

    def test_submission_starttls_with_a_group_readable_key(self):
        for with_groups in (True, False):
            with self.subTest(groups=with_groups):
                port = self.serve_entry('postage-submission', with_groups)
                with smtplib.SMTP('127.0.0.1', port, timeout=30) as s:
                    s.ehlo('client.test')
                    if with_groups:
                        self.assertTrue(s.has_extn('starttls'), s.esmtp_features)
                        s.starttls(context=self.client_context())
                        s.ehlo('client.test')
                        s.login('alice', PASSWORD)
                    else:
                        # Without the group the key cannot be read: no TLS.
                        self.assertFalse(s.has_extn('starttls'), s.esmtp_features)

    def test_implicit_tls_entries_with_a_group_readable_key(self):
        port = self.serve_entry('postage-submissions')
        with smtplib.SMTP_SSL('127.0.0.1', port, timeout=30,
                              context=self.client_context()) as s:
            s.ehlo('client.test')
            s.login('alice', PASSWORD)
        port = self.serve_entry('postage-pop3s')
        box = poplib.POP3_SSL('127.0.0.1', port, timeout=30, context=self.client_context())
        box.user('alice')
        box.pass_(PASSWORD)
        self.assertEqual(box.stat(), (0, 0))
        box.quit()

    def test_every_shipped_entry_keeps_supplementary_groups(self):
        names = sorted(os.listdir(ENTRIES))
        self.assertEqual(len(names), 5, names)
        for name in names:
            with open(os.path.join(ENTRIES, name)) as f:
                attrs = entry_attributes(f.read())
            self.assertIn(('groups', 'yes'), attrs, name)
            self.assertIn(('user', 'postage'), attrs, name)


if __name__ == '__main__':
    harness.main()
