"""Test harness for postage's protocol tests.

    from harness import Postage
    with Postage() as p:
        p.add_domain('example.test')
        p.add_mailbox('alice', 'secret')
        p.add_address('alice@example.test', 'alice')
        srv = p.serve('smtp-handler/smtp-handler', ['--mode=mx'])
        ... talk to srv.host:srv.port ...
        p.check_sanitizers()

Postage() makes a temporary directory holding a fresh database (made from
schema/schema.sql), the mail root, the spool, the handlers' log file
($POSTAGE_LOG_FILE) and the sanitizer logs. serve() starts a built program
the way production does: under `systemd-socket-activate --inetd --accept`
or under a real xinetd with a generated config, on a free loopback port.

Environment:
  POSTAGE_BUILD   the meson build dir (default: <repo>/build)
  POSTAGE_SOURCE  the source tree (default: the repo holding this file)
  POSTAGE_KEEP    if set, the temporary directory is kept (path printed)

Everything stays on loopback (127.0.0.1 or ::1).
"""
import atexit
import glob
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get('POSTAGE_SOURCE') or os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get('POSTAGE_BUILD') or os.path.join(SOURCE, 'build')
SCHEMA = os.path.join(SOURCE, 'schema', 'schema.sql')

HOSTNAME = 'mx.test.example'

_live_servers = []


def _stop_all():
    for srv in list(_live_servers):
        srv.stop()


atexit.register(_stop_all)


def binary(program):
    """Path of a built program, e.g. binary('smtp-handler/smtp-handler')."""
    path = os.path.join(BUILD, program)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f'{path} is not built (POSTAGE_BUILD={BUILD})')
    return path


def main():
    """unittest.main(), but exits 77 (meson's "skipped") when every test
    that ran was skipped, e.g. because xinetd is not installed, or when
    nothing ran because setUpClass skipped (unittest then counts no test
    run, only the class's skip)."""
    prog = unittest.main(exit=False)
    r = prog.result
    if not r.wasSuccessful():
        sys.exit(1)
    skipped_tests = sum(1 for t, _ in r.skipped if isinstance(t, unittest.TestCase))
    if r.skipped and r.testsRun == skipped_tests:
        for reason in sorted({reason for _, reason in r.skipped}):
            print(f'skipped: {reason}', file=sys.stderr)
        sys.exit(77)
    sys.exit(0)


def skip_file(reason):
    """Ends a test file run as a program with meson's "skipped" (77),
    saying why on stderr."""
    print(f'skipped: {reason}', file=sys.stderr)
    sys.exit(77)


def rerun_unshared(unshare, inside_mark, what, setup=None):
    """Runs the calling test file again under the command unshare (a list,
    e.g. ['unshare', '--mount']) with inside_mark=1 in its environment;
    setup, when given, is a shell command line run inside first. Exits
    with the file's status, or skips (77) when the namespaces, named by
    what (e.g. 'mount namespaces'), cannot be made here."""
    probe = subprocess.run(unshare + ['true'], capture_output=True)
    if probe.returncode != 0:
        skip_file(f'{what} are not permitted here: '
                  + probe.stderr.decode(errors='replace').strip())
    cmd = list(unshare)
    if setup is not None:
        cmd += ['sh', '-c', setup + ' && exec "$@"', 'sh']
    env = dict(os.environ, **{inside_mark: '1'})
    r = subprocess.run(cmd + [sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:],
                       env=env)
    sys.exit(r.returncode)


def optional_module(name):
    """The module name, or None when it is not installed (the tests that
    need it skip)."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover
        return None


def have_ipv6_loopback():
    """True when a socket can be bound to ::1 here."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(('::1', 0))
        return True
    except OSError:
        return False


def recv_until_eof(sock, size=65536):
    """All the bytes sock gives until the peer shuts its side."""
    data = b''
    while True:
        chunk = sock.recv(size)
        if not chunk:
            return data
        data += chunk


def wait_for(pred, timeout=10, step=0.05):
    """Polls pred until it is true or timeout seconds have passed; returns
    its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def smtp_quit(c):
    """Says QUIT on the smtplib client c, or just closes it when the
    server has already gone."""
    import smtplib
    try:
        c.quit()
    except (smtplib.SMTPException, OSError):
        c.close()


def stop_process(proc, timeout=10):
    """Waits up to timeout seconds for proc to end, then kills it."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_group(proc, timeout=5):
    """SIGTERM to proc's process group; SIGKILL when proc has not ended
    timeout seconds later."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)


def new_message(to, body_marker, subject='test', body=None, extra_headers=''):
    """A test message (bytes, LF line ends) to the address to, its subject
    and Message-ID made unique; the default body carries body_marker, so
    a test can search the logs for it."""
    tag = uuid.uuid4().hex
    if body is None:
        body = f'Hello {tag}\n{body_marker}\n'
    return (f'From: sender@remote.example\nTo: {to}\n'
            f'Subject: {subject} {tag}\nMessage-ID: <{tag}@remote.example>\n'
            f'{extra_headers}\n{body}').encode()


def crypt_password(password, scheme='sha512crypt'):
    """A crypt(3) string for password: mkpasswd (package whois) if present,
    else Python's crypt module."""
    methods = {'sha512crypt': 'sha512crypt', 'yescrypt': 'yescrypt',
               'bcrypt': 'bcrypt', 'sha-512': 'sha512crypt'}
    if scheme not in methods:
        raise ValueError(f'unknown scheme {scheme}')
    if shutil.which('mkpasswd'):
        r = subprocess.run(['mkpasswd', '-m', methods[scheme], '--stdin'],
                           input=password.encode(), capture_output=True)
        out = r.stdout.decode().strip()
        if r.returncode == 0 and out.startswith('$'):
            return out
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        import crypt
    method = {'sha512crypt': crypt.METHOD_SHA512,
              'bcrypt': getattr(crypt, 'METHOD_BLOWFISH', None),
              'yescrypt': None, 'sha-512': crypt.METHOD_SHA512}[scheme]
    if method is None:
        raise unittest.SkipTest(f'cannot make a {scheme} hash (install whois)')
    return crypt.crypt(password, crypt.mksalt(method))


def _free_port(host):
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _socket_inodes(pid):
    """Inodes of the sockets process pid holds open."""
    out = set()
    try:
        fds = os.listdir(f'/proc/{pid}/fd')
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f'/proc/{pid}/fd/{fd}')
        except OSError:
            continue
        if link.startswith('socket:['):
            out.add(link[8:-1])
    return out


def _listening(host, port, pid=None):
    """True when something (process pid, if given) listens on host:port.
    Read from /proc, so no connection is made and no handler started."""
    v6 = ':' in host
    want_port = '%04X' % port
    mine = _socket_inodes(pid) if pid else None
    for name in (['/proc/net/tcp6'] if v6 else ['/proc/net/tcp', '/proc/net/tcp6']):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    _addr, lport = fields[1].rsplit(':', 1)
                    if lport != want_port or fields[3] != '0A':
                        continue
                    if mine is None or fields[9] in mine:
                        return True
        except FileNotFoundError:
            continue
    return False


def _children(pid):
    """Pids whose parent is pid."""
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open(f'/proc/{d}/stat') as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        rest = stat[stat.rfind(')') + 2:].split()
        if len(rest) > 1 and int(rest[1]) == pid:
            out.append(int(d))
    return out


def _is_zombie(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(')') + 2:].split()[0] in ('Z', 'X')


class Server:
    """A running supervisor (systemd-socket-activate or xinetd) listening
    on host:port and starting one handler process per connection."""

    def __init__(self, postage, program, args, host, supervisor, run_as=None):
        self.postage = postage
        self.program = program
        self.args = list(args)
        self.host = host
        self.supervisor = supervisor
        self.run_as = run_as
        self.port = None
        self.proc = None
        self._start()

    def _start(self):
        path = binary(self.program)
        if self.run_as is not None:
            path = self.postage.reachable_binary(path)
        env_items = self.postage.env_items()
        last_error = None
        for _attempt in range(5):
            self.port = _free_port(self.host)
            if self.supervisor == 'socket-activate':
                cmd = self._socket_activate_cmd(path, env_items)
            elif self.supervisor == 'xinetd':
                cmd = self._xinetd_cmd(path, env_items)
            else:
                raise ValueError(f'unknown supervisor {self.supervisor}')
            log = open(os.path.join(self.postage.dir, f'{self.supervisor}-{self.port}.log'), 'ab')
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env=self._supervisor_env())
            log.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if _listening(self.host, self.port, self.proc.pid):
                    _live_servers.append(self)
                    return
                time.sleep(0.02)
            last_error = f'{self.supervisor} did not listen on {self.host}:{self.port}'
            self._kill()
        raise RuntimeError(last_error + '; see ' + self.postage.dir)

    @staticmethod
    def _supervisor_env():
        env = {k: v for k, v in os.environ.items()
               if k in ('PATH', 'LANG', 'LC_ALL', 'TZ')}
        env.setdefault('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')
        return env

    def _listen_addr(self):
        return f'[{self.host}]:{self.port}' if ':' in self.host else f'{self.host}:{self.port}'

    def _socket_activate_cmd(self, path, env_items):
        exe = shutil.which('systemd-socket-activate') or '/lib/systemd/systemd-socket-activate'
        if not os.access(exe, os.X_OK):
            raise unittest.SkipTest('systemd-socket-activate is not installed (package systemd)')
        cmd = [exe, '--inetd', '-a', '-l', self._listen_addr()]
        for k, v in env_items:
            cmd += ['-E', f'{k}={v}']
        if self.run_as is not None:
            # The handler as an ordinary user, as under the units' User=:
            # setpriv (util-linux) switches, then execs it.
            setpriv = shutil.which('setpriv')
            if not setpriv:
                raise unittest.SkipTest('setpriv is not installed (package util-linux)')
            cmd += [setpriv, f'--reuid={self.run_as}', f'--regid={self.run_as}',
                    '--clear-groups', '--']
        return cmd + [path, '--db', self.postage.db] + self.args

    def _xinetd_cmd(self, path, env_items):
        exe = shutil.which('xinetd') or '/usr/sbin/xinetd'
        if not os.access(exe, os.X_OK):
            raise unittest.SkipTest('xinetd is not installed (package xinetd)')
        d = self.postage.dir
        conf = os.path.join(d, f'xinetd-{self.port}.conf')
        self.pidfile = os.path.join(d, f'xinetd-{self.port}.pid')
        for arg in self.args + [path, self.postage.db]:
            if any(c.isspace() for c in arg):
                raise ValueError('xinetd server_args cannot hold spaces: ' + arg)
        lines = [
            'defaults',
            '{',
            f'\tlog_type = FILE {os.path.join(d, "xinetd-service.log")}',
            '}',
            'service postage-test',
            '{',
            '\ttype = UNLISTED',
            '\tsocket_type = stream',
            '\tprotocol = tcp',
            '\twait = no',
        ]
        if self.run_as is not None:
            import pwd
            lines.append(f'\tuser = {pwd.getpwuid(self.run_as).pw_name}')
        elif os.geteuid() == 0:
            lines.append('\tuser = root')
        lines += [
            f'\tbind = {self.host}',
            f'\tport = {self.port}',
            f'\tserver = {path}',
            '\tserver_args = ' + ' '.join(['--db', self.postage.db] + self.args),
            '\tpassenv = PATH',
            '\tenv = ' + ' '.join(f'{k}={v}' for k, v in env_items),
            '\tinstances = 30',
            '\tper_source = 20',
        ]
        if ':' in self.host:
            lines.append('\tflags = IPv6')
        lines.append('}')
        with open(conf, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        return [exe, '-dontfork', '-f', conf, '-pidfile', self.pidfile]

    # -- use --------------------------------------------------------------

    def connect(self, timeout=10):
        """A connected socket to the server."""
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def smtp(self, timeout=30, **kw):
        import smtplib
        return smtplib.SMTP(self.host, self.port, timeout=timeout, **kw)

    def pop3(self, login, password, timeout=30):
        """A poplib client logged in as login."""
        import poplib
        m = poplib.POP3(self.host, self.port, timeout=timeout)
        m.user(login)
        m.pass_(password)
        return m

    def handler_pids(self):
        """Pids of the handler processes running now."""
        if not self.proc or self.proc.poll() is not None:
            return []
        return [c for c in _children(self.proc.pid) if not _is_zombie(c)]

    def wait_handlers(self, timeout=15):
        """Waits until no handler process is running; True if none is."""
        return wait_for(lambda: not self.handler_pids(), timeout)

    def stop(self):
        if self in _live_servers:
            _live_servers.remove(self)
        self._kill()

    def _kill(self):
        if not self.proc:
            return
        if self.proc.poll() is None:
            # Let running handlers finish first, briefly.
            self.wait_handlers(timeout=5)
            kill_group(self.proc, timeout=5)
        self.proc = None


class HandlerTestCase(unittest.TestCase):
    """Base of the per-test fixtures (SmtpTestCase, Pop3TestCase): a
    subclass's setUp makes self.p and self.clients (what tearDown hangs up:
    anything with close()). tearDown then checks the sanitizer logs and
    that the handlers' log holds none of LOG_SECRETS and no Subject:
    header."""
    LOG_SECRETS = ()

    def tearDown(self):
        # Hang up first: check_sanitizers waits for every handler to end.
        for c in self.clients:
            try:
                c.close()
            except OSError:
                pass
        self.p.check_sanitizers()
        log = self.p.log_text()
        for secret in self.LOG_SECRETS:
            self.assertNotIn(secret, log)
        for line in log.splitlines():
            self.assertNotIn('Subject:', line)

    def read(self, path):
        with open(path, 'rb') as f:
            return f.read()

    def wait_for(self, pred, timeout=10):
        return wait_for(pred, timeout)


class Postage:
    """A temporary postage installation: database, mail root, spool, logs."""

    def __init__(self, hostname=HOSTNAME):
        self.hostname = hostname
        self.dir = None
        self.servers = []

    # -- lifecycle --------------------------------------------------------

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix='postage-test-')
        os.chmod(self.dir, 0o755)
        self.db = os.path.join(self.dir, 'postage.db')
        self.mail_root = os.path.join(self.dir, 'mail')
        self.spool_dir = os.path.join(self.dir, 'spool')
        self.log_file = os.path.join(self.dir, 'postage.log')
        self.san_dir = os.path.join(self.dir, 'sanitizers')
        for d in (self.mail_root, self.spool_dir, self.san_dir):
            os.makedirs(d)
        with open(SCHEMA) as f:
            schema = f.read()
        con = sqlite3.connect(self.db, isolation_level=None)
        try:
            con.executescript(schema)
        finally:
            con.close()
        self.set('hostname', self.hostname)
        self.set('mail_root', self.mail_root)
        self.set('spool_dir', self.spool_dir)
        return self

    def enter_for(self, test):
        """Makes the installation now and removes it at the cleanup of
        test (a unittest.TestCase); returns self."""
        self.__enter__()
        test.addCleanup(self.__exit__, None, None, None)
        return self

    def finish(self):
        """Checks the sanitizer logs, then removes the installation, also
        when the check fails: for a class-wide Postage's tearDownClass."""
        try:
            self.check_sanitizers()
        finally:
            self.__exit__(None, None, None)

    def __exit__(self, *exc):
        for srv in self.servers:
            srv.stop()
        self.servers = []
        if os.environ.get('POSTAGE_KEEP'):
            print(f'postage test dir kept: {self.dir}', file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False

    # -- database ---------------------------------------------------------

    def sql(self, query, *params):
        """Runs one statement, commits, returns all rows."""
        con = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        try:
            con.execute('PRAGMA foreign_keys = ON')
            return con.execute(query, params).fetchall()
        finally:
            con.close()

    def set(self, key, value):
        self.sql('INSERT OR REPLACE INTO settings(key, value) VALUES(?, ?)',
                 key, None if value is None else str(value))

    def add_domain(self, name):
        self.sql('INSERT INTO domains(name) VALUES(?)', name)

    def add_mailbox(self, login, password, scheme='sha512crypt', quota=None, enabled=1):
        self.sql('INSERT INTO mailboxes(login, password, quota_bytes, enabled) VALUES(?, ?, ?, ?)',
                 login, crypt_password(password, scheme), quota, enabled)

    def add_address(self, address, mailbox):
        self.sql('INSERT INTO addresses(address, mailbox) VALUES(?, ?)', address, mailbox)

    def add_account(self, login, password, address, **kw):
        """A mailbox login (add_mailbox's keywords) reached at address."""
        self.add_mailbox(login, password, **kw)
        self.add_address(address, login)

    def add_relay_network(self, network):
        self.sql('INSERT INTO relay_networks(network) VALUES(?)', network)

    def add_forward(self, address, target):
        self.sql('INSERT INTO forwards(address, target) VALUES(?, ?)', address, target)

    # -- files ------------------------------------------------------------

    def chown_all(self, uid):
        """Gives everything in the test dir to uid (and the group of that
        number), as the README's install steps give it to the service
        user: for handlers started with run_as."""
        for root, dirs, files in os.walk(self.dir):
            for n in dirs + files + ['.']:
                os.lchown(os.path.join(root, n), uid, uid)

    def reachable_binary(self, path):
        """A copy of the built program `path` in the test dir, for handlers
        that run as another user: the build dir may sit where only root can
        reach it (/root/postage in scripts/fresh --test, /root is 0700), and
        xinetd, unlike a root shell, cannot exec through it. The caller's
        chown_all makes the copy the user's."""
        bindir = os.path.join(self.dir, 'bin')
        os.makedirs(bindir, exist_ok=True)
        os.chmod(bindir, 0o755)
        copy = os.path.join(bindir, os.path.basename(path))
        if not os.path.exists(copy):
            shutil.copy2(path, copy)
            os.chmod(copy, 0o755)
        return copy

    def maildir(self, login):
        return os.path.join(self.mail_root, login)

    def messages(self, login):
        """Sorted paths of the messages in the Maildir's new/ and cur/."""
        out = []
        for sub in ('new', 'cur'):
            d = os.path.join(self.maildir(login), sub)
            if os.path.isdir(d):
                out += [os.path.join(d, n) for n in os.listdir(d) if not n.startswith('.')]
        return sorted(out)

    def log_text(self):
        try:
            with open(self.log_file, encoding='utf-8', errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def sanitizer_reports(self):
        """{path: text} of every ASan/UBSan report written so far."""
        out = {}
        for path in sorted(glob.glob(os.path.join(self.san_dir, '*'))):
            with open(path, errors='replace') as f:
                out[path] = f.read()
        return out

    def check_sanitizers(self):
        """Waits for running handlers to end, then fails if any sanitizer
        report was written."""
        for srv in self.servers:
            srv.wait_handlers(timeout=10)
        reports = self.sanitizer_reports()
        if reports:
            text = '\n'.join(f'== {p}\n{t}' for p, t in reports.items())
            raise AssertionError('sanitizer reports:\n' + text[:20000])

    # -- processes --------------------------------------------------------

    def env_items(self):
        """The environment every handler gets, as (name, value) pairs."""
        return [
            ('POSTAGE_DB', self.db),
            ('POSTAGE_LOG_FILE', self.log_file),
            ('ASAN_OPTIONS', 'detect_leaks=0:abort_on_error=1:log_path='
             + os.path.join(self.san_dir, 'asan')),
            ('UBSAN_OPTIONS', 'halt_on_error=1:print_stacktrace=1:log_path='
             + os.path.join(self.san_dir, 'ubsan')),
        ]

    def env(self):
        """A full environment for running a program directly."""
        env = dict(os.environ)
        env.update(self.env_items())
        return env

    def binary(self, program):
        return binary(program)

    def serve(self, program, args=(), host='127.0.0.1', supervisor='socket-activate',
              run_as=None):
        """run_as: a uid (with the gid of the same number) the handlers
        run as; the caller makes the files theirs (chown_all)."""
        srv = Server(self, program, args, host, supervisor, run_as)
        self.servers.append(srv)
        return srv

    def spawn(self, program, args=(), **kw):
        """Starts program on two pipes (stdin/stdout), like tcpserver or a
        test would: the handler sees no socket and treats the peer as
        local. Returns the Popen."""
        kw.setdefault('stdin', subprocess.PIPE)
        kw.setdefault('stdout', subprocess.PIPE)
        kw.setdefault('stderr', subprocess.PIPE)
        return subprocess.Popen([binary(program), '--db', self.db] + list(args),
                                env=self.env(), **kw)

    def run(self, program, args=(), input=b'', timeout=60):
        """Runs program on pipes with input; returns CompletedProcess."""
        return subprocess.run([binary(program), '--db', self.db] + list(args),
                              input=input, capture_output=True, env=self.env(),
                              timeout=timeout)
