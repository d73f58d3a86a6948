"""A private rspamd for tests and bench/run.

    from rspamd_server import Rspamd, unavailable
    why = unavailable()            # None, or why rspamd cannot run here
    r = Rspamd(dir, normal='127.0.0.1:11333').start()
    ... the setting rspamd = r.normal ...
    r.stop()

Debian's rspamd package, run as its own `_rspamd` user (or root with -i)
from /etc/rspamd's stock configuration, with every local file in a
private directory: LOCAL_CONFDIR (local.d/, rspamd.local.lua), DBDIR,
RUNDIR and LOGDIR. The local configuration keeps rspamd on this machine:

- no Redis (so no Bayes, greylisting store, ratelimit, reputation,
  neural), and the modules that ask servers on the internet (fuzzy
  storage, DNS block lists, rspamd.com's map updates, ASN lookups, and
  those whose maps come from maps.rspamd.com: multimap, whitelist,
  mime_types, mid) off;
- DNS goes to 127.0.0.1:53 only (a test's or bench/run's dnsmasq);
- GTUBE's test patterns on (options.enable_test_patterns): XJS... is
  reject, YJS... add header, ZJS... rewrite subject, AJS... no action;
- rspamd.local.lua adds rules keyed on a word in the Subject, for the
  actions no GTUBE pattern gives: postage-test-soft-reject (soft reject),
  postage-test-greylist (greylist), postage-test-envelope (reject, with
  the envelope rspamd was told in the message: IP, HELO, MAIL FROM,
  RCPT, user, queue id, the client's host name, as rspamd's own task saw them).

Gotchas (shared/BASELINES.md): rspamd's milter_headers would remove
every Authentication-Results field of a message in milter mode; here it
adds X-Spam-Status and touches nothing else.
"""
import os
import pwd
import shutil
import socket
import subprocess
import time

import harness

RSPAMD = '/usr/bin/rspamd'
CONFDIR = '/etc/rspamd'

GTUBE = {
    'reject': 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X',
    'add header': 'YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X',
    'rewrite subject': 'ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X',
    'no action': 'AJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X',
}
SUBJECT_TEMPLATE = '[SPAM] %s'

# Modules that reach servers on the internet, or need Redis.
OFF = ['fuzzy_check', 'rbl', 'surbl', 'rspamd_update', 'asn', 'phishing', 'emails', 'dcc',
       'mx_check', 'url_redirector', 'greylist', 'ratelimit', 'reputation', 'neural',
       'history_redis', 'replies', 'clickhouse', 'elastic', 'metadata_exporter',
       'metric_exporter', 'external_services', 'antivirus', 'p0f', 'bimi', 'spamtrap',
       'dkim_signing', 'arc', 'aws_s3', 'maillist',
       # their maps come from maps.rspamd.com
       'multimap', 'whitelist', 'mime_types', 'mid']

LOCAL_LUA = r'''
-- postage's tests: actions on request, keyed on a word in the Subject.
rspamd_config:register_symbol({
  name = 'POSTAGE_TEST_ACTION',
  type = 'prefilter',
  priority = 10,
  callback = function(task)
    local subj = task:get_subject() or ''
    if subj:find('postage%-test%-soft%-reject') then
      task:set_pre_result('soft reject', 'Deferred by the test rule', 'postage-test')
    elseif subj:find('postage%-test%-greylist') then
      task:set_pre_result('greylist', 'Greylisted by the test rule', 'postage-test')
    elseif subj:find('postage%-test%-envelope') then
      local from = task:get_from('smtp')
      local rcpts = task:get_recipients('smtp') or {}
      local r = {}
      for _, a in ipairs(rcpts) do r[#r + 1] = a.addr end
      local msg = string.format('envelope ip=%s hostname=%s helo=%s from=%s rcpt=%s user=%s qid=%s',
        tostring(task:get_from_ip() or '-'), tostring(task:get_hostname() or '-'),
        tostring(task:get_helo() or '-'),
        (from and from[1] and from[1].addr ~= '' and from[1].addr) or '<>',
        table.concat(r, ','), tostring(task:get_user() or '-'),
        tostring(task:get_queue_id() or '-'))
      task:set_pre_result('reject', msg, 'postage-test')
    end
  end
})
'''


def unavailable():
    """Why no rspamd can run here, or None."""
    if not os.access(RSPAMD, os.X_OK):
        return 'rspamd is not installed (Debian package rspamd)'
    if not os.path.isfile(os.path.join(CONFDIR, 'rspamd.conf')):
        return '%s/rspamd.conf is missing (package rspamd)' % CONFDIR
    return None


def _ucl_list(items):
    return '[' + ', '.join('"%s"' % i for i in items) + ']'


class Rspamd:
    """rspamd's normal worker on `normal` (host:port or a socket path),
    and with proxy='host:port' its proxy worker in milter mode in front
    of it (for Postfix in bench/run)."""

    def __init__(self, d, normal, proxy=None, workers=1, log_level='notice', also=()):
        self.dir = d
        self.normal = normal
        self.also = list(also)  # more sockets of the normal worker
        self.proxy = proxy
        self.workers = workers
        self.log_level = log_level
        self.proc = None
        for sub in ('local.d', 'db', 'run', 'log'):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        self.conf = os.path.join(d, 'rspamd.conf')
        self.logfile = os.path.join(d, 'log', 'rspamd.log')
        self._write_config()

    def _write_config(self):
        d = self.dir
        local = os.path.join(d, 'local.d')
        for m in OFF:
            with open(os.path.join(local, m + '.conf'), 'w') as f:
                f.write('enabled = false;\n')
        with open(os.path.join(local, 'redis.conf'), 'w') as f:
            f.write('# no Redis\n')
        with open(os.path.join(local, 'actions.conf'), 'w') as f:
            f.write('subject = "%s";\n' % SUBJECT_TEMPLATE)
        with open(os.path.join(local, 'milter_headers.conf'), 'w') as f:
            f.write('use = ["x-spam-status"];\nskip_local = false;\nskip_authenticated = false;\n')
        with open(os.path.join(local, 'classifier-bayes.conf'), 'w') as f:
            f.write('enabled = false;\n')
        with open(os.path.join(local, 'options.inc'), 'w') as f:
            f.write('enable_test_patterns = true;\n'
                    'disable_hyperscan = true;\n'
                    'dns { nameserver = ["127.0.0.1:53"]; timeout = 1s; retransmits = 1; }\n'
                    'local_addrs = [];\n'
                    'hs_cache_dir = "%s/db/";\n' % d)
        with open(os.path.join(d, 'rspamd.local.lua'), 'w') as f:
            f.write(LOCAL_LUA)
        proxy = ''
        if self.proxy:
            proxy = f'''
worker "rspamd_proxy" {{
    bind_socket = "{self.proxy}";
    milter = yes;
    timeout = 120s;
    # scans itself rather than handing each message on to the normal
    # worker over HTTP: the quicker of rspamd's two milter set-ups
    upstream "local" {{
        default = yes;
        self_scan = yes;
    }}
    count = {self.workers};
    max_retries = 5;
    discard_on_reject = false;
    quarantine_on_reject = false;
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
}}
'''
        with open(self.conf, 'w') as f:
            f.write(f'''# A private rspamd (tests/protocol/rspamd_server.py).
.include "$CONFDIR/common.conf"

options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}

logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "{self.log_level}";
}}

worker "normal" {{
    bind_socket = [{', '.join('"%s"' % b for b in [self.normal] + self.also)}];
    .include "$CONFDIR/worker-normal.inc"
    count = {self.workers};
}}
{proxy}''')

    def start(self, timeout=60):
        d = self.dir
        args = [RSPAMD, '-f', '-c', self.conf,
                '--var=CONFDIR=' + CONFDIR,
                '--var=LOCAL_CONFDIR=' + d,
                '--var=DBDIR=' + os.path.join(d, 'db'),
                '--var=RUNDIR=' + os.path.join(d, 'run'),
                '--var=LOGDIR=' + os.path.join(d, 'log')]
        try:
            pw = pwd.getpwnam('_rspamd')
            for root, dirs, files in os.walk(d):
                for n in dirs + files:
                    os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            args += ['-u', '_rspamd', '-g', '_rspamd']
        except KeyError:
            args += ['-i']
        out = open(os.path.join(d, 'log', 'stderr.log'), 'ab')
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('rspamd exited (%s): %s' % (self.proc.returncode, self.log()[-3000:]))
            if self.ping():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError('rspamd did not answer on %s within %d s: %s' % (
            self.normal, timeout, self.log()[-3000:]))

    def _connect(self, timeout=2):
        if self.normal.startswith('/'):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.normal)
            return s
        host, port = self.normal.rsplit(':', 1)
        return socket.create_connection((host.strip('[]'), int(port)), timeout=timeout)

    def ping(self):
        try:
            with self._connect() as s:
                s.sendall(b'GET /ping HTTP/1.0\r\n\r\n')
                return b'pong' in harness.recv_until_eof(s, 4096)
        except OSError:
            return False

    def check(self, message, headers=()):
        """rspamd's own /checkv2 verdict on message (bytes), as JSON."""
        import json
        head = 'POST /checkv2 HTTP/1.0\r\nContent-Length: %d\r\n' % len(message)
        head += ''.join('%s: %s\r\n' % kv for kv in headers) + '\r\n'
        with self._connect(timeout=30) as s:
            s.sendall(head.encode() + message)
            data = harness.recv_until_eof(s)
        return json.loads(data.split(b'\r\n\r\n', 1)[1])

    def log(self):
        text = ''
        for name in ('stderr.log', 'rspamd.log'):
            try:
                with open(os.path.join(self.dir, 'log', name), errors='replace') as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def stop(self):
        if self.proc and self.proc.poll() is None:
            harness.kill_group(self.proc, timeout=10)
        self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
