"""Database locked: an administrator holds the database in sqlite3 for
longer than the handlers' busy timeout (DB_BUSY_TIMEOUT_MS, 5 s).

Two kinds of hold:
  writer  `BEGIN EXCLUSIVE` in the sqlite3 shell. The database is in WAL
          mode, so readers are not blocked: only what must write waits
          (queueing for a remote recipient, the throttle's and POP3's
          bookkeeping, the queue runner's state).
  readers `PRAGMA locking_mode=EXCLUSIVE` then a write: the shell keeps the
          database to itself, so even reading waits (the worst an
          administrator can do).

While the hold lasts, at the same time: an SMTP message to a local
mailbox, one to a local mailbox and a remote recipient, a POP3 login with
DELE and QUIT (over TCP, so its login is recorded), and a queue runner
pass. Each must end in success or a temporary error (SMTP 4xx, never 5xx;
POP3 -ERR [SYS/TEMP]; the runner defers), never a permanent error or a
wrong-password answer. After the release the same must all succeed, and
in the end every accepted message is there exactly once.
"""
import os
import poplib
import subprocess
import threading
import time

import common
from common import Tally

LOCAL = ('alice@example.test', 'alice')
POP_PASSWORD = 'pop-lock-secret'


class Admin:
    """sqlite3 holding the database."""

    def __init__(self, db, kind):
        self.proc = subprocess.Popen(['sqlite3', db], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        if kind == 'writer':
            cmds = ".timeout 30000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n"
        else:
            cmds = (".timeout 30000\nPRAGMA locking_mode=EXCLUSIVE;\nBEGIN EXCLUSIVE;\n"
                    "UPDATE settings SET value = value WHERE key = 'hostname';\nCOMMIT;\n"
                    "BEGIN EXCLUSIVE;\nSELECT 'locked';\n")
        self.proc.stdin.write(cmds)
        self.proc.stdin.flush()
        got = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError('sqlite3 did not take the lock: ' + ''.join(got))
            got.append(line)
            if line.strip() == 'locked':
                break
        self.at = time.monotonic()

    def release(self):
        self.proc.stdin.write('COMMIT;\n.quit\n')
        self.proc.stdin.flush()
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        return time.monotonic() - self.at


class World:
    def __init__(self):
        self.p = common.Postage().__enter__()
        p = self.p
        self.sink = common.Sink()
        p.add_domain('example.test')
        p.add_mailbox('alice', POP_PASSWORD)
        p.add_address(LOCAL[0], 'alice')
        p.add_forward('fwd@example.test', 'carol@remote.example')
        p.set('relayhost', f'[127.0.0.1]:{self.sink.port}')
        for sub in ('tmp', 'new', 'cur'):
            os.makedirs(os.path.join(p.maildir('alice'), sub))
        self.pop = p.serve(common.POP3) if common.built(common.POP3) else None
        self.n = 0

    def smtp(self, rcpts):
        self.n += 1
        tag = f'lock{os.getpid()}x{self.n}'
        body = common.make_body(tag)
        t0 = time.monotonic()
        rc, out, _ = common.converse([self.p.binary(common.SMTP), '--db', self.p.db],
                                     self.p.env(), rcpts, body, timeout=120)
        verdict, final = common.data_verdict(out)
        greeting = out.decode('utf-8', 'replace').split('\r\n', 1)[0]
        return {'tag': tag, 'rcpts': rcpts, 'verdict': verdict, 'final': final,
                'greeting': greeting, 'seconds': time.monotonic() - t0}

    def drop(self, n=1):
        """Puts n messages into alice's Maildir for POP3 to delete."""
        for i in range(n):
            self.n += 1
            name = f'{1700000000 + self.n}.M{self.n}P1.faults,S=30'
            with open(os.path.join(self.p.maildir('alice'), 'new', name), 'wb') as f:
                f.write(b'Subject: x\n\npop lock test 1\n'[:30].ljust(30, b'.'))

    def pop3(self):
        """Login, STAT, DELE 1, QUIT over TCP. What each answered."""
        t0 = time.monotonic()
        out = {}
        if not self.pop:
            return None
        # Only these count: SMTP runs at the same time add others.
        before = {os.path.basename(x).split(':')[0] for x in self.p.messages('alice')
                  if '.faults,' in x}
        try:
            c = poplib.POP3(self.pop.host, self.pop.port, timeout=120)
            out['greeting'] = c.getwelcome().decode()
            c.user('alice')
            try:
                out['pass'] = c.pass_(POP_PASSWORD).decode()
            except poplib.error_proto as e:
                out['pass'] = e.args[0].decode()
                c.quit()
                raise StopIteration
            out['dele'] = c.dele(1).decode()
            out['quit'] = c.quit().decode()
        except StopIteration:
            pass
        except poplib.error_proto as e:
            out['error'] = e.args[0].decode(errors='replace')
        except OSError as e:
            out['error'] = repr(e)
        out['seconds'] = time.monotonic() - t0
        after = {os.path.basename(x).split(':')[0] for x in self.p.messages('alice')}
        out['removed'] = len(before - after)
        return out

    def runner(self):
        t0 = time.monotonic()
        if not common.built(common.QUEUE):
            return None
        r = subprocess.run([self.p.binary(common.QUEUE), '--db', self.p.db, '--once'],
                           capture_output=True, timeout=300, env=self.p.env())
        return {'rc': r.returncode, 'seconds': time.monotonic() - t0}

    def close(self):
        self.sink.stop()
        self.p.__exit__(None, None, None)


def judge_smtp(tally, world, what, res, accepted_tags):
    tally.runs += 1
    f = res['final'] or res['greeting']
    label = f'{what}: {res["verdict"]} ({f}) after {res["seconds"]:.1f} s'
    tally.note(f'{what}: {res["verdict"]} {(f or "")[:9]} in {res["seconds"]:.0f} s')
    if res['verdict'] == 'accepted':
        tally.accepted += 1
        accepted_tags.append(res)
    elif not f or f[0] != '4':
        tally.problem('error', label + ': wanted 250 or a 4xx')


def judge_pop(tally, what, res, dropped):
    if res is None:
        tally.skipped.append('pop3-handler is not built')
        return
    tally.runs += 1
    summary = ' '.join(f'{k}={str(v)[:28]!r}' for k, v in res.items() if k != 'seconds')
    tally.note(f'{what}: {summary} in {res["seconds"]:.0f} s')
    ok = res.get('quit', '').startswith('+OK') and res.get('dele', '').startswith('+OK')
    if ok:
        tally.accepted += 1
        if res['removed'] == 1:
            tally.delivered += 1
        else:
            tally.problem('duplicated', f'{what}: DELE and QUIT +OK, removed {res["removed"]}')
    else:
        bad = [v for k, v in res.items() if k in ('greeting', 'pass', 'dele', 'quit', 'error')
               and isinstance(v, str) and v.startswith('-ERR') and '[SYS/TEMP]' not in v]
        if bad or 'error' in res and not res['error'].startswith('-ERR'):
            tally.problem('error', f'{what}: wanted +OK or -ERR [SYS/TEMP]: {summary}')
        if res['removed']:
            tally.problem('lost', f'{what}: no +OK QUIT, yet {res["removed"]} removed')


def scenario(tally, kind, hold, log):
    world = World()
    accepted = []
    try:
        world.drop(2)
        # Queued before the hold: the runner has work while the lock lasts.
        before = world.smtp(['fwd@example.test'])
        if before['verdict'] != 'accepted':
            raise RuntimeError(f'could not queue a message before the hold: {before["final"]}')
        tally.runs += 1
        tally.accepted += 1
        accepted.append(before)
        admin = Admin(world.p.db, kind)
        results = {}

        def run(name, fn, *a):
            results[name] = fn(*a)

        threads = [threading.Thread(target=run, args=('local', world.smtp, [LOCAL[0]])),
                   threading.Thread(target=run, args=('remote', world.smtp,
                                                      [LOCAL[0], 'fwd@example.test'])),
                   threading.Thread(target=run, args=('pop3', world.pop3)),
                   threading.Thread(target=run, args=('runner', world.runner))]
        for t in threads:
            t.start()
        time.sleep(hold)
        held = admin.release()
        for t in threads:
            t.join(timeout=300)
        log(f'db-locked {kind}: held {held:.1f} s')
        judge_smtp(tally, world, f'{kind} held, SMTP to a local mailbox', results['local'],
                   accepted)
        judge_smtp(tally, world, f'{kind} held, SMTP to a local and a remote recipient',
                   results['remote'], accepted)
        judge_pop(tally, f'{kind} held, POP3 login+DELE+QUIT', results['pop3'], 1)
        if results['runner']:
            tally.note(f'{kind} held, queue runner: rc={results["runner"]["rc"]} in '
                       f'{results["runner"]["seconds"]:.0f} s, sent '
                       f'{len(world.sink.messages)}')
        # Released: everything goes through.
        for name, rcpts in (('local', [LOCAL[0]]), ('remote', [LOCAL[0], 'fwd@example.test'])):
            res = world.smtp(rcpts)
            judge_smtp(tally, world, f'{kind} released, SMTP {name}', res, accepted)
            if res['verdict'] != 'accepted':
                tally.problem('error', f'{kind} released: SMTP {name} not accepted: {res["final"]}')
        res = world.pop3()
        judge_pop(tally, f'{kind} released, POP3', res, 1)
        if res and not res.get('quit', '').startswith('+OK'):
            tally.problem('error', f'{kind} released: POP3 failed: {res}')
        r = world.runner()
        if r:
            r = world.runner() if r['rc'] == 0 else r
        # Every accepted message once: alice's copies, carol's at the sink.
        body_lf = None
        for res in accepted:
            body_lf = common.lf_form(common.make_body(res['tag']))
            n_local = None
            if LOCAL[0] in res['rcpts']:
                n_local = len([pth for pth in common.copies_of(world.p.maildir('alice'), res['tag'])
                               if common.delivered_copy_ok(pth, body_lf, LOCAL[0])])
            n_remote = None
            if 'fwd@example.test' in res['rcpts']:
                if common.built(common.QUEUE):
                    n_remote = len(world.sink.copies('carol@remote.example', res['tag']))
                else:
                    q = common.queue_state(world.p.db, world.p.spool_dir)
                    n_remote = sum(1 for x in q['rows'] if x[1] == 'carol@remote.example'
                                   and x[0] in q['files'])
            label = f'{kind}: accepted {res["tag"]}: alice {n_local}, remote {n_remote}'
            if n_local == 0 or n_remote == 0:
                tally.problem('lost', label)
            elif (n_local or 0) > 1 or (n_remote or 0) > 1:
                tally.problem('duplicated', label)
            else:
                tally.delivered += 1
        # And nothing from the refused ones.
        for name in ('local', 'remote'):
            res = results[name]
            if res['verdict'] != 'accepted':
                if common.copies_of(world.p.maildir('alice'), res['tag']) or \
                        world.sink.copies('carol@remote.example', res['tag']):
                    tally.problem('duplicated', f'{kind}: {name} was refused, yet delivered')
        for rep in common.sanitizer_reports(world.p):
            tally.problem('error', f'{kind}: sanitizer report ' + rep[:800])
    finally:
        world.close()


def run(quick, log):
    tally = Tally('db-locked')
    if not os.access('/usr/bin/sqlite3', os.X_OK):
        tally.skipped.append('the sqlite3 shell is not installed')
        return tally
    hold = 8 if quick else 12
    for kind in ('writer', 'readers'):
        try:
            scenario(tally, kind, hold, log)
        except Exception as e:
            import traceback
            tally.problem('error', f'db-locked {kind}: {e!r}\n' + traceback.format_exc()[-1500:])
    return tally
