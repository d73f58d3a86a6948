#!/usr/bin/python3
"""IMAP and webmail for postage's users, checked in a real browser (issue
22); scripts/webmail installs the packages, builds, and runs this.

Everything runs on free 127.0.0.1 ports, from one folder made for the run:
  postage      SMTP (--mode=mx) and submission (STARTTLS, a certificate
               made here for mx.example.test) under systemd-socket-activate,
               the handlers as the user nobody, who owns the Maildirs and
               the database, as `postage` does in production
  Dovecot      IMAP, from the README's dovecot.conf and
               dovecot-sql.conf.ext blocks (postage's database as passdb)
  PHP-FPM      one pool running Roundcube as www-data, its configuration
               the README's config.inc.php block
  nginx        the README's nginx-site block, with TLS
Each README block is taken as it stands, with the run's paths, ports and
user put in for the production ones; a replacement that no longer
matches the README fails the run, so the README and this cannot drift
apart. A headless Chromium (Selenium and chromedriver) then logs in as
alice, reads a message postage delivered, sends one to bob through
postage's submission port, and sends one with a forged identity, which
postage refuses (553 5.7.1) and Roundcube shows. Screenshots of the
inbox and of the refusal are left in the run's folder.

Every wait has a timeout; whatever happens, every process started here
is stopped at the end. The last line is "webmail: N checks, M failed".
"""
import argparse
import email
import email.policy
import glob
import imaplib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import traceback

NOBODY = 'nobody'
WEB_USER = 'www-data'
HOSTNAME = 'mx.example.test'
DOMAIN = 'example.test'
PASSWORDS = {'alice': 'Alice-webmail-pw-1', 'bob': 'Bob-webmail-pw-2',
             'carol': 'Carol-webmail-pw-3', 'dave': 'Dave-webmail-pw-4'}
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync',
                  '--window-size=1280,860', '--lang=en-US']
# The whole run, servers and browser, gets this long; then it is stopped
# (and cleaned up) as a failure.
RUN_TIMEOUT_SECONDS = 600


class Failure(Exception):
    """A step that the rest cannot go on without failed."""


class Checks:
    def __init__(self):
        self.n = 0
        self.failed = []

    def check(self, name, ok, detail=''):
        self.n += 1
        if ok:
            print(f'webmail: ok: {name}', flush=True)
        else:
            self.failed.append(name)
            print(f'webmail: FAILED: {name}' + (f': {detail}' if detail else ''), flush=True)
        return ok


def say(*args):
    print('webmail:', *args, flush=True)


def wait_for(what, pred, timeout, interval=0.1):
    """pred() until it is true (its value is returned) or timeout seconds
    have passed (Failure naming what)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failure(f'{what}: not within {timeout} s')
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def readme_blocks(readme):
    """{name: text} of the README blocks marked <!-- webmail: name -->."""
    out = {}
    lines = open(readme, encoding='utf-8').read().split('\n')
    i = 0
    while i < len(lines):
        m = re.fullmatch(r'<!-- webmail: (\S+) -->', lines[i])
        if not m:
            i += 1
            continue
        if i + 1 >= len(lines) or not lines[i + 1].startswith('```'):
            raise Failure(f'README.md:{i + 1}: a webmail marker must stand right before its block')
        j = i + 2
        while j < len(lines) and not lines[j].startswith('```'):
            j += 1
        out[m.group(1)] = '\n'.join(lines[i + 2:j]) + '\n'
        i = j + 1
    return out


def replace(name, text, pairs):
    """text with each (old, new) replaced; an old that is not there (the
    README changed) is a failure, not a silent miss."""
    for old, new in pairs:
        if old not in text:
            raise Failure(f'the README block {name} no longer holds {old!r}: '
                          'update tests/webmail/webmail.py with it')
        text = text.replace(old, new)
    return text


class Processes:
    """Daemons started for the run, each in a process group of its own,
    stopped in reverse order at the end."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, log, **kw):
        f = open(log, 'ab')
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True, **kw)
        f.close()
        self.procs.append((name, p))
        return p

    def stop_all(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    say(f'{name} did not stop within 10 s: killed')
            # whatever it left in its group (workers, handlers) goes too
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if p.poll() is None:
                p.wait(timeout=10)
        self.procs = []


def listening(port):
    """True when something listens on 127.0.0.1:port (from /proc: no
    connection is made, so no handler is started)."""
    want = ':%04X' % port
    for name in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[1].endswith(want) and fields[3] == '0A':
                        return True
        except FileNotFoundError:
            pass
    return False


def tail(path, n=3000):
    try:
        with open(path, errors='replace') as f:
            return f.read()[-n:]
    except OSError as e:
        return f'({path}: {e})'


class Webmail:
    def __init__(self, args):
        self.args = args
        self.source = os.path.abspath(args.source)
        self.build = os.path.abspath(args.build)
        self.checks = Checks()
        self.procs = Processes()
        self.dir = None
        self.driver = None
        self.shots = []

    # -- set-up -------------------------------------------------------------

    def make_dirs(self):
        self.dir = os.path.join('/tmp', 'postage-webmail-' + secrets.token_hex(4))
        os.mkdir(self.dir, 0o755)
        os.chmod(self.dir, 0o755)
        self.nobody = pwd.getpwnam(NOBODY)
        self.web = pwd.getpwnam(WEB_USER)
        for d in ('postage', 'postage/mail', 'postage/spool', 'tls', 'dovecot', 'php',
                  'roundcube', 'roundcube/config', 'roundcube/temp', 'roundcube/logs',
                  'nginx', 'chromium', 'shots'):
            os.mkdir(os.path.join(self.dir, d), 0o755)
        self.db = os.path.join(self.dir, 'postage', 'postage.db')
        self.mail_root = os.path.join(self.dir, 'postage', 'mail')
        self.log = os.path.join(self.dir, 'postage', 'postage.log')
        self.ports = {}
        for name in ('smtp', 'submission', 'imap', 'https'):
            port = free_port()
            while port in self.ports.values():
                port = free_port()
            self.ports[name] = port

    def make_certificate(self):
        """A self-signed certificate for mx.example.test (and 127.0.0.1),
        the key and the chain in one file, as the README's deploy hook
        makes it; the certificate alone for PHP to trust."""
        tls = os.path.join(self.dir, 'tls')
        key, cert = os.path.join(tls, 'key.pem'), os.path.join(tls, 'cert.pem')
        r = subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
                            'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
                            '-subj', f'/CN={HOSTNAME}', '-addext',
                            f'subjectAltName=DNS:{HOSTNAME},IP:127.0.0.1',
                            '-keyout', key, '-out', cert], capture_output=True, timeout=60)
        if r.returncode != 0:
            raise Failure('openssl could not make a certificate: ' + r.stderr.decode()[-500:])
        self.cert = cert
        self.pem = os.path.join(tls, 'postage.pem')
        with open(self.pem, 'w') as out:
            out.write(open(key).read() + open(cert).read())
        os.chmod(self.pem, 0o600)
        os.chown(self.pem, self.nobody.pw_uid, self.nobody.pw_gid)
        os.unlink(key)
        os.chmod(cert, 0o644)

    def make_postage(self):
        sys.path.insert(0, os.path.join(self.source, 'tests', 'protocol'))
        import harness
        con = sqlite3.connect(self.db, isolation_level=None)
        try:
            con.executescript(open(os.path.join(self.source, 'schema', 'schema.sql')).read())
            settings = {'hostname': HOSTNAME, 'mail_root': self.mail_root,
                        'spool_dir': os.path.join(self.dir, 'postage', 'spool'),
                        'tls_cert': self.pem, 'tls_key': self.pem,
                        'received_show_login': '1', 'auth_failure_delay_ms': '0'}
            for k, v in settings.items():
                con.execute('INSERT OR REPLACE INTO settings VALUES (?, ?)', (k, v))
            con.execute('PRAGMA foreign_keys = ON')
            for d in (DOMAIN, 'third.test'):
                con.execute('INSERT INTO domains VALUES (?)', (d,))
            schemes = {'alice': 'yescrypt', 'bob': 'sha512crypt', 'carol': 'bcrypt',
                       'dave': 'sha512crypt'}
            for login, pw in PASSWORDS.items():
                con.execute('INSERT INTO mailboxes (login, password, enabled) VALUES (?, ?, ?)',
                            (login, harness.crypt_password(pw, schemes[login]),
                             0 if login == 'dave' else 1))
            for addr, login in (('alice@example.test', 'alice'), ('bob@example.test', 'bob'),
                                ('ceo@third.test', 'carol'), ('dave@example.test', 'dave')):
                con.execute('INSERT INTO addresses VALUES (?, ?)', (addr, login))
        finally:
            con.close()
        for root, dirs, files in os.walk(os.path.join(self.dir, 'postage')):
            for n in dirs + files + ['.']:
                os.lchown(os.path.join(root, n), self.nobody.pw_uid, self.nobody.pw_gid)
        os.chmod(os.path.join(self.dir, 'postage'), 0o700)

        activate = shutil.which('systemd-socket-activate') or '/lib/systemd/systemd-socket-activate'
        smtp = os.path.join(self.build, 'smtp-handler', 'smtp-handler')
        for name, mode in (('smtp', 'mx'), ('submission', 'submission')):
            port = self.ports[name]
            self.procs.start(
                f'postage {name}',
                [activate, '--inetd', '--accept', f'--listen=127.0.0.1:{port}',
                 '-E', f'POSTAGE_LOG_FILE={self.log}',
                 'setpriv', f'--reuid={self.nobody.pw_uid}', f'--regid={self.nobody.pw_gid}',
                 '--clear-groups', '--', smtp, f'--mode={mode}', '--db', self.db],
                os.path.join(self.dir, 'supervisor.log'))
        for name in ('smtp', 'submission'):
            wait_for(f'postage {name} listening on 127.0.0.1:{self.ports[name]}',
                     lambda n=name: listening(self.ports[n]), 15)

    def make_dovecot(self, blocks):
        d = os.path.join(self.dir, 'dovecot')
        sql = os.path.join(d, 'dovecot-sql.conf.ext')
        with open(sql, 'w') as f:
            f.write(replace('dovecot-sql.conf.ext', blocks['dovecot-sql.conf.ext'], [
                ('/var/lib/postage/postage.db', self.db)]))
        os.chmod(sql, 0o640)
        conf = replace('dovecot.conf', blocks['dovecot.conf'], [
            ('listen = *, ::', 'listen = 127.0.0.1'),
            ('</etc/postage/tls/postage.pem', '<' + self.pem),
            ('/etc/dovecot/dovecot-sql.conf.ext', sql),
            ('uid=postage gid=postage', f'uid={NOBODY} gid={self.nobody.pw_gid}'),
            ('user = postage', f'user = {NOBODY}'),
            ('/var/mail/postage', self.mail_root),
            ('port = 143', f'port = {self.ports["imap"]}'),
            ('port = 993', 'port = 0'),
        ])
        self.dovecot_conf = os.path.join(d, 'dovecot.conf')
        with open(self.dovecot_conf, 'w') as f:
            f.write(f'# made by tests/webmail/webmail.py from README.md\n'
                    f'base_dir = {d}/run\nstate_dir = {d}/state\n'
                    f'log_path = {d}/dovecot.log\n' + conf)
        self.start_listener('Dovecot', ['dovecot', '-F', '-c', self.dovecot_conf], 'imap',
                            os.path.join(d, 'dovecot.log'), os.path.join(d, 'dovecot.out'))

    def make_roundcube(self, blocks):
        rc = os.path.join(self.dir, 'roundcube')
        conf_dir = os.path.join(rc, 'config')
        for f in ('defaults.inc.php', 'mimetypes.php'):
            if os.path.exists('/etc/roundcube/' + f):
                os.symlink('/etc/roundcube/' + f, os.path.join(conf_dir, f))
        block = replace('config.inc.php', blocks['config.inc.php'], [
            ("'localhost:143'", f"'127.0.0.1:{self.ports['imap']}'"),
            ("'tls://mx.example.org:587'", f"'tls://127.0.0.1:{self.ports['submission']}'"),
            ("'example.org'", f"'{DOMAIN}'"),
        ])
        des_key = secrets.token_urlsafe(18)[:24]
        with open(os.path.join(conf_dir, 'config.inc.php'), 'w') as f:
            f.write(f"""<?php
// made by tests/webmail/webmail.py: the run's own database, folders and
// key, then the README's block
$config = [];
$config['db_dsnw'] = 'sqlite:///{rc}/roundcube.db?mode=0640';
$config['des_key'] = '{des_key}';
$config['temp_dir'] = '{rc}/temp/';
$config['log_dir'] = '{rc}/logs/';
$config['log_driver'] = 'file';
$config['skin'] = 'elastic';
$config['plugins'] = [];
$config['enable_spellcheck'] = false;
$config['imap_timeout'] = 15;
$config['smtp_timeout'] = 15;
{block}
// The run's certificate is its own, for mx.example.test, and postage is
// reached at 127.0.0.1: PHP checks it against that name and that file.
$config['smtp_conn_options'] = ['ssl' => [
    'verify_peer' => true, 'verify_peer_name' => true,
    'peer_name' => '{HOSTNAME}', 'cafile' => '{self.cert}']];
""")
        for sub in ('', 'temp', 'logs'):
            os.chown(os.path.join(rc, sub), self.web.pw_uid, self.web.pw_gid)

        php = os.path.join(self.dir, 'php')
        self.php_sock = os.path.join(php, 'php-fpm.sock')
        ini = []
        for line in blocks['php.ini'].splitlines():
            m = re.fullmatch(r'\s*([a-z_.]+)\s*=\s*(\S+)\s*', line)
            if m:
                ini.append(f'php_admin_value[{m.group(1)}] = {m.group(2)}')
        fpm_conf = os.path.join(php, 'php-fpm.conf')
        with open(fpm_conf, 'w') as f:
            f.write(f"""; made by tests/webmail/webmail.py
[global]
pid = {php}/php-fpm.pid
error_log = {php}/php-fpm.log
daemonize = no

[roundcube]
user = {WEB_USER}
group = {WEB_USER}
listen = {self.php_sock}
listen.owner = {WEB_USER}
listen.group = {WEB_USER}
listen.mode = 0660
pm = static
pm.max_children = 2
catch_workers_output = yes
clear_env = yes
env[ROUNDCUBE_CONFIG_DIR] = {conf_dir}
php_admin_value[error_log] = {rc}/logs/php-errors.log
php_admin_flag[log_errors] = on
""" + '\n'.join(ini) + '\n')
        fpm = shutil.which('php-fpm8.2') or '/usr/sbin/php-fpm8.2'
        self.procs.start('php-fpm', [fpm, '--nodaemonize', '--fpm-config', fpm_conf],
                         os.path.join(php, 'php-fpm.out'))
        try:
            wait_for('PHP-FPM socket', lambda: os.path.exists(self.php_sock), 20)
        except Failure:
            raise Failure('PHP-FPM did not start: ' + tail(os.path.join(php, 'php-fpm.log'))
                          + tail(os.path.join(php, 'php-fpm.out')))

    def make_nginx(self, blocks):
        d = os.path.join(self.dir, 'nginx')
        # The site's relative includes (snippets/, fastcgi.conf) are found
        # next to the main file, as in /etc/nginx.
        for f in ('snippets', 'fastcgi.conf', 'mime.types'):
            os.symlink('/etc/nginx/' + f, os.path.join(d, f))
        site = replace('nginx-site', blocks['nginx-site'], [
            ('listen 443 ssl;', f'listen 127.0.0.1:{self.ports["https"]} ssl;'),
            ('listen [::]:443 ssl;', ''),
            ('/etc/letsencrypt/live/webmail.example.org/fullchain.pem', self.pem),
            ('/etc/letsencrypt/live/webmail.example.org/privkey.pem', self.pem),
            ('unix:/run/php/php8.2-fpm.sock', 'unix:' + self.php_sock),
        ])
        conf = os.path.join(d, 'nginx.conf')
        temps = '\n'.join(f'    {t}_temp_path {d}/{t};'
                          for t in ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'))
        with open(conf, 'w') as f:
            f.write(f"""# made by tests/webmail/webmail.py; the server block is the README's
user {WEB_USER};
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{
    worker_connections 64;
}}
http {{
    include mime.types;
    default_type application/octet-stream;
    access_log {d}/access.log;
{temps}
{site}
}}
""")
        self.start_listener('nginx', ['nginx', '-c', conf, '-p', d + '/', '-e', d + '/error.log'],
                            'https', os.path.join(d, 'error.log'), os.path.join(d, 'nginx.out'))

    # -- helpers -------------------------------------------------------------

    def start_listener(self, name, argv, port, log, out):
        """Starts the server argv (its output to the file out) and waits
        up to 20 s for it to listen on self.ports[port]; when it does not,
        the Failure quotes the ends of its log and of out."""
        self.procs.start(name.lower(), argv, out)
        try:
            wait_for(f'{name} listening', lambda: listening(self.ports[port]), 20)
        except Failure:
            raise Failure(f'{name} did not start: ' + tail(log) + tail(out))

    def smtp_deliver(self, sender, rcpt, subject, body):
        import smtplib
        msg = (f'From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n'
               f'Message-ID: <{secrets.token_hex(8)}@elsewhere.test>\r\n\r\n{body}\r\n')
        with smtplib.SMTP('127.0.0.1', self.ports['smtp'], timeout=30) as s:
            s.sendmail(sender, [rcpt], msg)

    def maildir_messages(self, login, folder=''):
        """[(path, parsed message)] in login's Maildir (or its folder)."""
        base = os.path.join(self.mail_root, login, folder)
        out = []
        for sub in ('new', 'cur'):
            for path in sorted(glob.glob(os.path.join(base, sub, '*'))):
                try:
                    with open(path, 'rb') as f:
                        out.append((path, email.message_from_binary_file(
                            f, policy=email.policy.default)))
                except OSError:
                    pass
        return out

    def find_subject(self, login, subject, folder=''):
        for path, m in self.maildir_messages(login, folder):
            if str(m.get('Subject', '')) == subject:
                return m
        return None

    def imap_login(self, login, password):
        try:
            with imaplib.IMAP4('127.0.0.1', self.ports['imap'], timeout=30) as m:
                m.login(login, password)
                typ, data = m.select('INBOX', readonly=True)
                m.logout()
                return typ == 'OK'
        except imaplib.IMAP4.error:
            return False

    def shot(self, name):
        path = os.path.join(self.dir, 'shots', name)
        try:
            self.driver.save_screenshot(path)
            self.shots.append(path)
        except Exception as e:  # a screenshot must not hide the failure it shows
            say(f'no screenshot {name}: {e}')
        return path

    # -- the checks ------------------------------------------------------------

    def check_dovecot(self):
        c = self.checks
        c.check('IMAP: alice logs in with her postage password (yescrypt)',
                self.imap_login('alice', PASSWORDS['alice']))
        c.check('IMAP: carol logs in (bcrypt)', self.imap_login('carol', PASSWORDS['carol']))
        c.check('IMAP: a wrong password is refused', not self.imap_login('alice', 'wrong'))
        c.check('IMAP: a disabled mailbox (enabled = 0) is refused',
                not self.imap_login('dave', PASSWORDS['dave']))
        r = subprocess.run(['doveadm', '-c', self.dovecot_conf, 'auth', 'test', 'bob',
                            PASSWORDS['bob']], capture_output=True, timeout=60)
        out = (r.stdout + r.stderr).decode(errors='replace')
        c.check("README's `doveadm auth test` says auth succeeded",
                r.returncode == 0 and 'auth succeeded' in out, out.strip())

    def start_browser(self):
        """Chromium under a chromedriver of our own on 127.0.0.1: nothing
        may need the name "localhost", which a minimal system without
        /etc/hosts cannot resolve (Selenium's own Service reaches
        chromedriver by that name)."""
        from selenium import webdriver
        home = os.path.join(self.dir, 'chromium')
        opts = webdriver.ChromeOptions()
        opts.binary_location = '/usr/bin/chromium'
        # chromedriver talks to Chromium over a pipe, not over a port on
        # "localhost"
        for a in CHROMIUM_FLAGS + [f'--user-data-dir={home}/profile', '--remote-debugging-pipe']:
            opts.add_argument(a)
        # the run's certificate is self-signed
        opts.set_capability('acceptInsecureCerts', True)
        env = {'HOME': home, 'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LANG': 'C.UTF-8'}
        port = free_port()
        self.procs.start('chromedriver', ['/usr/bin/chromedriver', f'--port={port}',
                                          '--allowed-ips=127.0.0.1',
                                          f'--log-path={home}/chromedriver.log'],
                         os.path.join(home, 'chromedriver.out'), env=env)
        try:
            wait_for('chromedriver listening', lambda: listening(port), 30)
        except Failure:
            raise Failure('chromedriver did not start: '
                          + tail(os.path.join(home, 'chromedriver.out')))
        self.driver = webdriver.Remote(command_executor=f'http://127.0.0.1:{port}',
                                       options=opts)
        self.driver.set_page_load_timeout(60)
        self.driver.set_script_timeout(30)
        self.url = f'https://127.0.0.1:{self.ports["https"]}/'

    def wait(self, what, cond, timeout=30):
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(cond)
        except TimeoutException:
            raise Failure(f'browser: {what}: not within {timeout} s (at {self.driver.current_url})')

    def browser_login(self):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        d = self.driver
        d.get(self.url)
        user = self.wait('the login form', EC.visibility_of_element_located((By.ID, 'rcmloginuser')))
        user.send_keys('alice')
        d.find_element(By.ID, 'rcmloginpwd').send_keys(PASSWORDS['alice'])
        d.find_element(By.ID, 'rcmloginsubmit').click()
        self.wait('the message list after login',
                  EC.presence_of_element_located((By.CSS_SELECTOR, '#messagelist tbody')))

    def check_read(self, subject, marker):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        c = self.checks
        d = self.driver
        row = self.wait(f'"{subject}" in the inbox', EC.visibility_of_element_located(
            (By.XPATH, f'//table[@id="messagelist"]//tr[contains(., "{subject}")]')))
        c.check('browser: the message postage delivered is in the inbox', row is not None)
        row.click()
        frame = self.wait('the preview', EC.presence_of_element_located(
            (By.ID, 'messagecontframe')))
        d.switch_to.frame(frame)
        try:
            body = self.wait('the message body in the preview', EC.presence_of_element_located(
                (By.XPATH, f'//*[contains(text(), "{marker}")]')))
            c.check('browser: its body reads as sent', marker in body.text, body.text)
        finally:
            d.switch_to.default_content()
        self.shot('inbox.png')

    def compose(self, to, subject, body, identity=None):
        """Writes a message in Roundcube's compose screen and sends it;
        returns the subject field (stale once Roundcube has moved on)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import Select
        d = self.driver
        d.get(self.url + '?_task=mail&_action=compose')
        subj = self.wait('the compose form', EC.visibility_of_element_located(
            (By.ID, 'compose-subject')))
        if identity:
            self.wait(f'the identity {identity} to choose', EC.presence_of_element_located(
                (By.XPATH, f'//select[@id="_from"]/option[.="{identity}"]')))
            Select(d.find_element(By.ID, '_from')).select_by_visible_text(identity)
        to_input = self.wait('the To field', EC.element_to_be_clickable(
            (By.CSS_SELECTOR, '#compose_to .recipient-input input')))
        to_input.send_keys(to + ', ')
        subj.send_keys(subject)
        text = d.find_element(By.ID, 'composebody')
        text.clear()
        text.send_keys(body)
        d.find_element(By.CSS_SELECTOR, 'button.btn.send, a.send, button.send').click()
        return subj

    def check_send(self):
        from selenium.webdriver.support import expected_conditions as EC
        c = self.checks
        subject = 'From webmail ' + secrets.token_hex(4)
        form = self.compose('bob@example.test', subject, 'Sent from Roundcube through postage.')
        m = wait_for(f'bob receives "{subject}"', lambda: self.find_subject('bob', subject), 60)
        # Sent, Roundcube leaves the compose screen (its "sent
        # successfully" lasts a moment only: the mailbox is what stays)
        self.wait('Roundcube back from the compose screen', EC.staleness_of(form), 60)
        c.check('postage delivered the webmail message to bob', m is not None)
        received = ' '.join(str(m.get_all('Received')[0]).split()) if m.get_all('Received') else ''
        c.check("bob's copy: Received: says with ESMTPSA (TLS, AUTH)", 'with ESMTPSA' in received,
                received)
        c.check("bob's copy: Received: names the login (received_show_login)",
                '(authenticated as alice)' in received, received)
        c.check("bob's copy: From: alice@example.test (Roundcube's mail_domain)",
                'alice@example.test' in str(m.get('From', '')), str(m.get('From', '')))
        sent = wait_for('a copy in .Sent/',
                        lambda: self.find_subject('alice', subject, '.Sent'), 30)
        c.check("Roundcube saved a copy in alice's .Sent/ (a Maildir++ folder)", sent is not None)

    def check_forged(self):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        c = self.checks
        d = self.driver
        # An identity with another customer's address (carol's ceo@third.test)
        d.get(self.url + '?_task=settings&_action=add-identity')
        name = self.wait('the identity form', EC.visibility_of_element_located(
            (By.ID, 'rcmfd_name')))
        name.send_keys('Not the CEO')
        d.find_element(By.ID, 'rcmfd_email').send_keys('ceo@third.test')
        d.find_element(By.CSS_SELECTOR, '.formbuttons .submit').click()
        # saved, the form comes back (the new identity shows in compose)
        self.wait('the identity saved', EC.staleness_of(name), 30)
        subject = 'Forged ' + secrets.token_hex(4)
        self.compose('bob@example.test', subject, 'This should never arrive.',
                     identity='Not the CEO <ceo@third.test>')
        err = self.wait("postage's refusal shown", EC.visibility_of_element_located(
            (By.XPATH, '//*[@id="messagestack"]//*[contains(., "553")]')), 60)
        text = err.text
        self.shot('refused.png')
        say(f'Roundcube showed: {text}')
        c.check("browser: postage's 553 5.7.1 is shown to the user",
                '553' in text and '5.7.1' in text and 'not one of your addresses' in text, text)
        time.sleep(1)
        c.check('the forged message reached nobody',
                self.find_subject('bob', subject) is None
                and self.find_subject('carol', subject) is None)
        refused = [ln for ln in open(self.log, errors='replace')
                   if 'event=mail result=sender_not_owned login=alice sender="ceo@third.test"'
                   in ln]
        c.check("postage's log has the refusal, with the login", bool(refused),
                tail(self.log, 1500))

    def check_quota(self):
        """alice's quota set between her inbox alone and her inbox with
        the Sent folder Roundcube filled: postage refuses her mail."""
        import smtplib
        c = self.checks
        inbox = sum(os.path.getsize(p) for p, _ in self.maildir_messages('alice'))
        sent = sum(os.path.getsize(p) for p, _ in self.maildir_messages('alice', '.Sent'))
        con = sqlite3.connect(self.db, timeout=10, isolation_level=None)
        try:
            con.execute("UPDATE mailboxes SET quota_bytes = ? WHERE login = 'alice'",
                        (inbox + sent // 2,))
        finally:
            con.close()
        with smtplib.SMTP('127.0.0.1', self.ports['smtp'], timeout=30) as s:
            s.ehlo('elsewhere.test')
            s.mail('carol@elsewhere.test', ['SIZE=10'])
            code, text = s.rcpt('alice@example.test')
        text = text.decode(errors='replace')
        c.check('over quota only by her Sent folder: alice gets 452 4.2.2',
                code == 452 and text.startswith('4.2.2'), f'{code} {text}')
    # -- the run ------------------------------------------------------------------

    def run(self):
        t0 = time.monotonic()
        blocks = readme_blocks(os.path.join(self.source, 'README.md'))
        for name in ('dovecot.conf', 'dovecot-sql.conf.ext', 'config.inc.php', 'nginx-site',
                     'php.ini'):
            if name not in blocks:
                raise Failure(f'README.md has no block marked <!-- webmail: {name} -->')
        self.make_dirs()
        say(f'folder {self.dir}; ports {self.ports}')
        self.make_certificate()
        self.make_postage()
        self.make_dovecot(blocks)
        self.make_roundcube(blocks)
        self.make_nginx(blocks)
        say(f'servers up after {time.monotonic() - t0:.1f} s')

        marker = 'webmail-marker-' + secrets.token_hex(4)
        subject = 'Hello from elsewhere ' + secrets.token_hex(3)
        self.smtp_deliver('carol@elsewhere.test', 'alice@example.test', subject,
                          f'Hi Alice, {marker}.')
        self.checks.check('postage delivered a message to alice',
                          self.find_subject('alice', subject) is not None)
        self.check_dovecot()

        self.start_browser()
        self.browser_login()
        self.check_read(subject, marker)
        self.check_send()
        self.check_forged()
        self.check_quota()
        say(f'all done after {time.monotonic() - t0:.1f} s')

    def stop(self):
        if self.driver is not None:
            try:
                self.driver.quit()
            except Exception as e:
                say(f'chromium did not quit cleanly: {e}')
            self.driver = None
        self.procs.stop_all()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--build', required=True)
    ap.add_argument('--source', required=True)
    ap.add_argument('--keep', action='store_true')
    args = ap.parse_args()

    w = Webmail(args)

    def on_signal(signum, frame):
        if signum == signal.SIGALRM:
            raise KeyboardInterrupt(f'the run took over {RUN_TIMEOUT_SECONDS} s')
        raise KeyboardInterrupt(f'signal {signum}')
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(RUN_TIMEOUT_SECONDS)
    failure = None
    try:
        w.run()
    except Failure as e:
        failure = str(e)
    except KeyboardInterrupt as e:
        failure = f'interrupted ({e})'
    except Exception:
        failure = 'unexpected error:\n' + traceback.format_exc()
    finally:
        signal.alarm(0)
        if failure and w.driver is not None:
            w.shot('failure.png')
            try:
                with open(os.path.join(w.dir, 'shots', 'failure.html'), 'w') as f:
                    f.write(w.driver.page_source)
            except Exception:
                pass
        w.stop()
    if failure:
        w.checks.check('the run went to its end', False, failure)
        if w.dir:
            for name in ('postage/postage.log', 'dovecot/dovecot.log', 'php/php-fpm.log',
                         'roundcube/logs/errors.log', 'roundcube/logs/php-errors.log',
                         'nginx/error.log'):
                path = os.path.join(w.dir, name)
                if os.path.exists(path) and os.path.getsize(path):
                    print(f'--- {path} (end)\n{tail(path, 1500)}')
    keep = args.keep or failure
    if w.dir:
        if keep:
            say(f'the run\'s folder is kept: {w.dir}')
        if not keep:
            # all but the screenshots, which stay for a look
            for name in os.listdir(w.dir):
                if name != 'shots':
                    path = os.path.join(w.dir, name)
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.unlink(path)
        for p in w.shots:
            if os.path.exists(p):
                say(f'screenshot: {p}')
    n, failed = w.checks.n, len(w.checks.failed)
    if failed:
        say('failed: ' + '; '.join(w.checks.failed))
    print(f'webmail: {n} checks, {failed} failed', flush=True)
    sys.exit(1 if failed or n == 0 else 0)


if __name__ == '__main__':
    main()
