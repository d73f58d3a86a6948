"""Load: many concurrent SMTP sessions under the real supervisors, half of
them fast (a whole message each, with smtplib) and half slow (one byte
every few seconds, the slowloris pattern), each from one of many loopback
source addresses.

Under systemd-socket-activate (no limits of its own) and under xinetd with
the limits of units/xinetd/postage-smtp (instances, per_source, cps,
rlimit_as), this measures: that slow sessions beyond slow_sessions_max
make way after about 10 seconds (shared/stress.h); how many fast sessions complete and how long
they take while the slow ones hold their connections; whether the slow
ones are cut off, and when; the handlers' memory (VmRSS) over time; and
that no handler outlives its client. The full run also keeps idle clients
(connected, silent) past the 5 minute command timeout of RFC 5321 4.5.3.2.7
and checks that they are told 421 and cut off.
"""
import os
import re
import smtplib
import socket
import threading
import time

import common
from common import Tally

RATE = 25            # new connections a second (xinetd: cps 50 per the entry)
SLOW_INTERVAL = 3.0  # seconds between the slow clients' bytes
IDLE_TIMEOUT = 300   # SMTP_COMMAND_TIMEOUT_MS
SLOW_MAX = 20        # the setting slow_sessions_max's default (shared/stress.h)


def entry_limits():
    """instances, per_source, cps, rlimit_as of the shipped xinetd entry."""
    path = os.path.join(common.SOURCE, 'units', 'xinetd', 'postage-smtp')
    out = {}
    with open(path) as f:
        for line in f:
            m = re.match(r'\s*(instances|per_source|cps|rlimit_as)\s*=\s*(.+?)\s*$', line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


class EntryServer(common.harness.Server):
    """The harness's xinetd server, but with the shipped entry's limits."""

    def _xinetd_cmd(self, path, env_items):
        cmd = super()._xinetd_cmd(path, env_items)
        conf = cmd[cmd.index('-f') + 1]
        with open(conf) as f:
            text = f.read()
        limits = entry_limits()
        if 'rlimit_as' in limits and sanitized(path):
            # ASan reserves terabytes of address space for its shadow.
            del limits['rlimit_as']
            self.dropped = 'rlimit_as (the build has AddressSanitizer)'
        text = re.sub(r'\tinstances = .*\n', '', text)
        text = re.sub(r'\tper_source = .*\n', '', text)
        extra = ''.join(f'\t{k} = {v}\n' for k, v in limits.items())
        text = text.replace('\tbind =', extra + '\tbind =', 1)
        with open(conf, 'w') as f:
            f.write(text)
        return cmd


def sanitized(path):
    with open(path, 'rb') as f:
        return b'__asan_init' in f.read()


def rss_kb(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Monitor(threading.Thread):
    """Samples the handler processes once a second."""

    def __init__(self, srv):
        super().__init__(daemon=True)
        self.srv = srv
        self.stop_ = threading.Event()
        self.max_count = 0
        self.max_rss = 0
        self.max_total = 0
        self.first_rss = {}
        self.last_rss = {}
        self.seen = {}

    def run(self):
        while not self.stop_.is_set():
            pids = self.srv.handler_pids()
            total = 0
            for pid in pids:
                r = rss_kb(pid)
                total += r
                # The first sighting may be the supervisor's fork before
                # the exec: growth counts from the second one.
                self.seen[pid] = self.seen.get(pid, 0) + 1
                if self.seen[pid] == 2:
                    self.first_rss[pid] = r
                if self.seen[pid] >= 2:
                    self.last_rss[pid] = r
                self.max_rss = max(self.max_rss, r)
            self.max_count = max(self.max_count, len(pids))
            self.max_total = max(self.max_total, total)
            self.stop_.wait(1.0)

    def growth_kb(self):
        """Largest growth of one handler between its first and last sample."""
        return max([self.last_rss[p] - self.first_rss[p] for p in self.last_rss] or [0])


def source(i):
    """Loopback source addresses, 5 sessions each, so per_source limits
    apply as they would to many real clients."""
    return f'127.0.{1 + (i // 5) // 250}.{2 + (i // 5) % 250}'


def fast_client(srv, i, tag, out):
    t0 = time.monotonic()
    msg = common.make_body(f'{tag}f{i}', long_line=False).decode()
    try:
        with smtplib.SMTP(srv.host, srv.port, timeout=120,
                          source_address=(source(i), 0)) as c:
            c.ehlo('fast.example')
            c.sendmail(common.SENDER, ['alice@example.test'], msg)
        out[i] = ('ok', time.monotonic() - t0)
    except (smtplib.SMTPException, OSError) as e:
        out[i] = ('error: ' + repr(e)[:120], time.monotonic() - t0)


def connect_from(srv, i, out):
    """A connection to srv from client i's address; None, with out[i]
    saying why, when it was refused."""
    try:
        return socket.create_connection((srv.host, srv.port), timeout=30,
                                        source_address=(source(i), 0))
    except OSError as e:
        out[i] = ('refused ' + repr(e)[:60], 0, b'')
        return None


def slow_client(srv, i, until, out):
    """One byte of 'NOOP\\r\\n' every SLOW_INTERVAL seconds until `until`.
    Records ('cut', seconds, what the server said) or ('open', ...)."""
    t0 = time.monotonic()
    data = b'NOOP\r\n'
    k = 0
    heard = b''
    s = connect_from(srv, i, out)
    if s is None:
        return
    s.settimeout(SLOW_INTERVAL)
    try:
        while time.monotonic() < until:
            try:
                got = s.recv(4096)
                if not got:
                    # Closed before any greeting: the supervisor's limit
                    # refused it; no handler ever saw it.
                    out[i] = ('cut' if heard else 'refused by the supervisor',
                              time.monotonic() - t0, heard[-80:])
                    return
                heard += got
                if b'\r\n421 ' in b'\r\n' + heard:
                    out[i] = ('cut', time.monotonic() - t0, heard[-80:])
                    return
            except socket.timeout:
                pass
            try:
                s.sendall(data[k % len(data):k % len(data) + 1])
                k += 1
            except OSError:
                out[i] = ('cut', time.monotonic() - t0, heard[-80:])
                return
        out[i] = ('open', time.monotonic() - t0, heard[-80:])
    finally:
        s.close()


def idle_client(srv, i, until, out):
    """Connects, reads the greeting, says nothing. When is it cut off?"""
    t0 = time.monotonic()
    heard = b''
    s = connect_from(srv, i, out)
    if s is None:
        return
    try:
        while time.monotonic() < until:
            s.settimeout(max(0.1, until - time.monotonic()))
            try:
                got = s.recv(4096)
            except socket.timeout:
                break
            except OSError:
                got = b''
            if not got:
                out[i] = ('cut' if heard else 'refused by the supervisor',
                          time.monotonic() - t0, heard[-80:])
                return
            heard += got
        out[i] = ('open', time.monotonic() - t0, heard[-80:])
    finally:
        s.close()


def start_server(p, supervisor):
    if supervisor == 'xinetd':
        srv = EntryServer(p, common.SMTP, ['--mode=mx'], '127.0.0.1', 'xinetd')
        p.servers.append(srv)
        return srv
    return p.serve(common.SMTP, ['--mode=mx'], supervisor=supervisor)


def scenario(tally, supervisor, n, slow_seconds, idle, log):
    p = common.Postage().__enter__()
    # The idle clients talk to an installation of their own (its own
    # spool_dir, so its own count of slow sessions): under the load's
    # stress they would be cut after 10 s, and here the 5-minute command
    # timeout itself is measured, beside the load, under the same
    # supervisor.
    p_idle = common.Postage().__enter__() if idle else None
    try:
        p.add_domain('example.test')
        p.add_mailbox('alice', 'unused-password')
        p.add_address('alice@example.test', 'alice')
        srv = start_server(p, supervisor)
        idle_srv = start_server(p_idle, supervisor) if idle else None
        if getattr(srv, 'dropped', None):
            tally.note(f'load {supervisor}: entry limit not applied: {srv.dropped}')
        if supervisor == 'xinetd':
            tally.note('load xinetd: entry limits ' + ', '.join(
                f'{k} {v}' for k, v in entry_limits().items()))
        mon = Monitor(srv)
        mon.start()
        tag = f'load{os.getpid()}{supervisor[:3]}'
        nslow = n // 2
        nfast = n - nslow
        fast, slow, idles = {}, {}, {}
        threads = []
        t0 = time.monotonic()
        until = t0 + slow_seconds
        # The idle ones first (their handlers' timeout is measured), then
        # the slow ones, so they hold their slots when the fast ones come.
        for i in range(idle):
            th = threading.Thread(target=idle_client,
                                  args=(idle_srv, nslow + i, until, idles), daemon=True)
            th.start()
            threads.append(th)
            time.sleep(1 / RATE)
        for i in range(nslow):
            th = threading.Thread(target=slow_client, args=(srv, i, until, slow), daemon=True)
            th.start()
            threads.append(th)
            time.sleep(1 / RATE)
        fast_threads = []
        for i in range(nfast):
            th = threading.Thread(target=fast_client, args=(srv, nslow + idle + i, tag, fast),
                                  daemon=True)
            th.start()
            fast_threads.append(th)
            time.sleep(1 / RATE)
        for th in fast_threads:
            th.join(timeout=max(1, until + 150 - time.monotonic()))
        fast_done = time.monotonic() - t0
        for th in threads:
            th.join(timeout=max(1, until + 60 - time.monotonic()))
        # Every client has gone: no handler may stay behind.
        gone = srv.wait_handlers(timeout=20)
        if idle_srv and not idle_srv.wait_handlers(timeout=20):
            tally.problem('error', f'load {supervisor}: idle handlers still running 20 s after '
                          f'their clients left: {idle_srv.handler_pids()}')
        mon.stop_.set()
        mon.join()
        leftover = srv.handler_pids()

        name = f'load {supervisor}'
        ok = [v for v in fast.values() if v[0] == 'ok']
        times = sorted(v[1] for v in ok)
        tally.runs += n + idle
        tally.accepted += len(ok)
        if times:
            tally.note(f'{name}: fast sessions done {len(ok)}/{nfast}, median '
                       f'{times[len(times) // 2]:.1f} s, slowest {times[-1]:.1f} s '
                       f'(all fast ones ended {fast_done:.0f} s after the first connection)')
        else:
            tally.note(f'{name}: fast sessions done 0/{nfast}')
        errors = {}
        for v in fast.values():
            if v[0] != 'ok':
                errors[v[0][:60]] = errors.get(v[0][:60], 0) + 1
        for e, c in errors.items():
            tally.note(f'{name}: fast sessions failed: {e}: {c}')
        kinds = {}
        for v in slow.values():
            kinds[v[0]] = kinds.get(v[0], 0) + 1
        tally.note(f'{name}: slow sessions after {slow_seconds} s: ' +
                   ', '.join(f'{k} {c}' for k, c in sorted(kinds.items())))
        # Beyond slow_sessions_max, slow sessions make way after about
        # 10 s (STRESS_SLOW_MS) instead of holding a slot for minutes.
        still = sum(1 for v in slow.values() if v[0] == 'open')
        if still > SLOW_MAX:
            tally.problem('error', f'{name}: {still} slow sessions still open after '
                          f'{slow_seconds} s, more than slow_sessions_max ({SLOW_MAX})')
        cut = [v for v in slow.values() if v[0] == 'cut']
        if cut:
            tally.note(f'{name}: slow sessions cut after {min(v[1] for v in cut):.0f} to '
                       f'{max(v[1] for v in cut):.0f} s, said {cut[0][2][-40:]!r}')
        if idle:
            icut = [v for v in idles.values() if v[0] == 'cut']
            tally.note(f'{name}: idle sessions cut {len(icut)}/{idle}' +
                       (f' after {min(v[1] for v in icut):.0f} to {max(v[1] for v in icut):.0f} s,'
                        f' said {icut[0][2][-40:]!r}' if icut else ''))
            for v in idles.values():
                if v[0] == 'refused by the supervisor':
                    tally.note(f'{name}: idle sessions refused by the supervisor')
                elif v[0] != 'cut' or not (IDLE_TIMEOUT - 5 <= v[1] <= IDLE_TIMEOUT + 30) or \
                        b'421' not in v[2]:
                    tally.problem('error', f'{name}: an idle session was not cut with 421 at '
                                  f'the {IDLE_TIMEOUT} s timeout: {v}')
                    break
        tally.note(f'{name}: handlers at once {mon.max_count}, VmRSS per handler max '
                   f'{mon.max_rss // 1024} MiB, all handlers max {mon.max_total // 1024} MiB, '
                   f'largest growth of one handler {mon.growth_kb()} KiB')
        if not gone:
            tally.problem('error', f'{name}: handlers still running 20 s after every client '
                          f'left: {leftover}')
        # Every accepted fast message is in alice's Maildir once.
        files = p.messages('alice')
        texts = [common.read(f) or b'' for f in files]
        for i, v in fast.items():
            if v[0] != 'ok':
                continue
            needle = f'<{tag}f{i}@client.example>'.encode()
            c = sum(1 for t in texts if needle in t)
            if c == 0:
                tally.problem('lost', f'{name}: fast message {i} accepted, not delivered')
            elif c > 1:
                tally.problem('duplicated', f'{name}: fast message {i} delivered {c} times')
            else:
                tally.delivered += 1
        for rep in common.sanitizer_reports(p) + (common.sanitizer_reports(p_idle) if idle else []):
            tally.problem('error', f'{name}: sanitizer report ' + rep[:800])
        return ok, nfast
    finally:
        if p_idle:
            p_idle.__exit__(None, None, None)
        p.__exit__(None, None, None)


def run(quick, log, supervisors='socket-activate,xinetd'):
    tally = Tally('load')
    n = 60 if quick else 300
    slow_seconds = 20 if quick else IDLE_TIMEOUT + 20
    idle = 0 if quick else 5
    for sup in supervisors.split(','):
        sup = sup.strip()
        if not sup:
            continue
        exe = 'xinetd' if sup == 'xinetd' else 'systemd-socket-activate'
        if not common.shutil.which(exe) and not os.access(f'/usr/sbin/{exe}', os.X_OK):
            tally.skipped.append(f'{exe} is not installed')
            continue
        log(f'load: {sup}, {n} sessions ({n // 2} slow' + (f', {idle} idle' if idle else '')
            + f') for {slow_seconds} s')
        try:
            scenario(tally, sup, n, slow_seconds, idle, log)
        except Exception as e:
            import traceback
            tally.problem('error', f'load {sup}: {e!r}\n' + traceback.format_exc()[-1500:])
    return tally
