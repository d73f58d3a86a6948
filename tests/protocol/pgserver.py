"""A real PostgreSQL server for tests: Debian's postgresql-15 binaries,
a cluster made by initdb in a temporary folder, listening on a unix
socket in that folder only (no TCP port), run by an unprivileged user
when the tests run as root (PostgreSQL refuses root), stopped at the end.
"""
import os
import pwd
import shutil
import subprocess
import tempfile

BIN = '/usr/lib/postgresql/15/bin'
NOBODY = 'nobody'


class PostgreSQL:
    """password: the superuser postage's password, and then every local
    connection must prove it (SCRAM-SHA-256), as in production; None:
    trust."""

    def __init__(self, password=None):
        self.password = password
        if not os.path.exists(os.path.join(BIN, 'postgres')):
            raise RuntimeError(f'no PostgreSQL 15 in {BIN} (package postgresql-15; '
                               'scripts/test installs it)')
        self.dir = tempfile.mkdtemp(prefix='postage-pg-')
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, 'data')
        self.sock = os.path.join(self.dir, 'sock')
        os.mkdir(self.sock)
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam(NOBODY)
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
            os.chown(self.sock, self.user.pw_uid, self.user.pw_gid)
        self.started = False

    def _run(self, argv, **kw):
        """argv as the server's user; CompletedProcess."""
        if self.user:
            u = self.user

            def drop():
                os.setgroups([])
                os.setgid(u.pw_gid)
                os.setuid(u.pw_uid)
            kw['preexec_fn'] = drop
        env = dict(os.environ, LC_ALL='C.UTF-8', HOME=self.dir, PGHOST=self.sock)
        if self.password:
            env['PGPASSWORD'] = self.password
        return subprocess.run(argv, env=env, capture_output=True, timeout=120, **kw)

    def _opts(self):
        return f"-c listen_addresses='' -c unix_socket_directories='{self.sock}' -c fsync=off"

    def halt(self):
        """Stops the server as a failover or a crash would (immediate
        shutdown), keeping its data for resume()."""
        r = self._run([os.path.join(BIN, 'pg_ctl'), '-D', self.data, '-m', 'immediate', '-w',
                       'stop'])
        if r.returncode != 0:
            raise RuntimeError('pg_ctl stop failed: ' + r.stderr.decode(errors='replace'))

    def resume(self):
        r = self._run([os.path.join(BIN, 'pg_ctl'), '-D', self.data, '-w', '-t', '60',
                       '-l', os.path.join(self.dir, 'log'), '-o', self._opts(), 'start'])
        if r.returncode != 0:
            raise RuntimeError('pg_ctl start failed: ' + r.stderr.decode(errors='replace'))

    def start(self):
        auth = ['--auth=trust']
        if self.password:
            pwfile = os.path.join(self.dir, 'pwfile')
            with open(pwfile, 'w') as f:
                f.write(self.password + '\n')
            if self.user:
                os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
            auth = ['--auth=scram-sha-256', '--pwfile=' + pwfile]
        r = self._run([os.path.join(BIN, 'initdb'), '-D', self.data, '-U', 'postage',
                       *auth, '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'])
        if r.returncode != 0:
            raise RuntimeError('initdb failed: ' + r.stderr.decode(errors='replace'))
        opts = self._opts()
        r = self._run([os.path.join(BIN, 'pg_ctl'), '-D', self.data, '-w', '-t', '60',
                       '-l', os.path.join(self.dir, 'log'), '-o', opts, 'start'])
        if r.returncode != 0:
            log = ''
            try:
                with open(os.path.join(self.dir, 'log')) as f:
                    log = f.read()
            except OSError:
                pass
            raise RuntimeError('PostgreSQL did not start: ' + r.stderr.decode(errors='replace') + log)
        self.started = True
        return self

    def psql(self, sql, db='postgres', check=True):
        """Runs the SQL script with psql (on its standard input: a file in
        the source tree may be out of the server user's reach), stopping
        at the first error; CompletedProcess with text output (unaligned,
        tuples only)."""
        argv = ['psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', self.sock,
                '-U', 'postage', '-d', db, '-f', '-']
        r = self._run(argv, input=sql.encode())
        if check and r.returncode != 0:
            raise AssertionError(f'psql failed ({sql[:200]}): ' + r.stderr.decode(errors='replace'))
        return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())

    def stop(self):
        if self.started:
            self._run([os.path.join(BIN, 'pg_ctl'), '-D', self.data, '-m', 'immediate', '-w',
                       'stop'])
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
