#!/usr/bin/env python3
"""scripts/cluster.d/checks.py: the clients of scripts/cluster's checks.

Each subcommand prints what it saw, one line at a time, and last a line
that starts with "ok" or "FAILED" (the verdict scripts/cluster prints);
its exit status is 0 only with "ok". Clients run in the switch namespace
(or in a node's, for the cut node of check 6) and bind their source
address (--src), since postage knows a client by it (POP-before-SMTP).
Every SMTP attempt ends in one of: 250 (the message was accepted), 4xx,
5xx, noconn (no TCP connection), noanswer (connected, but a reply did not
come within the timeout).
"""

import argparse
import email.utils
import fcntl
import json
import os
import poplib
import smtplib
import socket
import sys
import threading
import time

SENDER = 'someone@client.test'    # mail from outside: any sender
TIMEOUT = 30                      # seconds for a reply
CONNECT_TIMEOUT = 5               # seconds for a TCP connection


def out(*a):
    print(*a, flush=True)


def message(rcpt, mid, sender=SENDER):
    return (f'From: <{sender}>\r\n'
            f'To: <{rcpt}>\r\n'
            f'Subject: cluster check {mid}\r\n'
            f'Date: {email.utils.formatdate()}\r\n'
            f'Message-ID: <{mid}@client.test>\r\n'
            f'X-Cluster-Id: {mid}\r\n'
            f'\r\n'
            f'This is {mid}.\r\n').encode()


class Attempt:
    """One SMTP transaction: outcome, code, reply text, the stage it ended in."""

    def __init__(self, outcome, code=None, text='', stage=''):
        self.outcome, self.code, self.text, self.stage = outcome, code, text, stage

    def __str__(self):
        s = f'{self.outcome} at {self.stage}'
        if self.code:
            s += f': {self.code} {self.text}'
        elif self.text:
            s += f': {self.text}'
        return s


def classify(code):
    if code == 250:
        return '250'
    if 400 <= code < 500:
        return '4xx'
    if 500 <= code < 600:
        return '5xx'
    return f'unexpected {code}'


def smtp_send(src, host, rcpt, data, sender=SENDER, timeout=TIMEOUT):
    """Sends one message; returns an Attempt."""
    stage = 'connect'
    try:
        s = smtplib.SMTP(local_hostname='client.test', timeout=timeout,
                         source_address=(src, 0))
        try:
            # s.connect(), in two steps: no connection, or no greeting
            s._host = host
            s.sock = socket.create_connection((host, 25), min(timeout, CONNECT_TIMEOUT),
                                              source_address=(src, 0))
            s.sock.settimeout(timeout)
            stage = 'greeting'
            code, msg = s.getreply()
            if code != 220:
                return Attempt(classify(code), code, msg.decode(errors='replace'), stage)
            stage = 'EHLO'
            code, msg = s.ehlo()
            if code != 250:
                return Attempt(classify(code), code, msg.decode(errors='replace'), stage)
            for stage, cmd in (('MAIL', f'MAIL FROM:<{sender}>'),
                               ('RCPT', f'RCPT TO:<{rcpt}>')):
                code, msg = s.docmd(cmd)
                if code != 250:
                    return Attempt(classify(code), code, msg.decode(errors='replace'), stage)
            stage = 'DATA'
            code, msg = s.docmd('DATA')
            if code != 354:
                return Attempt(classify(code), code, msg.decode(errors='replace'), stage)
            stage = 'end of data'
            s.send(data.replace(b'\r\n.', b'\r\n..') + b'\r\n.\r\n')
            code, msg = s.getreply()
            return Attempt(classify(code), code, msg.decode(errors='replace'), stage)
        finally:
            try:
                s.close()
            except OSError:
                pass
    except smtplib.SMTPConnectError as e:
        return Attempt(classify(e.smtp_code), e.smtp_code,
                       e.smtp_error.decode(errors='replace') if isinstance(e.smtp_error, bytes)
                       else str(e.smtp_error), 'greeting')
    except (socket.timeout, TimeoutError) as e:
        return Attempt('noconn' if stage == 'connect' else 'noanswer', text=str(e) or 'timed out',
                       stage=stage)
    except (smtplib.SMTPServerDisconnected, ConnectionError) as e:
        return Attempt('noconn' if stage in ('connect', 'greeting') and
                       not isinstance(e, smtplib.SMTPServerDisconnected) else 'noanswer',
                       text=str(e) or type(e).__name__, stage=stage)
    except OSError as e:
        return Attempt('noconn' if stage == 'connect' else 'noanswer', text=str(e), stage=stage)


class POP3From(poplib.POP3):
    """poplib.POP3 from a given source address."""

    def __init__(self, host, src, timeout=TIMEOUT):
        self.src = src
        super().__init__(host, 110, timeout)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT,
                                        source_address=(self.src, 0))
        sock.settimeout(timeout)
        return sock


def pop_login(src, host, login, password):
    """Returns (session or None, reply text)."""
    p = POP3From(host, src)
    try:
        p.user(login)
        r = p.pass_(password)
        return p, r.decode(errors='replace')
    except poplib.error_proto as e:
        text = e.args[0].decode(errors='replace') if isinstance(e.args[0], bytes) else str(e)
        try:
            p.close()
        except OSError:
            pass
        return None, text


def uniq(tag):
    return f'{tag}-{os.getpid()}-{int(time.time() * 1000) % 100000000}'


# --- check 1 ----------------------------------------------------------------

def check1(a):
    sender = f'{a.login}@example.test'
    rcpt = 'someone@remote.test'
    fails = []
    r = smtp_send(a.a, a.smtp, rcpt, message(rcpt, uniq('c1-before'), sender), sender)
    out(f'relay from A ({a.a}) on {a.smtp} before any POP3 login: {r}')
    if r.outcome != '5xx' or r.stage != 'RCPT':
        fails.append(f'relay from A before the POP3 login: {r} (want 5xx at RCPT)')
    p, text = pop_login(a.a, a.pop, a.login, a.password)
    out(f'POP3 login as {a.login} from A on {a.pop}: {text}')
    if p is None:
        fails.append(f'POP3 login on {a.pop} refused: {text}')
    else:
        p.quit()
    r = smtp_send(a.a, a.smtp, rcpt, message(rcpt, uniq('c1-a'), sender), sender)
    out(f'relay from A on {a.smtp} after the login: {r}')
    if r.outcome != '250':
        fails.append(f'relay from A after the POP3 login on another node: {r}')
    r = smtp_send(a.b, a.smtp, rcpt, message(rcpt, uniq('c1-b'), sender), sender)
    out(f'relay from B ({a.b}) on {a.smtp}: {r}')
    if r.outcome != '5xx' or r.stage != 'RCPT':
        fails.append(f'relay from B: {r} (want 5xx at RCPT)')
    if fails:
        out('FAILED ' + '; '.join(fails))
        return 1
    out(f'ok POP3 login on {a.pop} from A opened relaying from A on {a.smtp}; '
        f'B refused, and A before the login')
    return 0


# --- check 2 ----------------------------------------------------------------

def pop_ids(p):
    """The X-Cluster-Id of every message in a POP3 session (by TOP n 0)."""
    ids = []
    count, _ = p.stat()
    for i in range(1, count + 1):
        _, lines, _ = p.top(i, 0)
        for line in lines:
            if line.lower().startswith(b'x-cluster-id:'):
                ids.append(line.split(b':', 1)[1].strip().decode())
    return count, ids


def check2(a):
    rcpt = f'{a.login}@example.test'
    sent = []
    fails = []
    for host in a.via.split(','):
        mid = uniq('c2')
        r = smtp_send(a.src, host, rcpt, message(rcpt, mid))
        out(f'{mid} to {rcpt} through {host}: {r}')
        if r.outcome == '250':
            sent.append(mid)
        else:
            fails.append(f'{host} did not take the message: {r}')
    if fails:
        out('FAILED ' + '; '.join(fails))
        return 1
    p, text = pop_login(a.src, a.pop, a.login, a.password)
    if p is None:
        out(f'FAILED POP3 login on {a.pop}: {text}')
        return 1
    try:
        lst = p.list()[1]
        count, ids = pop_ids(p)
    finally:
        p.quit()
    out(f'POP3 LIST on {a.pop}: {b" / ".join(lst).decode()}; ids {ids}')
    missing = [m for m in sent if m not in ids]
    if missing or count != len(sent):
        out(f'FAILED POP3 LIST on {a.pop} shows {count} messages, {missing} missing')
        return 1
    out(f'ok mail through {a.via} is listed by POP3 on {a.pop} ({count} messages)')
    return 0


# --- check 3 ----------------------------------------------------------------

def check3(a):
    rcpt = f'{a.login}@example.test'
    r = smtp_send(a.src, a.first, rcpt, message(rcpt, uniq('c3')))
    if r.outcome != '250':
        out(f'FAILED delivery before the POP3 sessions: {r}')
        return 1
    p1, text = pop_login(a.src, a.first, a.login, a.password)
    out(f'POP3 session 1 on {a.first}: {text}')
    if p1 is None:
        out(f'FAILED first POP3 login on {a.first}: {text}')
        return 1
    try:
        p2, text2 = pop_login(a.src, a.second, a.login, a.password)
        out(f'POP3 session 2 on {a.second} while session 1 lasts: {text2}')
        if p2 is not None:
            p2.quit()
            out(f'FAILED second session on {a.second} was let in: {text2}')
            return 1
        if '[IN-USE]' not in text2:
            out(f'FAILED second session on {a.second} refused without [IN-USE]: {text2}')
            return 1
    finally:
        p1.quit()
    # The lock ends with the first session.
    p3, text3 = pop_login(a.src, a.second, a.login, a.password)
    out(f'POP3 session on {a.second} after session 1 ended: {text3}')
    if p3 is None:
        out(f'FAILED after the first session ended, {a.second} still refuses: {text3}')
        return 1
    p3.quit()
    out(f'ok second session on {a.second} got "{text2}"; let in after the first ended')
    return 0


# --- only-4xx (checks 5 and 6) ------------------------------------------------

def only_4xx(a):
    end = time.time() + a.seconds
    n = 0
    seen = {}
    bad = []
    while time.time() < end or n == 0:
        mid = uniq('c-4xx')
        t0 = time.time()
        r = smtp_send(a.src, a.to, a.rcpt, message(a.rcpt, mid))
        n += 1
        key = f'{r.outcome} at {r.stage}' + (f' {r.code}' if r.code else '')
        seen[key] = seen.get(key, 0) + 1
        if r.outcome != '4xx':
            bad.append(f'{mid}: {r} after {time.time() - t0:.1f} s')
        time.sleep(1)
    out(f'{a.label}: {n} attempts on {a.to}: ' +
        ', '.join(f'{v} x {k}' for k, v in sorted(seen.items())))
    for b in bad:
        out(f'  not a 4xx: {b}')
    if bad:
        out(f'FAILED {a.label}: {len(bad)} of {n} attempts on {a.to} got no 4xx ({bad[0]})')
        return 1
    out(f'ok {a.label}: {n} of {n} attempts on {a.to} answered 4xx')
    return 0


# --- resume (check 6) ----------------------------------------------------------

def resume(a):
    hosts = a.to.split(',')
    t0 = time.time()
    results = {}
    accepted = []

    def one(host):
        tries = []
        while time.time() - t0 < a.within:
            mid = uniq('c6')
            r = smtp_send(a.src, host, a.rcpt, message(a.rcpt, mid),
                          timeout=max(1, min(TIMEOUT, a.within - (time.time() - t0))))
            tries.append(r)
            if r.outcome == '250':
                results[host] = (time.time() - t0, tries)
                accepted.append(mid)
                return
            if r.outcome == '5xx':
                break
            time.sleep(0.5)
        results[host] = (None, tries)

    threads = [threading.Thread(target=one, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if a.ids_out:
        with open(a.ids_out, 'w') as f:
            f.write(''.join(m + '\n' for m in accepted))
    fails = []
    for h in hosts:
        took, tries = results[h]
        kinds = {}
        for r in tries:
            k = f'{r.outcome} at {r.stage}'
            kinds[k] = kinds.get(k, 0) + 1
        out(f'{h}: ' + ', '.join(f'{v} x {k}' for k, v in kinds.items()) +
            (f'; 250 after {took:.1f} s' if took is not None else '; no 250'))
        if took is None:
            fails.append(f'{h} took no mail within {a.within} s ({tries[-1] if tries else "no attempt"})')
        elif any(r.outcome == '5xx' for r in tries):
            fails.append(f'{h} answered 5xx')
    if fails:
        out(f'FAILED {a.label}: ' + '; '.join(fails))
        return 1
    out(f'ok {a.label}: ' + ', '.join(f'{h} took mail after {results[h][0]:.1f} s' for h in hosts))
    return 0


def pop_has(a):
    """POP3 on a node lists every id of a file (within a time: a healed
    node may see them a moment late)."""
    with open(a.ids) as f:
        want = [line.strip() for line in f if line.strip()]
    t0 = time.time()
    while True:
        p, text = pop_login(a.src, a.pop, a.login, a.password)
        ids = []
        if p is not None:
            try:
                _, ids = pop_ids(p)
            finally:
                p.quit()
        missing = [m for m in want if m not in ids]
        if p is not None and not missing and want:
            out(f'ok POP3 on {a.pop} lists the {len(want)} messages taken while it was cut off '
                f'({time.time() - t0:.1f} s)')
            return 0
        if time.time() - t0 > a.within:
            break
        time.sleep(1)
    if p is None:
        out(f'FAILED POP3 login on {a.pop}: {text}')
    elif not want:
        out('FAILED no message was taken while the node was cut off')
    else:
        out(f'FAILED POP3 on {a.pop} lacks {missing} after {a.within:.0f} s')
    return 1


# --- many (check 4) --------------------------------------------------------------

def many(a):
    """--senders clients at once, each sending messages with unique ids
    one after the other until the stop file appears, each message tried
    on the next MX after a 4xx, no connection or no answer, until a 250."""
    hosts = a.to.split(',')
    accepted, ambiguous, refused, given_up = [], [], [], []
    stats = {'retried': 0, 'waits': []}
    lock = threading.Lock()
    prog = open(a.progress, 'a')

    def sender(t):
        i = 0
        while not os.path.exists(a.stop):
            mid = f'{a.tag}-{t}-{i:04d}'
            k = (i + t) % len(hosts)
            t0 = time.time()
            history = []
            while True:
                host = hosts[k]
                r = smtp_send(a.src, host, a.rcpt, message(a.rcpt, mid), timeout=a.timeout)
                history.append(f'{host} {r}')
                with lock:
                    if r.outcome == 'noanswer' and r.stage == 'end of data':
                        ambiguous.append(mid)
                    if r.outcome == '250':
                        accepted.append({'id': mid, 'host': host, 'at': time.time(),
                                         'tries': len(history)})
                        stats['waits'].append(time.time() - t0)
                        prog.write(f'{mid} {host} {time.time():.3f}\n')
                        prog.flush()
                        break
                    if r.outcome == '5xx' or r.outcome.startswith('unexpected'):
                        refused.append({'id': mid, 'history': history})
                        break
                    if time.time() - t0 > a.give_up:
                        given_up.append({'id': mid, 'history': history})
                        break
                    # 4xx, no connection, no answer: the next MX
                    stats['retried'] += 1
                k = (k + 1) % len(hosts)
                time.sleep(0.3)
            if len(history) > 1:
                out(f'{mid}: ' + ' | '.join(history))
            i += 1
            time.sleep(a.pause)

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(a.senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    prog.close()
    with open(a.out, 'w') as f:
        json.dump({'accepted': accepted, 'ambiguous': ambiguous, 'refused': refused,
                   'given_up': given_up}, f)
    fails = []
    if refused:
        fails.append(f'{len(refused)} refused with 5xx (first: {refused[0]["id"]}: '
                     f'{refused[0]["history"][-1]})')
    if given_up:
        fails.append(f'{len(given_up)} not taken within {a.give_up} s '
                     f'(first: {given_up[0]["history"][-1]})')
    if fails:
        out('FAILED ' + '; '.join(fails))
        return 1
    longest = max(stats['waits'], default=0)
    out(f'ok {len(accepted)} messages from {a.senders} senders got a 250 '
        f'({stats["retried"]} retries on the next MX, the longest wait {longest:.1f} s'
        + (f', {len(ambiguous)} without an answer at the end of data' if ambiguous else '') + ')')
    return 0


def exactly_once(a):
    with open(a.accepted) as f:
        run = json.load(f)
    counts = {}

    def scan(path):
        try:
            with open(path, 'rb') as f:
                head = f.read(65536)
        except OSError:
            return
        for line in head.split(b'\n'):
            if line.lower().startswith(b'x-cluster-id:'):
                mid = line.split(b':', 1)[1].strip().decode()
                counts[mid] = counts.get(mid, 0) + 1
                return
            if line in (b'', b'\r'):
                return

    places = 0
    for sub in ('new', 'cur'):
        d = os.path.join(a.maildir, sub)
        for name in os.listdir(d) if os.path.isdir(d) else []:
            scan(os.path.join(d, name))
            places += 1
    for q in a.queue:
        if os.path.isdir(q):
            for name in os.listdir(q):
                scan(os.path.join(q, name))
                places += 1
    ambiguous = set(run['ambiguous'])
    missing, twice = [], []
    for m in run['accepted']:
        c = counts.get(m['id'], 0)
        if c == 0:
            missing.append(m['id'])
        elif c > 1 and not (m['id'] in ambiguous and c == 2):
            twice.append(f'{m["id"]} x {c}')
    accepted_ids = {m['id'] for m in run['accepted']}
    stray = [k for k in counts if k not in accepted_ids and k.startswith(a.tag or '')]
    out(f'{len(run["accepted"])} ids got a 250; {places} files looked at '
        f'(Maildir {a.maildir} and {len(a.queue)} queues)')
    if stray:
        out(f'delivered without a 250 to the client: {stray[:10]}')
    fails = []
    if missing:
        fails.append(f'{len(missing)} ids that got a 250 are in no Maildir or queue: {missing[:5]}')
    if twice:
        fails.append(f'{len(twice)} ids are there more than once: {twice[:5]}')
    if not run['accepted']:
        fails.append('no message got a 250')
    if fails:
        out('FAILED ' + '; '.join(fails))
        return 1
    out(f'ok every one of the {len(run["accepted"])} ids is there exactly once')
    return 0


# --- flock across nodes (set-up) ---------------------------------------------------

def flock_hold(a):
    with open(a.path) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        open(a.ready, 'w').close()
        end = time.time() + 30
        while not os.path.exists(a.release) and time.time() < end:
            time.sleep(0.05)
    return 0


def flock_try(a):
    with open(a.path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print('refused')
            return 0
        print('locked')
        return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('check1')
    for o in ('--a', '--b', '--pop', '--smtp', '--login', '--password'):
        p.add_argument(o, required=True)
    p = sub.add_parser('check2')
    for o in ('--src', '--via', '--pop', '--login', '--password'):
        p.add_argument(o, required=True)
    p = sub.add_parser('check3')
    for o in ('--src', '--first', '--second', '--login', '--password'):
        p.add_argument(o, required=True)
    p = sub.add_parser('only-4xx')
    for o in ('--src', '--to', '--rcpt'):
        p.add_argument(o, required=True)
    p.add_argument('--seconds', type=float, required=True)
    p.add_argument('--label', default='')
    p = sub.add_parser('resume')
    for o in ('--src', '--to', '--rcpt'):
        p.add_argument(o, required=True)
    p.add_argument('--within', type=float, required=True)
    p.add_argument('--label', default='')
    p.add_argument('--ids-out')
    p = sub.add_parser('pop-has')
    for o in ('--src', '--pop', '--login', '--password', '--ids'):
        p.add_argument(o, required=True)
    p.add_argument('--within', type=float, required=True)
    p = sub.add_parser('many')
    for o in ('--src', '--to', '--rcpt', '--progress', '--stop', '--out', '--tag'):
        p.add_argument(o, required=True)
    p.add_argument('--timeout', type=float, default=TIMEOUT)
    p.add_argument('--give-up', type=float, default=120)
    p.add_argument('--pause', type=float, default=0.2)
    p.add_argument('--senders', type=int, default=3)
    p = sub.add_parser('exactly-once')
    p.add_argument('--accepted', required=True)
    p.add_argument('--maildir', required=True)
    p.add_argument('--queue', action='append', default=[])
    p.add_argument('--tag', default='')
    p = sub.add_parser('flock-hold')
    for o in ('path', 'ready', 'release'):
        p.add_argument(o)
    p = sub.add_parser('flock-try')
    p.add_argument('path')
    a = ap.parse_args()
    fn = {'check1': check1, 'check2': check2, 'check3': check3, 'only-4xx': only_4xx,
          'resume': resume, 'pop-has': pop_has, 'many': many, 'exactly-once': exactly_once,
          'flock-hold': flock_hold, 'flock-try': flock_try}[a.cmd]
    return fn(a)


if __name__ == '__main__':
    sys.exit(main())
