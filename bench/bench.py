#!/usr/bin/python3
"""postage against Postfix and Dovecot, side by side, on loopback.

Started by bench/run, which installs the packages and builds postage first.
Every server is configured under one temporary directory, listens on
127.0.0.1 only and is stopped on exit. Workloads run one at a time; each
repetition runs every server in turn, so drift hits all of them alike.

The output is one table (median and min..max of the repetitions) and, last,
machine-readable lines:

    ratio FIGURE postage/PEER X.XX   postage's value divided by the peer's
    ceiling FIGURE X.XX              postage as a fraction of the machine's
                                     limit for the same work
    limit FIGURE machine/postfix X   the machine's limit against Postfix
    limit FIGURE floor/machine X     bench/floor.c (the least a handler
    limit FIGURE floor/PEER X        must do) as postage's ceiling / ratio

Figures named *_ms or *_mb are costs (lower is better); all others are rates
(higher is better). See bench/README.md.
"""
import argparse
import atexit
import datetime
import multiprocessing
import os
import platform
import pwd
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
DOMAIN = 'bench.test'
SMTP_RCPT = 'bench@' + DOMAIN
SMTP_FROM = 'sender@' + DOMAIN
PASSWORD = 'Bench-pass-7dF3'  # never printed
POP_USERS = 20
NOBODY = 65534
# ext4 without a journal passes over inodes freed this recently on every
# file creation (README.md, workload 1).
RECENT_DELETIONS_S = 360


def log(msg):
    print('# ' + msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# Processes we start, and their end
# ---------------------------------------------------------------------------

class Procs:
    def __init__(self):
        self.popens = []       # (name, Popen) started in their own session
        self.stoppers = []     # callables, run in reverse order

    def start(self, name, argv, env=None, log_path=None, leader_only=False, cgroup=None):
        out = open(log_path, 'ab') if log_path else subprocess.DEVNULL
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=out, env=env, start_new_session=True,
                             preexec_fn=CPU.enter_fn(cgroup))
        if log_path:
            out.close()
        p.leader_only = leader_only
        self.popens.append((name, p))
        return p

    def on_stop(self, fn):
        self.stoppers.append(fn)

    def stop_all(self):
        for fn in reversed(self.stoppers):
            try:
                fn()
            except Exception as e:  # keep stopping the rest
                log('stop: %s' % e)
        self.stoppers = []
        for name, p in reversed(self.popens):
            if p.poll() is None:
                try:
                    if p.leader_only:  # it stops its own children
                        os.kill(p.pid, signal.SIGTERM)
                    else:
                        os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for name, p in reversed(self.popens):
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
            # Handlers left in the group after the supervisor went.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.popens = []


PROCS = Procs()


class CpuGroups:
    """CPU time by part (postage's handlers, Postfix, its milters, rspamd,
    the DNS server, the client): a cgroup-v1 cpuacct group each, made
    under the machine's hierarchy and removed at the end. Workloads run
    one at a time, so a group's usage over one run is that run's. Not
    available (no cpuacct hierarchy, not root): every figure is None."""
    ROOT = '/sys/fs/cgroup/cpuacct'

    def __init__(self):
        self.base = None
        self.made = []

    def setup(self):
        try:
            base = os.path.join(self.ROOT, 'postage-bench-%d' % os.getpid())
            os.mkdir(base)
            self.base = base
        except OSError:
            self.base = None

    def _dir(self, name):
        d = os.path.join(self.base, name)
        if name not in self.made:
            try:
                os.mkdir(d)
            except FileExistsError:
                pass
            self.made.append(name)
        return d

    def move(self, name, pid):
        if not self.base or not name:
            return
        try:
            with open(os.path.join(self._dir(name), 'cgroup.procs'), 'w') as f:
                f.write('%d\n' % pid)
        except OSError:
            pass

    def enter_fn(self, name):
        """A preexec_fn that puts the child in group name (None: none)."""
        if not self.base or not name:
            return None
        path = os.path.join(self._dir(name), 'cgroup.procs')

        def enter():
            try:
                with open(path, 'w') as f:
                    f.write('%d\n' % os.getpid())
            except OSError:
                pass
        return enter

    def usage(self):
        """{group: CPU seconds so far}."""
        out = {}
        for name in self.made:
            try:
                with open(os.path.join(self.base, name, 'cpuacct.usage')) as f:
                    out[name] = int(f.read()) / 1e9
            except (OSError, ValueError):
                pass
        return out

    def close(self):
        if not self.base:
            return
        for name in self.made:
            d = os.path.join(self.base, name)
            # Whatever is left (nothing, normally) goes back to the root.
            try:
                with open(os.path.join(d, 'cgroup.procs')) as f:
                    for pid in f.read().split():
                        with open(os.path.join(self.ROOT, 'cgroup.procs'), 'w') as g:
                            g.write(pid + '\n')
            except OSError:
                pass
            try:
                os.rmdir(d)
            except OSError:
                pass
        try:
            os.rmdir(self.base)
        except OSError:
            pass
        self.base = None


CPU = CpuGroups()


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sha512_crypt(password):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        try:
            import crypt
            h = crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))
            if h and h.startswith('$6$'):
                return h
        except ImportError:
            pass
    out = subprocess.run(['openssl', 'passwd', '-6', '-stdin'], input=password,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def write_message(path, index, size):
    """A plain message of about `size` bytes, LF line ends, as in a Maildir."""
    head = ('From: <sender@%s>\nTo: <pop@%s>\nSubject: bench message %d\n'
            'Message-ID: <%d.bench@%s>\nDate: Mon, 23 Nov 2026 10:00:00 +0000\n\n'
            % (DOMAIN, DOMAIN, index, index, DOMAIN))
    line = ('%09d ' % index) + 'x' * 66 + '\n'
    body_len = max(0, size - len(head))
    n = body_len // len(line)
    data = (head + line * n + 'y' * max(0, body_len - n * len(line) - 1) + '\n').encode()
    with open(path, 'wb') as f:
        f.write(data)
    return len(data), data.count(b'\n')


def fill_maildir(root, count, size, owner=None, base=1700000000):
    for d in ('tmp', 'new', 'cur'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    tmp = os.path.join(root, 'tmp', 'fill')
    for i in range(count):
        nbytes, lfs = write_message(tmp, i, size)
        name = '%d.M%dP%d.bench,S=%d,W=%d' % (base + i, i, 1, nbytes, nbytes + lfs)
        os.rename(tmp, os.path.join(root, 'new', name))
    if owner is not None:
        for dirpath, dirnames, filenames in os.walk(root):
            os.chown(dirpath, owner, owner)
            for fn in filenames:
                os.chown(os.path.join(dirpath, fn), owner, owner)


def count_files(d):
    try:
        with os.scandir(d) as it:
            return sum(1 for _ in it)
    except FileNotFoundError:
        return 0


# Where clear_dir puts what it takes away: a directory in the temporary
# directory, deleted with it when the run is over.
RETIRED = None


def clear_dir(d):
    """Leaves d empty for the next repetition without deleting a file:
    d is renamed into RETIRED and made again, with its owner and mode.
    Deleting thousands of files between repetitions would slow down every
    file creation that follows for minutes on ext4 without a journal (this
    test machine's root file system): there ext4 will not reuse an inode
    freed in the last 60 s (360 s while its inode table block is dirty), so
    each new file's inode allocation first walks past every recently freed
    one (bench/README.md, "Durability"). Production file systems journal;
    the servers' own work is what should be measured."""
    try:
        st = os.stat(d)
        with os.scandir(d) as it:
            if next(it, None) is None:
                return
    except FileNotFoundError:
        return
    if RETIRED is None:
        raise BenchError('clear_dir before RETIRED is set')
    os.rename(d, os.path.join(tempfile.mkdtemp(dir=RETIRED), 'd'))
    os.mkdir(d)
    os.chown(d, st.st_uid, st.st_gid)
    os.chmod(d, st.st_mode & 0o7777)


def in_turn(servers, rep):
    """The servers in the order repetition rep measures them: as given on
    even repetitions, reversed on odd ones, so that neither always runs
    right after the other (a server's leftovers, such as Postfix's deleted
    queue files or its delivery tail, slow down whoever comes next)."""
    servers = list(servers)
    return servers if rep % 2 == 0 else servers[::-1]


def wait_greeting(port, timeout=15.0, what='server'):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=2) as s:
                data = s.recv(512)
                if data[:3] in (b'220', b'+OK'):
                    return
                last = data
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise BenchError('%s on port %d never greeted (%r)' % (what, port, last))


def rss_kb(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def comm_of(pid):
    try:
        with open('/proc/%d/comm' % pid) as f:
            return f.read().strip()
    except OSError:
        return ''


def server_socket_inode(server_port, client_port):
    """The inode of the server's end of our loopback connection."""
    want_local = '0100007F:%04X' % server_port
    want_remote = '0100007F:%04X' % client_port
    with open('/proc/net/tcp') as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[1] == want_local and parts[2] == want_remote:
                return parts[9]
    return None


def pids_holding(inode):
    target = 'socket:[%s]' % inode
    found = []
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        fd_dir = '/proc/%s/fd' % name
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(os.path.join(fd_dir, fd)) == target:
                        found.append(int(name))
                        break
                except OSError:
                    continue
        except OSError:
            continue
    return found


# ---------------------------------------------------------------------------
# Protocol clients
# ---------------------------------------------------------------------------

class Conn:
    def __init__(self, port, timeout=60):
        self.s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def line(self):
        while True:
            i = self.buf.find(b'\r\n')
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out
            chunk = self.s.recv(65536)
            if not chunk:
                raise BenchError('connection closed by server')
            self.buf += chunk

    def send(self, text):
        self.s.sendall(text.encode() + b'\r\n')

    def expect(self, prefix, text=None):
        if text is not None:
            self.send(text)
        line = self.line()
        if not line.startswith(prefix):
            shown = text.split()[0] if text else 'greeting'
            raise BenchError('%s: unexpected reply %r' % (shown, line[:80]))
        return line

    def smtp_reply(self, text=None):
        if text is not None:
            self.send(text)
        while True:
            line = self.line()
            if len(line) < 4 or line[3:4] != b'-':
                return line

    def multiline(self):
        """Reads a POP3 multi-line body after its +OK; returns its length."""
        data = self.buf
        start = 0
        while True:
            if data[:3] == b'.\r\n':
                del data[:3]
                return 0
            i = data.find(b'\r\n.\r\n', start)
            if i >= 0:
                n = i + 2
                del data[:i + 5]
                return n
            start = max(0, len(data) - 4)
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise BenchError('connection closed in multi-line reply')
            data += chunk

    def wait_close(self):
        try:
            while self.s.recv(4096):
                pass
        except OSError:
            pass

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def op_connect(port, index):
    """connect, greeting, QUIT, until the server closes."""
    c = Conn(port)
    try:
        c.line()
        try:
            c.send('QUIT')
        except OSError:
            pass  # the ceiling's greeter is gone already
        c.wait_close()
    finally:
        c.close()


def op_pop3_login(port, index):
    user = 'pop%d' % (index % POP_USERS)
    c = Conn(port)
    try:
        c.expect(b'+OK')
        c.expect(b'+OK', 'USER ' + user)
        c.expect(b'+OK', 'PASS ' + PASSWORD)
        c.expect(b'+OK', 'STAT')
        c.expect(b'+OK', 'QUIT')
        c.wait_close()
    finally:
        c.close()


def pop3_fetch(port, user, count):
    """One session: log in, RETR 1..count, QUIT. Returns (session s, RETR s)."""
    t0 = time.perf_counter()
    c = Conn(port)
    try:
        c.expect(b'+OK')
        c.expect(b'+OK', 'USER ' + user)
        c.expect(b'+OK', 'PASS ' + PASSWORD)
        t1 = time.perf_counter()
        total = 0
        for i in range(1, count + 1):
            c.expect(b'+OK', 'RETR %d' % i)
            total += c.multiline()
        t2 = time.perf_counter()
        c.expect(b'+OK', 'QUIT')
        c.wait_close()
    finally:
        c.close()
    t3 = time.perf_counter()
    if total < count * 1000:
        raise BenchError('RETR returned only %d bytes' % total)
    return t3 - t0, t2 - t1


def _worker(op, port, ops, first, stride, barrier, results):
    ok = 0
    err = ''
    try:
        barrier.wait(60)
        for k in range(ops):
            op(port, first + k * stride)
            ok += 1
    except Exception as e:  # reported to the parent
        err = '%s: %s' % (type(e).__name__, e)
    results.put((ok, err))


def run_parallel(op, port, total, clients):
    """total operations spread over `clients` processes. Returns ops/s."""
    if clients == 1:
        t0 = time.perf_counter()
        for k in range(total):
            op(port, k)
        return total / (time.perf_counter() - t0)
    ctx = multiprocessing.get_context('fork')
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    per = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    procs = []
    for i in range(clients):
        # Worker i uses indexes i, i+clients, ...: with 20 clients, POP3
        # worker i always logs in as pop<i>, so no two share a maildrop.
        p = ctx.Process(target=_worker, args=(op, port, per[i], i, clients, barrier, results))
        p.start()
        procs.append(p)
    barrier.wait(60)
    t0 = time.perf_counter()
    got = [results.get(timeout=600) for _ in procs]
    t1 = time.perf_counter()
    for p in procs:
        p.join()
    errors = [e for ok, e in got if e]
    done = sum(ok for ok, e in got)
    if errors or done != total:
        raise BenchError('%d of %d operations failed: %s' % (total - done, total, errors[0] if errors else '?'))
    return total / (t1 - t0)


def greeting_latencies(port, count, greeting_only=False):
    """Sequential sessions; the time from connect() to the greeting's end."""
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        c = Conn(port)
        c.line()
        out.append((time.perf_counter() - t0) * 1000.0)
        try:
            c.send('QUIT')
        except OSError:
            pass
        c.wait_close()
        c.close()
        time.sleep(0.01)  # let the last handler finish before the next
    return out


# ---------------------------------------------------------------------------
# The servers
# ---------------------------------------------------------------------------

class Env:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix='postage-bench.', dir=args.tmpdir)
        os.chmod(self.tmp, 0o755)
        self.ssa = shutil.which('systemd-socket-activate')
        if not self.ssa:
            raise BenchError('systemd-socket-activate not found')
        self.pop3_handler = os.path.join(args.build, 'pop3-handler', 'pop3-handler')
        self.smtp_handler = os.path.join(args.build, 'smtp-handler', 'smtp-handler')
        self.has_pop3 = os.access(self.pop3_handler, os.X_OK)
        self.hashes = [sha512_crypt(PASSWORD) for _ in range(POP_USERS + 2)]

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)


def check_fs(path):
    out = subprocess.run(['stat', '-f', '-c', '%T', path], capture_output=True, text=True)
    fs = out.stdout.strip()
    if fs in ('tmpfs', 'ramfs'):
        log('WARNING: %s is on %s: fsync costs nothing there; use --tmpdir on a disk' % (path, fs))
    return fs


class Postage:
    name = 'postage'

    def __init__(self, env):
        self.env = env
        d = env.path('postage')
        os.makedirs(d)
        self.db = os.path.join(d, 'postage.db')
        self.mail_root = os.path.join(d, 'mail')
        self.spool = os.path.join(d, 'spool')
        self.logfile = os.path.join(d, 'handler.log')
        os.makedirs(self.mail_root)
        with open(os.path.join(env.args.root, 'schema', 'schema.sql')) as f:
            schema = f.read()
        con = sqlite3.connect(self.db)
        con.executescript(schema)
        with con:
            con.executemany('INSERT OR REPLACE INTO settings VALUES (?, ?)', [
                ('hostname', 'mx.' + DOMAIN),
                ('mail_root', self.mail_root),
                ('spool_dir', self.spool),
            ])
            con.execute('INSERT INTO domains VALUES (?)', (DOMAIN,))
            logins = ['bench', 'fetch', 'big'] + ['pop%d' % i for i in range(POP_USERS)]
            for i, login in enumerate(logins):
                h = env.hashes[i % len(env.hashes)]
                con.execute('INSERT INTO mailboxes (login, password) VALUES (?, ?)', (login, h))
                con.execute('INSERT INTO addresses VALUES (?, ?)', ('%s@%s' % (login, DOMAIN), login))
        if env.args.postage_journal:
            # An experiment: the schema's journal mode is the default.
            mode = con.execute('PRAGMA journal_mode = %s' % env.args.postage_journal).fetchone()[0]
            if mode != env.args.postage_journal:
                raise BenchError('journal_mode stayed %s' % mode)
        con.close()
        self.maildir = os.path.join(self.mail_root, 'bench')
        for sub in ('tmp', 'new', 'cur'):
            os.makedirs(os.path.join(self.maildir, sub))
        self.smtp_port = None
        self.pop3_port = None
        self.notes = []
        self.ssa_pids = []

    def fill_pop(self, fetch_count, big_bytes):
        for i in range(POP_USERS):
            fill_maildir(os.path.join(self.mail_root, 'pop%d' % i), 10, 4096)
        fill_maildir(os.path.join(self.mail_root, 'fetch'), fetch_count, 4096)
        fill_maildir(os.path.join(self.mail_root, 'big'), 1, big_bytes)

    def _serve(self, program, label):
        port = free_port()
        argv = [self.env.ssa, '--inetd', '-a', '-l', '127.0.0.1:%d' % port,
                '-E', 'POSTAGE_LOG_FILE=' + self.logfile, program, '--db', self.db]
        p = PROCS.start(label, argv, log_path=self.env.path('postage', label + '.supervisor.log'),
                        cgroup='postage')
        self.ssa_pids.append(p.pid)
        wait_greeting(port, what=label)
        return port

    def start_lite(self, spawner):
        """smtp-handler under bench/spawner.c, for comparison only."""
        port = free_port()
        env = dict(os.environ, POSTAGE_LOG_FILE=self.logfile)
        PROCS.start('postage-smtp-lite', [spawner, str(port), self.env.smtp_handler, '--db', self.db],
                    env=env, log_path=self.env.path('postage', 'spawner.log'))
        wait_greeting(port, what='postage under spawner')
        self.smtp_lite_port = port

    def start(self):
        self.smtp_port = self._serve(self.env.smtp_handler, 'postage-smtp')
        if self.env.has_pop3:
            try:
                self.pop3_port = self._serve(self.env.pop3_handler, 'postage-pop3')
            except BenchError as e:
                self.env.has_pop3 = False
                self.notes.append('postage pop3-handler did not start (%s): its POP3 rows are skipped' % e)


class PostagePg:
    """postage on PostgreSQL (issue 25): the same handlers with --db
    postgresql://..., through a local pgbouncer on a unix socket
    (transaction pooling), as README "Several machines" sets it up, beside
    the same rows in SQLite. The PostgreSQL server is Debian's
    postgresql-15, made by initdb in the temporary directory (a unix socket
    only, run as nobody); the handlers' host file (their queue) is beside
    it. Same mail_root and spool as the SQLite postage, so the rows compare
    the database alone."""
    name = 'postage-pg'

    def __init__(self, env, postage):
        sys.path.insert(0, os.path.join(env.args.root, 'tests', 'protocol'))
        from pgserver import PostgreSQL
        self.env = env
        self.postage = postage
        self.pg = PostgreSQL()
        self.pg.start()
        PROCS.on_stop(self.pg.stop)
        self.pg.psql('CREATE DATABASE postage')
        with open(os.path.join(env.args.root, 'schema', 'postgresql.sql')) as f:
            self.pg.psql(f.read(), db='postage')
        con = sqlite3.connect(postage.db)
        rows = []
        for table in ('settings', 'domains', 'mailboxes', 'addresses'):
            for r in con.execute('SELECT * FROM %s' % table):
                vals = ', '.join('NULL' if v is None else str(v) if isinstance(v, int)
                                 else "'" + str(v).replace("'", "''") + "'" for v in r)
                rows.append('INSERT INTO %s VALUES (%s);' % (table, vals))
        con.close()
        self.pg.psql('\n'.join(rows), db='postage')
        d = env.path('postage-pg')
        os.makedirs(d)
        self.bouncer = os.path.join(d, 'bouncer')
        os.makedirs(self.bouncer)
        with open(os.path.join(self.bouncer, 'pgbouncer.ini'), 'w') as f:
            f.write('[databases]\npostage = host=%s port=5432 dbname=postage user=postage\n'
                    '[pgbouncer]\nlisten_addr =\nunix_socket_dir = %s\nlisten_port = 6432\n'
                    'auth_type = trust\nauth_file = %s/users.txt\npool_mode = transaction\n'
                    'default_pool_size = 20\nmax_client_conn = 200\nlogfile = %s/pgbouncer.log\n'
                    % (self.pg.sock, self.bouncer, self.bouncer, self.bouncer))
        with open(os.path.join(self.bouncer, 'users.txt'), 'w') as f:
            f.write('"postage" ""\n')
        for root, dirs, files in os.walk(self.bouncer):
            for n in dirs + files + ['.']:
                os.chown(os.path.join(root, n), NOBODY, NOBODY)
        self.uri = 'postgresql://postage@/postage?host=%s&port=6432' % self.bouncer
        self.host_db = os.path.join(d, 'host.db')
        self.logfile = os.path.join(d, 'handler.log')
        self.smtp_port = self.pop3_port = None

    def _serve(self, program, label):
        port = free_port()
        argv = [self.env.ssa, '--inetd', '-a', '-l', '127.0.0.1:%d' % port,
                '-E', 'POSTAGE_LOG_FILE=' + self.logfile, program, '--db', self.uri,
                '--host-db', self.host_db]
        PROCS.start(label, argv, log_path=self.env.path('postage-pg', label + '.supervisor.log'),
                    cgroup='postage')
        wait_greeting(port, what=label)
        return port

    def start(self):
        setpriv = shutil.which('setpriv') or '/usr/bin/setpriv'
        PROCS.start('pgbouncer', [setpriv, '--reuid=%d' % NOBODY, '--regid=%d' % NOBODY,
                                  '--clear-groups', '--', 'pgbouncer',
                                  os.path.join(self.bouncer, 'pgbouncer.ini')],
                    log_path=self.env.path('postage-pg', 'pgbouncer.out'))
        sock = os.path.join(self.bouncer, '.s.PGSQL.6432')
        deadline = time.monotonic() + 15
        while not os.path.exists(sock):
            if time.monotonic() > deadline:
                raise BenchError('pgbouncer did not make %s' % sock)
            time.sleep(0.05)
        self.smtp_port = self._serve(self.env.smtp_handler, 'postage-pg-smtp')
        if self.env.has_pop3:
            self.pop3_port = self._serve(self.env.pop3_handler, 'postage-pg-pop3')

    @staticmethod
    def unavailable():
        if not os.path.exists('/usr/lib/postgresql/15/bin/postgres'):
            return 'no PostgreSQL 15 (package postgresql-15)'
        if not shutil.which('pgbouncer'):
            return 'no pgbouncer (package pgbouncer)'
        return None


class Postfix:
    name = 'postfix'

    def __init__(self, env, name='postfix', extra_main='', extra_master='', mynetworks='127.0.0.0/8',
                 wrapper=()):
        """extra_main, extra_master: lines added to main.cf and master.cf;
        wrapper: argv that `postfix start` runs under (a mount namespace)."""
        self.env = env
        self.wrapper = list(wrapper)
        self.cgroup = None  # CPU accounting group of its processes
        d = env.path(name)
        self.dir = d
        self.etc = os.path.join(d, 'etc')
        self.queue = os.path.join(d, 'queue')
        self.data = os.path.join(d, 'data')
        self.mail = os.path.join(d, 'mail')
        for x in (self.etc, self.queue, self.data, self.mail):
            os.makedirs(x)
        os.chmod(d, 0o755)
        pw = pwd.getpwnam('postfix')
        os.chown(self.data, pw.pw_uid, pw.pw_gid)
        os.chown(self.mail, NOBODY, NOBODY)
        self.smtp_port = free_port()
        self.maildir = os.path.join(self.mail, 'bench')
        with open(os.path.join(self.etc, 'main.cf'), 'w') as f:
            f.write(f"""# Postfix for bench/run: private directories, loopback only.
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx-postfix.{DOMAIN}
mydomain = {DOMAIN}
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = {mynetworks}
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{self.etc}/vmailbox
virtual_uid_maps = static:{NOBODY}
virtual_gid_maps = static:{NOBODY}
virtual_minimum_uid = 100
maillog_file = {d}/maillog
biff = no
""" + extra_main)
        with open(os.path.join(self.etc, 'vmailbox'), 'w') as f:
            f.write('%s bench/\n' % SMTP_RCPT)
        # The packaged master.cf, with our own smtpd port and no chroot (the
        # private queue directory has no chroot set up).
        out = []
        with open('/etc/postfix/master.cf') as f:
            for line in f:
                fields = line.split()
                if (line[:1] not in ('#', ' ', '\t', '\n') and len(fields) >= 8
                        and fields[1] in ('inet', 'unix', 'fifo', 'pass', 'unix-dgram')):
                    if fields[0] == 'smtp' and fields[1] == 'inet':
                        fields[0] = '127.0.0.1:%d' % self.smtp_port
                    fields[4] = 'n'
                    line = ' '.join(fields) + '\n'
                out.append(line)
        with open(os.path.join(self.etc, 'master.cf'), 'w') as f:
            f.writelines(out)
            f.write(extra_master)

    def start(self):
        r = subprocess.run(self.wrapper + ['postfix', '-c', self.etc, 'start'], capture_output=True, text=True,
                           preexec_fn=CPU.enter_fn(self.cgroup))
        if r.returncode != 0:
            raise BenchError('postfix start failed: %s %s' % (r.stdout, r.stderr))
        PROCS.on_stop(self.stop)
        wait_greeting(self.smtp_port, what='postfix')

    def master_pid(self):
        try:
            with open(os.path.join(self.queue, 'pid', 'master.pid')) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        pid = self.master_pid()
        subprocess.run(['postfix', '-c', self.etc, 'stop'], capture_output=True)
        deadline = time.monotonic() + 10
        while pid and os.path.exists('/proc/%d' % pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid and os.path.exists('/proc/%d' % pid) and comm_of(pid) == 'master':
            os.kill(pid, signal.SIGKILL)


class Dovecot:
    name = 'dovecot'

    def __init__(self, env, fetch_count, big_bytes):
        self.env = env
        d = env.path('dovecot')
        self.dir = d
        self.mail = os.path.join(d, 'mail')
        os.makedirs(self.mail)
        os.chown(self.mail, NOBODY, NOBODY)
        self.pop3_port = free_port()
        self.conf = os.path.join(d, 'dovecot.conf')
        with open(os.path.join(d, 'passwd'), 'w') as f:
            logins = ['bench', 'fetch', 'big'] + ['pop%d' % i for i in range(POP_USERS)]
            for i, login in enumerate(logins):
                f.write('%s:{SHA512-CRYPT}%s\n' % (login, env.hashes[i % len(env.hashes)]))
        os.chmod(os.path.join(d, 'passwd'), 0o600)
        dv = pwd.getpwnam('dovecot')  # the auth process reads it as this user
        os.chown(os.path.join(d, 'passwd'), dv.pw_uid, dv.pw_gid)
        with open(self.conf, 'w') as f:
            f.write(f"""# Dovecot for bench/run: POP3 only, loopback only, private directories.
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{self.mail}/%u
first_valid_uid = 100
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT {d}/passwd
}}
userdb {{
  driver = static
  args = uid={NOBODY} gid={NOBODY} home={self.mail}/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
""")
        for i in range(POP_USERS):
            fill_maildir(os.path.join(self.mail, 'pop%d' % i), 10, 4096, owner=NOBODY)
        fill_maildir(os.path.join(self.mail, 'fetch'), fetch_count, 4096, owner=NOBODY)
        fill_maildir(os.path.join(self.mail, 'big'), 1, big_bytes, owner=NOBODY)
        self.proc = None

    def start(self):
        self.proc = PROCS.start('dovecot', ['dovecot', '-c', self.conf, '-F'],
                                log_path=os.path.join(self.dir, 'stderr.log'), leader_only=True)
        wait_greeting(self.pop3_port, what='dovecot')


class Ceiling:
    """The machine's own limits: a static greeter per connection under the
    same supervisor, a static SMTP server that keeps nothing (bench/sink.c)
    under it too, and durable 4 KiB writes."""
    name = 'machine'

    def __init__(self, env):
        self.env = env
        d = env.path('ceiling')
        os.makedirs(d)
        self.greeter = os.path.join(d, 'greeter')
        self.durable = os.path.join(d, 'durable')
        self.spawner = os.path.join(d, 'spawner')
        self.sink = os.path.join(d, 'sink')
        for src, out, static in (('greeter.c', self.greeter, True), ('durable.c', self.durable, False),
                                 ('spawner.c', self.spawner, False), ('sink.c', self.sink, True)):
            cmd = ['gcc', '-O2', '-o', out, os.path.join(BENCH_DIR, src)]
            if static:
                cmd.insert(1, '-static')
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=d)
            if r.returncode != 0:
                raise BenchError('cannot build %s: %s' % (src, r.stderr))
        self.lite_port = None
        self.sink_port = None
        self.ddir = os.path.join(d, 'maildir')
        for sub in ('tmp', 'new', 'cur'):
            os.makedirs(os.path.join(self.ddir, sub))
        self.port = None

    def start(self):
        self.port = free_port()
        PROCS.start('greeter', [self.env.ssa, '--inetd', '-a', '-l', '127.0.0.1:%d' % self.port,
                                self.greeter],
                    log_path=self.env.path('ceiling', 'supervisor.log'))
        wait_greeting(self.port, what='greeter')
        self.lite_port = free_port()
        PROCS.start('greeter-lite', [self.spawner, str(self.lite_port), self.greeter],
                    log_path=self.env.path('ceiling', 'spawner.log'))
        wait_greeting(self.lite_port, what='greeter under spawner')
        self.sink_port = free_port()
        PROCS.start('sink', [self.env.ssa, '--inetd', '-a', '-l', '127.0.0.1:%d' % self.sink_port,
                             self.sink],
                    log_path=self.env.path('ceiling', 'sink.log'))
        wait_greeting(self.sink_port, what='sink')

    def durable_rate(self, count, writers):
        clear_dir(os.path.join(self.ddir, 'new'))
        clear_dir(os.path.join(self.ddir, 'tmp'))
        r = subprocess.run([self.durable, self.ddir, str(count), str(writers)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError('durable: %s' % r.stderr)
        n, secs = r.stdout.split()
        return int(n) / float(secs)


class Floor:
    """bench/floor.c on a copy of postage's database, under the same
    supervisor: the least a handler must do (open the SQLite database, read
    the settings, greet; for POP3 also check a sha512-crypt password and
    record the login), linked as postage's handlers are ('floor': libc
    dynamically, SQLite and libcrypt statically, no libm) and fully
    statically ('floor-static'). Its figures bound what postage's handlers
    can reach on this machine."""
    name = 'floor'

    def __init__(self, env, postage):
        self.env = env
        d = env.path('floor')
        os.makedirs(d)
        self.db = os.path.join(d, 'postage.db')
        # postage's database is closed (so checkpointed) at this point: a
        # copy, so that the floor's logins do not lengthen postage's log.
        src = sqlite3.connect(postage.db)
        dst = sqlite3.connect(self.db)
        with dst:
            src.backup(dst)
        mode = src.execute('PRAGMA journal_mode').fetchone()[0]
        if dst.execute('PRAGMA journal_mode = %s' % mode).fetchone()[0] != mode:
            raise BenchError('floor database: journal_mode is not %s' % mode)
        src.close()
        dst.close()
        src_c = os.path.join(BENCH_DIR, 'floor.c')
        lazymath = os.path.join(env.args.root, 'shared', 'lazymath.c')
        self.programs = {'floor': os.path.join(d, 'floor'), 'floor-static': os.path.join(d, 'floor-static')}
        for cmd in (['gcc', '-O2', '-I', os.path.dirname(lazymath), '-o', self.programs['floor'], src_c,
                     lazymath, '-Wl,-z,now', '-Wl,-Bstatic', '-lsqlite3', '-lcrypt', '-Wl,-Bdynamic'],
                    ['gcc', '-O2', '-static-pie', '-o', self.programs['floor-static'], src_c,
                     '-lsqlite3', '-lcrypt', '-lm']):
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=d)
            if r.returncode != 0:
                raise BenchError('cannot build floor.c: %s' % r.stderr)
        self.ports = {}

    def start(self):
        for name, program in sorted(self.programs.items()):
            for proto in ('smtp', 'pop3'):
                port = free_port()
                PROCS.start('%s-%s' % (name, proto),
                            [self.env.ssa, '--inetd', '-a', '-l', '127.0.0.1:%d' % port, program, proto,
                             self.db],
                            log_path=self.env.path('floor', '%s-%s.supervisor.log' % (name, proto)))
                wait_greeting(port, what='%s %s' % (name, proto))
                self.ports[name, proto] = port


class Checks:
    """Inbound SPF, DKIM and DMARC checks (smtp-handler/checks.c) against a
    DNS server on loopback: dnsmasq on 127.0.0.1:53 in the benchmark's own
    network namespace serves the sender domain's SPF, DKIM key and DMARC
    records, and a second smtp-handler (same binary, same database, same
    arguments as the plain one) runs in a mount namespace of its own where
    /etc/resolv.conf is bind-mounted to name 127.0.0.1. The handler checks
    a loopback client only when every name server is on loopback
    (dns_resolver_is_local), so that one checks and the plain one, which
    sees the machine's resolv.conf, does not. Nothing outside the
    benchmark's namespaces sees either the DNS server or the bind mount."""
    name = 'checks'
    # Not under .test: OpenDKIM answers "not found" for .test names by
    # itself (shared/BASELINES.md).
    SENDER_DOMAIN = 'checks.example.net'
    SENDER = 'sender@checks.example.net'
    HELO = 'client.checks.example.net'
    SELECTOR = 'bench'
    # OpenDKIM refuses a name server on 127.0.0.0/8: the same dnsmasq
    # listens here too (on lo), for the milters' resolv.conf.
    DNS_OTHER = '10.53.0.53'

    def __init__(self, env, postage):
        self.env = env
        self.postage = postage
        self.dir = env.path('checks')
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.port = None
        self.message = os.path.join(self.dir, 'signed.eml')
        self.resolv = os.path.join(self.dir, 'resolv.conf')
        self.resolv_other = os.path.join(self.dir, 'resolv-other.conf')
        # The checked-mail peers (full_peers): rspamd, postage with its
        # checks and rspamd, Postfix with its milters and rspamd.
        self.rspamd = None
        self.filtered_port = None
        self.filtered_db = None
        self.postfix = None

    @staticmethod
    def peers_unavailable(root):
        """Why the checked-mail peers (rspamd, Postfix's milters) cannot
        run here, or None."""
        for path, pkg in (('/usr/sbin/opendkim', 'opendkim'), ('/usr/sbin/opendmarc', 'opendmarc'),
                          ('/usr/bin/policyd-spf', 'postfix-policyd-spf-python'),
                          ('/usr/bin/rspamd', 'rspamd')):
            if not os.access(path, os.X_OK):
                return '%s is not installed (package %s)' % (path, pkg)
        sys.path.insert(0, os.path.join(root, 'tests', 'protocol'))
        import rspamd_server
        return rspamd_server.unavailable()

    @staticmethod
    def unavailable():
        """Why this workload cannot run here, or None."""
        try:
            names = [n for _, n in socket.if_nameindex()]
        except OSError as e:
            return 'cannot list network interfaces: %s' % e
        if names != ['lo']:
            # dnsmasq takes 127.0.0.1:53: only in a namespace of our own.
            return 'not in a private network namespace holding only loopback (BENCH_NETNS=0?)'
        if os.geteuid() != 0:
            return 'needs root (port 53, a mount namespace)'
        for tool in ('dnsmasq', 'unshare', 'openssl'):
            if not shutil.which(tool) and not os.path.exists('/usr/sbin/' + tool):
                return '%s is not installed' % tool
        try:
            import dkim  # noqa: F401
        except ImportError:
            return 'python3-dkim is not installed'
        return None

    def _openssl(self, *args):
        r = subprocess.run(['openssl'] + list(args), capture_output=True)
        if r.returncode != 0:
            raise BenchError('openssl %s: %s' % (args[0], r.stderr.decode(errors='replace')))
        return r.stdout

    def prepare(self):
        """A key, the DNS records, one DKIM-signed message of about 4 KiB."""
        import base64
        import dkim
        key = os.path.join(self.dir, 'dkim.pem')
        self._openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', key)
        pem = self._openssl('rsa', '-in', key, '-traditional')
        pub = base64.b64encode(self._openssl('pkey', '-in', key, '-pubout', '-outform', 'DER')).decode()
        records = {
            self.SENDER_DOMAIN: ['v=spf1 ip4:127.0.0.0/8 -all'],
            self.HELO: ['v=spf1 ip4:127.0.0.0/8 -all'],
            '%s._domainkey.%s' % (self.SELECTOR, self.SENDER_DOMAIN): ['v=DKIM1; k=rsa; p=' + pub],
            '_dmarc.' + self.SENDER_DOMAIN: ['v=DMARC1; p=reject; adkim=s; aspf=s'],
        }
        lines = ['no-resolv', 'no-hosts', 'no-poll', 'bind-interfaces',
                 'listen-address=127.0.0.1,' + self.DNS_OTHER,
                 'port=53', 'cache-size=0', 'user=root', 'local=/test/', 'local=/example.net/']
        for name, texts in records.items():
            for t in texts:
                # character-strings of at most 255 octets, each quoted
                parts = [t[i:i + 255] for i in range(0, len(t), 255)]
                lines.append('txt-record=%s,%s' % (name, ','.join('"%s"' % x for x in parts)))
        self.dnsmasq_conf = os.path.join(self.dir, 'dnsmasq.conf')
        with open(self.dnsmasq_conf, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        with open(self.resolv, 'w') as f:
            f.write('nameserver 127.0.0.1\noptions attempts:1 timeout:2\n')
        os.chmod(self.resolv, 0o644)
        with open(self.resolv_other, 'w') as f:
            f.write('nameserver %s\noptions attempts:1 timeout:2\n' % self.DNS_OTHER)
        os.chmod(self.resolv_other, 0o644)

        head = ('From: Bench Sender <%s>\r\nTo: <%s>\r\nSubject: bench checks message\r\n'
                'Message-ID: <checks.bench@%s>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n'
                'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n'
                % (self.SENDER, SMTP_RCPT, self.SENDER_DOMAIN))
        line = 'checks ' + 'x' * 70 + '\r\n'
        body = line * (4096 // len(line))
        body += 'z' * max(0, 4096 - len(body) - 2) + '\r\n'
        msg = (head + body).encode()
        sig = dkim.sign(msg, self.SELECTOR.encode(), self.SENDER_DOMAIN.encode(), pem,
                        canonicalize=(b'relaxed', b'relaxed'),
                        include_headers=[b'from', b'to', b'subject', b'date', b'message-id',
                                         b'mime-version', b'content-type'])
        # smtp-source -F appends CRLF to every line: the file has LF ends.
        with open(self.message, 'wb') as f:
            f.write((sig + msg).replace(b'\r\n', b'\n'))
        os.chmod(self.message, 0o644)

    def in_mount_ns(self, resolv):
        """argv prefix: run in a mount namespace of its own where
        /etc/resolv.conf is resolv."""
        return [shutil.which('unshare') or '/usr/bin/unshare', '--mount', '--', '/bin/sh', '-c',
                'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv]

    def _serve_handler(self, db, label):
        port = free_port()
        pg = self.postage
        argv = self.in_mount_ns(self.resolv) + [
            self.env.ssa, '--inetd', '-a', '-l', '127.0.0.1:%d' % port,
            '-E', 'POSTAGE_LOG_FILE=' + pg.logfile, self.env.smtp_handler, '--db', db]
        PROCS.start(label, argv, log_path=os.path.join(self.dir, label + '.supervisor.log'),
                    cgroup='postage')
        wait_greeting(port, what=label)
        return port

    def start(self):
        subprocess.run(['ip', 'addr', 'add', self.DNS_OTHER + '/32', 'dev', 'lo'], capture_output=True)
        exe = shutil.which('dnsmasq') or '/usr/sbin/dnsmasq'
        PROCS.start('dnsmasq', [exe, '--keep-in-foreground', '--conf-file=' + self.dnsmasq_conf,
                                '--pid-file='], log_path=os.path.join(self.dir, 'dnsmasq.log'), cgroup='dns')
        deadline = time.monotonic() + 10
        while not dns_answers(self.SENDER_DOMAIN):
            if time.monotonic() > deadline:
                raise BenchError('dnsmasq on 127.0.0.1:53 does not answer for %s' % self.SENDER_DOMAIN)
            time.sleep(0.02)
        # The checking handler: its own mount namespace (unshare makes its
        # mounts private), resolv.conf bind-mounted there only.
        self.port = self._serve_handler(self.postage.db, 'postage-smtp-checks')

    # -- the checked-mail peers --------------------------------------------

    def prepare_peers(self, root):
        """rspamd's configuration, a copy of postage's database that names
        it, and a Postfix with OpenDKIM, OpenDMARC and rspamd as milters
        and postfix-policyd-spf-python as its policy service, each of the
        milters in a mount namespace whose resolver is the same dnsmasq."""
        sys.path.insert(0, os.path.join(root, 'tests', 'protocol'))
        import rspamd_server
        self.rspamd_normal = '127.0.0.1:%d' % free_port()
        # The milters on unix sockets, as Debian sets them up: over TCP,
        # Nagle's algorithm and delayed ACKs stall each milter round trip
        # on loopback by tens of milliseconds.
        self.rspamd_proxy = os.path.join(self.dir, 'rspamd', 'run', 'proxy.sock')
        # Two workers of each, one a core: rspamd's default is one a core.
        self.rspamd = rspamd_server.Rspamd(os.path.join(self.dir, 'rspamd'), self.rspamd_normal,
                                           proxy=self.rspamd_proxy + ' mode=0666',
                                           workers=os.cpu_count() or 2, log_level='warning')

        # postage with its checks and rspamd: the same database (domains,
        # mailboxes, settings) but for the setting rspamd.
        self.filtered_db = os.path.join(self.dir, 'postage-rspamd.db')
        src = sqlite3.connect(self.postage.db)
        dst = sqlite3.connect(self.filtered_db)
        with dst:
            src.backup(dst)
        mode = src.execute('PRAGMA journal_mode').fetchone()[0]
        dst.execute('PRAGMA journal_mode = %s' % mode)
        with dst:
            dst.execute("INSERT OR REPLACE INTO settings VALUES ('rspamd', ?)", (self.rspamd_normal,))
        src.close()
        dst.close()

        d = os.path.join(self.dir, 'milters')
        os.makedirs(d)
        os.chmod(d, 0o755)
        authserv = 'mx-postfix.' + DOMAIN
        # OpenDKIM resolves with libunbound, which reads no resolv.conf:
        # Nameservers names the dnsmasq (not on 127.0.0.0/8: refused).
        # The client (smtp-source on 127.0.0.1) must count as outside for
        # every one of them: Postfix's mynetworks, OpenDKIM's
        # InternalHosts (else it signs instead of verifying), OpenDMARC's
        # IgnoreHosts and policyd-spf's skip_addresses all default to
        # loopback. They name a documentation address instead.
        nobody = '192.0.2.250'
        self.dkim_sock = os.path.join(d, 'opendkim', 'opendkim.sock')
        self.dmarc_sock = os.path.join(d, 'opendmarc', 'opendmarc.sock')
        for name, user in (('opendkim', 'opendkim'), ('opendmarc', 'opendmarc')):
            os.makedirs(os.path.join(d, name))
            pw = pwd.getpwnam(user)
            os.chown(os.path.join(d, name), pw.pw_uid, pw.pw_gid)
        with open(os.path.join(d, 'opendkim.conf'), 'w') as f:
            f.write(f"""Mode v
Socket local:{self.dkim_sock}
UMask 000
PidFile {d}/opendkim/opendkim.pid
UserID opendkim
Syslog no
AuthservID {authserv}
InternalHosts {nobody}
Nameservers {self.DNS_OTHER}
""")
        with open(os.path.join(d, 'ignore.hosts'), 'w') as f:
            f.write(nobody + '\n')
        with open(os.path.join(d, 'opendmarc.conf'), 'w') as f:
            f.write(f"""Socket local:{self.dmarc_sock}
UMask 000
PidFile {d}/opendmarc/opendmarc.pid
UserID opendmarc
Syslog false
AuthservID {authserv}
TrustedAuthservIDs {authserv}
IgnoreHosts {d}/ignore.hosts
RejectFailures false
SPFSelfValidate false
PublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat
""")
        with open(os.path.join(d, 'policyd-spf.conf'), 'w') as f:
            f.write(f"""debugLevel = 0
TestOnly = 1
HELO_reject = Fail
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = False
skip_addresses = {nobody}/32
""")
        for n in ('opendkim.conf', 'opendmarc.conf', 'policyd-spf.conf', 'ignore.hosts'):
            os.chmod(os.path.join(d, n), 0o644)
        self.milter_dir = d
        parts = self.postfix_parts = set((self.env.args.postfix_checks or 'dkim,dmarc,spf,rspamd').split(','))
        milters = [m for k, m in (('dkim', 'unix:' + self.dkim_sock),
                                  ('dmarc', 'unix:' + self.dmarc_sock),
                                  ('rspamd', 'unix:' + self.rspamd_proxy)) if k in parts]
        extra_main = f"""smtpd_milters = {', '.join(milters)}
non_smtpd_milters =
milter_default_action = tempfail
milter_protocol = 6
smtpd_recipient_restrictions = reject_unauth_destination{
    ', check_policy_service unix:private/policyd-spf' if 'spf' in parts else ''}
policyd-spf_time_limit = 3600
"""
        extra_master = ('policyd-spf unix - n n - 0 spawn\n'
                        '  user=policyd-spf argv=/usr/bin/policyd-spf %s/policyd-spf.conf\n' % d)
        self.postfix = Postfix(self.env, name='postfix-checked', extra_main=extra_main,
                               extra_master=extra_master, mynetworks=nobody + '/32',
                               wrapper=self.in_mount_ns(self.resolv_other))

    def start_peers(self):
        self.rspamd.start(timeout=300)
        PROCS.on_stop(self.rspamd.stop)
        for name in os.listdir('/proc'):
            try:
                if name.isdigit() and os.getpgid(int(name)) == self.rspamd.proc.pid:
                    CPU.move('rspamd', int(name))
            except OSError:
                pass
        d = self.milter_dir
        PROCS.start('opendkim', self.in_mount_ns(self.resolv_other) + [
            '/usr/sbin/opendkim', '-f', '-x', os.path.join(d, 'opendkim.conf')],
            log_path=os.path.join(d, 'opendkim.log'), cgroup='milters')
        PROCS.start('opendmarc', self.in_mount_ns(self.resolv_other) + [
            '/usr/sbin/opendmarc', '-f', '-c', os.path.join(d, 'opendmarc.conf')],
            log_path=os.path.join(d, 'opendmarc.log'), cgroup='milters')
        self.postfix.cgroup = 'postfix'

        for path, what in ((self.dkim_sock, 'opendkim'), (self.dmarc_sock, 'opendmarc'),
                           (self.rspamd_proxy, "rspamd's proxy")):
            deadline = time.monotonic() + 15
            while True:
                try:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as u:
                        u.settimeout(1)
                        u.connect(path)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise BenchError('%s does not listen on %s (see %s)' % (what, path, d))
                    time.sleep(0.05)
        self.postfix.start()
        self.filtered_port = self._serve_handler(self.filtered_db, 'postage-smtp-rspamd')

    def rspamd_verdicts(self):
        """How many rspamd verdicts postage's handlers have logged."""
        try:
            with open(self.postage.logfile, errors='replace') as f:
                return sum(1 for line in f if 'event=rspamd result=ok' in line)
        except OSError:
            return 0

    def verify_postfix(self, maildir):
        """Every message Postfix delivered carries OpenDKIM's dkim=pass,
        OpenDMARC's dmarc=pass, policyd-spf's Received-SPF: Pass and
        rspamd's X-Spam-Status. Raises if not."""
        authserv = 'mx-postfix.' + DOMAIN
        files = [os.path.join(maildir, sub, n) for sub in ('new', 'cur')
                 for n in os.listdir(os.path.join(maildir, sub))]
        if not files:
            raise BenchError('checks: Postfix delivered nothing to verify')
        for path in files:
            with open(path, 'rb') as f:
                data = f.read(16384)
            head = data.replace(b'\r\n', b'\n').split(b'\n\n', 1)[0].decode('ascii', 'replace')
            fields = []
            for ln in head.split('\n'):
                if ln[:1] in (' ', '\t') and fields:
                    fields[-1] += ' ' + ln.strip()
                else:
                    fields.append(ln)
            ar = ' ; '.join(f.split(':', 1)[1] for f in fields
                            if f.lower().startswith('authentication-results:') and authserv in f)
            spf = [f for f in fields if f.lower().startswith('received-spf:')]
            spam = [f for f in fields if f.lower().startswith('x-spam-status:')]
            missing = [w for w, part, ok in (
                ('dkim=pass', 'dkim', 'dkim=pass' in ar), ('dmarc=pass', 'dmarc', 'dmarc=pass' in ar),
                ('Received-SPF: Pass', 'spf', spf and 'pass' in spf[0].lower()),
                ('X-Spam-Status', 'rspamd', bool(spam))) if not ok and part in self.postfix_parts]
            if missing:
                raise BenchError('checks: Postfix delivered %s without %s: %s' % (
                    os.path.basename(path), ', '.join(missing), head[:1500]))
        return len(files)

    def forget_pop_logins(self):
        """The POP3 workloads log in from 127.0.0.1, and POP-before-SMTP
        then lets 127.0.0.1 relay, which exempts it from the checks (mail
        from a client that may relay is not "from outside"). Forget those
        logins, as for a client on the Internet."""
        con = sqlite3.connect(self.postage.db, timeout=30)
        with con:
            con.execute("DELETE FROM pop_logins WHERE ip IN ('127.0.0.1', '::1')")
        con.close()

    def verify(self, maildir, expect):
        """Every message in the Maildir carries our Authentication-Results
        with spf=pass (MAIL FROM), dkim=pass and dmarc=pass (expect=True),
        or none at all (expect=False: the plain handler). Raises if not."""
        authserv = 'mx.' + DOMAIN
        files = [os.path.join(maildir, sub, n) for sub in ('new', 'cur')
                 for n in os.listdir(os.path.join(maildir, sub))]
        if not files:
            raise BenchError('checks: no message delivered to verify')
        for path in files:
            with open(path, 'rb') as f:
                data = f.read(16384)
            head = data.replace(b'\r\n', b'\n').split(b'\n\n', 1)[0].decode('ascii', 'replace')
            fields = []
            for ln in head.split('\n'):
                if ln[:1] in (' ', '\t') and fields:
                    fields[-1] += ' ' + ln.strip()
                else:
                    fields.append(ln)
            ar = [f.split(':', 1)[1].strip() for f in fields
                  if f.lower().startswith('authentication-results:')]
            if not expect:
                if ar:
                    raise BenchError('checks: the plain handler added Authentication-Results (%s): '
                                     'its row would not be plain' % ar[0][:200])
                continue
            ours = [v for v in ar if v.split(';', 1)[0].strip() == authserv]
            if len(ours) != 1:
                raise BenchError('checks: %s has %d Authentication-Results from %s (want 1): %r'
                                 % (os.path.basename(path), len(ours), authserv, ar))
            v = ours[0]
            want = [('spf=pass', 'smtp.mailfrom=' + self.SENDER_DOMAIN),
                    ('dkim=pass', 'header.d=' + self.SENDER_DOMAIN),
                    ('dmarc=pass', 'header.from=' + self.SENDER_DOMAIN)]
            resinfo = [r.strip() for r in v.split(';')[1:]]
            for result, prop in want:
                if not any(r.split()[:1] == [result] and prop in r.split() for r in resinfo):
                    raise BenchError('checks: delivered message lacks %s (%s) in Authentication-Results: %s'
                                     % (result, prop, v))
        return len(files)


class Lists:
    """A post to a mailing list of 1,000 members (README "Mailing lists"):
    100 local mailboxes and 900 addresses in 100 remote domains, whose
    copies go to one loopback sink (bench/sink.c with a count file, on
    127.0.0.2:25 under systemd-socket-activate). postage: the post goes
    to a smtp-handler, the queue runner starts when the 250 comes (as the
    .path unit starts it) and finds each domain's MX (dnsmasq on
    127.0.0.3:53: MX mx.sink.example, A 127.0.0.2). Both run through
    `unshare --mount` with /etc/resolv.conf bind-mounted to name that
    server. Postfix (an instance of its own: transport_maps sends each of
    the 100 domains to smtp:[127.0.0.2]:25, no DNS) gets the same post
    with the same 900 remote recipients and XVERP, so it too sends one
    message per member with the member in its envelope sender. The clock
    runs from the connect until the sink has counted the 900th message."""
    name = 'lists'
    SINK_HOST = '127.0.0.2'
    DNS_HOST = '127.0.0.3'
    LIST = 'team@' + DOMAIN
    POSTER = 'l000@' + DOMAIN
    LOCAL, REMOTE, DOMAINS = 100, 900, 100

    def __init__(self, env, postage, ceiling):
        self.env = env
        self.postage = postage
        self.ceiling = ceiling
        self.dir = env.path('lists')
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.count_file = os.path.join(self.dir, 'accepted')
        self.resolv = os.path.join(self.dir, 'resolv.conf')
        self.remote = ['u%03d@d%02d.example' % (i, i % self.DOMAINS) for i in range(self.REMOTE)]
        self.port = None
        con = sqlite3.connect(postage.db, timeout=30)
        with con:
            h = env.hashes[0]
            con.execute("INSERT INTO lists (address, owner, posting) VALUES (?, ?, 'members')",
                        (self.LIST, self.POSTER))
            for i in range(self.LOCAL):
                login = 'l%03d' % i
                con.execute('INSERT INTO mailboxes (login, password) VALUES (?, ?)', (login, h))
                con.execute('INSERT INTO addresses VALUES (?, ?)', ('%s@%s' % (login, DOMAIN), login))
                con.execute('INSERT INTO list_members (list, address) VALUES (?, ?)',
                            (self.LIST, '%s@%s' % (login, DOMAIN)))
                for sub in ('tmp', 'new', 'cur'):
                    os.makedirs(os.path.join(postage.mail_root, login, sub))
            for a in self.remote:
                con.execute('INSERT INTO list_members (list, address) VALUES (?, ?)', (self.LIST, a))
        con.close()
        transport = os.path.join(self.dir, 'transport')
        with open(transport, 'w') as f:
            for i in range(self.DOMAINS):
                f.write('d%02d.example smtp:[%s]:25\n' % (i, self.SINK_HOST))
        self.postfix = Postfix(env, 'postfix-lists', extra_main='transport_maps = texthash:%s\n'
                               'smtpd_authorized_verp_clients = 127.0.0.0/8\n' % transport)
        body = ('list ' + 'x' * 70 + '\r\n') * 53
        self.message = ('From: Poster <%s>\r\nTo: <%s>\r\nSubject: bench list post\r\n'
                        'Message-ID: <list.bench@%s>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n'
                        'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s'
                        % (self.POSTER, self.LIST, DOMAIN, body)).encode()

    @staticmethod
    def unavailable():
        return Checks.unavailable()

    def _in_namespace(self, argv):
        """argv run with /etc/resolv.conf naming the bench's DNS server."""
        return [shutil.which('unshare') or '/usr/bin/unshare', '--mount', '--', '/bin/sh', '-c',
                'mount --bind "$0" /etc/resolv.conf && exec "$@"', self.resolv] + argv

    def start(self):
        lines = ['no-resolv', 'no-hosts', 'no-poll', 'bind-interfaces', 'listen-address=' + self.DNS_HOST,
                 'port=53', 'cache-size=0', 'user=root', 'local=/example/',
                 'host-record=mx.sink.example,' + self.SINK_HOST]
        lines += ['mx-host=d%02d.example,mx.sink.example,10' % i for i in range(self.DOMAINS)]
        conf = os.path.join(self.dir, 'dnsmasq.conf')
        with open(conf, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        with open(self.resolv, 'w') as f:
            f.write('nameserver %s\noptions attempts:1 timeout:2\n' % self.DNS_HOST)
        os.chmod(self.resolv, 0o644)
        exe = shutil.which('dnsmasq') or '/usr/sbin/dnsmasq'
        PROCS.start('dnsmasq-lists', [exe, '--keep-in-foreground', '--conf-file=' + conf, '--pid-file='],
                    log_path=os.path.join(self.dir, 'dnsmasq.log'))
        PROCS.start('sink-lists', [self.env.ssa, '--inetd', '-a', '-l', '%s:25' % self.SINK_HOST,
                                   self.ceiling.sink, self.count_file],
                    log_path=os.path.join(self.dir, 'sink.log'))
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.SINK_HOST, 25), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError('the lists sink does not listen on %s:25' % self.SINK_HOST)
                time.sleep(0.02)
        self.port = free_port()
        pg = self.postage
        PROCS.start('postage-smtp-lists', self._in_namespace(
            [self.env.ssa, '--inetd', '-a', '-l', '127.0.0.1:%d' % self.port,
             '-E', 'POSTAGE_LOG_FILE=' + pg.logfile, self.env.smtp_handler, '--db', pg.db]),
            log_path=os.path.join(self.dir, 'supervisor.log'))
        wait_greeting(self.port, what='postage for lists')
        self.postfix.start()

    def forget_pop_logins(self):
        con = sqlite3.connect(self.postage.db, timeout=30)
        with con:
            con.execute("DELETE FROM pop_logins WHERE ip IN ('127.0.0.1', '::1')")
        con.close()

    def accepted(self):
        try:
            return os.path.getsize(self.count_file)
        except FileNotFoundError:
            return 0

    def _send(self, port, rcpts, options=()):
        """One message; returns (seconds from connect, seconds of the end
        of DATA alone) when the 250 is read."""
        import smtplib
        t0 = time.perf_counter()
        c = smtplib.SMTP('127.0.0.1', port, timeout=120)
        try:
            c.ehlo('client.' + DOMAIN)
            code, text = c.mail(self.POSTER, list(options))
            if code != 250:
                raise BenchError('MAIL: %d %s' % (code, text))
            for r in rcpts:
                code, text = c.rcpt(r)
                if code not in (250, 251):
                    raise BenchError('RCPT %s: %d %s' % (r, code, text))
            code, text = c.docmd('DATA')
            if code != 354:
                raise BenchError('DATA: %d %s' % (code, text))
            c.send(self.message + b'.\r\n')
            t1 = time.perf_counter()
            code, text = c.getreply()
            t2 = time.perf_counter()
            if code != 250:
                raise BenchError('end of DATA: %d %s' % (code, text))
        finally:
            try:
                c.quit()
            except Exception:
                c.close()
        return t0, t2 - t1

    def _wait_all(self, base, start, what):
        """Until the sink has counted REMOTE more than base. The file is
        never removed: a sink process on a connection a server keeps open
        from the last run (Postfix's connection cache) still counts in it."""
        deadline = time.monotonic() + 300
        while self.accepted() - base < self.REMOTE:
            if time.monotonic() > deadline:
                raise BenchError('lists: %s: only %d of %d copies reached the sink' % (
                    what, self.accepted() - base, self.REMOTE))
            time.sleep(0.002)
        done = time.perf_counter()
        time.sleep(0.2)
        if self.accepted() - base != self.REMOTE:
            raise BenchError('lists: %s: the sink counted %d copies, not %d' % (
                what, self.accepted() - base, self.REMOTE))
        return done - start

    def run_postage(self):
        """(until the last copy, s; the post's end of DATA, s)"""
        pg = self.postage
        base = self.accepted()
        start, reply = self._send(self.port, [self.LIST])
        runner = subprocess.Popen(self._in_namespace(
            [os.path.join(self.env.args.build, 'queue', 'queue-runner'), '--once', '--db', pg.db]),
            env=dict(os.environ, POSTAGE_LOG_FILE=pg.logfile), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            took = self._wait_all(base, start, 'postage')
        finally:
            runner.wait(timeout=300)
        local = sum(count_files(os.path.join(pg.mail_root, 'l%03d' % i, 'new'))
                    for i in range(self.LOCAL))
        if local != self.LOCAL:
            raise BenchError('lists: postage delivered %d local copies, not %d' % (local, self.LOCAL))
        for i in range(self.LOCAL):
            clear_dir(os.path.join(pg.mail_root, 'l%03d' % i, 'new'))
        return took, reply

    def run_postfix(self):
        base = self.accepted()
        start, reply = self._send(self.postfix.smtp_port, self.remote, options=('XVERP',))
        return self._wait_all(base, start, 'postfix'), reply

    def one_reply(self):
        """postage's end of DATA for the same message to one local mailbox."""
        _, reply = self._send(self.port, ['l001@' + DOMAIN])
        clear_dir(os.path.join(self.postage.mail_root, 'l001', 'new'))
        return reply


def dns_answers(name):
    """Does 127.0.0.1:53 answer a TXT query for name with an answer?"""
    qname = b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\0'
    query = b'\x42\x42\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00' + qname + b'\x00\x10\x00\x01'
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(query, ('127.0.0.1', 53))
            reply = s.recv(4096)
        except OSError:
            return False
    # same id, rcode 0, at least one answer
    return reply[:2] == b'\x42\x42' and (reply[3] & 0x0f) == 0 and reply[6:8] != b'\0\0'


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------

def smtp_source_runs(port, sessions, per_conn, total, message=None, sender=SMTP_FROM, helo=None):
    """The smtp-source command lines that send total messages with the given
    number of sessions and messages per connection."""
    base = ['smtp-source', '-f', sender, '-t', SMTP_RCPT]
    base += ['-F', message] if message else ['-l', '4096']
    if helo:
        base += ['-M', helo]
    target = '127.0.0.1:%d' % port
    if per_conn == 1:
        return [base + ['-s', str(sessions), '-m', str(total), target]]
    per_round = sessions * per_conn
    if total % per_round:
        raise BenchError('total %d is not a multiple of %d' % (total, per_round))
    return [base + ['-d', '-s', str(sessions), '-m', str(per_round), target]] * (total // per_round)


def run_smtp_source(runs):
    for argv in runs:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           preexec_fn=CPU.enter_fn('client'))
        if r.returncode != 0:
            raise BenchError('smtp-source failed (%d): %s' % (r.returncode, (r.stderr or r.stdout)[-300:]))


def sink_run(port, sessions, per_conn, total):
    """The same load against bench/sink.c, which keeps nothing: the clock
    stops when the last smtp-source is done."""
    runs = smtp_source_runs(port, sessions, per_conn, total)
    t0 = time.perf_counter()
    run_smtp_source(runs)
    return total / (time.perf_counter() - t0)


def smtp_run(port, maildir, sessions, per_conn, total, message=None, sender=SMTP_FROM, helo=None):
    """smtp-source load until every message is a file in the Maildir.
    message: a file smtp-source sends as it is (-F) instead of its own."""
    clear_dir(os.path.join(maildir, 'new'))
    clear_dir(os.path.join(maildir, 'cur'))
    runs = smtp_source_runs(port, sessions, per_conn, total, message, sender, helo)
    new = os.path.join(maildir, 'new')
    t0 = time.perf_counter()
    run_smtp_source(runs)
    deadline = time.monotonic() + 120
    while True:
        n = count_files(new)
        if n >= total:
            break
        if time.monotonic() > deadline:
            raise BenchError('only %d of %d messages arrived in %s' % (n, total, maildir))
        time.sleep(0.005)
    t1 = time.perf_counter()
    if n != total:
        raise BenchError('%d messages arrived, %d sent' % (n, total))
    return total / (t1 - t0)


def session_rss(port, proto, server_port_names):
    """Opens a session, reads the RSS of the process that holds the server's
    end of it. proto 'smtp': greeting + EHLO; 'pop3': login + STAT;
    'pop3-greeting': greeting only."""
    c = Conn(port)
    try:
        if proto == 'smtp':
            c.smtp_reply()
            c.smtp_reply('EHLO client.' + DOMAIN)
        else:
            c.expect(b'+OK')
            if proto == 'pop3':
                c.expect(b'+OK', 'USER pop0')
                c.expect(b'+OK', 'PASS ' + PASSWORD)
                c.expect(b'+OK', 'STAT')
        cport = c.s.getsockname()[1]
        inode = None
        for _ in range(50):
            inode = server_socket_inode(port, cport)
            if inode:
                break
            time.sleep(0.01)
        best = None
        for _ in range(20):
            for pid in pids_holding(inode) if inode else []:
                if comm_of(pid) in server_port_names:
                    best = (pid, rss_kb(pid), comm_of(pid))
            if best:
                break
            time.sleep(0.01)
        if proto == 'smtp':
            c.smtp_reply('QUIT')
        else:
            c.expect(b'+OK', 'QUIT')
        c.wait_close()
    finally:
        c.close()
    if not best or best[1] is None:
        raise BenchError('no %s process found holding the session' % '/'.join(server_port_names))
    return best[1] / 1024.0


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

class Results:
    def __init__(self):
        self.rows = []     # dicts: key, label, unit, values{server: [..]}, peer
        self.index = {}
        self.notes = []

    def add(self, key, label, unit, server, value):
        if key not in self.index:
            row = {'key': key, 'label': label, 'unit': unit, 'values': {}}
            self.index[key] = row
            self.rows.append(row)
        self.index[key]['values'].setdefault(server, []).append(value)

    def median(self, key, server):
        row = self.index.get(key)
        if not row or server not in row['values']:
            return None
        return statistics.median(row['values'][server])


def fmt(values, unit):
    if not values:
        return '-'
    m = statistics.median(values)
    digits = 2 if m < 10 else (1 if m < 100 else 0)
    s = '%.*f' % (digits, m)
    if len(values) > 1:
        s += ' (%.*f..%.*f)' % (digits, min(values), digits, max(values))
    return s


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

SIZES = {
    # name: (quick, full)
    'reps': (3, 5),
    'smtp_1s_1m': (80, 300),
    'smtp_20s_1m': (200, 600),
    'smtp_1s_10m': (100, 300),
    'smtp_20s_10m': (400, 1000),
    'smtp_checks_1_session': (80, 300),
    'smtp_checks_20_sessions': (200, 600),
    'smtp_checked_1s': (80, 300),
    'smtp_checked_20s': (200, 600),
    'connect_1c': (100, 300),
    'connect_20c': (200, 600),
    'login_1c': (40, 120),
    'login_20c': (80, 240),
    'fetch_reps': (3, 5),
    'greet_count': (40, 100),
    'rss_count': (3, 5),
    'durable_1w': (100, 300),
    'durable_20w': (400, 1500),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--build', required=True)
    ap.add_argument('--root', required=True)
    ap.add_argument('--quick', action='store_true', help='smaller counts, under 3 minutes')
    ap.add_argument('--reps', type=int, help='repetitions of each workload')
    ap.add_argument('--only', help='comma list of: smtp,checks,lists,connect,login,fetch,startup,ceiling,'
                    'postgresql')
    ap.add_argument('--keep', action='store_true', help='keep the temporary directory')
    ap.add_argument('--tmpdir', default='/var/tmp', help='where the temporary directory goes (a disk, not tmpfs)')
    ap.add_argument('--no-install', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--postfix-checks', help="experiment: the checked Postfix's milters and policy service, "
                    "a comma list of dkim,dmarc,spf,rspamd (default all; the Postfix rows' "
                    "verification then fails for those left out)")
    ap.add_argument('--postage-journal', choices=('wal', 'delete', 'truncate', 'persist'),
                    help="experiment: set postage's database to this journal mode (default: the schema's)")
    args = ap.parse_args()

    q = 0 if args.quick else 1
    size = {k: v[q] for k, v in SIZES.items()}
    if args.reps:
        size['reps'] = size['fetch_reps'] = size['rss_count'] = args.reps
    reps = size['reps']
    only = set((args.only or 'smtp,checks,lists,connect,login,fetch,startup,ceiling,postgresql').split(','))

    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, _on_signal)
    atexit.register(PROCS.stop_all)

    started = time.time()
    load_start = os.getloadavg()
    env = Env(args)
    # When a run ended (and deleted its files) is kept next to the
    # temporary directories: see README.md, workload 1.
    ended_mark = os.path.join(args.tmpdir, 'postage-bench.ended')
    try:
        since_last = time.time() - os.stat(ended_mark).st_mtime
    except OSError:
        since_last = None

    def remove_tmp():
        if args.keep:
            return
        shutil.rmtree(env.tmp, ignore_errors=True)
        try:
            with open(ended_mark, 'w') as f:
                f.write('%d\n' % time.time())
        except OSError:
            pass
    atexit.register(remove_tmp)
    global RETIRED
    RETIRED = env.path('retired')
    CPU.setup()
    atexit.register(CPU.close)
    os.mkdir(RETIRED, 0o700)
    fs = check_fs(env.tmp)
    res = Results()
    if since_last is not None and since_last < RECENT_DELETIONS_S:
        msg = ('the previous bench run deleted its files %.0f s ago: on ext4 without a journal that '
               'slows every file creation for up to %d s (README.md, workload 1)' %
               (max(since_last, 0), RECENT_DELETIONS_S))
        log('WARNING: ' + msg)
        res.notes.append(msg)
    fetch_count, big_bytes = 100, 20 * 1024 * 1024

    try:
        log('temporary directory %s (%s)' % (env.tmp, fs))
        postage = Postage(env)
        postfix = Postfix(env)
        dovecot = Dovecot(env, fetch_count, big_bytes)
        ceiling = Ceiling(env)
        floor = Floor(env, postage) if only & {'connect', 'ceiling', 'login', 'startup'} else None
        checks = None
        if 'checks' in only:
            why = Checks.unavailable()
            if why:
                res.notes.append('smtp_checks skipped: ' + why)
            else:
                checks = Checks(env, postage)
                checks.prepare()
                why = Checks.peers_unavailable(args.root)
                if why:
                    res.notes.append('smtp_checked (against Postfix with milters) skipped: ' + why)
                else:
                    checks.prepare_peers(args.root)
        lists = None
        if 'lists' in only:
            why = Lists.unavailable()
            if why:
                res.notes.append('lists skipped: ' + why)
            else:
                lists = Lists(env, postage, ceiling)
        pgp = None
        if 'postgresql' in only:
            why = PostagePg.unavailable()
            if why:
                res.notes.append('postgresql skipped: ' + why)
            else:
                pgp = PostagePg(env, postage)
        if env.has_pop3:
            postage.fill_pop(fetch_count, big_bytes)
        else:
            res.notes.append('pop3-handler is not built (%s): postage POP3 rows skipped' % env.pop3_handler)
        postage.start()
        postfix.start()
        dovecot.start()
        ceiling.start()
        postage.start_lite(ceiling.spawner)
        if floor:
            floor.start()
        if checks:
            checks.start()
            if checks.postfix:
                checks.start_peers()
        if lists:
            lists.start()
        if pgp:
            pgp.start()
        res.notes.extend(postage.notes)
        log('postage smtp :%d pop3 :%s, postfix :%d, dovecot :%d, greeter :%d' % (
            postage.smtp_port, postage.pop3_port, postfix.smtp_port, dovecot.pop3_port, ceiling.port))

        smtp_servers = [('postage', postage.smtp_port, postage.maildir),
                        ('postfix', postfix.smtp_port, postfix.maildir)]
        pop_servers = [('dovecot', dovecot.pop3_port)]
        if env.has_pop3:
            pop_servers.insert(0, ('postage', postage.pop3_port))

        # Warm-up: first deliveries create the Maildirs, first logins build
        # Dovecot's indexes, page caches fill.
        for name, port, md in smtp_servers:
            smtp_run(port, md, 1, 1, 5)
        if checks:
            # The same signed message through the plain handler and the
            # checking one: the plain one must add no Authentication-Results,
            # the checking one spf=pass dkim=pass dmarc=pass (else the rows
            # would measure something else: fail loudly).
            smtp_run(postage.smtp_port, postage.maildir, 1, 1, 5, checks.message,
                     Checks.SENDER, Checks.HELO)
            checks.verify(postage.maildir, False)
            smtp_run(checks.port, postage.maildir, 1, 1, 5, checks.message, Checks.SENDER, Checks.HELO)
            log('checks: %d warm-up messages carry spf=pass dkim=pass dmarc=pass' %
                checks.verify(postage.maildir, True))
            if checks.postfix:
                before = checks.rspamd_verdicts()
                smtp_run(checks.filtered_port, postage.maildir, 1, 1, 5, checks.message, Checks.SENDER,
                         Checks.HELO)
                checks.verify(postage.maildir, True)
                if checks.rspamd_verdicts() - before != 5:
                    raise BenchError('checks: postage logged %d rspamd verdicts for 5 messages' %
                                     (checks.rspamd_verdicts() - before))
                smtp_run(checks.postfix.smtp_port, checks.postfix.maildir, 1, 1, 5, checks.message,
                         Checks.SENDER, Checks.HELO)
                log('checks: %d warm-up messages through Postfix carry its milters\' results' %
                    checks.verify_postfix(checks.postfix.maildir))
        for name, port in list(pop_servers):
            try:
                for i in range(POP_USERS):
                    op_pop3_login(port, i)
                pop3_fetch(port, 'fetch', fetch_count)
                pop3_fetch(port, 'big', 1)
            except (BenchError, OSError) as e:
                if name != 'postage':
                    raise
                res.notes.append('postage pop3-handler failed the warm-up (%s): its POP3 rows are skipped' % e)
                pop_servers.remove((name, port))
                env.has_pop3 = False

        def durable_ceiling():
            res.add('durable_1w', '4 KiB write+fsync+rename+dir fsync, 1 writer', '/s',
                    'machine', ceiling.durable_rate(size['durable_1w'], 1))
            res.add('durable_20w', '4 KiB write+fsync+rename+dir fsync, 20 writers', '/s',
                    'machine', ceiling.durable_rate(size['durable_20w'], 20))

        if 'ceiling' in only and 'smtp' not in only:
            log('ceiling: durable writes')
            for rep in range(reps):
                durable_ceiling()

        if 'smtp' in only:
            for key, sessions, per_conn, label in (
                    ('smtp_1s_1m', 1, 1, 'SMTP 4 KiB to Maildir: 1 session, 1 msg/conn'),
                    ('smtp_20s_1m', 20, 1, 'SMTP 4 KiB to Maildir: 20 sessions, 1 msg/conn'),
                    ('smtp_1s_10m', 1, 10, 'SMTP 4 KiB to Maildir: 1 session, 10 msg/conn'),
                    ('smtp_20s_10m', 20, 10, 'SMTP 4 KiB to Maildir: 20 sessions, ~10 msg/conn')):
                log(key)
                for rep in range(reps):
                    if 'ceiling' in only:
                        # fsync rates drift with the machine's other I/O:
                        # measure them next to the messages they bound.
                        durable_ceiling()
                        res.add('sink_' + key, 'null SMTP server: %d session%s, %s msg/conn' % (
                            sessions, 's' if sessions > 1 else '', per_conn if sessions == 1 or per_conn == 1
                            else '~%d' % per_conn), 'msg/s', 'machine',
                            sink_run(ceiling.sink_port, sessions, per_conn, size[key]))
                    for name, port, md in in_turn(smtp_servers, rep):
                        res.add(key, label, 'msg/s', name, smtp_run(port, md, sessions, per_conn, size[key]))
                    if per_conn == 1:
                        # The same under a supervisor that only accepts and
                        # posix_spawns (bench/spawner.c): what the supervisor costs.
                        res.add(key.replace('smtp_', 'smtp_lite_'), label.replace('SMTP', 'SMTP (spawner)'),
                                'msg/s', 'postage', smtp_run(postage.smtp_lite_port, postage.maildir,
                                                             sessions, per_conn, size[key]))

        if checks:
            checks.forget_pop_logins()
            for key, sessions, label in (
                    ('smtp_checks_1_session', 1,
                     'SMTP 4 KiB, SPF+DKIM+DMARC checked: 1 session, 1 msg/conn'),
                    ('smtp_checks_20_sessions', 20,
                     'SMTP 4 KiB, SPF+DKIM+DMARC checked: 20 sessions, 1 msg/conn')):
                log(key)
                for rep in range(reps):
                    # The same signed message, sender and HELO to both; the
                    # delivered messages are checked after the clock stops.
                    for who, port in in_turn((('plain', postage.smtp_port), ('postage', checks.port)), rep):
                        cpu0 = CPU.usage()
                        res.add(key, label, 'msg/s', who,
                                smtp_run(port, postage.maildir, sessions, 1, size[key], checks.message,
                                         Checks.SENDER, Checks.HELO))
                        cpu1 = CPU.usage()
                        if 'postage' in cpu0 and 'postage' in cpu1:
                            res.add('cpu_%s_%s' % (key, who), 'CPU per message, %s: postage\'s handlers, %s' % (
                                key, 'checking' if who == 'postage' else 'plain'), 'ms', 'machine',
                                (cpu1['postage'] - cpu0['postage']) * 1000.0 / size[key])
                        checks.verify(postage.maildir, who == 'postage')
            if checks.postfix:
                pf = checks.postfix
                for key, sessions, label in (
                        ('smtp_checked_1s', 1,
                         'SMTP 4 KiB, SPF+DKIM+DMARC+rspamd: 1 session, 1 msg/conn'),
                        ('smtp_checked_20s', 20,
                         'SMTP 4 KiB, SPF+DKIM+DMARC+rspamd: 20 sessions, 1 msg/conn')):
                    log(key)
                    for rep in range(reps):
                        for who, port, md in in_turn((('postage', checks.filtered_port, postage.maildir),
                                                      ('postfix', pf.smtp_port, pf.maildir)), rep):
                            before = checks.rspamd_verdicts()
                            cpu0 = CPU.usage()
                            res.add(key, label, 'msg/s', who,
                                    smtp_run(port, md, sessions, 1, size[key], checks.message,
                                             Checks.SENDER, Checks.HELO))
                            cpu1 = CPU.usage()
                            for g in ('postage', 'postfix', 'milters', 'rspamd', 'dns', 'client'):
                                if g in cpu0 and g in cpu1 and (g != 'postage' or who == 'postage') and \
                                        (g not in ('postfix', 'milters') or who == 'postfix'):
                                    res.add('cpu_%s_%s_%s' % (key, who, g),
                                            'CPU per message, %s: %s\'s %s' % (key, who, g), 'ms', 'machine',
                                            (cpu1[g] - cpu0[g]) * 1000.0 / size[key])
                            if who == 'postage':
                                checks.verify(md, True)
                                if checks.rspamd_verdicts() - before != size[key]:
                                    raise BenchError('checks: %d rspamd verdicts for %d messages' % (
                                        checks.rspamd_verdicts() - before, size[key]))
                            else:
                                checks.verify_postfix(md)

        if pgp:
            log('postgresql')
            # warm-up: pgbouncer's server connections, the host file
            smtp_run(pgp.smtp_port, postage.maildir, 1, 1, 5)
            if pgp.pop3_port:
                for i in range(POP_USERS):
                    op_pop3_login(pgp.pop3_port, i)
            pairs = (('sqlite', postage.smtp_port, postage.pop3_port),
                     ('postage', pgp.smtp_port, pgp.pop3_port))
            for rep in range(reps):
                for key, per_conn, label in (
                        ('pg_smtp_1s_1m', 1, 'on PostgreSQL: SMTP 4 KiB to Maildir, 1 session, 1 msg/conn'),
                        ('pg_smtp_1s_10m', 10, 'on PostgreSQL: SMTP 4 KiB to Maildir, 1 session, 10 msg/conn')):
                    for who, sport, _ in in_turn(pairs, rep):
                        res.add(key, label, 'msg/s', who,
                                smtp_run(sport, postage.maildir, 1, per_conn, size[key.replace('pg_', '')]))
                for who, sport, pport in in_turn(pairs, rep):
                    res.add('pg_greeting_smtp_ms', 'on PostgreSQL: SMTP connect to greeting', 'ms', who,
                            statistics.median(greeting_latencies(sport, size['greet_count'])))
                    if pport and pgp.pop3_port:
                        res.add('pg_pop3_login_1c', 'on PostgreSQL: POP3 USER, PASS, STAT, QUIT; 1 client',
                                'login/s', who, run_parallel(op_pop3_login, pport, size['login_1c'], 1))

        if lists:
            log('lists')
            # the post comes from outside, checked (workload 5's reason)
            lists.forget_pop_logins()
            # warm-up: the Maildirs, the runner's first pass, Postfix's processes
            lists.run_postage()
            lists.run_postfix()
            for rep in range(reps):
                for who in in_turn(('postage', 'postfix'), rep):
                    took, reply = lists.run_postage() if who == 'postage' else lists.run_postfix()
                    res.add('list_1000_last_ms', 'list post to 1,000 members: until the 900th remote '
                            'copy is accepted', 'ms', who, took * 1000)
                    res.add('list_1000_rate', 'same, remote copies per second', 'msg/s', who,
                            Lists.REMOTE / took)
                    res.add('list_1000_reply_ms', 'same, end of DATA to the 250', 'ms', who, reply * 1000)
                res.add('list_one_reply_ms', 'the same message to one local mailbox, end of DATA to the '
                        '250', 'ms', 'postage', lists.one_reply() * 1000)

        if 'connect' in only or 'ceiling' in only or 'login' in only:
            log('connect rate')
            servers = [('machine', ceiling.port), ('machine-lite', ceiling.lite_port)]
            servers += [(name, floor.ports[name, 'smtp']) for name in ('floor', 'floor-static')]
            if 'connect' in only:
                servers += [('postage', postage.smtp_port), ('postfix', postfix.smtp_port),
                            ('postage-lite', postage.smtp_lite_port)]
            for clients in (1, 20):
                key = 'connect_smtp_%dc' % clients
                n = size['connect_%dc' % clients]
                for rep in range(reps):
                    for name, port in in_turn(servers, rep):
                        plural = 's' if clients > 1 else ''
                        k, label = {
                            'machine': ('spawn_%dc' % clients,
                                        'static greeter per connection, %d client%s' % (clients, plural)),
                            'machine-lite': ('spawnlite_%dc' % clients,
                                             'same under spawner, %d client%s' % (clients, plural)),
                            'floor': ('floor_connect_%dc' % clients,
                                      'floor: database, settings, greeting; %d client%s' % (clients, plural)),
                            'floor-static': ('floorstatic_connect_%dc' % clients,
                                             'same, floor linked statically, %d client%s' % (clients, plural)),
                            'postage-lite': ('connect_lite_smtp_%dc' % clients,
                                             'SMTP (spawner) connect, greeting, QUIT; %d client%s' % (
                                                 clients, plural)),
                        }.get(name, (key, 'SMTP connect, greeting, QUIT; %d client%s' % (clients, plural)))
                        who = 'machine' if name.startswith('floor') else name.replace('-lite', '')
                        res.add(k, label, 'conn/s', who, run_parallel(op_connect, port, n, clients))

        if 'login' in only:
            for clients in (1, 20):
                key = 'pop3_login_%dc' % clients
                log(key)
                plural = 's' if clients > 1 else ''
                floors = [('floor', floor.ports['floor', 'pop3'],
                           'floor_login_%dc' % clients, 'floor: POP3 login; %d client%s' % (clients, plural)),
                          ('floor-static', floor.ports['floor-static', 'pop3'], 'floorstatic_login_%dc' % clients,
                           'same, floor linked statically, %d client%s' % (clients, plural))]
                for rep in range(reps):
                    for name, port in in_turn(pop_servers, rep):
                        res.add(key, 'POP3 USER, PASS, STAT, QUIT; %d client%s' % (
                            clients, plural), 'login/s', name,
                            run_parallel(op_pop3_login, port, size['login_%dc' % clients], clients))
                    for name, port, k, label in in_turn(floors, rep):
                        res.add(k, label, 'login/s', 'machine',
                                run_parallel(op_pop3_login, port, size['login_%dc' % clients], clients))

        if 'fetch' in only:
            log('pop3 fetch')
            for rep in range(size['fetch_reps']):
                for name, port in in_turn(pop_servers, rep):
                    sess, retr = pop3_fetch(port, 'fetch', fetch_count)
                    res.add('pop3_fetch_100x4k_ms', 'POP3 login, RETR 1..100 of 4 KiB, QUIT',
                            'ms', name, sess * 1000)
                    res.add('pop3_retr_100x4k_ms', 'POP3 the 100 RETRs of it alone', 'ms', name, retr * 1000)
                    sess, retr = pop3_fetch(port, 'big', 1)
                    res.add('pop3_fetch_20m_ms', 'POP3 RETR of one 20 MiB message', 'ms', name, retr * 1000)

        if 'startup' in only:
            log('start-up')
            try:
                wal = os.path.getsize(postage.db + '-wal')
            except OSError:
                wal = 0
            # Each handler rebuilds SQLite's WAL index from this log when it
            # opens the database (see README.md): say how long it was.
            res.notes.append("postage's database log (postage.db-wal) before the start-up workload: %d KiB" %
                             (wal // 1024))
            targets = [('greeting_smtp_ms', 'postage', postage.smtp_port),
                       ('greeting_smtp_ms', 'postfix', postfix.smtp_port),
                       ('greeting_pop3_ms', 'dovecot', dovecot.pop3_port),
                       ('greeting_ceiling_ms', 'machine', ceiling.port),
                       ('greeting_lite_smtp_ms', 'postage', postage.smtp_lite_port),
                       ('greeting_lite_ceiling_ms', 'machine', ceiling.lite_port)]
            if env.has_pop3:
                targets.insert(2, ('greeting_pop3_ms', 'postage', postage.pop3_port))
            labels = {'greeting_smtp_ms': 'SMTP connect to greeting',
                      'greeting_pop3_ms': 'POP3 connect to greeting',
                      'greeting_ceiling_ms': 'connect to greeting, static greeter',
                      'greeting_lite_smtp_ms': 'SMTP (spawner) connect to greeting',
                      'greeting_lite_ceiling_ms': 'same, static greeter under spawner'}
            for rep in range(reps):
                for key, name, port in targets:
                    lat = greeting_latencies(port, size['greet_count'])
                    res.add(key, labels[key], 'ms', name, statistics.median(lat))
            for rep in range(size['rss_count']):
                res.add('rss_smtp_mb', 'SMTP RSS in session (smtp-handler / smtpd)', 'MB',
                        'postage', session_rss(postage.smtp_port, 'smtp', ('smtp-handler',)))
                res.add('rss_smtp_mb', None, 'MB', 'postfix',
                        session_rss(postfix.smtp_port, 'smtp', ('smtpd',)))
                if env.has_pop3:
                    res.add('rss_pop3_mb', 'POP3 RSS in session (pop3-handler / pop3)', 'MB',
                            'postage', session_rss(postage.pop3_port, 'pop3', ('pop3-handler',)))
                res.add('rss_pop3_mb', 'POP3 RSS in session (pop3-handler / pop3)', 'MB',
                        'dovecot', session_rss(dovecot.pop3_port, 'pop3', ('pop3',)))
                res.add('rss_pop3_login_mb', 'POP3 RSS before login (pop3-handler / pop3-login)', 'MB',
                        'dovecot', session_rss(dovecot.pop3_port, 'pop3-greeting', ('pop3-login',)))
                if env.has_pop3:
                    res.add('rss_pop3_login_mb', None, 'MB', 'postage',
                            session_rss(postage.pop3_port, 'pop3-greeting', ('pop3-handler',)))
                for name, label in (('floor', 'floor'), ('floor-static', 'floor linked statically')):
                    k = name.replace('-', '')
                    res.add(k + '_rss_smtp_mb', '%s: SMTP RSS in session' % label, 'MB', 'machine',
                            session_rss(floor.ports[name, 'smtp'], 'smtp', (name,)))
                    res.add(k + '_rss_pop3_mb', '%s: POP3 RSS in session' % label, 'MB', 'machine',
                            session_rss(floor.ports[name, 'pop3'], 'pop3', (name,)))
    finally:
        PROCS.stop_all()

    report(res, env, started, load_start, fs, args, size)
    return 0


PEER = {'pg_': 'sqlite', 'smtp': 'postfix', 'smtp_checks': 'plain', 'smtp_checked': 'postfix', 'list_1000': 'postfix',
        'connect_smtp': 'postfix', 'connect_lite_smtp': 'postfix',
        'greeting_lite_smtp': 'postfix', 'pop3': 'dovecot', 'greeting_smtp': 'postfix',
        'greeting_pop3': 'dovecot', 'rss_smtp': 'postfix', 'rss_pop3': 'dovecot'}


def peer_of(key):
    for prefix in sorted(PEER, key=len, reverse=True):
        if key.startswith(prefix):
            return PEER[prefix]
    return None


def ceiling_of(res, key):
    """postage as a fraction of the machine's limit for the same work, under
    the same supervisor (systemd-socket-activate, or bench/spawner.c for the
    *_lite_* figures)."""
    p = res.median(key, 'postage')
    if p is None:
        return None
    if key.startswith('smtp_checks') or key.startswith('smtp_checked'):
        return None  # no machine limit measured for checked mail
    lite = '_lite_' in key
    spawn_key = 'spawnlite_%s' if lite else 'spawn_%s'
    base = key.replace('_lite_', '_')
    if base.startswith('smtp_'):
        parts = base.split('_')
        c = int(parts[1][:-1])
        m = int(parts[2][:-1])
        dur = res.median('durable_%dw' % c, 'machine')
        sink = None if lite else res.median('sink_' + base, 'machine')
        if sink and dur:
            # The same smtp-source load against a server that keeps
            # nothing (starting smtp-source, the spawns, the round trips),
            # plus one durable write per message with c writers:
            # 1 / (1/sink + 1/durable_c) messages per second.
            return p * (1.0 / sink + 1.0 / dur)
        # Without the sink: a session = one spawn, then per message one
        # durable write: m / (m/durable_c + 1/spawn_c).
        spawn = res.median(spawn_key % ('%dc' % c), 'machine')
        if not spawn or not dur:
            return None
        return p / (m / (m / dur + 1.0 / spawn))
    if base.startswith('connect_smtp_') or base.startswith('pop3_login_'):
        spawn = res.median(spawn_key % base.rsplit('_', 1)[1], 'machine')
        return p / spawn if spawn else None
    if base.startswith('greeting_'):
        g = res.median('greeting_lite_ceiling_ms' if lite else 'greeting_ceiling_ms', 'machine')
        return g / p if g else None
    return None


def floor_limits(res):
    """What bench/floor.c reached, in the units of postage's own lines: for
    rates a fraction of the static greeter's rate (as postage's 'ceiling'
    line), for RSS a fraction of the peer's (as postage's 'ratio' line)."""
    lines = []
    for name, k in (('floor', 'floor'), ('floor-static', 'floorstatic')):
        for clients in (1, 20):
            spawn = res.median('spawn_%dc' % clients, 'machine')
            for figure, key in (('connect_smtp_%dc', '%s_connect_%dc'), ('pop3_login_%dc', '%s_login_%dc')):
                v = res.median(key % (k, clients), 'machine')
                if v and spawn:
                    lines.append('limit %s %s/machine %.2f' % (figure % clients, name, v / spawn))
        for proto, peer in (('smtp', 'postfix'), ('pop3', 'dovecot')):
            v = res.median('%s_rss_%s_mb' % (k, proto), 'machine')
            o = res.median('rss_%s_mb' % proto, peer)
            if v and o:
                lines.append('limit rss_%s_mb %s/%s %.2f' % (proto, name, peer, v / o))
    return lines


def cpu_limits(res):
    """For checked mail: the CPU each message costs on either side, all
    parts together (the server, its milters or checks, rspamd, the DNS
    server, the client), and what that allows: on a machine whose cores
    are all busy, rates go as the inverse of these sums, so their
    quotient is the most postage's rate can be over Postfix's here."""
    lines = []
    for key in ('smtp_checked_1s', 'smtp_checked_20s'):
        tot = {}
        for who, parts in (('postage', ('postage', 'rspamd', 'dns', 'client')),
                           ('postfix', ('postfix', 'milters', 'rspamd', 'dns', 'client'))):
            vals = [res.median('cpu_%s_%s_%s' % (key, who, g), 'machine') for g in parts]
            if all(v is not None for v in vals):
                tot[who] = sum(vals)
        if len(tot) == 2 and tot['postage'] > 0:
            lines.append('limit %s cpu postfix/postage %.2f (CPU ms per message: postage %.2f, postfix %.2f)' % (
                key, tot['postfix'] / tot['postage'], tot['postage'], tot['postfix']))
    return lines


def report(res, env, started, load_start, fs, args, size):
    now = datetime.datetime.now(datetime.timezone.utc)
    uname = platform.uname()
    print()
    print('postage bench, %s UTC, %s%s, %d CPUs, kernel %s, temp dir on %s' % (
        now.strftime('%Y-%m-%d %H:%M'), 'quick' if args.quick else 'full',
        ', %d reps' % size['reps'], os.cpu_count(), uname.release, fs))
    la = os.getloadavg()
    print('load average at start %.2f %.2f %.2f, at end %.2f %.2f %.2f; run took %.0f s' % (
        load_start + la + (time.time() - started,)))
    print('each cell: median (min..max) over the repetitions; ms and MB lower is better, others higher')
    for n in res.notes:
        print('note: ' + n)
    print()
    head = '%-56s %-21s %-29s %6s %7s' % ('workload', 'postage', 'peer', 'ratio', 'ceiling')
    print(head)
    print('-' * len(head))
    lines = []
    machine_rows = []
    for row in res.rows:
        key = row['key']
        label = '%s (%s)' % (row['label'] or key, row['unit'])
        if 'machine' in row['values']:
            machine_rows.append((label, fmt(row['values']['machine'], row['unit'])))
            continue
        peer = peer_of(key)
        pv = row['values'].get('postage')
        ov = row['values'].get(peer) if peer else None
        ratio = ''
        if pv and ov:
            r = statistics.median(pv) / statistics.median(ov)
            ratio = '%.2f' % r
            lines.append('ratio %s %s/%s %.2f' % (key, 'checks' if peer == 'plain' else 'postage', peer, r))
        c = ceiling_of(res, key)
        cs = ''
        if c is not None:
            cs = '%.2f' % c
            lines.append('ceiling %s %.2f' % (key, c))
            if ov and key.startswith('smtp_') and peer == 'postfix' and '_lite_' not in key:
                # The most the machine allows (postage's rate over its
                # ceiling), as a multiple of Postfix's rate: below 2, no
                # per-connection server reaches 2x Postfix here.
                lines.append('limit %s machine/%s %.2f' % (
                    key, peer, statistics.median(pv) / c / statistics.median(ov)))
        print('%-56s %-21s %-29s %6s %7s' % (label, fmt(pv, row['unit']),
                                             ('%s %s' % (peer, fmt(ov, row['unit']))) if ov else '-',
                                             ratio, cs))
    pg, lite = res.median('pg_greeting_smtp_ms', 'postage'), res.median('pg_greeting_smtp_ms', 'sqlite')
    if pg is not None and lite is not None:
        # issue 25: a handler's start-up on PostgreSQL may cost 0.3 ms more
        lines.append('limit pg_greeting_smtp_ms postgresql-sqlite %+.2f ms (bound +0.30)' % (pg - lite))
    lines.extend(floor_limits(res))
    lines.extend(cpu_limits(res))
    if machine_rows:
        print()
        print('%-56s %s' % ('the machine, same run', 'value'))
        print('-' * len(head))
        for label, v in machine_rows:
            print('%-56s %s' % (label, v))
    # The limit lines first, in a block of their own, so that the output
    # ends with the ratio and ceiling lines alone, one per figure.
    limits = sorted(line for line in lines if line.startswith('limit '))
    if limits:
        print()
        for line in limits:
            print(line)
    print()
    for line in sorted((line for line in lines if not line.startswith('limit ')),
                       key=lambda s: (s.split()[0] != 'ratio', s)):
        print(line)
    sys.stdout.flush()


if __name__ == '__main__':
    try:
        sys.exit(main())
    except BenchError as e:
        PROCS.stop_all()
        print('bench: error: %s' % e, file=sys.stderr)
        sys.exit(1)
