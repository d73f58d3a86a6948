"""Shared parts of postage's fault runs (tests/reliability/faults.py).

A *family* is one kind of fault (smtp-inject, disk-full, ...). Each run of
a family ends in a verdict that a Tally counts: what the client was told
(accepted or not) and what is on disk afterwards (lost, duplicated,
partial). The figures go into one summary line per family.

Everything talks to loopback only. Programs come from $POSTAGE_BUILD (a
meson build dir), the schema and the harness from the source tree.
"""
import glob
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get('POSTAGE_SOURCE') or os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE, 'tests', 'protocol'))

import harness  # noqa: E402  (tests/protocol/harness.py)
from harness import Postage, wait_for  # noqa: E402,F401

BUILD = harness.BUILD
STRACE = shutil.which('strace') or '/usr/bin/strace'

SMTP = 'smtp-handler/smtp-handler'
POP3 = 'pop3-handler/pop3-handler'
QUEUE = 'queue/queue-runner'


def built(program):
    return os.access(os.path.join(BUILD, program), os.X_OK)


def count_accepted(tally, copies, label):
    """Counts an accepted message into tally; copies is {recipient: whole
    copies}: a recipient with none is a 'lost' problem, one with more than
    one a 'duplicated' one. True when each has exactly one."""
    tally.accepted += 1
    if any(v == 0 for v in copies.values()):
        tally.problem('lost', label)
        return False
    if any(v > 1 for v in copies.values()):
        tally.problem('duplicated', label)
        return False
    return True


class Tally:
    """The counts of one family, and the detail of every failed run."""

    def __init__(self, family):
        self.family = family
        self.runs = 0
        self.accepted = 0
        self.delivered = 0
        self.lost = 0
        self.duplicated = 0
        self.partial = 0
        self.problems = []   # (what, detail) of runs that broke an invariant
        self.notes = {}      # name -> count of things worth reporting
        self.skipped = []    # parts that could not run here, and why
        self.examples = {}   # note -> a few runs that made it

    def note(self, name, n=1, example=None):
        self.notes[name] = self.notes.get(name, 0) + n
        if example is not None:
            ex = self.examples.setdefault(name, [])
            if len(ex) < 6:
                ex.append(example)

    def problem(self, kind, detail):
        """kind: 'lost', 'duplicated', 'partial' or 'error' (a crash, a
        hang, a broken check)."""
        if kind in ('lost', 'duplicated', 'partial'):
            setattr(self, kind, getattr(self, kind) + 1)
        else:
            self.note('errors')
        self.problems.append((kind, detail))

    def merge(self, other):
        for k in ('runs', 'accepted', 'delivered', 'lost', 'duplicated', 'partial'):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.problems += other.problems
        for k, v in other.notes.items():
            self.note(k, v)
        for k, v in other.examples.items():
            ex = self.examples.setdefault(k, [])
            ex += v[:max(0, 6 - len(ex))]
        self.skipped += other.skipped

    @property
    def errors(self):
        return self.notes.get('errors', 0)

    def line(self):
        return (f'faults {self.family}: {self.runs} runs, accepted {self.accepted}, '
                f'delivered {self.delivered}, lost {self.lost}, '
                f'duplicated {self.duplicated}, partial {self.partial}')

    def failed(self):
        return bool(self.lost or self.duplicated or self.partial or self.errors)


# -- the message every family sends -----------------------------------------

SENDER = 'sender@remote.example'


def make_body(tag, long_line=True):
    """A message (CRLF form, no terminating dot) with a tag that makes each
    run's copy recognisable. One line is longer than the handler's read
    chunk, so the staging write is split."""
    lines = [f'Subject: fault run {tag}', f'Message-ID: <{tag}@client.example>',
             'From: <sender@remote.example>', '']
    lines += [f'line {i} of the body of run {tag}' for i in range(1, 8)]
    if long_line:
        lines.append('x' * 5000)
    lines.append('-- the end')
    return ('\r\n'.join(lines) + '\r\n').encode()


def lf_form(body):
    return body.replace(b'\r\n', b'\n')


def smtp_dialog(recipients, body, helo='client.example', quit=True):
    out = [f'EHLO {helo}', f'MAIL FROM:<{SENDER}>']
    out += [f'RCPT TO:<{r}>' for r in recipients]
    out.append('DATA')
    data = '\r\n'.join(out).encode() + b'\r\n' + body + b'.\r\n'
    if quit:
        data += b'QUIT\r\n'
    return data


def smtp_envelope(recipients, helo='client.example'):
    out = [f'EHLO {helo}', f'MAIL FROM:<{SENDER}>']
    out += [f'RCPT TO:<{r}>' for r in recipients]
    out.append('DATA')
    return ('\r\n'.join(out) + '\r\n').encode()


def converse(argv, env, recipients, body, timeout=60):
    """One SMTP session on pipes, as a PIPELINING client does it (RFC 2920
    3.1): the envelope and DATA in one go, then the body only after a 354
    (else QUIT). Returns (returncode or None when killed for the timeout,
    stdout bytes, stderr bytes)."""
    import select
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + timeout
    out = b''
    want = 4 + len(recipients)   # greeting, EHLO, MAIL, RCPTs, DATA

    def send(data):
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    send(smtp_envelope(recipients))
    fd = proc.stdout.fileno()
    while len(parse_smtp_replies(out.decode('utf-8', 'replace'))) < want:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    replies = parse_smtp_replies(out.decode('utf-8', 'replace'))
    if len(replies) >= want and replies[want - 1].startswith('354'):
        send(body + b'.\r\nQUIT\r\n')
    else:
        send(b'QUIT\r\n')
    try:
        proc.stdin.close()
    except OSError:
        pass
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            proc.kill()
            proc.wait()
            err = proc.stderr.read()
            proc.stdout.close()
            proc.stderr.close()
            return None, out, err
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    return proc.wait(), out, err


def parse_smtp_replies(text):
    """Final reply lines (no continuation lines) in order."""
    return [ln for ln in text.splitlines() if len(ln) >= 4 and ln[:3].isdigit() and ln[3] == ' ']


def data_verdict(stdout):
    """What the client was told at the end of DATA: 'accepted' (250),
    'refused' (4xx/5xx, or no 354 at all: DATA itself was refused or the
    session died before), or 'unanswered' (354, then nothing)."""
    replies = parse_smtp_replies(stdout.decode('utf-8', 'replace'))
    for i, r in enumerate(replies):
        if r.startswith('354'):
            if i + 1 >= len(replies) or replies[i + 1].startswith('221'):
                return 'unanswered', None
            final = replies[i + 1]
            return ('accepted' if final.startswith('250') else 'refused'), final
    errors = [r for r in replies if r[0] in '45']
    return 'refused', errors[0] if errors else (replies[-1] if replies else None)


# -- what is on disk ---------------------------------------------------------

def maildir_files(maildir):
    """{'new': [...], 'cur': [...], 'tmp': [...]} file paths."""
    out = {}
    for sub in ('new', 'cur', 'tmp'):
        d = os.path.join(maildir, sub)
        try:
            out[sub] = sorted(os.path.join(d, n) for n in os.listdir(d) if not n.startswith('.'))
        except FileNotFoundError:
            out[sub] = []
    return out


def read(path):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        return None


def size_from_name(name):
    """(S, W) from a Maildir name, None when absent."""
    s = w = None
    base = name.split(':', 1)[0]
    for part in base.split(',')[1:]:
        if part.startswith('S=') and part[2:].isdigit():
            s = int(part[2:])
        elif part.startswith('W=') and part[2:].isdigit():
            w = int(part[2:])
    return s, w


def delivered_copy_ok(path, body_lf, rcpt):
    """True when a Maildir file is one whole copy of the message: our
    prefix, one Received header, the body to its last byte, and the sizes
    in the name right."""
    data = read(path)
    if data is None:
        return False
    prefix = f'Return-Path: <{SENDER}>\nDelivered-To: {rcpt}\nReceived: '.encode()
    if not data.startswith(prefix) or not data.endswith(body_lf):
        return False
    middle = data[len(prefix) - len(b'Received: '):len(data) - len(body_lf)]
    # The Received header: a first line and tab-indented continuations.
    for i, ln in enumerate(middle.split(b'\n')[:-1]):
        if i > 0 and not ln.startswith(b'\t'):
            return False
    s, w = size_from_name(os.path.basename(path))
    if s is not None and s != len(data):
        return False
    if w is not None and w != len(data) + data.count(b'\n'):
        return False
    return True


def copies_of(maildir, tag):
    """Files in new/ and cur/ that are (or claim to be) copies of the run
    with this tag, by their Message-ID."""
    needle = f'<{tag}@client.example>'.encode()
    out = []
    files = maildir_files(maildir)
    for p in files['new'] + files['cur']:
        data = read(p) or b''
        if needle in data or not data:
            out.append(p)
    return out


def queue_state(db, spool_dir):
    """Rows and files of the outbound queue:
    {'rows': [(id, rcpt, state)], 'files': {id: path}, 'staging': [...]}"""
    con = sqlite3.connect(f'file:{db}?mode=ro', uri=True, timeout=30)
    try:
        rows = con.execute('SELECT message_id, recipient, state FROM queue_recipients '
                           'ORDER BY message_id, recipient').fetchall()
        msgs = [r[0] for r in con.execute('SELECT id FROM queue_messages')]
    finally:
        con.close()
    files = {}
    for p in glob.glob(os.path.join(spool_dir, 'queue', '*')):
        files[os.path.basename(p)] = p
    staging = sorted(glob.glob(os.path.join(spool_dir, 'tmp', '*')))
    return {'rows': rows, 'messages': msgs, 'files': files, 'staging': staging}


def queue_copy_ok(path, body_lf):
    data = read(path)
    return data is not None and data.startswith(b'Received: ') and data.endswith(body_lf)


# -- strace ------------------------------------------------------------------

def strace_cmd(trace_file, syscalls, inject=None, follow=True):
    """strace arguments: trace the given syscalls into trace_file, and
    inject (a string like 'write:error=EIO:when=3') if given."""
    cmd = [STRACE, '-qq', '-y', '-o', trace_file, '-e', 'trace=' + ','.join(syscalls)]
    if follow:
        cmd.insert(1, '-f')
    if inject:
        cmd += ['-e', 'inject=' + inject]
    return cmd + ['--']


def count_calls(trace_file):
    """{syscall: calls} from a strace -o file (resumed lines not counted)."""
    counts = {}
    with open(trace_file, errors='replace') as f:
        for line in f:
            parts = line.split(None, 1)
            if len(parts) < 2:
                continue
            rest = parts[1]
            if rest.startswith('<...') or rest.startswith('+++') or rest.startswith('---'):
                continue
            name = rest.split('(', 1)[0]
            if name.isidentifier():
                counts[name] = counts.get(name, 0) + 1
    return counts


def injected_call(trace_file):
    """The line of the call strace tampered with, or None."""
    try:
        with open(trace_file, errors='replace') as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    for i, line in enumerate(lines):
        if '(INJECTED)' in line:
            return line.split(None, 1)[1] if ' ' in line else line
    for line in lines:
        if 'killed by SIGKILL' in line:
            return 'SIGKILL'
    return None


# -- a loopback SMTP sink (python3-aiosmtpd) ---------------------------------

class Sink:
    """An SMTP server on 127.0.0.1 that keeps every message it is given:
    the queue runner's remote end. reply_code lets a test make it refuse
    (e.g. 451) instead."""

    def __init__(self):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP as Server

        class LongLineServer(Server):
            # Real servers take lines longer than 1000 octets (Postfix
            # splits them); aiosmtpd refuses them unless told otherwise.
            line_length_limit = 1 << 20

        class LongLines(Controller):
            def factory(self):
                return LongLineServer(self.handler, **self.SMTP_kwargs)

        self.messages = []   # (mail_from, [rcpts], content bytes)
        self.lock = threading.Lock()
        self.reply = '250 2.0.0 Ok: kept'
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with sink.lock:
                    if sink.reply.startswith('250'):
                        sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                              envelope.original_content or envelope.content))
                    return sink.reply

        self.port = harness._free_port('127.0.0.1')
        self.controller = LongLines(Handler(), hostname='127.0.0.1', port=self.port,
                                    ready_timeout=10, data_size_limit=None)
        self.controller.start()

    def clear(self):
        with self.lock:
            self.messages = []

    def copies(self, rcpt, tag):
        needle = f'<{tag}@client.example>'.encode()
        with self.lock:
            return [m for m in self.messages if rcpt in m[1] and needle in m[2]]

    def bounces(self):
        with self.lock:
            return [m for m in self.messages if m[0] in ('', '<>')]

    def stop(self):
        self.controller.stop()


def sanitizer_reports(p):
    """Sanitizer reports written since the last call (then removed)."""
    out = []
    for path in sorted(glob.glob(os.path.join(p.san_dir, '*'))):
        with open(path, errors='replace') as f:
            out.append(f'{os.path.basename(path)}: ' + f.read()[:3000])
        os.unlink(path)
    return out


def snapshot(src, dst):
    """Copies the directory src to dst (dst is removed first)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=True)


def restore(template, live):
    """Makes live (a Postage dir) equal to template again, in place, so the
    absolute paths in its settings stay right."""
    for name in os.listdir(live):
        path = os.path.join(live, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    for name in os.listdir(template):
        s, d = os.path.join(template, name), os.path.join(live, name)
        if os.path.isdir(s):
            shutil.copytree(s, d, symlinks=True)
        else:
            shutil.copy2(s, d)


def checkpoint(db):
    """Folds the WAL into the database file, so a copy of the file alone
    is the whole database."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute('PRAGMA wal_checkpoint(TRUNCATE)')
    finally:
        con.close()


def now():
    return int(time.time())


def connect(host, port, timeout=10, source=None):
    s = socket.create_connection((host, port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    return s


# The world of a fault run: two local mailboxes and a forward to a remote
# address, whose mail goes to relayhost (host:port in brackets).
LOCAL = [('alice@example.test', 'alice'), ('bob@example.test', 'bob')]
FORWARD = 'fwd@example.test'
REMOTE = 'carol@remote.example'


def add_fault_world(p, password, relayhost):
    p.add_domain('example.test')
    for addr, login in LOCAL:
        p.add_mailbox(login, password)
        p.add_address(addr, login)
    p.add_forward(FORWARD, REMOTE)
    p.set('relayhost', relayhost)
