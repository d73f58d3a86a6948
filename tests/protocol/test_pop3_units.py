"""The shipped POP3 units and xinetd entries: systemd accepts the units as
written, and xinetd runs the entries (moved to a loopback port, the
built binary and this test's database) with real POP3 clients."""
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import unittest

from harness import BUILD, SOURCE, binary, main
from pop3_base import PASSWORD, POP3, Pop3TestCase, new_message, wire_lines

UNITS = os.path.join(SOURCE, 'units')
INSTALLED = '/usr/libexec/postage/pop3-handler'


def read(path):
    with open(path) as f:
        return f.read()


def settings(text):
    """key=value lines of a unit file (last one wins; comments dropped)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(('#', ';', '[')) and '=' in line:
            k, v = line.split('=', 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


class SystemdUnits(unittest.TestCase):
    def test_sockets(self):
        for name, port in (('postage-pop3.socket', '110'), ('postage-pop3s.socket', '995')):
            s = settings(read(os.path.join(UNITS, name)))
            self.assertEqual(s['ListenStream'], [port], name)
            self.assertEqual(s['Accept'], ['yes'], name)
            self.assertTrue(int(s['MaxConnections'][0]) > 0, name)
            self.assertTrue(int(s['MaxConnectionsPerSource'][0]) > 0, name)

    def test_services(self):
        for name, args in (('postage-pop3@.service', []), ('postage-pop3s@.service', ['--tls'])):
            s = settings(read(os.path.join(UNITS, name)))
            self.assertEqual(s['ExecStart'], [' '.join([INSTALLED] + args)], name)
            self.assertEqual(s['StandardInput'], ['socket'])
            self.assertEqual(s['StandardOutput'], ['socket'])
            self.assertEqual(s['ProtectSystem'], ['strict'])
            self.assertEqual(s['NoNewPrivileges'], ['yes'])
            self.assertEqual(s['CapabilityBoundingSet'], [''])
            self.assertEqual(s['PrivateTmp'], ['yes'])
            self.assertIn('MemoryMax', s)
            self.assertIn('RuntimeMaxSec', s)
            self.assertEqual(s['ReadWritePaths'],
                             ['/var/lib/postage /var/mail/postage /var/spool/postage'])

    def test_systemd_analyze_verify(self):
        exe = shutil.which('systemd-analyze')
        if not exe:
            self.skipTest('systemd-analyze is not installed')
        d = tempfile.mkdtemp(prefix='postage-units-')
        self.addCleanup(shutil.rmtree, d, True)
        built = binary(POP3)
        names = ['postage-pop3.socket', 'postage-pop3@.service',
                 'postage-pop3s.socket', 'postage-pop3s@.service']
        for n in names:
            with open(os.path.join(d, n), 'w') as f:
                f.write(read(os.path.join(UNITS, n)).replace(INSTALLED, built))
        r = subprocess.run([exe, 'verify', '--man=no'] + [os.path.join(d, n) for n in names],
                           capture_output=True, timeout=60, cwd=d)
        out = (r.stdout + r.stderr).decode(errors='replace')
        self.assertEqual(r.returncode, 0, out)
        self.assertEqual(out.strip(), '', 'systemd-analyze had remarks')


class ShippedXinetd(Pop3TestCase):
    """The entries from units/xinetd/, run by a real xinetd."""
    start_server = False

    def setUp(self):
        if not shutil.which('xinetd'):
            self.skipTest('xinetd is not installed')
        super().setUp()
        self.put(new_message('xinetd entry'))
        self.xinetd = None

    def tearDown(self):
        if self.xinetd and self.xinetd.poll() is None:
            os.killpg(self.xinetd.pid, signal.SIGTERM)
            self.xinetd.wait(timeout=10)
        super().tearDown()

    def serve_entry(self, name):
        from harness import _free_port, _listening
        text = read(os.path.join(UNITS, 'xinetd', name))
        port = _free_port('127.0.0.1')
        env = ' '.join(f'{k}={v}' for k, v in self.p.env_items())
        m = re.search(r'server_args\s*=\s*(.*)', text)
        args = m.group(1).strip() if m else ''
        text = re.sub(r'server_args\s*=.*\n', '', text)
        text = re.sub(r'(port\s*=\s*)\d+', rf'\g<1>{port}', text)
        text = re.sub(r'(server\s*=\s*)\S+', rf'\g<1>{binary(POP3)}', text)
        text = re.sub(r'(user\s*=\s*)\S+', r'\g<1>root', text)
        text = re.sub(r'(group\s*=\s*)\S+', r'\g<1>root', text)
        text = re.sub(r'flags\s*=\s*IPv6\n', '', text)
        # ASan reserves terabytes of address space: no address-space cap
        # for a sanitizer build (the key itself stays, and is parsed).
        text = re.sub(r'(rlimit_as\s*=\s*)\S+', r'\g<1>UNLIMITED', text)
        text = re.sub(r'log_type\s*=.*\n',
                      f'log_type = FILE {os.path.join(self.p.dir, "xinetd.log")}\n', text)
        extra = (f'\tbind = 127.0.0.1\n\tserver_args = --db {self.p.db} {args}\n'
                 f'\tenv = {env}\n')
        text = text.replace('\n}', '\n' + extra + '}')
        conf = os.path.join(self.p.dir, f'{name}.conf')
        with open(conf, 'w') as f:
            f.write(text)
        self.xinetd = subprocess.Popen(['xinetd', '-dontfork', '-f', conf, '-pidfile',
                                        os.path.join(self.p.dir, f'{name}.pid')],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        deadline = time.monotonic() + 10
        while not _listening('127.0.0.1', port):
            if time.monotonic() > deadline or self.xinetd.poll() is not None:
                self.fail(f'xinetd did not serve {name}:\n{text}')
            time.sleep(0.05)
        return port

    def test_pop3_entry(self):
        import poplib
        if os.geteuid() != 0:
            self.skipTest('the entry runs as a user; only root may switch to it')
        port = self.serve_entry('postage-pop3')
        m = poplib.POP3('127.0.0.1', port, timeout=30)
        m.user('alice')
        m.pass_(PASSWORD)
        self.assertEqual(m.retr(1)[1], wire_lines(self.read(self.p.messages('alice')[0])))
        m.quit()

    def test_pop3s_entry(self):
        import poplib
        if os.geteuid() != 0:
            self.skipTest('the entry runs as a user; only root may switch to it')
        d = self.p.dir
        cert, key = os.path.join(d, 'cert.pem'), os.path.join(d, 'key.pem')
        r = subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
                            '-subj', '/CN=mx.test.example', '-days', '2',
                            '-keyout', key, '-out', cert], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.p.set('tls_cert', cert)
        self.p.set('tls_key', key)
        port = self.serve_entry('postage-pop3s')
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False
        m = poplib.POP3_SSL('127.0.0.1', port, context=ctx, timeout=30)
        m.user('alice')
        m.pass_(PASSWORD)
        self.assertEqual(m.stat()[0], 1)
        m.quit()


if __name__ == '__main__':
    main()
