"""Systematic fault injection with strace --inject: the SMTP handler taking
one message for two local mailboxes and a remote recipient, POP3 DELE and
QUIT, and the queue runner sending to a loopback SMTP sink.

For each program, one clean run counts how often it makes each syscall of
SYSCALLS; then the N-th call (N = 1 .. count) is failed with each errno
that fits it, and in a further run the process is killed with SIGKILL on
entering that call. After every run the invariants are checked, then the
"next run" (the queue runner --once, a clean POP3 login) is made and its
result checked too.
"""
import os
import re
import subprocess
import tempfile

import common
from common import FORWARD, LOCAL, REMOTE, Tally

# errno values that fit each syscall; every syscall is also run with KILL.
ERRORS = {
    'write': ['EIO', 'ENOSPC', 'EDQUOT'],
    'pwrite64': ['EIO', 'ENOSPC'],
    'fsync': ['EIO', 'ENOSPC'],
    'fdatasync': ['EIO', 'ENOSPC'],
    'rename': ['EIO', 'ENOSPC'],
    'renameat': ['EIO', 'ENOSPC'],
    'renameat2': ['EIO', 'ENOSPC'],
    'link': ['EIO', 'ENOSPC', 'EDQUOT'],
    'linkat': ['EIO', 'ENOSPC', 'EDQUOT'],
    'unlink': ['EIO'],
    'unlinkat': ['EIO'],
    'openat': ['EIO', 'ENOSPC', 'EDQUOT'],
    'mkdir': ['EIO', 'ENOSPC'],
    'ftruncate': ['EIO'],
    'fcntl': ['EIO'],
    'flock': ['ENOLCK'],
}
# SQLite's commit: pwrite64 (WAL frames), fdatasync/fsync (WAL and, at
# checkpoint, the database), ftruncate (WAL reset), fcntl (its locks);
# flock: the delivery journal's lock, the POP3 maildrop's, the runner's.
# Not close: strace's error= skips the call, so the descriptor would stay
# open, which Linux never does (close frees it even when it reports EIO);
# a pipe end left open that way hangs its reader, a fault no disk makes.
SYSCALLS = ['write', 'pwrite64', 'fsync', 'fdatasync', 'rename', 'renameat', 'renameat2',
            'link', 'linkat', 'unlink', 'unlinkat', 'openat', 'mkdir', 'ftruncate', 'fcntl',
            'flock']
# What --quick does: every call of these (the durability-critical ones) ...
QUICK_ALL = {'fsync', 'fdatasync', 'rename', 'renameat', 'renameat2', 'link', 'linkat',
             'unlink', 'unlinkat'}
# ... and a sample of calls of the others, with fewer errno values.
QUICK_ERRORS = {'write': ['EIO', 'ENOSPC']}
QUICK_SKIP = {'fcntl'}

STRACE_TIMEOUT = 90


def sample(count, quick, name):
    """Which N to inject at."""
    if count <= 0:
        return []
    if not quick or name in QUICK_ALL:
        return list(range(1, count + 1))
    picks = {1, 2, count // 3, count // 2, (2 * count) // 3, count - 1, count}
    return sorted(n for n in picks if 1 <= n <= count)


def modes(name, quick):
    errs = ERRORS.get(name, ['EIO'])
    if quick:
        errs = QUICK_ERRORS.get(name, errs[:1])
    return [f'error={e}' for e in errs] + ['signal=KILL']


def plan(counts, quick):
    """[(syscall, mode, n, count)] for the runs of one program."""
    out = []
    for name in SYSCALLS:
        if quick and name in QUICK_SKIP:
            continue
        c = counts.get(name, 0)
        for n in sample(c, quick, name):
            for m in modes(name, quick):
                out.append((name, m, n, c))
    return out


def run_traced(world, argv, inject, stdin=b'', timeout=STRACE_TIMEOUT, env=None):
    """Runs argv under strace with one injection. Returns (CompletedProcess,
    path of strace's output); on a timeout the process is killed and the
    CompletedProcess has stderr b'timeout'."""
    trace = os.path.join(world.work, 'trace.txt')
    if os.path.exists(trace):
        os.unlink(trace)
    name = inject.split(':', 1)[0] if inject else 'write'
    cmd = common.strace_cmd(trace, [name], inject) + argv
    try:
        r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout,
                           env=env or world.p.env())
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(cmd, -1, e.stdout or b'', b'timeout'), trace
    return r, trace


# ---------------------------------------------------------------------------
# The worlds: one temporary installation per worker process, restored from
# a template before every run.
# ---------------------------------------------------------------------------

class World:
    def __init__(self):
        self.p = common.Postage().__enter__()
        self.work = tempfile.mkdtemp(prefix='postage-faults-work-')
        self.template = self.p.dir + '.template'
        self.sink = None
        self.counter = 0

    def freeze(self):
        common.checkpoint(self.p.db)
        common.snapshot(self.p.dir, self.template)

    def reset(self):
        common.restore(self.template, self.p.dir)
        if self.sink:
            self.sink.clear()

    def tag(self, prefix):
        self.counter += 1
        return f'{prefix}{os.getpid()}x{self.counter}'

    def queue_runner(self, now_offset, timeout=120, age=False):
        """One clean queue-runner --once pass, as if now_offset seconds
        later. The CompletedProcess, or None when it is not built. With
        age, the spool's files are first made a day and an hour old: the
        runner sweeps orphans by their real age, not by --now."""
        if not common.built(common.QUEUE):
            return None
        if age:
            old = common.now() - 25 * 3600
            for sub in ('tmp', 'queue'):
                d = os.path.join(self.p.spool_dir, sub)
                for name in os.listdir(d) if os.path.isdir(d) else []:
                    os.utime(os.path.join(d, name), (old, old))
        return subprocess.run([common.harness.binary(common.QUEUE), '--db', self.p.db, '--once',
                               '--now', str(common.now() + now_offset)],
                              capture_output=True, timeout=timeout, env=self.p.env())

    def close(self):
        if self.sink:
            self.sink.stop()
        self.p.__exit__(None, None, None)
        import shutil
        shutil.rmtree(self.template, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)


SMTP_PASSWORD = 'smtp-fault-owner'


class SmtpWorld(World):
    """Two local mailboxes (alice's Maildir exists, bob's is made on first
    delivery) and fwd@example.test forwarded to carol@remote.example, so
    the queue path runs. The relayhost is the loopback sink."""

    def __init__(self):
        super().__init__()
        p = self.p
        self.sink = common.Sink()
        common.add_fault_world(p, SMTP_PASSWORD, f'[127.0.0.1]:{self.sink.port}')
        for sub in ('tmp', 'new', 'cur'):
            os.makedirs(os.path.join(p.maildir('alice'), sub))
        self.freeze()

    def argv(self):
        return [common.harness.binary(common.SMTP), '--db', self.p.db]

    def recipients(self):
        return [a for a, _ in LOCAL] + [FORWARD]

    def dialog(self, tag):
        body = common.make_body(tag)
        return body, common.smtp_dialog(self.recipients(), body)


def smtp_state(world, tag, body_lf):
    """{rcpt: (complete copies, partial copies)} and leftovers."""
    p = world.p
    out = {}
    for addr, login in LOCAL:
        good = bad = 0
        for path in common.copies_of(p.maildir(login), tag):
            if common.delivered_copy_ok(path, body_lf, addr):
                good += 1
            else:
                bad += 1
        out[addr] = [good, bad]
    q = common.queue_state(p.db, p.spool_dir)
    good = bad = 0
    dangling = 0
    for mid, rcpt, state in q['rows']:
        if rcpt != REMOTE or state != 'queued':
            continue
        path = q['files'].get(mid)
        if path is None:
            dangling += 1
        elif common.queue_copy_ok(path, body_lf):
            good += 1
        else:
            bad += 1
    out[REMOTE] = [good, bad]
    row_ids = {r[0] for r in q['rows']}
    orphans = [i for i in q['files'] if i not in row_ids]
    tmp_left = sum(len(common.maildir_files(p.maildir(login))['tmp']) for _, login in LOCAL)
    return out, {'dangling_rows': dangling, 'orphan_files': orphans,
                 'staging': q['staging'], 'maildir_tmp': tmp_left, 'queue': q}


def sweep_by_login(world, tally, label):
    p = world.p
    if not common.built(common.POP3):
        tally.note('Maildir tmp/ leftovers not checked (no pop3-handler)')
        return
    old = common.now() - 37 * 3600
    for _, login in LOCAL:
        tmp = common.maildir_files(p.maildir(login))['tmp']
        if not tmp:
            continue
        for path in tmp:
            os.utime(path, (old, old))
        r = subprocess.run([common.harness.binary(common.POP3), '--db', p.db],
                           input=f'USER {login}\r\nPASS {SMTP_PASSWORD}\r\nQUIT\r\n'.encode(),
                           capture_output=True, timeout=60, env=p.env())
        if b'\r\n+OK Logged in' not in r.stdout:
            tally.problem('error', label + f' the next POP3 login of {login} failed: '
                          f'{r.stdout[-200:]!r}')
        left = common.maildir_files(p.maildir(login))['tmp']
        if left:
            tally.problem('error', label + f' left in {login}\'s tmp/ after the next login: {left}')
        else:
            tally.note('Maildir tmp/ leftovers removed by the next POP3 login')


def check_smtp_run(world, tally, what, verdict, final, tag, body_lf, stdout=b''):
    """The invariants after one SMTP run, then the next run (the queue
    runner) and its invariants. Counts into tally."""
    tally.runs += 1
    state, left = smtp_state(world, tag, body_lf)
    copies = {r: c[0] for r, c in state.items()}
    partial = sum(c[1] for c in state.values())
    label = f'{what}: {verdict} ({final or "no reply"}) copies={copies}'
    if partial:
        tally.problem('partial', label + f' partial={partial}')
    if left['dangling_rows']:
        if verdict == 'accepted':
            tally.problem('lost', label + f' queue rows without a file: {left["dangling_rows"]}')
        else:
            # A COMMIT that failed at its fsync may still come back when
            # SQLite recovers the WAL: rows whose file the handler removed.
            # The next run must drop them without sending or bouncing.
            tally.note('refused, yet queue rows came back without their file (WAL recovery)',
                       example=label)
    if verdict == 'accepted':
        common.count_accepted(tally, copies, label)
    elif verdict == 'refused':
        if any(v > 0 for v in copies.values()):
            # The client was told to try again (or that it failed), yet a
            # copy is there: its retry makes a second one.
            tally.problem('duplicated', label + ' (a copy despite the refusal)')
    else:
        tally.note('unanswered')
        if any(v > 1 for v in copies.values()):
            tally.problem('duplicated', label)
        if any(v > 0 for v in copies.values()):
            tally.note('unanswered but delivered (RFC 1047 window)')
            if not all(v > 0 for v in copies.values()):
                # The next run (the queue runner, from the delivery
                # journal) must finish it or take it back: checked below.
                tally.note('unanswered, some recipients only until the next run', example=label)
    if left['maildir_tmp']:
        tally.note('runs leaving a file in a Maildir tmp/', example=what)

    # The next run: the queue runner finishes what was queued, finishes or
    # takes back a delivery a killed handler left in its journal, and
    # cleans what a killed process left in the spool (orphans older than a
    # day, so it runs as if 25 hours later).
    r = world.queue_runner(25 * 3600, age=True)
    # Then the next run for what is still in a Maildir's tmp/: the
    # owner's next POP3 login, a day and a half later (maildir(5)'s 36
    # hours), removes it.
    if smtp_state(world, tag, body_lf)[1]['maildir_tmp']:
        sweep_by_login(world, tally, label)
    if r is None:
        if left['staging'] or left['orphan_files']:
            tally.note('spool leftovers not checked (no queue-runner)')
        if verdict == 'accepted' and not any(v == 0 for v in copies.values()) and \
                not any(v > 1 for v in copies.values()) and not partial:
            tally.delivered += 1
        return
    after = common.queue_state(world.p.db, world.p.spool_dir)
    sent = len(world.sink.copies(REMOTE, tag))
    bounces = [b for b in world.sink.bounces() if f'<{tag}@client.example>'.encode() in b[2]]
    bounces += ['logged'] * world.p.log_text().count('status=bounced')
    if bounces:
        tally.problem('lost' if verdict == 'accepted' else 'error',
                      label + f' next run bounced it ({len(bounces)} DSN)')
    if after['staging']:
        tally.problem('error', label + f' staging files left after the next run: {after["staging"]}')
    row_ids = {x[0] for x in after['rows']}
    orphans = [i for i in after['files'] if i not in row_ids and i not in after['messages']]
    if orphans:
        tally.problem('error', label + f' spool files without a row after the next run: {orphans}')
    still = [x for x in after['rows'] if x[2] == 'queued']
    if still:
        tally.problem('error', label + f' still queued after the next run: {still} '
                      f'runner rc={r.returncode}')
    if verdict == 'accepted':
        if sent == 0:
            tally.problem('lost', label + ' the next run did not send the remote copy')
        elif sent > 1:
            tally.problem('duplicated', label + f' the remote got {sent} copies')
        elif all(v == 1 for v in copies.values()) and not partial:
            tally.delivered += 1
    elif verdict == 'refused' and sent:
        tally.problem('duplicated', label + ' the refused message was sent on by the next run')
    if verdict == 'unanswered':
        # All or nothing once the next run has finished what a killed
        # handler left (shared/journal.h).
        final, _ = smtp_state(world, tag, body_lf)
        final = {a: c[0] for a, c in final.items() if a != REMOTE}
        final[REMOTE] = sent
        if any(v > 1 for v in final.values()):
            tally.problem('duplicated', label + f' after the next run: {final}')
        elif any(v > 0 for v in final.values()) and not all(v > 0 for v in final.values()):
            tally.problem('partial', label + f' some recipients only after the next run: {final}')


# -- the SMTP family ---------------------------------------------------------

def smtp_count(world):
    """Calls of each syscall in a clean run, and a check that the clean run
    delivers."""
    world.reset()
    tag = world.tag('clean')
    body, dialog = world.dialog(tag)
    trace = os.path.join(world.work, 'count.txt')
    r = subprocess.run(common.strace_cmd(trace, common_syscalls()) + world.argv(),
                       input=dialog, capture_output=True, timeout=STRACE_TIMEOUT,
                       env=world.p.env())
    verdict, final = common.data_verdict(r.stdout)
    if verdict != 'accepted':
        raise RuntimeError(f'the clean SMTP run was not accepted: {final}\n'
                           f'{r.stdout.decode(errors="replace")}\n{world.p.log_text()[-3000:]}')
    return common.count_calls(trace)


def common_syscalls():
    return SYSCALLS


def smtp_run(world, job):
    name, mode, n, _count = job
    tally = Tally('smtp-inject')
    world.reset()
    tag = world.tag('s')
    body, dialog = world.dialog(tag)
    inject = f'{name}:{mode}:when={n}'
    trace = os.path.join(world.work, 'trace.txt')
    if os.path.exists(trace):
        os.unlink(trace)
    rc, stdout, _err = common.converse(common.strace_cmd(trace, [name], inject) + world.argv(),
                                       world.p.env(), world.recipients(), body,
                                       timeout=STRACE_TIMEOUT)
    r = subprocess.CompletedProcess([], rc, stdout, b'')
    hit = common.injected_call(trace)
    what = f'smtp {inject} [{hit or "not reached"}]'
    if rc is None:
        tally.problem('error', what + ': the handler hung (killed after the timeout)')
    for rep in common.sanitizer_reports(world.p):
        tally.problem('error', what + ': sanitizer report ' + rep[:800])
    verdict, final = common.data_verdict(r.stdout)
    check_smtp_run(world, tally, what, verdict, final, tag, common.lf_form(body), r.stdout)
    return tally


# -- the POP3 family ---------------------------------------------------------

POP_PASSWORD = 'pop-fault-secret'


class Pop3World(World):
    """alice with three messages: two in cur/ (one seen), one in new/."""

    def __init__(self):
        super().__init__()
        p = self.p
        p.add_domain('example.test')
        p.add_mailbox('alice', POP_PASSWORD)
        p.add_address('alice@example.test', 'alice')
        md = p.maildir('alice')
        for sub in ('tmp', 'new', 'cur'):
            os.makedirs(os.path.join(md, sub))
        self.messages = {}
        for i, (sub, flags) in enumerate([('cur', ':2,S'), ('cur', ':2,'), ('new', '')], 1):
            data = (f'Return-Path: <{common.SENDER}>\nDelivered-To: alice@example.test\n'
                    f'Subject: pop message {i}\nMessage-ID: <pop{i}@client.example>\n\n'
                    + f'body of message {i}\n' * (20 * i)).encode()
            uid = f'17000000{i:02d}.M{i}P{100 + i}.faults'
            lfs = data.count(b'\n')
            name = f'{uid},S={len(data)},W={len(data) + lfs}{flags}'
            with open(os.path.join(md, sub, name), 'wb') as f:
                f.write(data)
            self.messages[uid] = data
        self.freeze()

    def argv(self):
        return [common.harness.binary(common.POP3), '--db', self.p.db]


POP_DIALOG = (f'USER alice\r\nPASS {POP_PASSWORD}\r\nUIDL\r\nDELE 1\r\nDELE 2\r\nQUIT\r\n').encode()
POP_COMMANDS = ['greeting', 'USER', 'PASS', 'UIDL', 'DELE 1', 'DELE 2', 'QUIT']


def parse_pop3(stdout):
    """{command: status line} and the UIDL map {number: uid}."""
    lines = stdout.decode('utf-8', 'replace').split('\r\n')
    out, uids = {}, {}
    i = 0
    for cmd in POP_COMMANDS:
        if i >= len(lines) or not lines[i]:
            break
        out[cmd] = lines[i]
        i += 1
        if cmd == 'UIDL' and out[cmd].startswith('+OK'):
            while i < len(lines) and lines[i] != '.':
                parts = lines[i].split()
                if len(parts) == 2 and parts[0].isdigit():
                    uids[int(parts[0])] = parts[1]
                i += 1
            i += 1
    return out, uids


def pop3_present(world):
    """{uid: [(path, complete)]} of what is in new/ and cur/."""
    files = common.maildir_files(world.p.maildir('alice'))
    out = {}
    for path in files['new'] + files['cur']:
        name = os.path.basename(path)
        uid = re.split('[:,]', name, 1)[0]
        data = common.read(path)
        out.setdefault(uid, []).append((path, data == world.messages.get(uid)))
    return out


def pop3_count(world):
    world.reset()
    trace = os.path.join(world.work, 'count.txt')
    r = subprocess.run(common.strace_cmd(trace, SYSCALLS) + world.argv(), input=POP_DIALOG,
                       capture_output=True, timeout=STRACE_TIMEOUT, env=world.p.env())
    replies, _ = parse_pop3(r.stdout)
    if not replies.get('QUIT', '').startswith('+OK') or \
            not replies.get('DELE 2', '').startswith('+OK'):
        raise RuntimeError(f'the clean POP3 run failed: {r.stdout!r}\n{world.p.log_text()[-3000:]}')
    return common.count_calls(trace)


def start_run(world, job, family, program, **kw):
    """A run of pop3_run or queue_run up to its own checks: a fresh world,
    program (named so in the reports) run with job's fault (run_traced's
    keywords kw), a hang and the sanitizer reports counted. Returns
    (tally, CompletedProcess, the call the fault hit, the run's label)."""
    name, mode, n, _count = job
    tally = Tally(family + '-inject')
    tally.runs += 1
    world.reset()
    inject = f'{name}:{mode}:when={n}'
    r, trace = run_traced(world, world.argv(), inject, **kw)
    hit = common.injected_call(trace)
    what = f'{family} {inject} [{hit or "not reached"}]'
    if r.stderr == b'timeout':
        tally.problem('error', what + f': the {program} hung')
    for rep in common.sanitizer_reports(world.p):
        tally.problem('error', what + ': sanitizer report ' + rep[:800])
    return tally, r, hit, what


def pop3_run(world, job):
    tally, r, hit, what = start_run(world, job, 'pop3', 'handler', stdin=POP_DIALOG)
    replies, _uidmap = parse_pop3(r.stdout)
    # The snapshot is in name order, so DELE 1 and DELE 2 name these two
    # whether or not UIDL's answer came back.
    uids = sorted(world.messages)
    said = {k: replies.get(f'DELE {k}') for k in (1, 2)}
    quit_ok = replies.get('QUIT', '').startswith('+OK')
    present = pop3_present(world)
    label = f'{what}: ' + ' '.join(f'{c}={replies.get(c, "-")[:24]!r}' for c in POP_COMMANDS[2:])
    for uid, copies in present.items():
        if len(copies) > 1:
            tally.problem('duplicated', label + f' {uid} is there {len(copies)} times')
        if not all(c[1] for c in copies):
            tally.problem('partial', label + f' {uid} is not whole')
    gone = set(uids) - set(present)
    if quit_ok:
        marked = {uids[k - 1] for k in (1, 2) if said[k] and said[k].startswith('+OK')}
        if marked:
            tally.accepted += 1
        if gone - marked:
            tally.problem('lost', label + f' removed without DELE: {sorted(gone - marked)}')
        if marked - gone:
            tally.problem('duplicated', label + ' DELE and QUIT answered +OK, still there: '
                          f'{sorted(marked - gone)}')
        if marked and gone == marked:
            tally.delivered += 1
    else:
        # No +OK to QUIT. What the server may have removed: the messages
        # whose DELE it took (answered +OK, or unanswered: the replies of
        # a pipelined dialog go out together). RFC 1939 6 lets a QUIT that
        # fails remove some of them; a QUIT done whose +OK never reached
        # the client is the reply-after-commit window every protocol has.
        allowed = {uids[k - 1] for k in (1, 2) if said[k] is None or said[k].startswith('+OK')}
        if gone - allowed:
            tally.problem('lost', label + f' removed without DELE: {sorted(gone - allowed)}')
        elif gone:
            tally.note('QUIT -ERR or unanswered, marked messages removed '
                       '(RFC 1939 6, reply-after-commit window)')
    # The next run: a clean login must work (no stale lock) and see what
    # is on disk.
    r2 = subprocess.run(world.argv(), input=f'USER alice\r\nPASS {POP_PASSWORD}\r\nUIDL\r\nQUIT\r\n'
                        .encode(), capture_output=True, timeout=60, env=world.p.env())
    rep2, uid2 = parse_pop3(r2.stdout)
    if not rep2.get('PASS', '').startswith('+OK'):
        tally.problem('error', label + f' the next login failed: {rep2.get("PASS")}')
    elif set(uid2.values()) != set(pop3_present(world)):
        tally.problem('error', label + f' the next session lists {sorted(uid2.values())}, '
                      f'disk has {sorted(pop3_present(world))}')
    for rep in common.sanitizer_reports(world.p):
        tally.problem('error', what + ': sanitizer report in the next run ' + rep[:800])
    return tally


# -- the queue runner family -------------------------------------------------

QUEUE_RCPTS = ['carol@remote.example', 'dave@other.example']


class QueueWorld(World):
    """One message queued for two remote recipients (made by the SMTP
    handler itself), the relayhost the loopback sink."""

    def __init__(self):
        super().__init__()
        p = self.p
        self.sink = common.Sink()
        p.add_domain('example.test')
        p.add_forward('list@example.test', QUEUE_RCPTS[0])
        p.add_forward('list@example.test', QUEUE_RCPTS[1])
        p.set('relayhost', f'[127.0.0.1]:{self.sink.port}')
        self.tag_ = 'queued-message'
        body = common.make_body(self.tag_)
        r = p.run(common.SMTP, input=common.smtp_dialog(['list@example.test'], body))
        verdict, final = common.data_verdict(r.stdout)
        if verdict != 'accepted':
            raise RuntimeError(f'could not queue the message: {final}')
        self.freeze()

    def argv(self):
        return [common.harness.binary(common.QUEUE), '--db', self.p.db, '--once']


def queue_count(world):
    world.reset()
    trace = os.path.join(world.work, 'count.txt')
    r = subprocess.run(common.strace_cmd(trace, SYSCALLS) + world.argv(), capture_output=True,
                       timeout=STRACE_TIMEOUT, env=world.p.env())
    sent = [len(world.sink.copies(x, world.tag_)) for x in QUEUE_RCPTS]
    if sent != [1, 1]:
        raise RuntimeError(f'the clean queue run did not send each once: {sent} rc={r.returncode}'
                           f'\n{world.p.log_text()[-3000:]}')
    return common.count_calls(trace)


def in_window(name, mode, hit):
    """A fault that can fall between a remote 250 and its record: a kill,
    or a failed write of the result (to the database's files, or the
    delivery process's report to the runner over its pipe)."""
    if mode == 'signal=KILL':
        return True
    return bool(hit) and name in ('pwrite64', 'fdatasync', 'fsync', 'fcntl', 'ftruncate',
                                  'write') and ('postage.db' in hit or 'pipe:' in hit)


def queue_run(world, job):
    name, mode, _n, _count = job
    tally, r, hit, what = start_run(world, job, 'queue', 'queue runner', timeout=120)
    q = common.queue_state(world.p.db, world.p.spool_dir)
    state = {rcpt: st for _mid, rcpt, st in q['rows']}
    first = {x: len(world.sink.copies(x, world.tag_)) for x in QUEUE_RCPTS}
    label = f'{what}: sent={first} state={state}'
    if all(first[x] == 1 for x in QUEUE_RCPTS):
        tally.accepted += 1
    window = set()
    for x in QUEUE_RCPTS:
        st = state.get(x)
        if first[x] > 1:
            tally.problem('duplicated', label + f' {x} got {first[x]} copies in one run')
        if st in ('sent', None) and first[x] == 0:
            tally.problem('lost', label + f' {x} marked done, never sent')
        if st == 'bounced':
            tally.problem('lost', label + f' {x} bounced though the sink takes everything')
        if st == 'queued' and first[x] == 1:
            window.add(x)
    if window:
        tally.note('sent, then the fault came before the success was recorded', example=what)
    # The next runs, clean, as if later (past any retry delay).
    for hours in (2, 8, 30):
        world.queue_runner(hours * 3600)
        q = common.queue_state(world.p.db, world.p.spool_dir)
        if not any(st == 'queued' for _m, _r, st in q['rows']):
            break
    total = {x: len(world.sink.copies(x, world.tag_)) for x in QUEUE_RCPTS}
    state = {rcpt: st for _mid, rcpt, st in q['rows']}
    label += f' after the next run: sent={total} state={state}'
    bounces = world.sink.bounces() + ['logged'] * world.p.log_text().count('status=bounced')
    if bounces:
        tally.problem('lost', label + f' {len(bounces)} bounce(s) sent')
    ok = True
    for x in QUEUE_RCPTS:
        if total[x] == 0:
            ok = False
            tally.problem('lost', label + f' {x} never delivered')
        elif total[x] > 1:
            ok = False
            if x in window and total[x] == 2 and in_window(name, mode, hit):
                # The remote answered 250 and the process died, or could
                # not write the database, before recording it: SMTP's
                # at-least-once window (RFC 5321 6.1, RFC 1047); reported
                # apart.
                tally.note('sent again after a fault between the remote 250 and the commit',
                           example=what)
            else:
                tally.problem('duplicated', label + f' {x} got {total[x]} copies')
    if any(st == 'queued' for st in state.values()):
        ok = False
        tally.problem('error', label + ' still queued after the next runs')
    if q['staging']:
        tally.problem('error', label + f' staging files left: {q["staging"]}')
    if ok:
        tally.delivered += 1
    return tally


# -- driving -----------------------------------------------------------------

FAMILIES = {
    'smtp-inject': (SmtpWorld, smtp_count, smtp_run, common.SMTP),
    'pop3-inject': (Pop3World, pop3_count, pop3_run, common.POP3),
    'queue-inject': (QueueWorld, queue_count, queue_run, common.QUEUE),
}

_worlds = {}


def _world(family):
    if family not in _worlds:
        if not _worlds:
            # Runs when a pool worker ends normally (close, join).
            import multiprocessing.util
            multiprocessing.util.Finalize(None, _close_worlds, exitpriority=10)
        _worlds[family] = FAMILIES[family][0]()
    return _worlds[family]


def _job(args):
    family, job = args
    try:
        return FAMILIES[family][2](_world(family), job)
    except Exception as e:  # a broken check is a failure, not a crash of the run
        import traceback
        t = Tally(family)
        t.runs += 1
        t.problem('error', f'{family} {job}: the check itself failed: {e!r}\n'
                  + traceback.format_exc()[-1500:])
        return t


def _close_worlds():
    for w in _worlds.values():
        w.close()
    _worlds.clear()


def run_family(family, quick, jobs, log):
    """Counts, plans and runs one injection family. Returns a Tally."""
    tally = Tally(family)
    program = FAMILIES[family][3]
    if not common.built(program):
        tally.skipped.append(f'{program} is not built in {common.BUILD}')
        return tally
    world = FAMILIES[family][0]()
    try:
        counts = FAMILIES[family][1](world)
    finally:
        world.close()
    work = plan(counts, quick)
    log(f'{family}: clean run calls ' + ', '.join(f'{k} {counts[k]}' for k in SYSCALLS
                                                  if counts.get(k)))
    log(f'{family}: {len(work)} runs' + (' (quick sample)' if quick else ''))
    args = [(family, j) for j in work]
    if jobs > 1:
        import multiprocessing
        ctx = multiprocessing.get_context('fork')
        pool = ctx.Pool(jobs)
        try:
            for t in pool.imap_unordered(_job, args, chunksize=4):
                tally.merge(t)
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
    else:
        for a in args:
            tally.merge(_job(a))
        _close_worlds()
    return tally
